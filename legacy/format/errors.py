"""Errors and warnings raised while reading legacy data.

Every message names the file, the record and the field, e.g.
``security/users.json: record 85900a07-…: email: expected a string, got 12345``.
"""

from __future__ import annotations


class LegacyDataError(Exception):
    """Bad legacy data: the import stops (or, with --check, the problem is listed)."""

    def __init__(self, file: str, message: str, record_id=None, field: str | None = None):
        self.file = file
        self.record_id = record_id
        self.field = field
        self.detail = message
        super().__init__(self.format())

    def format(self) -> str:
        parts = [self.file]
        if self.record_id is not None:
            parts.append(f"record {self.record_id}")
        if self.field:
            parts.append(self.field)
        parts.append(self.detail)
        return ": ".join(parts)


class LegacyFieldError(Exception):
    """Raised by the validators; the mapper adds file and record id."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def describe(value) -> str:
    """``12345`` / ``'abc'`` / ``a list`` for error messages (short)."""
    if isinstance(value, (dict, list)):
        kind = "an object" if isinstance(value, dict) else "a list"
        return kind
    text = repr(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else repr(value)
    if value is None:
        text = "null"
    return text if len(text) <= 60 else text[:57] + "..."
