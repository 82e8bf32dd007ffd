"""python manage.py checkpoint_audit_log [--org ORG] [--new-key] : sign the audit chains now."""

import base64

from django.core.management.base import CommandError

from agentforge_core.crypto import public_key_text
from security.audit import SYSTEM_CHAIN, AuditChainError, chain_keys, checkpoint_chain
from security.checkpoints import CheckpointError
from security.management.base import AuditChainCommand


class Command(AuditChainCommand):
    help = (
        "Sign a checkpoint of each audit chain (or one) into AUDIT_CHECKPOINT_DIR with AUDIT_SIGNING_KEY; "
        "--new-key prints a fresh key pair instead."
    )

    def add_arguments(self, parser):
        self.add_org_argument(parser, many=True, also=(SYSTEM_CHAIN,))
        parser.add_argument(
            "--new-key",
            action="store_true",
            help="print a new AUDIT_SIGNING_KEY and its AUDIT_VERIFY_KEY, sign nothing",
        )

    def handle(self, *args, org, new_key, **options):
        if new_key:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
            from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

            key = Ed25519PrivateKey.generate()
            raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            self.stdout.write(f"AUDIT_SIGNING_KEY={base64.b64encode(raw).decode('ascii')}")
            self.stdout.write(f"AUDIT_VERIFY_KEY={public_key_text(key.public_key())}")
            return
        for key in self.get_orgs(org) or chain_keys():
            try:
                checkpoint = checkpoint_chain(key, reason="command")
            except (AuditChainError, CheckpointError) as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(
                f"{checkpoint.chain}: checkpoint #{checkpoint.seq}, {checkpoint.count} entries up to {checkpoint.last_id}"
            )
