"""Data written by AgentForge's own code (tests/fixtures/agentforge) and checks that stand in for its code.

The fixtures were written by AgentForge's FastAPI app at two commits (see the README beside them).
The test suite cannot run AgentForge, so two of its rules are re-implemented here from its source,
independently of this project's code: the shapes its Pydantic models load (``shapes.json``, generated
from the models by ``tests/tools/agentforge_shapes.py``) and its ``PasswordService.verify_password``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent / "fixtures" / "agentforge"
# fixture directory -> the label of its era in shapes.json
ERAS = {"first-57dc2c9": "57dc2c9", "last-json-effb5d0": "effb5d0"}
JSON_TYPES = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def fixture(name: str) -> Path:
    return ROOT / name


def credentials(name: str) -> dict:
    return json.loads((fixture(name) / "credentials.json").read_text(encoding="utf-8"))


def shapes(era: str) -> dict:
    return json.loads((ROOT / "shapes.json").read_text(encoding="utf-8"))["eras"][era]


def agentforge_verify(password: str, stored) -> bool:
    """AgentForge's PasswordService.verify_password: PBKDF2-SHA256 keyed by the salt's text.

    ``<salt>$<iterations>$<hex>`` or ``<salt>$<hex>`` (100,000 iterations); anything else never
    matches. Written from AgentForge's code, independently of ``legacy.format.passwords``.
    """
    try:
        parts = stored.split("$")
        if len(parts) == 2:
            salt, key_hex = parts
            iterations = 100_000
        else:
            salt, iterations_text, key_hex = parts
            iterations = int(iterations_text)
        key = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt.encode("utf-8"), iterations)
        return hmac.compare_digest(key.hex(), key_hex)
    except Exception:  # noqa: BLE001 - AgentForge treats every error as "no match"
        return False


def agentforge_backup_code_matches(code: str, stored_codes) -> bool:
    """AgentForge normalises a backup code (upper case, no '-' or spaces) before checking it."""
    normalised = code.upper().replace("-", "").replace(" ", "")
    return any(agentforge_verify(normalised, stored) for stored in stored_codes or [])


def totp(secret: str, at: float | None = None, digits: int = 6, step: int = 30) -> str:
    """The TOTP code (RFC 6238, SHA-1) an authenticator app shows for AgentForge's base32 secret."""
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    counter = int((time.time() if at is None else at) // step)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    number = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10**digits).zfill(digits)


def value_problems(shape: dict, value, models: dict, where: str) -> list[str]:
    """Why ``value`` would not load into a field of this shape (empty when it loads)."""
    kind = shape["type"]
    if kind == "any":  # typing.Any: Pydantic takes anything, null included
        return []
    if value is None:
        return [] if shape.get("nullable") else [f"{where}: null where AgentForge requires a value"]
    if kind == "enum":
        return [] if value in shape["enum"] else [f"{where}: {value!r} is not one of {shape['enum']}"]
    if kind == "model":
        return record_problems(models[shape["model"]], value, models, where)
    if not isinstance(value, JSON_TYPES[kind]) or (kind in ("integer", "number") and isinstance(value, bool)):
        return [f"{where}: expected {kind}, got {type(value).__name__}"]
    if kind == "array":
        return [
            p for i, item in enumerate(value) for p in value_problems(shape["items"], item, models, f"{where}[{i}]")
        ]
    if kind == "object" and "values" in shape:
        return [p for k, item in value.items() for p in value_problems(shape["values"], item, models, f"{where}.{k}")]
    return []


def record_problems(model: dict, record, models: dict, where: str) -> list[str]:
    if not isinstance(record, dict):
        return [f"{where}: expected an object, got {type(record).__name__}"]
    problems = []
    for field, shape in model["fields"].items():
        if field not in record:
            if shape["required"]:
                problems.append(f"{where}.{field}: missing, AgentForge requires it")
            continue
        problems += value_problems(shape, record[field], models, f"{where}.{field}")
    return problems


def data_dir_problems(data_dir: Path, era: str) -> list[str]:
    """Every reason AgentForge's models (of ``era``) would reject a record of ``data_dir``."""
    described = shapes(era)
    models = described["models"]
    problems = []
    for name, model_name in described["files"].items():
        path, _, inner = name.partition("#")
        file = Path(data_dir) / path
        if not file.exists():
            continue
        content = json.loads(file.read_text(encoding="utf-8"))
        if inner:
            content = content.get(inner, {})
        records = enumerate(content) if isinstance(content, list) else content.items()
        if path == "settings.json":
            records = [("settings", content)]
        for key, record in records:
            problems += record_problems(models[model_name], record, models, f"{name}: record {key}")
    return problems


def _nullable(model: dict, models: dict, prefix: str = "") -> set[str]:
    found = set()
    for field, shape in model["fields"].items():
        if shape["type"] == "model" and not shape.get("nullable"):
            found |= _nullable(models[shape["model"]], models, f"{prefix}{field}.")
        elif shape.get("nullable") and shape["type"] != "any":
            found.add(prefix + field)
    return found


def nullable_fields() -> dict[str, set[str]]:
    """Per file (``security/settings.json#settings`` for the settings object), the dotted fields
    AgentForge's models accept as ``null`` in either era: the only ones its loaders take as null."""
    found: dict[str, set[str]] = {}
    for era in ERAS.values():
        described = shapes(era)
        for name, model_name in described["files"].items():
            found.setdefault(name, set()).update(_nullable(described["models"][model_name], described["models"]))
    return {name: fields for name, fields in found.items() if fields}


def audit_entry_problems(entry: dict) -> list[str]:
    """Why AgentForge's AuditLog model (either era) would refuse ``entry`` (its loader then skips it);
    ``id`` and ``timestamp`` have defaults there but an exported entry must carry its own."""
    problems = [f"{name}: {entry.get(name)!r}" for name in ("id", "timestamp") if not isinstance(entry.get(name), str)]
    for era in ERAS.values():
        models = shapes(era)["models"]
        problems += record_problems(models["AuditLog"], entry, models, f"{era} AuditLog")
    return problems
