"""API keys: only a visible prefix and the SHA-256 of the key are stored.

A key reads ``afk_<8 hex>_<43 url-safe chars>``: the first 12 characters are the stored,
visible prefix (how a user recognises a key, and how it is found); the rest carries 256
random bits. ``APIKey.objects.create_key(...)`` returns ``(api_key, plaintext)`` once;
``APIKey.objects.get_from_key(plaintext)`` returns the key when it is valid, not revoked,
not expired, and its organization and user are active (comparing digests in constant
time), and records its use. Both also exist on ``APIKey.all_orgs`` (system work, and the
fast path authentication takes); ``objects`` is scoped to the active organization.
"""

from __future__ import annotations

import datetime as dt
import functools
import hmac
import secrets
import uuid

from django.conf import settings
from django.db import connections, models
from django.utils import timezone

from accounts.rls import as_orm_statement
from agentforge_core.crypto import sha256_hex
from agentforge_core.models import (
    AllOrgsManager,
    OrgOwnedModel,
    OrgScopedManager,
    OrgScopedQuerySet,
    org_foreign_key,
    org_index,
)
from agentforge_core.tenancy import ALL_ORGS, current_org
from security.middleware import request_context
from security.models.events import SecurityEvent
from settings_app.models import org_setting_values

KEY_PREFIX = "afk_"
DEFAULT_EXPIRY_DAYS = 365
_NOT_GIVEN = object()


def default_expiry_days(org_id) -> int:
    """The organization's ``security.api_key_expiry_days`` (365 by default; 0 = no expiry)."""
    value = org_setting_values(org_id).get("security.api_key_expiry_days")
    try:
        return DEFAULT_EXPIRY_DAYS if value is None else max(int(value), 0)
    except (TypeError, ValueError):
        return DEFAULT_EXPIRY_DAYS


def _split(plaintext: str):
    """(prefix, digest) of a presented key, or None when it is not shaped like one."""
    if not isinstance(plaintext, str) or not plaintext.startswith(KEY_PREFIX) or len(plaintext) > 256:
        return None
    prefix = plaintext[: len(KEY_PREFIX) + 8]
    if len(plaintext) < len(prefix) + 2 or plaintext[len(prefix)] != "_":
        return None
    return prefix, sha256_hex(plaintext)


class APIKeyQuerySet(OrgScopedQuerySet):
    def active(self):
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )

    def create_key(self, *, org=None, name: str, user=None, expires_at=_NOT_GIVEN, scopes=None, created_by=None):
        """Create a key; returns ``(api_key, plaintext)``. The plaintext is never stored.

        ``expires_at`` defaults to now + the organization's ``api_key_expiry_days``;
        pass ``None`` explicitly for a key that never expires.
        """
        org_id = getattr(org, "pk", org)
        if org_id is None and user is not None:
            org_id = user.org_id
        if org_id is None:
            active = current_org()
            org_id = None if active is ALL_ORGS else active
        if org_id is None:
            raise ValueError("create_key needs an organization (org=..., a user, or an active org_scope)")
        if user is not None and user.org_id != org_id:
            raise ValueError("the key's user belongs to another organization")
        if expires_at is _NOT_GIVEN:
            days = default_expiry_days(org_id)
            expires_at = timezone.now() + dt.timedelta(days=days) if days else None
        prefix = KEY_PREFIX + secrets.token_hex(4)
        plaintext = f"{prefix}_{secrets.token_urlsafe(32)}"
        key = self.model(
            org_id=org_id,
            name=name,
            prefix=prefix,
            key_hash=sha256_hex(plaintext),
            user=user,
            scopes=list(scopes or []),
            created_by=created_by,
            expires_at=expires_at,
        )
        key.save(force_insert=True, using=self.db)
        return key, plaintext

    def get_from_key(self, plaintext: str, *, ip: str | None = None, record_use: bool = True):
        """The valid key for ``plaintext`` (not revoked, not expired, its organization active
        and its user, if any, active), else None.

        Records the time and the client IP (``ip`` or the current request's) of the use.
        A key that exists but is refused writes a security event naming the reason.
        """
        parts = _split(plaintext)
        if parts is None:
            return None
        prefix, digest = parts
        if not self.query.has_filters():
            # The unscoped system manager (APIKey.all_orgs), as authentication uses it.
            match, user_active, org_active = _find_by_prefix(self.db, prefix, digest)
            active = current_org()
            if match is not None and active is not None and active is not ALL_ORGS and match.org_id != active:
                # Inside an organization another one's key is no key, as row-level security has
                # it on PostgreSQL (where the SELECT finds nothing): not used, no event.
                return None
        else:
            # A scoped (or filtered) queryset keeps the ORM, which compiles its org filter in.
            match = None
            # No ORDER BY: compiling the default ordering costs more than the indexed lookup.
            rows = self.filter(prefix=prefix).select_related("user").annotate(org_status=models.F("org__status"))
            for candidate in rows.order_by():
                if hmac.compare_digest(candidate.key_hash, digest):
                    match = candidate
            user_active = match is not None and (match.user_id is None or match.user.is_active)
            org_active = match is not None and match.org_status == _org_model().Status.ACTIVE
        if match is None or match.is_revoked or match.is_expired:
            candidates = list(self.filter(prefix=prefix)[:1]) if match is None else [match]
            if candidates:
                reason = "wrong_secret" if match is None else ("revoked" if match.is_revoked else "expired")
                _reject(candidates[0], reason)
            return None
        if not org_active:
            _reject(match, "org_inactive")
            return None
        if not user_active:
            _reject(match, "user_inactive")
            return None
        if record_use:
            _record_use(match, ip or request_context().get("ip_address"))
        return match


@functools.cache
def _prefix_lookup(alias: str):
    """The SELECT of a key by prefix with its user's and organization's status, and the
    converters of its columns, built once per database from the model's own fields."""
    connection = connections[alias]
    qn = connection.ops.quote_name
    meta = APIKey._meta
    fields = meta.concrete_fields
    user, org = meta.get_field("user"), meta.get_field("org")
    sql = (
        f"SELECT {', '.join('k.' + qn(f.column) for f in fields)}, u.{qn('status')}, o.{qn('status')} "
        f"FROM {qn(meta.db_table)} k "
        f"INNER JOIN {qn(org.related_model._meta.db_table)} o ON o.{qn(org.target_field.column)} = k.{qn(org.column)} "
        f"LEFT OUTER JOIN {qn(user.related_model._meta.db_table)} u ON u.{qn(user.target_field.column)} = k.{qn(user.column)} "
        f"WHERE k.{qn(meta.get_field('prefix').column)} = %s"
    )
    converters = []
    for field in fields:
        column = field.get_col(meta.db_table)
        converters.append((column, connection.ops.get_db_converters(column) + field.get_db_converters(connection)))
    attnames = [f.attname for f in fields]
    return sql, attnames, attnames.index("key_hash"), converters


def _find_by_prefix(alias: str, prefix: str, digest: str):
    """``(key, user active, organization active)`` for the key whose digest matches, else
    ``(None, False, False)``.

    The check every API request makes: the ORM spent most of it compiling the statement
    (about 0.5 ms of 0.8-1.1), so this runs one prepared, indexed SELECT and builds the key
    from its row as the ORM would (Model.from_db, the fields' own converters).
    """
    sql, attnames, hash_index, converters = _prefix_lookup(alias)
    connection = connections[alias]
    # Authentication runs before any organization is active: under row-level security the
    # statement must take the path the ORM query it replaces took (system work), or no key shows.
    with as_orm_statement(), connection.cursor() as cursor:
        cursor.execute(sql, [prefix])
        rows = cursor.fetchall()
    found = None
    for row in rows:
        if hmac.compare_digest(row[hash_index], digest):
            found = row
    if found is None:
        return None, False, False
    values = list(found[: len(attnames)])
    for i, (column, functions) in enumerate(converters):
        for convert in functions:
            values[i] = convert(values[i], column, connection)
    key = APIKey.from_db(alias, attnames, values)
    user_status, org_status = found[len(attnames) :]
    user_active = key.user_id is None or user_status in APIKey._meta.get_field("user").related_model.ACTIVE_STATUSES
    return key, user_active, org_status == _org_model().Status.ACTIVE


def _org_model():
    return APIKey._meta.get_field("org").related_model


# A key used by every API request would otherwise cost a write per request: its use (time
# and client address) is recorded at most once per interval, so "last used" stays true to
# the interval.
USE_RECORD_INTERVAL = dt.timedelta(minutes=1)


def _record_use(key, ip: str | None) -> None:
    now = timezone.now()
    cutoff = now - USE_RECORD_INTERVAL
    if key.last_used_at is not None and key.last_used_at > cutoff:
        return
    # The condition makes concurrent requests for one key write once, not once each.
    type(key).all_orgs.filter(pk=key.pk).exclude(last_used_at__gt=cutoff).update(last_used_at=now, last_used_ip=ip)
    key.last_used_at, key.last_used_ip = now, ip


def _reject(key, reason: str) -> None:
    from security.audit import record_security_event  # not at the top: security.audit imports these models

    record_security_event(
        SecurityEvent.EventType.API_KEY_REJECTED,
        user=key.user if key.user_id else None,
        org_id=key.org_id,
        details={"prefix": key.prefix, "key_id": str(key.pk), "reason": reason},
    )


class APIKeyManager(OrgScopedManager.from_queryset(APIKeyQuerySet)):
    pass


class AllOrgsAPIKeyManager(AllOrgsManager.from_queryset(APIKeyQuerySet)):
    pass


class APIKey(OrgOwnedModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    org = org_foreign_key("api_keys")
    name = models.CharField(max_length=255)
    prefix = models.CharField(max_length=32, db_index=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="api_keys"
    )
    scopes = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    objects = APIKeyManager()
    all_orgs = AllOrgsAPIKeyManager()

    class Meta:
        db_table = "api_keys"
        verbose_name = "API key"
        ordering = ["-created_at"]
        indexes = [org_index("api_keys", "created_at")]

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_valid(self) -> bool:
        return not self.is_revoked and not self.is_expired

    def revoke(self, by=None) -> None:
        """Revoke the key (idempotent); the change is audited like any save."""
        if self.revoked_at is not None:
            return
        self.revoked_at = timezone.now()
        self.revoked_by = by
        self.save(update_fields=["revoked_at", "revoked_by"])
