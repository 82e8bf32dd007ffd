"""Encryption at rest: Fernet (MultiFernet) for secrets, AES-256-GCM for provider API keys.

``ENCRYPTION_KEY`` is a comma-separated list of Fernet keys: the first encrypts, all
decrypt. Every ciphertext starts with its scheme and the id of the key that made it
(``fernet$1a2b3c4d$...``), so rotation knows what to re-encrypt and a missing key is
named precisely instead of failing as "invalid token".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

FERNET = "fernet"
AESGCM_SCHEME = "aesgcm"
SCHEMES = (FERNET, AESGCM_SCHEME)
SEPARATOR = "$"


class DecryptionError(Exception):
    """A stored value cannot be decrypted with the configured keys."""


@dataclass(frozen=True)
class EncryptionKey:
    key_id: str
    fernet: Fernet
    aes: AESGCM


def _key_id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:8]


def parse_key_list(value: str) -> tuple[EncryptionKey, ...]:
    """Parse ``ENCRYPTION_KEY``; raise ConfigurationError naming the variable on bad input."""
    from agentforge_site.dbconfig import ConfigurationError

    keys = []
    parts = [part.strip() for part in (value or "").split(",") if part.strip()]
    if not parts:
        raise ConfigurationError("ENCRYPTION_KEY", "is empty")
    for position, part in enumerate(parts, start=1):
        try:
            raw = base64.urlsafe_b64decode(part.encode("ascii"))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raw = b""
        if len(raw) != 32:
            raise ConfigurationError(
                "ENCRYPTION_KEY",
                f"key #{position} is not a Fernet key (expected 32 url-safe base64-encoded bytes)",
            )
        aes_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"agentforge aes-256-gcm api keys"
        ).derive(raw)
        keys.append(EncryptionKey(_key_id(raw), Fernet(part.encode("ascii")), AESGCM(aes_key)))
    return tuple(keys)


def current_keys() -> tuple[EncryptionKey, ...]:
    from django.conf import settings

    return _cached_keys(settings.ENCRYPTION_KEY)


@lru_cache(maxsize=8)
def _cached_keys(value: str) -> tuple[EncryptionKey, ...]:
    return parse_key_list(value)


def is_encrypted(value: str | None) -> bool:
    return isinstance(value, str) and value.split(SEPARATOR, 1)[0] in SCHEMES and value.count(SEPARATOR) >= 2


def key_id_of(ciphertext: str) -> str | None:
    if not is_encrypted(ciphertext):
        return None
    return ciphertext.split(SEPARATOR, 2)[1]


def encrypt(plaintext: str, scheme: str = FERNET) -> str:
    """Encrypt with the first key. Empty strings stay empty (nothing to hide)."""
    if plaintext == "":
        return ""
    key = current_keys()[0]
    data = plaintext.encode("utf-8")
    if scheme == FERNET:
        body = key.fernet.encrypt(data).decode("ascii")
    elif scheme == AESGCM_SCHEME:
        nonce = os.urandom(12)
        body = base64.urlsafe_b64encode(nonce + key.aes.encrypt(nonce, data, key.key_id.encode())).decode("ascii")
    else:
        raise ValueError(f"unknown encryption scheme {scheme!r}")
    return SEPARATOR.join((scheme, key.key_id, body))


def decrypt(ciphertext: str, label: str = "value") -> str:
    """Decrypt a value made by :func:`encrypt`; raise DecryptionError naming ``label``."""
    if ciphertext == "":
        return ""
    if not is_encrypted(ciphertext):
        raise DecryptionError(f"{label}: stored value is not encrypted (refusing to return it)")
    scheme, key_id, body = ciphertext.split(SEPARATOR, 2)
    key = next((k for k in current_keys() if k.key_id == key_id), None)
    if key is None:
        raise DecryptionError(
            f"{label}: encrypted with key {key_id}, which is not in ENCRYPTION_KEY "
            f"(configured: {', '.join(k.key_id for k in current_keys())})"
        )
    try:
        if scheme == FERNET:
            return key.fernet.decrypt(body.encode("ascii")).decode("utf-8")
        blob = base64.urlsafe_b64decode(body.encode("ascii"))
        return key.aes.decrypt(blob[:12], blob[12:], key_id.encode()).decode("utf-8")
    except (InvalidToken, InvalidTag, ValueError, binascii.Error) as exc:
        raise DecryptionError(f"{label}: cannot decrypt with key {key_id} ({type(exc).__name__})") from None


def needs_rotation(ciphertext: str | None) -> bool:
    """True when a stored value was made by a key other than the first one."""
    kid = key_id_of(ciphertext or "")
    return kid is not None and kid != current_keys()[0].key_id


def sha256_hex(value: str) -> str:
    """Tokens (sessions, resets, verifications, API keys) are stored only as this digest."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()
