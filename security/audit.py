"""The audit trail: registration with django-auditlog, auth events, the hash chain, retention.

Public functions others call:

- ``record_auth_event(action, ...)``: an authentication/security entry (login, logout,
  login_failed, password_change, password_reset, mfa_enabled, mfa_disabled).
- ``record_security_event(event_type, ...)``: a ``security_events`` row.
- ``rechain(org_id=None, accept=())``: the operator's repair (``rechain_audit_log``): adopt
  entries that were written without a hash, named one by one, and re-link what follows.
  Every write path hashes its entries (``append_to_chain``, ``bulk_append``, the importer's
  ``legacy.migration.writer.AuditChain``); an entry without a hash is reported broken, never chained.
- ``verify_chain(org_id)`` / ``verify_all()``: the first broken link, if any.
- ``purge_expired(org)``: the retention purge (``security.audit_retention_days``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import operator
import time
import uuid
from dataclasses import dataclass, field

from django.apps import apps
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ImproperlyConfigured
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connections, models, router, transaction
from django.utils import timezone

from accounts.models import Organization, User
from agentforge_core import native
from agentforge_core.crypto import sha256_hex
from agentforge_core.fields import encrypted_fields
from agentforge_core.jsontext import json_encoder
from agentforge_core.models import held_to_active_org
from agentforge_core.tenancy import ALL_ORGS, OrgScopeError, current_org, resolve_org, unscoped
from security import checkpoints
from security.middleware import client_ip, request_context
from security.models import AuditChainHead, AuditLog, SecurityEvent
from settings_app.models import OrgSetting, SystemSetting

logger = logging.getLogger("agentforge.audit")

SYSTEM_CHAIN = "system"
HASH_VERSION = 1
DEFAULT_RETENTION_DAYS = 365

# Apps whose models are audited (create/update/delete through the ORM).
AUDITED_APPS = ("accounts", "agents", "knowledge", "conversations", "security", "settings_app", "legacy")
# Not audited: the trail itself, security events (their own log), login sessions (login and
# logout are audited as events), and the two high-volume content tables (chat messages and
# document chunks with embeddings), whose rows would double the storage of every chat.
NOT_AUDITED_MODELS = frozenset(
    {
        "security.AuditLog",
        "security.AuditChainHead",
        "security.SecurityEvent",
        "accounts.UserSession",
        "accounts.HashedSession",
        "conversations.Message",
        "knowledge.DocumentChunk",
    }
)
# Never in a diff, on any model: credentials and their hashes, and fields that change on
# every request (a save that changes only these writes no entry).
ALWAYS_EXCLUDED_FIELDS = frozenset(
    {
        "password",
        "backup_codes",
        "updated_at",
        "last_login",
        "last_active",
        "last_seen_at",
        "last_used_at",
        "last_used_ip",
    }
)

# Legacy vocabulary (docs/legacy-format.md §7).
LEGACY_ACTION_FOR = {0: "create", 1: "update", 2: "delete", 3: "read"}
RESOURCE_TYPES = {
    "accounts.User": "user",
    "accounts.Role": "role",
    "accounts.Organization": "organization",
    "accounts.Department": "department",
    "accounts.Group": "group",
    "accounts.UserSession": "session",
    "agents.Agent": "agent",
    "agents.Tool": "tool",
    "knowledge.Document": "document",
    "conversations.Conversation": "conversation",
    "settings_app.SystemSetting": "settings",
    "settings_app.OrgSetting": "settings",
}
# Numeric auditlog action for each auth event.
AUTH_EVENT_ACTIONS = {
    "login": 3,
    "logout": 3,
    "login_failed": 3,
    "password_change": 1,
    "password_reset": 1,
    "mfa_enabled": 1,
    "mfa_disabled": 1,
    "sessions_revoked": 1,  # accounts.tokens.end_sessions: details say why
}


class AuditChainError(Exception):
    """The chain cannot be extended or repaired without hiding a change."""


# --------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------


def excluded_fields(model) -> list[str]:
    """Fields of ``model`` never written to an audit diff: secrets are excluded, not masked."""
    names = {f.name for f in encrypted_fields(model)}
    for f in model._meta.concrete_fields:
        if f.name in ALWAYS_EXCLUDED_FIELDS or f.name.endswith("_hash") or f.name.endswith("_token"):
            names.add(f.name)
    return sorted(names)


def audited_models() -> list:
    return [
        model
        for model in apps.get_models()
        if model._meta.app_label in AUDITED_APPS
        and model._meta.label not in NOT_AUDITED_MODELS
        and not model._meta.proxy
    ]


def register_models() -> None:
    """Register our models with django-auditlog (called from SecurityConfig.ready)."""
    from auditlog.registry import auditlog

    for model in audited_models():
        if auditlog.contains(model):
            auditlog.unregister(model)
        auditlog.register(model, exclude_fields=excluded_fields(model))


def _rows_for_auditlog(model):
    """The rows django-auditlog reads ``model`` through (the stored version of a row it diffs
    before an update, a foreign key it displays): the base manager, as
    AUDITLOG_USE_BASE_MANAGER asks, held to the active organization when one is active. The
    base manager goes by primary key whatever the instance says, so inside ``org_scope(A)``
    an instance pointed at B's row wrote B's columns into A's audit trail."""
    return held_to_active_org(model._meta.base_manager.all())


def hold_auditlog_reads_to_active_org() -> None:
    """Route django-auditlog's one reader of rows (bound in two of its modules) through
    :func:`_rows_for_auditlog` (called from SecurityConfig.ready)."""
    import auditlog.models
    import auditlog.receivers

    for module in (auditlog.models, auditlog.receivers):
        # A private name: if a django-auditlog upgrade renames it, stop here rather than
        # set an attribute nothing reads and lose the hold silently.
        if not callable(getattr(module, "_get_manager_from_settings", None)):
            raise ImproperlyConfigured(
                f"{module.__name__}._get_manager_from_settings is gone: django-auditlog changed how it "
                "reads rows; security.audit.hold_auditlog_reads_to_active_org needs updating"
            )
        module._get_manager_from_settings = _rows_for_auditlog


def org_id_of(instance):
    """The organization an audited row belongs to (the organization itself for Organization)."""
    if instance._meta.label == "accounts.Organization":
        return instance.pk
    return getattr(instance, "org_id", None)


def resource_type_of(model) -> str:
    return RESOURCE_TYPES.get(model._meta.label, model._meta.model_name)[:40]


# --------------------------------------------------------------------------------------
# Filling entries
# --------------------------------------------------------------------------------------


def _active_org_id():
    active = current_org()
    if active is None or active is ALL_ORGS:
        return None
    return active


def fill_request_context(entry) -> None:
    """Organization, user agent, session, path, method and IP from the current request."""
    ctx = request_context()
    if entry.org_id is None and not entry.legacy_id:
        entry.org_id = _active_org_id()
    if entry.remote_addr is None and ctx.get("ip_address"):
        entry.remote_addr = ctx["ip_address"]
    if entry.user_agent is None and ctx.get("user_agent") is not None:
        entry.user_agent = ctx["user_agent"]
    if entry.request_path is None and ctx.get("request_path"):
        entry.request_path = ctx["request_path"]
    if entry.request_method is None and ctx.get("request_method"):
        entry.request_method = ctx["request_method"]
    if entry.request_id is None and ctx.get("request_id"):
        entry.request_id = ctx["request_id"][:128]
    if entry.session_id is None and ctx.get("session_key"):
        entry.session_id = session_digest(ctx["session_key"])
    if entry.actor_id is not None and not entry.actor_email:
        try:
            actor = entry.actor
        except Exception:  # a dangling id (imported entries)
            actor = None
        if actor is not None:
            entry.actor_email = actor.email
            if not entry.user_name:
                entry.user_name = actor.get_full_name()[:255]
    if not entry.legacy_action and entry.action is not None:
        entry.legacy_action = LEGACY_ACTION_FOR.get(entry.action, "")
    if entry.resource_name is None and entry.object_repr:
        entry.resource_name = entry.object_repr
    if entry.timestamp is None:
        entry.timestamp = timezone.now()


def session_digest(session_key: str | None) -> str | None:
    """Session keys are bearer credentials: the trail keeps only their SHA-256."""
    return sha256_hex(session_key) if session_key else None


# --------------------------------------------------------------------------------------
# The hash chain
# --------------------------------------------------------------------------------------


def _hashed_fields():
    return [f for f in AuditLog._meta.concrete_fields if f.name not in ("id", "prev_hash", "entry_hash")]


# The canonical text's encoder (sorted keys, no spaces, UTF-8 as is), and its encoding of one string.
_json_str = json.encoder.encode_basestring
_json_sorted = json_encoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_JSON_SCALARS = (str, int, float, bool, type(None))


def _plain_json(value) -> bool:
    """True when ``json.loads(json.dumps(value))`` is ``value`` itself: only JSON's own types,
    string keys (an int key would come back as a string, and sort differently)."""
    t = type(value)
    if t in _JSON_SCALARS:
        return True
    if t is dict:
        return all(type(k) is str and _plain_json(v) for k, v in value.items())
    if t is list:
        return all(_plain_json(v) for v in value)
    return False


_CLOCK = operator.attrgetter("year", "month", "day", "hour", "minute", "second", "microsecond")


def _utc_text(value) -> str | None:
    """A DateTimeField's canonical text (UTC, microseconds, "Z")."""
    if value is None:
        return None
    if value.tzinfo is not dt.timezone.utc:
        value = value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)
    if value.year < 1000:  # what stored hashes hold: strftime does not pad the year everywhere
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % _CLOCK(value)


def _quoted_utc_text(value) -> str:
    return '"' + _utc_text(value) + '"'


def _canonical_value(f, value):
    if value is None:
        return None
    if isinstance(f, models.DateTimeField):
        return _utc_text(value)
    if isinstance(f, models.JSONField):
        return json.loads(json.dumps(value, cls=DjangoJSONEncoder))
    if isinstance(f, models.GenericIPAddressField):
        return f.get_prep_value(value) or None
    if isinstance(f, models.BooleanField):
        return bool(value)
    if isinstance(f, (models.IntegerField, models.BigIntegerField, models.SmallIntegerField)) and not f.is_relation:
        return int(value)
    if f.is_relation:
        if f.name == "content_type":
            ct = ContentType.objects.get_for_id(value)
            return f"{ct.app_label}.{ct.model}"
        try:
            return str(uuid.UUID(str(value)))
        except ValueError:
            return str(value)
    value = str(value)
    return value or None  # Oracle stores "" as NULL


def canonical_bytes(entry, prev_hash: str) -> bytes:
    """The serialisation the hash covers: every stored column but id and the hashes."""
    data = {"v": HASH_VERSION, "prev_hash": prev_hash or ""}
    for f in _hashed_fields():
        data[f.column] = _canonical_value(f, getattr(entry, f.attname))
    return _json_sorted(data).encode("utf-8")


def compute_hash(entry, prev_hash: str) -> str:
    return hashlib.sha256(canonical_bytes(entry, prev_hash)).hexdigest()


class _QuotedUUIDs:
    """``'"' + str(u) + '"'``, remembered for the UUID objects met last: an import's entries
    repeat a few organization and user keys, as the same objects (the mappers' reference cache),
    and ``str(UUID)`` is Python code. Looked up by identity, the object kept beside its text so
    its id cannot be reused while it is in here."""

    LIMIT = 4096

    def __init__(self):
        self.texts: dict[int, tuple] = {}

    def text(self, value) -> str:
        known = self.texts.get(id(value))
        if known is not None and known[0] is value:
            return known[1]
        if len(self.texts) >= self.LIMIT:
            self.texts.clear()  # in place: the compiled function holds its get
        quoted = '"' + str(value) + '"'
        self.texts[id(value)] = (value, quoted)
        return quoted


class EntryHasher:
    """:func:`compute_hash` for entries given as dicts of plain values (the importer's bulk path).

    The same bytes as :func:`canonical_bytes`, written directly: the columns' JSON in sorted
    order, the common kinds (text, times, UUIDs, numbers, plain JSON) written by
    ``agentforge_core._native.CanonicalParts`` (or, when it is not built, by one Python function
    compiled once with each kind inline) and anything else through :func:`_canonical_value` and
    the canonical encoder. No dict is built and sorted per entry. The text before and after
    ``prev_hash`` does not depend on the chain, so the import pipeline builds it in its reader
    process and only :meth:`seal` runs in chain order. ``values`` must hold every hashed
    attribute (the writer fills in the defaults).
    """

    def __init__(self):
        fields = _hashed_fields()
        self.attnames = [f.attname for f in fields]
        slow = [lambda value, f=f: _json_sorted(_canonical_value(f, value)) for f in fields]
        # column -> (its expression in the Python function, its native column)
        columns = {"v": (repr(json.dumps(HASH_VERSION)), (None, native.CANON_LITERAL, None, json.dumps(HASH_VERSION)))}
        for i, f in enumerate(fields):
            # Each column's common kinds inline, None as null, anything else through slow[i].
            get, fallback, extra = f"v[{f.attname!r}]", f"slow[{i}](x)", None
            if isinstance(f, models.DateTimeField):
                kind, expr = native.CANON_TIME, f"""("null" if (x := {get}) is None else '"' + utc_text(x) + '"')"""
            elif isinstance(f, models.JSONField):
                kind, extra = native.CANON_JSON, _json_sorted
                expr = f'("null" if (x := {get}) is None else encode(x) if plain_json(x) else {fallback})'
            elif isinstance(f, models.GenericIPAddressField):  # IPv4 text is its own canonical form
                kind = native.CANON_IPV4
                expr = f'(string(x) if type(x := {get}) is str and x and ":" not in x else "null" if x is None else {fallback})'
            elif isinstance(f, models.BooleanField):
                kind = native.CANON_BOOL
                expr = f'("true" if (x := {get}) is True else "false" if x is False else "null" if x is None else {fallback})'
            elif f.is_relation and f.name != "content_type":
                # the remembered text inline (no call), else _QuotedUUIDs.text
                kind = native.CANON_UUID
                expr = (
                    f"((k[1] if (k := known(id(x))) is not None and k[0] is x else uuid_text(x))"
                    f' if type(x := {get}) is UUID else "null" if x is None else {fallback})'
                )
            elif isinstance(f, models.IntegerField) and not f.is_relation:
                kind = native.CANON_INT
                expr = f'(str(x) if type(x := {get}) is int else "null" if x is None else {fallback})'
            elif f.is_relation:  # content types: their natural key
                kind, expr = native.CANON_OPTIONAL, f'("null" if (x := {get}) is None else {fallback})'
            else:  # text; "" is hashed as null
                kind = native.CANON_TEXT
                expr = f'((string(x) if x else "null") if type(x := {get}) is str else "null" if x is None else {fallback})'
            # the native times hand over only what is not UTC: the whole quoted text
            native_slow = _quoted_utc_text if kind == native.CANON_TIME else slow[i]
            columns[f.column] = (expr, (f.attname, kind, native_slow, extra))
        texts, native_columns = [], []
        for n, name in enumerate(sorted([*columns, "prev_hash"])):  # json's sort_keys order
            key = ("{" if n == 0 else ",") + json.dumps(name) + ":"
            texts.append(repr(key))
            native_columns.append((None, native.CANON_LITERAL, None, key))
            if name == "prev_hash":  # its value is the chain's: the text splits here
                head, texts, split = texts, [], len(native_columns)
            else:
                texts.append(columns[name][0])
                native_columns.append(columns[name][1])
        native_columns.append((None, native.CANON_LITERAL, None, "}"))
        if native.CanonicalParts is not None:
            # parts(values): an entry's canonical JSON (UTF-8) around its prev_hash value (before, after)
            self.parts = native.CanonicalParts(native_columns, split)
            return
        source = f"def parts(v):\n    return join(({', '.join(head)},)).encode(), join(({', '.join(texts)}, '}}')).encode()\n"
        uuids = _QuotedUUIDs()
        namespace = {
            "utc_text": _utc_text,
            "plain_json": _plain_json,
            "encode": _json_sorted,
            "string": _json_str,
            "slow": slow,
            "UUID": uuid.UUID,
            "uuid_text": uuids.text,
            "known": uuids.texts.get,
            "join": "".join,
        }
        exec(compile(source, "<audit canonical>", "exec"), namespace)
        self.parts = namespace["parts"]

    @staticmethod
    def seal(head: bytes, tail: bytes, prev_hash: str) -> str:
        return hashlib.sha256(head + _json_str(prev_hash or "").encode() + tail).hexdigest()

    def hash(self, values: dict, prev_hash: str) -> str:
        return self.seal(*self.parts(values), prev_hash)


def chain_key(org_id) -> str:
    return SYSTEM_CHAIN if org_id is None else str(org_id)


def _chain_queryset(key: str):
    base = AuditLog.all_orgs.all()
    return base.filter(org_id__isnull=True) if key == SYSTEM_CHAIN else base.filter(org_id=uuid.UUID(key))


HEAD_MOVES = ["last_id", "last_hash", "updated_at"]  # what appending to a chain changes in its head


def _lock_head(key: str, using: str):
    heads = AuditChainHead.objects.using(using).select_for_update()
    head = heads.filter(chain_key=key).first()
    if head is None:
        try:
            with transaction.atomic(using=using):
                AuditChainHead.objects.using(using).create(chain_key=key)
        except IntegrityError:
            pass  # created concurrently
        head = heads.get(chain_key=key)
    return head


def _set_pg_flag(using: str, name: str, on: bool) -> None:
    connection = connections[using]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config(%s, %s, true)", [f"agentforge.{name}", "on" if on else "off"])


def _write_hashes(entry, prev_hash: str, entry_hash: str, using: str) -> None:
    models.QuerySet.update(
        AuditLog.all_orgs.using(using).filter(pk=entry.pk), prev_hash=prev_hash, entry_hash=entry_hash
    )
    entry.prev_hash, entry.entry_hash = prev_hash, entry_hash


def _rechain_locked(head, using: str, accept=frozenset(), batch_size: int = 500) -> tuple[list, int]:
    """Re-link one chain whose head is locked: hash the entries of ``accept`` that have no
    hash, recompute the links of intact entries after them; returns (adopted ids, relinked).

    An entry without a hash that the operator did not name, and an entry whose content no
    longer matches its hash, stop the rechain (AuditChainError): blessing either would hide
    a forged or altered row."""
    qs = _chain_queryset(head.chain_key).using(using)
    starts = [
        qs.filter(entry_hash="").order_by("id").values_list("id", flat=True).first(),
        qs.filter(id__gt=head.last_id).order_by("id").values_list("id", flat=True).first(),
    ]
    starts = [s for s in starts if s is not None]
    if not starts:
        return [], 0
    start = min(starts)
    signed = _signed_checkpoint(head.chain_key, using)
    if signed is not None and start <= signed.last_id:
        raise AuditChainError(
            f"audit entry {start} (chain {head.chain_key}) is covered by {signed.describe()}: "
            "re-hashing it would rewrite signed history (run verify_audit_log)"
        )
    before = qs.filter(id__lt=start).order_by("-id").values_list("id", "entry_hash").first()
    prev = before[1] if before else head.anchor_hash
    last_id = before[0] if before else head.anchor_id
    adopted, relinked = [], 0
    _set_pg_flag(using, "audit_rechain", True)
    try:
        cursor_id = start - 1
        while True:
            batch = list(qs.filter(id__gt=cursor_id).order_by("id")[:batch_size])
            if not batch:
                break
            for entry in batch:
                if not entry.entry_hash:
                    if entry.pk not in accept:
                        raise AuditChainError(
                            f"audit entry {entry.pk} (chain {head.chain_key}) has no hash: it was written around "
                            "the application or its hash was removed; check it, then name it with --accept "
                            f"{entry.pk} to adopt it"
                        )
                    new = compute_hash(entry, prev)
                    _write_hashes(entry, prev, new, using)
                    adopted.append(entry.pk)
                else:
                    if compute_hash(entry, entry.prev_hash) != entry.entry_hash:
                        raise AuditChainError(
                            f"audit entry {entry.pk} (chain {head.chain_key}) does not match its hash: "
                            "it was altered; refusing to rechain over it (run verify_audit_log)"
                        )
                    new = entry.entry_hash
                    if entry.prev_hash != prev:
                        new = compute_hash(entry, prev)
                        _write_hashes(entry, prev, new, using)
                        relinked += 1
                prev, last_id = new, entry.pk
            cursor_id = batch[-1].pk
    finally:
        _set_pg_flag(using, "audit_rechain", False)
    head.last_id, head.last_hash, head.updated_at = last_id, prev, timezone.now()
    head.save(using=using)
    return adopted, relinked


def refuse_another_organizations_entry(entry) -> None:
    """Inside an organization, entries go to its chain (or the system chain) only.

    Row-level security refuses the INSERT on PostgreSQL; elsewhere code running for one
    organization wrote an entry, in that organization's name, into another's trail."""
    active = _active_org_id()
    if active is not None and entry.org_id is not None and uuid.UUID(str(entry.org_id)) != active:
        raise OrgScopeError(f"audit entry of organization {entry.org_id} written while {active} is active")


@contextlib.contextmanager
def append_to_chain(entry, using: str | None = None):
    """Around the INSERT of one entry: lock the chain, set the hashes, move the head.

    The entry follows the head, not whatever was inserted around the application since:
    such a row keeps its missing or wrong hash and ``verify_audit_log`` reports it."""
    refuse_another_organizations_entry(entry)
    using = using or router.db_for_write(type(entry))
    head = _lock_head(chain_key(entry.org_id), using)
    entry.prev_hash = head.last_hash
    entry.entry_hash = compute_hash(entry, entry.prev_hash)
    yield
    head.last_id, head.last_hash, head.updated_at = entry.pk, entry.entry_hash, timezone.now()
    head.save(using=using, update_fields=HEAD_MOVES)  # one UPDATE of what moved, per entry
    transaction.on_commit(lambda key=head.chain_key: _checkpoint_if_due(key, using), using=using)


def bulk_append(entries, insert, using: str):
    """``AuditLog.all_orgs.bulk_create``: hash ``entries`` in list order, chain by chain, then
    ``insert(entries)`` (ids follow the list order) and move each chain's head."""
    entries = list(entries)
    for entry in entries:
        refuse_another_organizations_entry(entry)
    with transaction.atomic(using=using):
        heads = {key: _lock_head(key, using) for key in sorted({chain_key(e.org_id) for e in entries})}
        last = {key: head.last_hash for key, head in heads.items()}
        for entry in entries:
            if entry.timestamp is None:
                entry.timestamp = timezone.now()
            key = chain_key(entry.org_id)
            entry.prev_hash = last[key]
            entry.entry_hash = last[key] = compute_hash(entry, entry.prev_hash)
        created = insert(entries)
        for key, head in heads.items():
            head.last_id = _chain_queryset(key).using(using).aggregate(m=models.Max("id"))["m"] or head.last_id
            head.last_hash, head.updated_at = last[key], timezone.now()
            head.save(using=using)
            transaction.on_commit(lambda key=key: _checkpoint_if_due(key, using), using=using)
    return created


def _chain_keys_with_entries(using: str) -> list[str]:
    keys = {chain_key(org_id) for org_id in AuditLog.all_orgs.using(using).values_list("org_id", flat=True).distinct()}
    keys |= set(AuditChainHead.objects.using(using).values_list("chain_key", flat=True))
    return sorted(keys)


def _key_for(org_id) -> str:
    if org_id == SYSTEM_CHAIN:
        return SYSTEM_CHAIN

    if isinstance(org_id, Organization):
        return str(org_id.pk)
    try:
        return str(uuid.UUID(str(org_id)))
    except ValueError:
        return str(resolve_org(org_id))


def rechain(org_id=None, accept=(), using: str = "default") -> int:
    """The operator's repair of a chain: adopt the entries without a hash listed in ``accept``
    (ids, after checking them) and re-link what follows; returns how many entries changed.

    ``org_id=None`` does every chain; pass an organization (object, UUID or legacy id) or
    ``SYSTEM_CHAIN`` for one. An altered entry, or one without a hash that is not in
    ``accept``, raises AuditChainError and nothing changes. A rechain that changed anything
    is itself recorded in the chain (``audit_rechain``).
    """
    accept = frozenset(int(pk) for pk in accept)
    keys = _chain_keys_with_entries(using) if org_id is None else [_key_for(org_id)]
    total = 0
    for key in keys:
        with transaction.atomic(using=using):
            head = _lock_head(key, using)
            adopted, relinked = _rechain_locked(head, using, accept)
            if adopted or relinked:
                record_system_event(
                    "update",
                    org_id=None if key == SYSTEM_CHAIN else uuid.UUID(key),
                    details={"event": "audit_rechain", "adopted": adopted, "relinked": relinked},
                )
        if (adopted or relinked) and checkpoints.signing_key() is not None:
            checkpoint_chain(key, using=using, reason="rechain")
        total += len(adopted) + relinked
    return total


@dataclass
class ChainReport:
    chain: str
    checked: int = 0
    broken_id: int | None = None
    reason: str = ""
    details: dict = field(default_factory=dict)
    last_id: int = 0  # the last entry walked and its hash (a verified chain's tip)
    last_hash: str = ""
    checkpoint: checkpoints.Checkpoint | None = None  # the latest signed one, if any

    @property
    def ok(self) -> bool:
        return self.broken_id is None and not self.reason


def _walk(
    report: ChainReport,
    qs,
    prev: str,
    last_id: int,
    after_id: int = 0,
    count: int = 0,
    checkpoint=None,
    batch_size: int = 1000,
) -> int:
    """Check the entries of ``qs`` after ``after_id`` in id order, the first expected to follow
    ``prev`` (entry ``last_id``); stop at the first broken link (``report.reason``). Entry
    number ``checkpoint.count`` must be the one the checkpoint signed. Returns the count."""
    cursor_id = after_id
    while True:
        batch = list(qs.filter(id__gt=cursor_id).order_by("id")[:batch_size])
        if not batch:
            break
        for entry in batch:
            report.checked += 1
            count += 1
            if not entry.entry_hash:
                report.broken_id = entry.pk
                report.reason = "entry has no hash: written around the application, or its hash was removed"
                return count
            if entry.prev_hash != prev:
                report.broken_id = entry.pk
                report.reason = (
                    f"prev_hash does not match the previous entry ({last_id or 'chain start'}): "
                    "an entry was removed, inserted or reordered"
                )
                return count
            if compute_hash(entry, entry.prev_hash) != entry.entry_hash:
                report.broken_id, report.reason = entry.pk, "content does not match entry_hash: the entry was altered"
                return count
            if (
                checkpoint is not None
                and count == checkpoint.count
                and (entry.pk != checkpoint.last_id or entry.entry_hash != checkpoint.head_hash)
            ):
                report.broken_id = entry.pk
                report.reason = (
                    f"entry number {count} is {entry.pk}, {checkpoint.describe()} signed entry {checkpoint.last_id} "
                    "with another hash: the chain was rewritten, or restored from an older backup and written since"
                )
                return count
            prev, last_id = entry.entry_hash, entry.pk
        cursor_id = batch[-1].pk
    report.last_id, report.last_hash = last_id, prev
    return count


def verify_chain(org_id, using: str = "default", batch_size: int = 1000) -> ChainReport:
    """Walk one chain in id order and report the first broken link; with a verify key, hold
    it against its latest signed checkpoint (``security.checkpoints``)."""
    key = _key_for(org_id) if org_id is not None else SYSTEM_CHAIN
    report = ChainReport(chain=key)
    head = AuditChainHead.objects.using(using).filter(chain_key=key).first()
    public = checkpoints.verify_key()
    if public is not None:
        report.checkpoint, problem = checkpoints.CheckpointStore().latest(key, public)
        if problem:
            report.reason = problem
            return report
    cp = report.checkpoint
    if cp is not None:  # the anchor of the last purge is signed too; the database's may be forged
        prev, last_id = cp.anchor_hash, cp.anchor_id
    else:
        prev, last_id = (head.anchor_hash, head.anchor_id) if head else ("", 0)
    count = _walk(report, _chain_queryset(key).using(using), prev, last_id, checkpoint=cp, batch_size=batch_size)
    if not report.ok:
        return report
    if cp is not None and count < cp.count:
        report.broken_id = report.last_id or None
        report.reason = (
            f"{count} entries where {cp.describe()} counts {cp.count} (up to entry {cp.last_id}): entries were "
            "removed from the end, the chain was deleted, or the database was restored from an older backup"
        )
    elif head is not None and (head.last_id != report.last_id or head.last_hash != report.last_hash):
        report.reason = (
            f"chain head expects entry {head.last_id} last, found {report.last_id or 'none'}: "
            "entries were removed from the end"
        )
        report.broken_id = report.last_id or head.last_id
    return report


def chain_keys(using: str = "default") -> list[str]:
    """Every chain of the database, and every chain with a signed checkpoint (a chain deleted
    with its head still has its checkpoints)."""
    keys = set(_chain_keys_with_entries(using))
    if checkpoints.verify_key() is not None:
        keys |= set(checkpoints.CheckpointStore().chains())
    return sorted(keys)


def verify_all(using: str = "default") -> list[ChainReport]:
    return [verify_chain(key, using=using) for key in chain_keys(using)]


# --------------------------------------------------------------------------------------
# Signed checkpoints
# --------------------------------------------------------------------------------------


def checkpoint_chain(org_id, using: str = "default", reason: str = "command") -> checkpoints.Checkpoint:
    """Sign the chain's current state into the checkpoint store.

    Only what is new since the latest checkpoint is walked; the chain must extend that
    checkpoint (same entries before it, by count) or nothing is signed (AuditChainError)."""
    key = _key_for(org_id) if org_id is not None else SYSTEM_CHAIN
    private = checkpoints.signing_key()
    if private is None:
        raise checkpoints.CheckpointError("no AUDIT_SIGNING_KEY: checkpoints cannot be signed")
    store = checkpoints.CheckpointStore()
    with transaction.atomic(using=using):
        head = _lock_head(key, using)
        latest, problem = store.latest(key, private.public_key())
        if problem:
            raise checkpoints.CheckpointError(f"refusing to extend a damaged checkpoint file: {problem}")
        qs = _chain_queryset(key).using(using)
        report = ChainReport(chain=key)
        if latest is None:  # the first checkpoint: the whole chain must verify
            anchor = (head.anchor_id, head.anchor_hash)
            count = _walk(report, qs, anchor[1], anchor[0])
        else:
            anchor = (latest.anchor_id, latest.anchor_hash)
            start = (latest.last_id, latest.head_hash) if latest.count else anchor
            count = _walk(report, qs, start[1], start[0], after_id=start[0], count=latest.count)
            if report.ok and qs.count() != count:
                report.reason = (
                    f"{qs.count()} entries where {latest.describe()} and the entries since make {count}: "
                    "entries before the checkpoint were removed or inserted"
                )
        if not report.ok:
            raise AuditChainError(
                f"chain {key} does not verify, refusing to sign it: {report.reason} (entry {report.broken_id})"
            )
        return store.append(
            private,
            chain=key,
            reason=reason,
            count=count,
            last_id=report.last_id,
            head_hash=report.last_hash,
            anchor_id=anchor[0],
            anchor_hash=anchor[1],
        )


_last_signed: dict[str, float] = {}  # chain key -> when this process last saw it signed


def _checkpoint_if_due(key: str, using: str) -> None:
    """After a commit that extended chain ``key``: sign it when AUDIT_CHECKPOINT_INTERVAL
    seconds have passed since its latest checkpoint. A failure is logged, never raised into
    the request that wrote the entry."""
    interval = settings.AUDIT_CHECKPOINT_INTERVAL
    private = checkpoints.signing_key()
    if private is None or interval <= 0:
        return
    now = time.time()
    last = _last_signed.get(key)
    if last is None:
        latest, _problem = checkpoints.CheckpointStore().latest(key, private.public_key())
        last = dt.datetime.fromisoformat(latest.time).timestamp() if latest else 0.0
    if now - last < interval:
        _last_signed[key] = last
        return
    _last_signed[key] = now  # one attempt per interval, even when it fails
    try:
        checkpoint_chain(key, using=using, reason="interval")
    except Exception:
        logger.exception("audit chain %s: the checkpoint is due and could not be signed", key)


def _signed_checkpoint(key: str, using: str):
    """The latest checkpoint of ``key`` when checkpoints are in use (for the rechain's refusal)."""
    public = checkpoints.verify_key()
    if public is None:
        return None
    latest, problem = checkpoints.CheckpointStore().latest(key, public)
    if problem:
        raise AuditChainError(problem)
    return latest


# --------------------------------------------------------------------------------------
# Retention
# --------------------------------------------------------------------------------------


def retention_days(org_id) -> int:
    """``security.audit_retention_days`` of the organization (365 by default, 0 = keep forever)."""
    if org_id is None:
        row = SystemSetting.objects.filter(key="security.audit_retention_days").values_list("value", flat=True).first()
    else:
        row = (
            OrgSetting.all_orgs.filter(org_id=org_id, key="security.audit_retention_days")
            .values_list("value", flat=True)
            .first()
        )
    try:
        return DEFAULT_RETENTION_DAYS if row is None else max(int(row), 0)
    except (TypeError, ValueError):
        return DEFAULT_RETENTION_DAYS


def _delete_prefix(qs, org_id, last_id: int, cutoff, using: str) -> int:
    """Delete the chain's entries up to ``last_id``. On PostgreSQL through the function the
    owner role created (``security`` migration 0004), the only way past the trigger."""
    connection = connections[using]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT agentforge_audit_purge(%s, %s, %s)", [org_id, last_id, cutoff])
            return cursor.fetchone()[0]
    deleted, _ = models.QuerySet.delete(qs.filter(id__lte=last_id))
    return deleted


def purge_expired(org, now=None, using: str = "default", dry_run: bool = False) -> int:
    """Delete the organization's entries older than its retention; returns how many
    (with ``dry_run``, how many would go, and nothing changes).

    Only a prefix of the chain is removed (entries up to the oldest one still within
    retention), so what stays verifies: the last removed entry becomes the chain's anchor.
    The chain must verify first (a purge never removes the evidence of a break), and the
    state after it is signed as a checkpoint when a signing key is set.
    ``org=None`` purges the chain of entries without an organization.
    """
    org_id = None if org is None else uuid.UUID(_key_for(org))
    days = retention_days(org_id)
    if days <= 0:
        return 0
    cutoff = (now or timezone.now()) - dt.timedelta(days=days)
    key = chain_key(org_id)
    with transaction.atomic(using=using):
        head = _lock_head(key, using)
        qs = _chain_queryset(key).using(using)
        keep_from = qs.filter(timestamp__gte=cutoff).order_by("id").values_list("id", flat=True).first()
        doomed = qs if keep_from is None else qs.filter(id__lt=keep_from)
        last = doomed.order_by("-id").values_list("id", "entry_hash").first()
        if last is None:
            return 0
        if dry_run:
            return doomed.count()
        report = verify_chain(key, using=using)
        if not report.ok:
            raise AuditChainError(
                f"chain {key} does not verify (entry {report.broken_id}: {report.reason}); refusing to purge it"
            )
        deleted = _delete_prefix(qs, org_id, last[0], cutoff, using)
        head.anchor_id, head.anchor_hash = last
        head.save(using=using)
        private = checkpoints.signing_key()
        if private is not None:
            checkpoints.CheckpointStore().append(
                private,
                chain=key,
                reason="purge",
                count=report.checked - deleted,
                last_id=report.last_id,
                head_hash=report.last_hash,
                anchor_id=last[0],
                anchor_hash=last[1],
            )
    record_system_event(
        "delete",
        org_id=org_id,
        details={"event": "audit_purge", "deleted": deleted, "cutoff": cutoff.isoformat(), "retention_days": days},
    )
    return deleted


# --------------------------------------------------------------------------------------
# Writing events
# --------------------------------------------------------------------------------------


def _request_fields(request) -> dict:
    if request is None:
        return {}
    session = getattr(request, "session", None)
    return {
        "remote_addr": client_ip(request),
        "user_agent": request.META.get("HTTP_USER_AGENT", ""),
        "request_path": request.path,
        "request_method": request.method,
        "session_id": session_digest(getattr(session, "session_key", None)),
    }


def record_auth_event(
    action: str,
    *,
    user=None,
    email: str = "",
    org_id=None,
    success: bool = True,
    request=None,
    error: str | None = None,
    details: dict | None = None,
    actor=None,
):
    """One authentication entry (legacy action names: login, logout, login_failed, ...)."""
    if action not in AUTH_EVENT_ACTIONS:
        raise ValueError(f"unknown auth event {action!r}")
    if actor is None and action in SELF_EVENTS:
        actor = user
    elif actor is None:
        actor = _context_actor() or user
    entry = AuditLog(
        action=AUTH_EVENT_ACTIONS[action],
        legacy_action=action,
        content_type=ContentType.objects.get_for_model(User),
        object_pk=str(user.pk) if user is not None else "",
        object_repr=(user.email if user is not None else email)[:2000],
        resource_type="user",
        resource_id=str(user.pk) if user is not None else None,
        resource_name=(user.email if user is not None else email) or None,
        actor=actor,
        actor_email=(user.email if user is not None else email) or None,
        user_name=(user.get_full_name() if user is not None else "")[:255],
        legacy_user_id=getattr(user, "legacy_id", None) if user is not None else None,
        org_id=org_id if org_id is not None else getattr(user, "org_id", None),
        success=success,
        error_message=error,
        additional_data=details or None,
        **_request_fields(request),
    )
    with unscoped():
        entry.save()
    return entry


SELF_EVENTS = frozenset({"login", "logout", "login_failed"})


def _context_actor():
    """The signed-in user of the current request, as django-auditlog's middleware saw it."""
    from auditlog.context import auditlog_value

    try:
        actor = auditlog_value.get().get("actor")
    except LookupError:
        return None
    return actor if getattr(actor, "is_authenticated", False) else None


def record_system_event(legacy_action: str, *, org_id=None, details=None, success=True):
    entry = AuditLog(
        action=LEGACY_ACTION_FOR_REVERSE.get(legacy_action, 3),
        legacy_action=legacy_action,
        org_id=org_id,
        success=success,
        additional_data=details or None,
    )
    with unscoped():
        entry.save()
    return entry


LEGACY_ACTION_FOR_REVERSE = {v: k for k, v in LEGACY_ACTION_FOR.items()}


def record_security_event(
    event_type: str,
    *,
    user=None,
    email: str = "",
    org_id=None,
    severity: str = "warning",
    request=None,
    details: dict | None = None,
):
    """A ``security_events`` row with the request's IP and user agent."""
    ctx = request_context()
    ip = client_ip(request) if request is not None else ctx.get("ip_address")
    agent = request.META.get("HTTP_USER_AGENT", "") if request is not None else ctx.get("user_agent") or ""
    with unscoped():
        return SecurityEvent.objects.create(
            org_id=org_id if org_id is not None else getattr(user, "org_id", None),
            event_type=event_type,
            severity=severity,
            user=user,
            email=(email or getattr(user, "email", "") or "")[:254],
            ip_address=ip,
            user_agent=agent or "",
            details=details or {},
        )
