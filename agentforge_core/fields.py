"""Model fields that keep secrets encrypted at rest (see agentforge_core.crypto)."""

from __future__ import annotations

import json

from django.db import models

from agentforge_core import crypto


class EncryptedTextField(models.TextField):
    """A text secret stored as ciphertext; reads return plaintext or raise DecryptionError.

    ``scheme`` is ``"fernet"`` (default) or ``"aesgcm"`` (provider API keys). None stays
    None and "" stays "". Only ``isnull`` lookups make sense on ciphertext.
    """

    encrypted = True

    def __init__(self, *args, scheme: str = crypto.FERNET, **kwargs):
        if scheme not in crypto.SCHEMES:
            raise ValueError(f"unknown scheme {scheme!r}")
        self.scheme = scheme
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        if self.scheme != crypto.FERNET:
            kwargs["scheme"] = self.scheme
        return name, path, args, kwargs

    @property
    def label(self) -> str:
        return f"{self.model._meta.db_table}.{self.name}"

    def to_plain(self, value):
        """Python value -> the string that gets encrypted."""
        return value

    def from_plain(self, value):
        return value

    def get_prep_value(self, value):
        if value is None:
            return None
        plain = self.to_plain(value)
        if plain == "":
            return ""
        return crypto.encrypt(str(plain), self.scheme)

    def from_db_value(self, value, expression, connection):
        if value is None:
            return None
        # Oracle returns NULL for "", which the None branch covers.
        return self.from_plain(crypto.decrypt(value, self.label))

    def get_lookup(self, lookup_name):
        if lookup_name not in ("isnull",):
            return None
        return super().get_lookup(lookup_name)


class EncryptedJSONField(EncryptedTextField):
    """A dict or list of secrets, serialised to JSON and then encrypted as one value."""

    def to_plain(self, value):
        if isinstance(value, str):
            return value
        return json.dumps(value, sort_keys=True, separators=(",", ":"))

    def from_plain(self, value):
        if value in (None, ""):
            return {}
        return json.loads(value)

    def to_python(self, value):
        if isinstance(value, str) and value:
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def value_to_string(self, obj):
        return self.to_plain(self.value_from_object(obj))

    def formfield(self, **kwargs):
        from django import forms

        return models.Field.formfield(self, **{"form_class": forms.JSONField, **kwargs})


def encrypted_fields(model) -> list[EncryptedTextField]:
    return [f for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)]
