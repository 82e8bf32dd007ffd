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

from agentforge_site.dbconfig import ConfigurationError

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
        aes_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"agentforge aes-256-gcm api keys").derive(
            raw
        )
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


def sha256_hex(value: str) -> str:
    """Tokens (sessions, resets, verifications, API keys) are stored only as this digest."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


# --- Ed25519 keys of the audit checkpoints -----------------------------------------------------
# Kept outside the database like ENCRYPTION_KEY: the signer holds the private key, a verifier
# needs only the public one. Either the base64 of the raw 32 bytes or a PEM file's text.


def parse_signing_key(value: str, name: str):
    """An Ed25519 private key from ``value``; ConfigurationError naming ``name`` when bad."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    return _parse_ed25519(
        value,
        name,
        Ed25519PrivateKey.from_private_bytes,
        lambda data: load_pem_private_key(data, password=None),
        Ed25519PrivateKey,
    )


def parse_verify_key(value: str, name: str):
    """An Ed25519 public key from ``value``; ConfigurationError naming ``name`` when bad."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    return _parse_ed25519(value, name, Ed25519PublicKey.from_public_bytes, load_pem_public_key, Ed25519PublicKey)


def _parse_ed25519(value, name, from_raw, from_pem, kind):
    value = value.strip()
    try:
        if value.startswith("-----BEGIN"):
            key = from_pem(value.encode("ascii"))
        else:
            raw = base64.b64decode(value, validate=True)
            if len(raw) != 32:
                raise ValueError(f"{len(raw)} bytes")
            key = from_raw(raw)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ConfigurationError(name, f"not an Ed25519 key (base64 of 32 bytes, or PEM): {exc}") from None
    if not isinstance(key, kind):
        raise ConfigurationError(name, "not an Ed25519 key")
    return key


def public_key_text(public_key) -> str:
    """The base64 of a public key's raw 32 bytes (what AUDIT_VERIFY_KEY takes)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return base64.b64encode(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode("ascii")
