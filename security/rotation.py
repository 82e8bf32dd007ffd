"""Re-encrypt every stored secret with the first key of ENCRYPTION_KEY.

Walks every model with encrypted fields (``agentforge_core.fields.encrypted_fields`` over
``apps.get_models()``), reads the raw column values (no decryption on load), and for each
value whose key id is not the first key's: decrypt, encrypt with the first key, and write
it back only if the column still holds the value read (a concurrent change wins). Each
batch commits on its own, so an interrupted run loses nothing and a re-run continues
where work remains. Values stored unencrypted (written around the ORM) are encrypted too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.apps import apps
from django.db import models, transaction
from django.db.models import ExpressionWrapper, F

from agentforge_core import crypto
from agentforge_core.fields import encrypted_fields
from agentforge_site.caching import bump


@dataclass
class TableReport:
    table: str
    scanned: int = 0  # non-empty values looked at
    rotated: int = 0  # re-encrypted with the first key
    encrypted_plaintext: int = 0  # found unencrypted and encrypted
    current: int = 0  # already under the first key
    changed_concurrently: int = 0  # modified while we worked: left alone
    errors: list[str] = field(default_factory=list)


def encrypted_models() -> list:
    return [m for m in apps.get_models() if not m._meta.proxy and encrypted_fields(m)]


def _raw(name: str):
    """The column as stored: an expression whose output field has no from_db_value."""
    return ExpressionWrapper(F(name), output_field=models.TextField())


def rotate_model(model, batch_size: int = 500, dry_run: bool = False, using: str = "default") -> TableReport:
    fields = encrypted_fields(model)
    report = TableReport(model._meta.db_table)
    first_key = crypto.current_keys()[0].key_id
    manager = model._base_manager.db_manager(using)
    pk_name = model._meta.pk.name
    annotations = {f"_raw_{f.attname}": _raw(f.attname) for f in fields}
    last_pk = None
    while True:
        qs = manager.all().order_by(pk_name)
        if last_pk is not None:
            qs = qs.filter(**{f"{pk_name}__gt": last_pk})
        rows = list(qs.annotate(**annotations).values_list(pk_name, *annotations)[:batch_size])
        if not rows:
            break
        with transaction.atomic(using=using):
            for pk, *values in rows:
                for f, stored in zip(fields, values):
                    if stored in (None, ""):
                        continue
                    report.scanned += 1
                    label = f"{model._meta.db_table}.{f.column} (pk={pk})"
                    if crypto.is_encrypted(stored):
                        if crypto.key_id_of(stored) == first_key:
                            report.current += 1
                            continue
                        try:
                            plain = crypto.decrypt(stored, label)
                        except crypto.DecryptionError as exc:
                            report.errors.append(str(exc))
                            continue
                        counter = "rotated"
                    else:
                        plain = stored
                        counter = "encrypted_plaintext"
                    if dry_run:
                        setattr(report, counter, getattr(report, counter) + 1)
                        continue
                    new = crypto.encrypt(plain, f.scheme)
                    alias = f"_raw_{f.attname}"
                    # Write the ciphertext as is (models.QuerySet.update would encrypt again
                    # through get_prep_value, so go one level down to the plain TextField).
                    written = (
                        manager.filter(pk=pk)
                        .annotate(**{alias: _raw(f.attname)})
                        .filter(**{alias: stored})
                        .update(**{f.attname: _Ciphertext(new)})
                    )
                    if written:
                        setattr(report, counter, getattr(report, counter) + 1)
                    else:
                        report.changed_concurrently += 1
        last_pk = rows[-1][0]
    return report


class _Ciphertext(models.Value):
    """A literal already-encrypted value: bypasses the field's encryption on UPDATE."""

    def __init__(self, value):
        super().__init__(value, output_field=models.TextField())


def rotate_all(batch_size: int = 500, dry_run: bool = False, using: str = "default") -> list[TableReport]:
    reports = [rotate_model(m, batch_size=batch_size, dry_run=dry_run, using=using) for m in encrypted_models()]
    if not dry_run:
        # Cached reads hold no secrets, but a rotation rewrites rows of cached tables
        # (organizations, tools) below the model signals: start every cache afresh.
        bump(everything=True, using=using)
    return reports
