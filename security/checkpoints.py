"""Signed checkpoints of the audit hash chains, kept outside the database.

A database administrator can recompute every hash after an edit, or delete a whole chain
with its head: the chain alone proves nothing against someone who can write all of it.
A checkpoint records, for one chain at one moment, how many entries it holds since its
purge anchor, the id and hash of its last entry, and the anchor, signed with an Ed25519
key that never enters the database (``AUDIT_SIGNING_KEY``). Checkpoints are appended, one
JSON line each, to ``<AUDIT_CHECKPOINT_DIR>/<chain>.jsonl``; the directory should be on
storage the database's administrators cannot rewrite (another host, an append-only mount).
``security.audit.verify_chain`` compares the chain with the latest checkpoint, with only
the public key (``AUDIT_VERIFY_KEY``). This module knows files and signatures, not tables.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.conf import settings

from agentforge_site.files import private_dir

# Signed bytes start with this, so a signature over anything else never passes for one.
DOMAIN = b"agentforge-audit-checkpoint-v1\n"
_CHAIN_NAME = re.compile(r"^(system|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")


class CheckpointError(Exception):
    """A checkpoint cannot be written (no key, unwritable store)."""


@dataclass(frozen=True)
class Checkpoint:
    chain: str
    seq: int
    time: str
    reason: str  # interval, purge, rechain, command
    count: int  # entries after the anchor
    last_id: int
    head_hash: str
    anchor_id: int
    anchor_hash: str
    key_id: str

    def signed_bytes(self) -> bytes:
        return DOMAIN + json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode("utf-8")

    def describe(self) -> str:
        return f"signed checkpoint #{self.seq} of {self.time}"


def signing_key():
    return settings.AUDIT_SIGNING_KEY


def verify_key():
    """The public key checkpoints are checked with: AUDIT_VERIFY_KEY, else the signing key's."""
    if settings.AUDIT_VERIFY_KEY is not None:
        return settings.AUDIT_VERIFY_KEY
    private = signing_key()
    return private.public_key() if private is not None else None


def key_id(public_key) -> str:
    return hashlib.sha256(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]


class CheckpointStore:
    """One append-only JSON-lines file per chain in a directory."""

    def __init__(self, directory=None):
        self.directory = Path(directory or settings.AUDIT_CHECKPOINT_DIR)

    def path(self, chain: str) -> Path:
        if not _CHAIN_NAME.match(chain):
            raise ValueError(f"not a chain key: {chain!r}")
        return self.directory / f"{chain}.jsonl"

    def chains(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.jsonl") if _CHAIN_NAME.match(p.stem))

    def read(self, chain: str, public_key) -> tuple[list[Checkpoint], str]:
        """The chain's checkpoints, oldest first, and the first problem found ("" if none):
        a line that does not parse, a bad signature, a sequence gap (lines removed)."""
        path = self.path(chain)
        if not path.is_file():
            return [], ""
        found = []
        with path.open("rb") as handle:
            for number, line in enumerate(handle, 1):
                where = f"{path}: line {number}"
                try:
                    data = json.loads(line)
                    signature = base64.b64decode(data.pop("sig"), validate=True)
                    checkpoint = Checkpoint(**data)
                except (ValueError, TypeError, KeyError, AttributeError):
                    return found, f"{where}: not a checkpoint"
                try:
                    public_key.verify(signature, checkpoint.signed_bytes())
                except InvalidSignature:
                    return (
                        found,
                        f"{where}: the signature does not verify (forged or edited checkpoint, or another key)",
                    )
                if checkpoint.chain != chain:
                    return found, f"{where}: a checkpoint of chain {checkpoint.chain} in the file of {chain}"
                expected = found[-1].seq + 1 if found else 1
                if checkpoint.seq != expected:
                    return (
                        found,
                        f"{where}: checkpoint #{checkpoint.seq} where #{expected} was due: checkpoints were removed",
                    )
                found.append(checkpoint)
        return found, ""

    def latest(self, chain: str, public_key) -> tuple[Checkpoint | None, str]:
        found, problem = self.read(chain, public_key)
        return (found[-1] if found else None), problem

    def append(
        self,
        private_key,
        *,
        chain: str,
        reason: str,
        count: int,
        last_id: int,
        head_hash: str,
        anchor_id: int,
        anchor_hash: str,
    ) -> Checkpoint:
        """Sign and append the next checkpoint of ``chain``; the file is private (0600)."""
        if private_key is None:
            raise CheckpointError("no AUDIT_SIGNING_KEY: checkpoints cannot be signed")
        previous, problem = self.latest(chain, private_key.public_key())
        if problem:
            raise CheckpointError(f"refusing to extend a damaged checkpoint file: {problem}")
        checkpoint = Checkpoint(
            chain=chain,
            seq=(previous.seq if previous else 0) + 1,
            time=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            reason=reason,
            count=count,
            last_id=last_id,
            head_hash=head_hash,
            anchor_id=anchor_id,
            anchor_hash=anchor_hash,
            key_id=key_id(private_key.public_key()),
        )
        signature = base64.b64encode(private_key.sign(checkpoint.signed_bytes())).decode("ascii")
        line = json.dumps({**asdict(checkpoint), "sig": signature}, sort_keys=True, separators=(",", ":")) + "\n"
        try:
            private_dir(self.directory)
            fd = os.open(self.path(chain), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise CheckpointError(f"cannot write {self.path(chain)}: {exc}") from None
        return checkpoint
