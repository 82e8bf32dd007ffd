"""Admin for the audit trail (read-only, fast on big tables), security events, identity
providers (secrets write-only) and API keys (plaintext shown once)."""

from __future__ import annotations

import csv
import functools
import ipaddress
import json

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import connections
from django.db.models import Q
from django.http import HttpResponseRedirect, StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from accounts.models import User
from agentforge_core import crypto
from agentforge_core.fields import encrypted_fields
from agentforge_site.admin.display import json_block, masked, truncate
from agentforge_site.admin.mixins import ReadOnlyAdminMixin, SecretFieldsMixin
from agentforge_site.admin.scoping import OrgScopedAdmin, UserCredentialsAdminMixin, is_superuser, request_scope
from agentforge_site.paginator import EstimatedCountPaginator
from security.models import APIKey, AuditLog, LDAPConfig, OAuthConfig, SecurityEvent
from security.models.audit import AuditChainHead

# django-auditlog registers its own LogEntryAdmin for our AuditLog; its search on the
# actor's first/last name and its COUNT(*)/date hierarchy do not suit us.
if admin.site.is_registered(AuditLog):
    admin.site.unregister(AuditLog)

AUDITLOG_ACTIONS = {label: code for code, label in AuditLog.Action.choices}


# --------------------------------------------------------------------------------------
# Audit log
# --------------------------------------------------------------------------------------


def _distinct_actions(request) -> list[str]:
    """The legacy action names present, cheaply: a loose index scan on PostgreSQL."""
    table = AuditLog._meta.db_table
    org_id = None if is_superuser(request) else request.user.org_id
    connection = connections[AuditLog.all_orgs.db]
    if connection.vendor == "postgresql":
        org_sql = "AND org_id = %s" if org_id else ""
        params = [org_id] * 2 if org_id else []
        sql = f"""
            WITH RECURSIVE t(action) AS (
                (SELECT legacy_action FROM {table} WHERE legacy_action IS NOT NULL {org_sql}
                 ORDER BY legacy_action LIMIT 1)
                UNION ALL
                SELECT (SELECT legacy_action FROM {table}
                        WHERE legacy_action > t.action {org_sql} ORDER BY legacy_action LIMIT 1)
                FROM t WHERE t.action IS NOT NULL
            )
            SELECT action FROM t WHERE action IS NOT NULL
        """
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return [row[0] for row in cursor.fetchall() if row[0]]
    queryset = AuditLog.all_orgs.all()
    if org_id:
        queryset = queryset.filter(org_id=org_id)
    return sorted(a for a in queryset.order_by().values_list("legacy_action", flat=True).distinct() if a)


class ActionFilter(admin.SimpleListFilter):
    """AgentForge action (legacy_action) or, for model changes, auditlog's action."""

    title = "action"
    parameter_name = "action"

    def lookups(self, request, model_admin):
        names = set(_distinct_actions(request)) | set(AUDITLOG_ACTIONS)
        return [(name, name) for name in sorted(names)]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        condition = Q(legacy_action=value)
        if value in AUDITLOG_ACTIONS:
            condition |= Q(legacy_action="", action=AUDITLOG_ACTIONS[value])
        return queryset.filter(condition)


def _iterate_in(scope, iterator):
    """Each step of ``iterator`` inside a fresh ``scope()``, none held across a ``yield``
    (a streamed response's chunks may be produced in different contexts)."""
    while True:
        with scope():
            try:
                item = next(iterator)
            except StopIteration:
                return
        yield item


class _Echo:
    def write(self, value):
        return value


# What a spreadsheet reads as the start of a formula, with the full-width forms some fold
# into them (＝ becomes =). Spreadsheets skip leading blanks, so the test looks past them.
_FORMULA_STARTERS = frozenset("=+-@\uff1d\uff0b\uff0d\uff20")


def _csv_safe(value) -> str:
    """Neutralise spreadsheet formulas (CSV injection): a leading apostrophe."""
    text = "" if value is None else str(value)
    if text[:1] in ("\t", "\r") or text.lstrip()[:1] in _FORMULA_STARTERS:
        return "'" + text
    return text


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdminMixin, OrgScopedAdmin):
    """Read-only for everyone. Built for millions of rows: estimated counts, no date
    hierarchy, a fixed number of queries per page, searches that use indexes."""

    list_display = ("timestamp", "org", "actor_label", "action_label", "resource", "remote_addr", "agent", "success")
    list_display_links = ("timestamp",)
    list_select_related = ("org", "actor", "content_type")
    list_filter = (ActionFilter, "success", "timestamp")
    search_fields = ("actor__email",)  # shows the search box; get_search_results does the work
    search_help_text = "Actor email (or part of it), IP address, or resource / object id."
    ordering = ("-timestamp",)
    list_per_page = 50
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # facet counts would COUNT the whole table
    paginator = EstimatedCountPaginator
    actions = ("export_csv",)
    fieldsets = (
        (None, {"fields": ("timestamp", "org", "actor_label", "action_label", "success", "error_message")}),
        ("Resource", {"fields": ("resource", "object_repr")}),
        ("Change", {"fields": ("changes_table",)}),
        ("Request", {"fields": ("remote_addr", "user_agent", "request_line", "request_id", "session_id", "cid")}),
        ("Integrity", {"fields": ("entry_hash", "prev_hash", "legacy_id"), "classes": ("collapse",)}),
    )
    readonly_fields = (
        "actor_label",
        "action_label",
        "resource",
        "changes_table",
        "request_line",
    )

    # -- search --------------------------------------------------------------------

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            ipaddress.ip_address(term)
        except ValueError:
            pass
        else:
            return queryset.filter(remote_addr=term), False
        users = User.objects.filter(email_normalized__contains=term.lower())
        condition = Q(actor_id__in=users.values("pk"))
        if "@" not in term:
            condition |= Q(object_pk=term) | Q(resource_id=term)
        return queryset.filter(condition), False

    # -- columns -------------------------------------------------------------------

    @admin.display(description="actor", ordering="actor__email")
    def actor_label(self, obj):
        if obj.actor_id and obj.actor is not None:
            return obj.actor.email
        return obj.user_name or obj.legacy_user_id or (f"user {obj.actor_id} (deleted)" if obj.actor_id else "system")

    @admin.display(description="action")
    def action_label(self, obj):
        return obj.legacy_action or obj.get_action_display()

    @admin.display(description="resource")
    def resource(self, obj):
        kind = obj.resource_type or (obj.content_type.model if obj.content_type_id else "")
        ident = obj.resource_id or obj.object_pk or ""
        name = obj.resource_name or obj.object_repr or ""
        text = " ".join(p for p in (kind, truncate(name, 40)) if p)
        return format_html('{} <span class="af-muted">{}</span>', text or "—", truncate(ident, 40))

    @admin.display(description="user agent")
    def agent(self, obj):
        return format_html('<span title="{}">{}</span>', obj.user_agent or "", truncate(obj.user_agent, 40))

    @admin.display(description="request")
    def request_line(self, obj):
        return " ".join(p for p in (obj.request_method, obj.request_path) if p) or "—"

    @admin.display(description="changes")
    def changes_table(self, obj):
        """The diff as a table (field, before, after); secrets stay masked."""
        changes = obj.changes
        if isinstance(changes, str):
            try:
                changes = json.loads(changes)
            except ValueError:
                return changes or "—"
        if not changes:
            return "—"
        if not isinstance(changes, dict):
            return json_block(changes)
        secret_names = set()
        if obj.content_type_id and obj.content_type.model_class() is not None:
            secret_names = {f.name for f in encrypted_fields(obj.content_type.model_class())}

        def cell(field, value):
            if field in secret_names:
                return masked(value) if value not in (None, "", "None") else "—"
            if isinstance(value, (dict, list)):
                return json.dumps(value, sort_keys=True, ensure_ascii=False)
            return "—" if value is None else str(value)

        rows = []
        for field in sorted(changes):
            change = changes[field]
            if isinstance(change, dict) and change.get("type") == "m2m":
                before = ""
                after = f"{change.get('operation', '')}: {', '.join(map(str, change.get('objects', [])))}"
            elif isinstance(change, (list, tuple)) and len(change) == 2:
                before, after = cell(field, change[0]), cell(field, change[1])
            else:
                before, after = "", cell(field, change)
            rows.append((field, before, after))
        return format_html(
            '<table class="af-diff"><thead><tr><th>Field</th><th>Before</th><th>After</th></tr></thead>'
            "<tbody>{}</tbody></table>",
            format_html_join(
                "", '<tr><td><code>{}</code></td><td class="af-before">{}</td><td class="af-after">{}</td></tr>', rows
            ),
        )

    # -- export --------------------------------------------------------------------

    @admin.action(description="Export selected entries as CSV", permissions=["view"])
    def export_csv(self, request, queryset):
        header = [
            "time",
            "organization",
            "actor",
            "action",
            "resource_type",
            "resource_id",
            "resource_name",
            "ip",
            "user_agent",
            "success",
            "error_message",
            "changes",
        ]
        rows = queryset.select_related("org", "actor", "content_type").order_by("-timestamp", "-pk")
        # The rows stream after the view has returned and the request's organization scope
        # has closed: every fetch runs inside that scope again.
        scope = functools.partial(request_scope, request)

        def generate():
            writer = csv.writer(_Echo())
            yield writer.writerow(header)
            for entry in _iterate_in(scope, rows.iterator(chunk_size=2000)):
                yield writer.writerow(
                    [
                        _csv_safe(value)
                        for value in (
                            entry.timestamp.isoformat(),
                            entry.org.name if entry.org_id else "",
                            entry.actor.email
                            if entry.actor_id and entry.actor
                            else (entry.user_name or entry.legacy_user_id or ""),
                            entry.legacy_action or entry.get_action_display(),
                            entry.resource_type or (entry.content_type.model if entry.content_type_id else ""),
                            entry.resource_id or entry.object_pk,
                            entry.resource_name or entry.object_repr,
                            entry.remote_addr,
                            entry.user_agent,
                            "yes" if entry.success else "no",
                            entry.error_message,
                            json.dumps(entry.changes, sort_keys=True) if entry.changes else "",
                        )
                    ]
                )

        response = StreamingHttpResponse(generate(), content_type="text/csv; charset=utf-8")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="audit-log-{stamp}.csv"'
        return response


# --------------------------------------------------------------------------------------
# Security events
# --------------------------------------------------------------------------------------


@admin.register(SecurityEvent)
class SecurityEventAdmin(OrgScopedAdmin):
    list_display = ("created_at", "event_type", "severity", "org", "who", "ip_address", "resolved")
    list_select_related = ("org", "user")
    list_filter = ("event_type", "severity", "resolved", "created_at")
    search_fields = ("email", "=ip_address", "user__email")
    ordering = ("-created_at",)
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    fields = (
        "created_at",
        "org",
        "event_type",
        "severity",
        "user",
        "email",
        "ip_address",
        "user_agent",
        "details_pretty",
        "resolved",
    )
    readonly_fields = (
        "created_at",
        "org",
        "event_type",
        "severity",
        "user",
        "email",
        "ip_address",
        "user_agent",
        "details_pretty",
    )
    actions = ("mark_resolved",)

    def has_add_permission(self, request):
        return False  # events are written where they happen

    def has_delete_permission(self, request, obj=None):
        return is_superuser(request)

    @admin.display(description="user")
    def who(self, obj):
        return obj.user.email if obj.user_id else (obj.email or "—")

    @admin.display(description="details")
    def details_pretty(self, obj):
        return json_block(obj.details)

    @admin.action(description="Mark selected events resolved", permissions=["change"])
    def mark_resolved(self, request, queryset):
        count = 0
        for event in queryset.filter(resolved=False):
            event.resolved = True
            event.save(update_fields=["resolved"])
            self.log_change(request, event, "Marked resolved.")
            count += 1
        self.message_user(request, f"{count} event(s) marked resolved.", messages.SUCCESS)


# --------------------------------------------------------------------------------------
# Identity providers
# --------------------------------------------------------------------------------------


@admin.register(OAuthConfig)
class OAuthConfigAdmin(SecretFieldsMixin, OrgScopedAdmin):
    list_display = (
        "provider",
        "org",
        "client_id",
        "secret_state",
        "enabled",
        "auto_create_users",
        "default_role",
        "updated_at",
    )
    list_select_related = ("org", "default_role")
    list_filter = ("provider", "enabled")
    search_fields = ("client_id", "tenant_id")
    readonly_fields = ("legacy_id", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("org", "provider", "enabled")}),
        ("Client", {"fields": ("client_id", "client_secret", "tenant_id", "scopes")}),
        ("Users", {"fields": ("auto_create_users", "update_profile_on_login", "default_role", "allowed_domains")}),
        ("Record", {"fields": ("legacy_id", "created_at", "updated_at"), "classes": ("collapse",)}),
    )

    @admin.display(description="client secret")
    def secret_state(self, obj):
        return masked(obj.client_secret)


@admin.register(LDAPConfig)
class LDAPConfigAdmin(SecretFieldsMixin, OrgScopedAdmin):
    list_display = (
        "name",
        "org",
        "server_url",
        "bind_dn",
        "secret_state",
        "is_active",
        "is_org_directory",
        "connection_status",
        "last_sync",
    )
    list_select_related = ("org",)
    list_filter = ("is_active", "is_org_directory", "connection_status", "sync_enabled")
    search_fields = ("name", "server_url", "bind_dn", "base_dn")
    readonly_fields = (
        "last_sync",
        "last_sync_status",
        "last_sync_users_synced",
        "connection_status",
        "last_connection_test",
        "last_error",
        "legacy_id",
        "created_at",
        "updated_at",
    )
    fieldsets = (
        (None, {"fields": ("org", "name", "is_active", "is_org_directory")}),
        (
            "Connection",
            {
                "fields": (
                    "server_url",
                    "use_ssl",
                    "use_tls",
                    "verify_ssl",
                    "connection_timeout",
                    "bind_dn",
                    "bind_password",
                )
            },
        ),
        (
            "Search",
            {
                "fields": (
                    "base_dn",
                    "user_search_filter",
                    "user_search_base",
                    "user_object_class",
                    "group_search_filter",
                    "group_search_base",
                    "group_object_class",
                )
            },
        ),
        ("Mapping", {"fields": ("attribute_mapping", "group_role_mapping", "default_role")}),
        ("Sync", {"fields": ("sync_enabled", "sync_interval_hours", "sync_delete_removed", "sync_update_existing")}),
        (
            "Status",
            {
                "fields": (
                    "connection_status",
                    "last_connection_test",
                    "last_error",
                    "last_sync",
                    "last_sync_status",
                    "last_sync_users_synced",
                )
            },
        ),
        ("Record", {"fields": ("legacy_id", "created_at", "updated_at"), "classes": ("collapse",)}),
    )

    @admin.display(description="bind password")
    def secret_state(self, obj):
        return masked(obj.bind_password)


# --------------------------------------------------------------------------------------
# API keys
# --------------------------------------------------------------------------------------

NEW_KEY_SESSION = "agentforge_new_api_key"


class APIKeyStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return (("active", "Active"), ("expired", "Expired"), ("revoked", "Revoked"))

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(APIKey)
class APIKeyAdmin(UserCredentialsAdminMixin, OrgScopedAdmin):
    list_display = ("prefix_label", "name", "org", "user", "created_at", "last_used_at", "expires_at", "revoked")
    list_display_links = ("prefix_label", "name")
    list_select_related = ("org", "user")
    list_filter = (APIKeyStatusFilter, "created_at", "expires_at")
    search_fields = ("name", "prefix", "user__email")
    ordering = ("-created_at",)
    autocomplete_fields = ("user",)
    actions = ("revoke_keys",)
    readonly_fields = (
        "prefix_label",
        "created_by",
        "created_at",
        "last_used_at",
        "last_used_ip",
        "revoked_at",
        "revoked_by",
    )
    add_fields = ("org", "name", "user", "scopes", "expires_at")
    change_fields = (
        "prefix_label",
        "org",
        "name",
        "user",
        "scopes",
        "expires_at",
        "created_by",
        "created_at",
        "last_used_at",
        "last_used_ip",
        "revoked_at",
        "revoked_by",
    )

    def get_fields(self, request, obj=None):
        return list(self.add_fields if obj is None else self.change_fields)

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields += ["org", "user"]  # a key never moves to another owner
        return fields

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "expires_at" and field is not None:
            field.help_text = "Blank when creating: the organization's default expiry."
        return field

    # -- columns -------------------------------------------------------------------

    @admin.display(description="prefix", ordering="prefix")
    def prefix_label(self, obj):
        return format_html("<code>{}…</code>", obj.prefix) if obj and obj.prefix else "—"

    @admin.display(description="revoked", boolean=True, ordering="revoked_at")
    def revoked(self, obj):
        return obj.revoked_at is not None

    # -- creation: the plaintext is shown once -----------------------------------

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        if not self._may_touch(request, obj):
            raise PermissionDenied  # a key for a more privileged user (the form already refuses it)
        org = obj.org if obj.org_id and is_superuser(request) else request.user.org
        options = {"scopes": obj.scopes or [], "created_by": request.user}
        if obj.expires_at is not None:
            options["expires_at"] = obj.expires_at  # blank: the organization's default expiry
        created, plaintext = APIKey.all_orgs.create_key(org=org, name=obj.name, user=obj.user, **options)
        # The admin logs and redirects with ``obj``: make it the saved key.
        obj.__dict__.update({k: v for k, v in created.__dict__.items() if k != "_state"})
        obj._state.adding = False
        obj._state.db = created._state.db
        # Kept encrypted in the session for exactly one read, by the next page.
        request.session[NEW_KEY_SESSION] = {"id": str(created.pk), "token": crypto.encrypt(plaintext)}

    def response_add(self, request, obj, post_url_continue=None):
        self.message_user(
            request, f"API key “{obj.name}” created. Copy it now: it will not be shown again.", messages.WARNING
        )
        return HttpResponseRedirect(reverse("admin:security_apikey_change", args=[obj.pk]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        pending = request.session.get(NEW_KEY_SESSION)
        if request.method == "GET" and pending and pending.get("id") == str(object_id):
            del request.session[NEW_KEY_SESSION]
            extra_context["new_api_key_plaintext"] = crypto.decrypt(pending["token"], "new API key")
        return super().change_view(request, object_id, form_url, extra_context)

    # -- revocation ----------------------------------------------------------------

    @admin.action(description="Revoke the selected keys", permissions=["change"])
    def revoke_keys(self, request, queryset):
        count = 0
        for key in queryset.filter(revoked_at__isnull=True):
            if hasattr(key, "revoke"):
                key.revoke(by=request.user)
            else:  # pragma: no cover - the model method is the normal path
                key.revoked_at = timezone.now()
                key.revoked_by = request.user
                key.save(update_fields=["revoked_at", "revoked_by"])
            self.log_change(request, key, "Revoked.")
            count += 1
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)


@admin.register(AuditChainHead)
class AuditChainHeadAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The tips of the audit hash chains: superusers may look, nobody edits."""

    list_display = ("chain_key", "last_id", "last_hash", "anchor_id", "updated_at")
    search_fields = ("=chain_key",)

    def has_module_permission(self, request):
        return is_superuser(request)

    def has_view_permission(self, request, obj=None):
        return is_superuser(request)
