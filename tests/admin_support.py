"""Test data for the admin tests: one row of every admin-registered model in an organization."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.contrib.auth.models import Permission as DjangoPermission
from django.utils import timezone

SECRET_MARKERS = {
    "google": "google-secret-XYZZY-1",
    "microsoft": "ms-secret-XYZZY-2",
    "totp": "TOTPSECRETXYZZY3",
    "oauth": "oauth-client-secret-XYZZY-4",
    "ldap": "ldap-bind-password-XYZZY-5",
    "tool_token": "tool-api-token-XYZZY-6",
    "tool_password": "tool-smtp-pass-XYZZY-7",
    "setting": "sk-org-setting-XYZZY-8",
    "system_setting": "sk-system-setting-XYZZY-9",
}


def make_api_key(org, name="key", user=None, **fields):
    """An APIKey made the model's way; returns the key (the plaintext is discarded)."""
    from security.models import APIKey

    key, _plaintext = APIKey.all_orgs.create_key(org=org, name=name, user=user, **fields)
    return key


def make_audit(org, actor=None, **fields):
    from security.models import AuditLog

    defaults = dict(
        action=AuditLog.Action.ACCESS,
        timestamp=timezone.now(),
        legacy_action="login",
        resource_type="user",
        resource_id=str(actor.pk) if actor else "",
        remote_addr="10.0.0.1",
        user_agent="pytest-agent/1.0",
        success=True,
    )
    defaults.update(fields)
    return AuditLog.all_orgs.create(org=org, actor=actor, **defaults)


def populate(org, user, suffix="") -> dict:
    """One row of each tenant model for ``org``; returns them by name."""
    from accounts.models import (
        Department,
        Group,
        GroupMembership,
        MFASettings,
        PasswordHistory,
        Permission,
        Role,
        RolePermission,
        UserRole,
        UserSession,
    )
    from agentforge_agents.models import Agent, AgentTool, AgentVersion, Tool, ToolPermission
    from conversations.models import Attachment, Conversation, Message
    from knowledge.models import Document, DocumentChunk
    from legacy.models import LegacyRecord
    from security.models import LDAPConfig, OAuthConfig, SecurityEvent
    from settings_app.models import OrgSetting, UserPreference

    org.google_client_secret = SECRET_MARKERS["google"]
    org.microsoft_client_secret = SECRET_MARKERS["microsoft"]
    org.save()
    rows = {"org": org, "user": user}
    rows["department"] = Department.all_orgs.create(org=org, name=f"Engineering{suffix}")
    permission, _ = Permission.objects.get_or_create(codename="agents:read")
    rows["permission"] = permission
    rows["role"] = role = Role.all_orgs.create(org=org, name=f"Editor{suffix}")
    RolePermission.all_orgs.create(org=org, role=role, permission=permission)
    UserRole.all_orgs.create(org=org, user=user, role=role)
    rows["group"] = group = Group.all_orgs.create(org=org, name=f"Team{suffix}")
    GroupMembership.all_orgs.create(org=org, group=group, user=user)
    rows["tool"] = tool = Tool.all_orgs.create(
        org=org,
        name=f"Mailer{suffix}",
        type=Tool.Type.EMAIL,
        credentials={"api_key": SECRET_MARKERS["tool_token"], "smtp_pass": SECRET_MARKERS["tool_password"]},
    )
    rows["toolpermission"] = ToolPermission.all_orgs.create(org=org, tool=tool, tool_name=tool.name)
    rows["agent"] = agent = Agent.all_orgs.create(org=org, name=f"Helper{suffix}", owner=user)
    rows["agentversion"] = AgentVersion.all_orgs.create(org=org, agent=agent, version=1, snapshot={"name": agent.name})
    AgentTool.all_orgs.create(org=org, agent=agent, tool=tool, tool_ref=str(tool.pk), position=0)
    rows["document"] = document = Document.all_orgs.create(
        org=org, tool=tool, original_name=f"handbook{suffix}.pdf", file_size=2048
    )
    rows["documentchunk"] = DocumentChunk.all_orgs.create(
        org=org, tool=tool, document=document, chunk_id="1", text="chunk text"
    )
    DocumentChunk.all_orgs.create(org=org, tool=tool, document=document, chunk_id="2", text="more text")
    rows["conversation"] = conversation = Conversation.all_orgs.create(
        org=org, agent=agent, user=user, title=f"Chat{suffix}"
    )
    rows["message"] = Message.all_orgs.create(
        org=org, conversation=conversation, role="user", content="Hello <b>agent</b>", position=0
    )
    Message.all_orgs.create(
        org=org, conversation=conversation, role="assistant", content="Hi! How can I help?", position=1
    )
    rows["attachment"] = Attachment.all_orgs.create(
        org=org, conversation=conversation, filename="f.txt", original_name="notes.txt"
    )
    rows["securityevent"] = SecurityEvent.all_orgs.create(
        org=org, event_type="login_failed", email=user.email, ip_address="10.1.2.3"
    )
    rows["oauthconfig"] = OAuthConfig.all_orgs.create(
        org=org, provider="google", client_id="client-1", client_secret=SECRET_MARKERS["oauth"]
    )
    rows["ldapconfig"] = LDAPConfig.all_orgs.create(
        org=org, name=f"Directory{suffix}", bind_password=SECRET_MARKERS["ldap"]
    )
    rows["mfasettings"] = MFASettings.all_orgs.create(
        org=org, user=user, enabled=True, methods=["totp"], totp_secret=SECRET_MARKERS["totp"], totp_verified=True
    )
    rows["passwordhistory"] = PasswordHistory.all_orgs.create(
        org=org, user=user, password_hash="bcrypt_sha256$$2b$12$abcdefghijkl", position=0
    )
    rows["usersession"] = UserSession.all_orgs.create(
        org=org, user=user, token_hash=secrets.token_hex(32), expires_at=timezone.now() + timedelta(days=1)
    )
    rows["apikey"] = make_api_key(org, name=f"CI key{suffix}", user=user)
    rows["auditlog"] = make_audit(org, actor=user)
    setting = OrgSetting(org=org, key=f"llm.api_key{suffix}")
    setting.set_value(SECRET_MARKERS["setting"], secret=True)
    setting.save()
    rows["orgsetting"] = setting
    rows["userpreference"] = UserPreference.all_orgs.create(org=org, user=user)
    rows["legacyrecord"] = LegacyRecord.all_orgs.create(
        org=org, collection="security/policies", legacy_id=f"pol-1{suffix}", data={"name": "Policy"}
    )
    return rows


ORG_ADMIN_APPS = ("accounts", "agents", "knowledge", "conversations", "security", "settings_app", "legacy")


def grant_all_model_permissions(user) -> None:
    """Every Django permission on AgentForge models, and AgentForge's own ``system:admin``
    in its organization: what an organization admin gets."""
    perms = DjangoPermission.objects.filter(content_type__app_label__in=ORG_ADMIN_APPS)
    user.user_permissions.add(*perms)
    user.direct_permissions = ["system:admin"]
    user.save(update_fields=["direct_permissions"])


def request_scope(response):
    """The organization scope the admin view behind ``response`` ran in. Querysets kept in
    ``response.context`` come from the scoped managers, so they are read (or their fetched
    rows reused) inside it."""
    from agentforge_site.admin.scoping import request_scope as admin_request_scope

    return admin_request_scope(response.wsgi_request)


def form_data(response) -> dict:
    """POST data that re-submits an admin change/add page as rendered (secrets left blank)."""
    import datetime

    from django import forms

    from security.forms import SecretInput, SecretJSONWidget

    data = {}

    def add_form(form):
        for bf in form:
            widget = bf.field.widget
            while hasattr(widget, "widget") and not isinstance(widget, forms.MultiWidget):
                widget = widget.widget  # RelatedFieldWidgetWrapper
            if isinstance(widget, (SecretInput, SecretJSONWidget)):
                continue
            value = bf.value()
            if isinstance(widget, forms.CheckboxInput):
                if value:
                    data[bf.html_name] = "on"
                continue
            if isinstance(widget, forms.SplitDateTimeWidget):
                if isinstance(value, datetime.datetime):
                    data[bf.html_name + "_0"] = value.strftime("%Y-%m-%d")
                    data[bf.html_name + "_1"] = value.strftime("%H:%M:%S")
                continue
            if isinstance(value, (list, tuple)):
                data[bf.html_name] = [str(v) for v in value]
            elif value is None:
                data[bf.html_name] = ""
            else:
                data[bf.html_name] = str(value)

    add_form(response.context["adminform"].form)
    for inline in response.context.get("inline_admin_formsets", []):
        formset = inline.formset
        management = formset.management_form
        for name in ("TOTAL_FORMS", "INITIAL_FORMS", "MIN_NUM_FORMS", "MAX_NUM_FORMS"):
            data[f"{formset.prefix}-{name}"] = str(management[name].value())
        for form in formset.forms:
            add_form(form)
    return data


def admin_world(make_org, make_user, rows: bool = True) -> dict:
    """Two organizations (Acme, Globex), a superuser and an organization admin of Acme, and,
    with ``rows``, a member with a row of every model in each organization."""
    org = make_org("Acme")
    other = make_org("Globex")
    world = {
        "org": org,
        "other": other,
        "superuser": make_user(org, email="root@acme.test", is_staff=True, is_superuser=True),
        "orgadmin": make_user(org, email="admin@acme.test", is_staff=True),
    }
    grant_all_model_permissions(world["orgadmin"])
    if rows:
        world["mine"] = populate(org, make_user(org, email="member@acme.test"))
        world["theirs"] = populate(other, make_user(other, email="member@globex.test"), suffix="-g")
    return world


def plant_their_message(world, plant, content: str | None = None):
    """Globex's first message linked to Acme's conversation around the checks (as an old writer
    could leave it), with ``content`` to look for on Acme's pages when given; returns the message."""
    from agentforge_core.tenancy import unscoped
    from conversations.models import Message

    message = Message.all_orgs.filter(conversation=world["theirs"]["conversation"]).first()
    if content is not None:
        with unscoped():
            Message.all_orgs.filter(pk=message.pk).update(content=content)
    plant(Message, message, conversation_id=world["mine"]["conversation"].pk)
    return message
