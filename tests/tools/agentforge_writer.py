"""Drive AgentForge's own FastAPI app over HTTP and keep the JSON data directory it writes.

Run it with the Python of a virtualenv that has AgentForge's requirements installed (not ours):

    /tmp/af-venv/bin/python tests/tools/agentforge_writer.py AGENTFORGE_CHECKOUT OUT_DIR

It imports ``api.main.app`` from the checkout in-process, points ``DATA_PATH`` / ``UPLOAD_PATH`` at
OUT_DIR and calls the app's endpoints through FastAPI's TestClient the way its UI does: register,
verify email, sign in, MFA, users, roles, groups, departments, invitations, LDAP/OAuth, permissions,
tools, documents, scraping, agents, chat, password change and reset, deactivation. Only the network
is stubbed: every outbound HTTP request (LLM, embeddings, e-mail, OAuth code exchange, scraped
sites) is answered by ``FakeInternet`` below. The passwords, TOTP secrets and backup codes it used
go to ``OUT_DIR/credentials.json`` so tests can sign in as these users.

Two things have no endpoint in AgentForge and are done in-process with its own objects, as an
operator of that era did by hand: making the first account a super admin (the initial commit
creates no admin) and adding a second organization (no era has an endpoint that creates one).
"""

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from urllib.parse import parse_qs, urlparse

from agentforge_env import point_agentforge_at

JWT_SECRET = "fixture-jwt-secret-not-used-anywhere-else"

GOOGLE_USER = {
    "id": "109876543210987654321",
    "sub": "109876543210987654321",
    "email": "gina.google@gmail.com",
    "verified_email": True,
    "email_verified": True,
    "given_name": "Gina",
    "family_name": "Google",
    "name": "Gina Google",
    "picture": "https://lh3.googleusercontent.com/a/fixture-avatar=s96-c",
}

SCRAPED_HTML = """<!doctype html><html><head><title>Acme Help Centre</title></head>
<body><h1>Acme Help Centre</h1>
<p>Refunds are processed within five working days of the returned item arriving at our warehouse.</p>
<p>Support is open Monday to Friday, 08:00 to 18:00 UTC. Caf\u00e9 orders ship from Lyon.</p>
</body></html>"""

TEXT_DOCUMENT = (
    "Acme Travel Policy\n\n"
    "Employees book economy class for flights under six hours. Hotels are capped at 180 EUR a night.\n"
    "Meals are reimbursed up to 45 EUR a day with receipts. Na\u00efve claims without receipts are refused.\n"
)


def tiny_pdf(text):
    """A valid one-page PDF with one line of text, a few hundred bytes."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


class FakeInternet:
    """Answers every outbound HTTP request of the app; keeps the e-mails it was asked to send."""

    def __init__(self):
        self.emails = []
        self.requests = []

    def answer(self, method, url, body):
        import httpx

        self.requests.append(f"{method} {url}")
        host = urlparse(url).hostname or ""
        path = urlparse(url).path
        if host == "api.sendgrid.com":
            self.emails.append(json.loads(body or b"{}"))
            return httpx.Response(202, json={})
        if "embeddings" in path:
            inputs = json.loads(body or b"{}").get("input", [])
            count = len(inputs) if isinstance(inputs, list) else 1
            data = [{"object": "embedding", "index": i, "embedding": [0.01 * (i + 1)] * 8} for i in range(count)]
            return httpx.Response(
                200,
                json={
                    "object": "list",
                    "data": data,
                    "model": "stub",
                    "usage": {"prompt_tokens": 1, "total_tokens": 1},
                },
            )
        if "chat/completions" in path:
            return httpx.Response(200, json=chat_completion("Our travel policy caps hotels at 180 EUR a night."))
        if host == "api.anthropic.com":
            return httpx.Response(
                200,
                json={
                    "id": "msg_stub",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-stub",
                    "content": [{"type": "text", "text": "Stub answer."}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": 1, "output_tokens": 1},
                },
            )
        if host in ("oauth2.googleapis.com", "accounts.google.com") and method == "POST":
            return httpx.Response(
                200,
                json={
                    "access_token": "stub-google-access",
                    "token_type": "Bearer",
                    "expires_in": 3599,
                    "id_token": "stub",
                },
            )
        if host in ("www.googleapis.com", "openidconnect.googleapis.com"):
            return httpx.Response(200, json=GOOGLE_USER)
        if host == "login.microsoftonline.com":
            return httpx.Response(200, json={"access_token": "stub-ms-access", "token_type": "Bearer"})
        if host == "graph.microsoft.com":
            return httpx.Response(
                200,
                json={
                    "id": "ms-0001",
                    "mail": "mona.ms@contoso.example",
                    "givenName": "Mona",
                    "surname": "Microsoft",
                    "displayName": "Mona Microsoft",
                },
            )
        return httpx.Response(200, text=SCRAPED_HTML, headers={"content-type": "text/html; charset=utf-8"})

    def install(self):
        """Route httpx's real transports here; the TestClient's own transport is left alone."""
        import httpx

        internet = self

        def handle(self, request):
            request.read()
            response = internet.answer(request.method, str(request.url), request.content)
            return response

        async def handle_async(self, request):
            await request.aread()
            return internet.answer(request.method, str(request.url), request.content)

        httpx.HTTPTransport.handle_request = handle
        httpx.AsyncHTTPTransport.handle_async_request = handle_async

    def tokens(self, pattern):
        """Every match of ``pattern`` in the bodies of the e-mails sent so far."""
        found = []
        for mail in self.emails:
            for part in mail.get("content", []):
                found.extend(re.findall(pattern, part.get("value", "")))
        return found


def chat_completion(text):
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "gpt-4o",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


class Driver:
    def __init__(self, client, main, internet, out_dir):
        self.client = client
        self.main = main
        self.internet = internet
        self.out_dir = out_dir
        self.state = sys.modules["core.security"].security_state
        self.failures = []
        self.app_token = None
        self.users = {}  # email -> credentials record
        self.extra = {"organizations": {}, "invitations": {}, "tools": {}, "agents": {}}

    # -- plumbing ------------------------------------------------------------------------------------

    def call(self, method, path, token=None, expect=(200,), **kwargs):
        headers = kwargs.pop("headers", {})
        if token is None and not path.startswith("/api/security/"):
            token = self.app_token  # the late era's app endpoints want a signed-in user
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = self.client.request(method, path, headers=headers, **kwargs)
        if response.status_code not in expect:
            self.failures.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
            print(f"  ! {method} {path} -> {response.status_code} {response.text[:200]}")
            return None
        try:
            return response.json()
        except ValueError:
            return {}

    def security_user(self, email):
        for user in self.state.users.values():
            if user.email.lower() == email.lower():
                return user
        raise LookupError(email)

    def record(self, email, password, **extra):
        entry = self.users.setdefault(email, {})
        entry.update(password=password, **extra)
        return entry

    def mail_token(self, email, pattern):
        """The last token matching ``pattern`` in an e-mail sent to ``email`` (the link the user clicks)."""
        for mail in reversed(self.internet.emails):
            to = [t["email"] for p in mail.get("personalizations", []) for t in p.get("to", [])]
            if email in to:
                for part in mail.get("content", []):
                    found = re.findall(pattern, part.get("value", ""))
                    if found:
                        return found[-1]
        return None

    def register(self, email, password, first, last, org_id=None, invitation_token=None):
        body = {"email": email, "password": password, "first_name": first, "last_name": last}
        if org_id:
            body["org_id"] = org_id
        if invitation_token:
            body["invitation_token"] = invitation_token
        answer = self.call("POST", "/api/security/auth/register", json=body)
        self.record(email, password, name=f"{first} {last}")
        return answer

    def verify_email(self, email):
        token = self.mail_token(email, r"token=([A-Za-z0-9_\-]+)")
        if token is None:
            # No mail went out (the era's register sent none): read the token the link would carry.
            token = self.security_user(email).verification_token
        return self.call("POST", "/api/security/auth/verify-email", params={"token": token}, json={"token": token})

    def login(self, email, password, mfa_code=None, expect=(200,), **body):
        payload = {"email": email, "password": password, **body}
        if mfa_code:
            payload["mfa_code"] = mfa_code
        answer = self.call("POST", "/api/security/auth/login", json=payload, expect=expect)
        return (answer or {}).get("access_token") or None

    def save(self):
        self.state.save_to_disk()

    # -- the scenario --------------------------------------------------------------------------------

    def run(self):
        import pyotp

        admin_email, admin_password = self.bootstrap_admin()
        admin = self.login(admin_email, admin_password)
        if not admin:
            raise SystemExit("cannot sign in as the first administrator; nothing else can be driven")
        self.app_token = admin

        # The late era without a database ships only Super Admin and Admin, and self-registration
        # needs a role named "User": the administrator creates the missing basic roles first.
        user_role = self.role_named("User", admin, ["agents:view", "agents:chat", "tools:view"])
        viewer_role = self.role_named("Viewer", admin, ["agents:view"])

        self.call(
            "PUT",
            "/api/security/settings",
            token=admin,
            json={"password_history_count": 3, "account_lockout_attempts": 5},
        )

        # Roles with inheritance: Senior Agent <- Support Agent <- role_user
        support = self.call(
            "POST",
            "/api/security/roles",
            token=admin,
            json={
                "name": "Support Agent",
                "description": "Front-line support",
                "permissions": ["agents:view", "agents:chat", "tools:view", "kb:search"],
                "parent_id": user_role,
            },
        )
        support_id = role_id(support)
        senior = self.call(
            "POST",
            "/api/security/roles",
            token=admin,
            json={
                "name": "Senior Support Agent",
                "description": None,
                "permissions": ["agents:edit", "tools:execute"],
                "parent_id": support_id,
            },
        )
        senior_id = role_id(senior)
        auditor = self.call(
            "POST",
            "/api/security/roles",
            token=admin,
            json={"name": "Auditor", "permissions": ["audit:view", "users:view"]},
        )
        auditor_id = role_id(auditor)

        # Departments (a tree) and their managers
        admin_id = self.security_user(admin_email).id
        eng = self.call(
            "POST",
            "/api/security/departments",
            token=admin,
            json={"name": "Engineering", "description": "Builds the product", "manager_id": admin_id},
        )
        eng_id = department_id(eng)
        platform = self.call(
            "POST", "/api/security/departments", token=admin, json={"name": "Platform", "parent_id": eng_id}
        )
        platform_id = department_id(platform)
        support_dept = self.call(
            "POST",
            "/api/security/departments",
            token=admin,
            json={"name": "Customer Support", "description": "Caf\u00e9 & retail support desk"},
        )
        support_dept_id = department_id(support_dept)

        # Self-registered users: verified, and one who never verifies
        for email, password, first, last in [
            ("bob.builder@acme.example", "Bob!Builder-2026", "Bob", "Builder"),
            ("ivan.ivanov@acme.example", "Ivan#Forge-77x", "Ivan", "Ivanov"),
            ("leo.locked@acme.example", "Leo$Locked-31q", "Leo", "Locked"),
            ("zoe.zhang@acme.example", "Zo\u00eb%Unicode-9", "Zo\u00eb", "Zh\u0101ng"),
        ]:
            self.register(email, password, first, last)
            self.verify_email(email)
        self.register("erin.unverified@acme.example", "Erin&Pending-404", "Erin", "Unverified")
        self.users["erin.unverified@acme.example"]["note"] = "registered, e-mail never verified"

        # Users an administrator creates: one active with a password, one sent a welcome e-mail
        carol = self.call(
            "POST",
            "/api/security/users",
            token=admin,
            json={
                "email": "carol.creator@acme.example",
                "first_name": "Carol",
                "last_name": "Creator",
                "password": "Carol^Temp-2026",
                "role_ids": [support_id or user_role],
                "department_id": support_dept_id,
                "send_invitation": False,
            },
        )
        self.record("carol.creator@acme.example", "Carol^Temp-2026", note="created by an admin, must change password")
        self.call(
            "POST",
            "/api/security/users",
            token=admin,
            json={
                "email": "dave.welcome@acme.example",
                "first_name": "Dave",
                "last_name": "Welcome",
                "role_ids": [viewer_role],
                "department_id": platform_id,
                "send_invitation": True,
            },
        )
        dave_password = self.welcome_password("dave.welcome@acme.example")
        self.record(
            "dave.welcome@acme.example",
            dave_password,
            note="created by an admin with a welcome e-mail (temporary password)",
        )

        # Group with members and roles
        bob_id = self.security_user("bob.builder@acme.example").id
        carol_id = (carol or {}).get("user", {}).get("id") or self.security_user("carol.creator@acme.example").id
        self.call(
            "POST",
            "/api/security/groups",
            token=admin,
            json={
                "name": "On-call",
                "description": "Weekend rota",
                "user_ids": [bob_id, carol_id],
                "role_ids": [senior_id] if senior_id else [],
            },
        )
        self.call(
            "POST",
            "/api/security/groups",
            token=admin,
            json={"name": "Auditors", "role_ids": [auditor_id] if auditor_id else []},
        )

        # Admin edits: department, roles, profile fields
        self.call(
            "PUT",
            f"/api/security/users/{bob_id}",
            token=admin,
            json={
                "department_id": eng_id,
                "role_ids": [user_role, senior_id] if senior_id else [user_role],
                "job_title": "Site Reliability Engineer",
                "phone": "+44 20 7946 0000",
                "display_name": "Bob B.",
            },
        )

        # MFA: Bob enrols TOTP and keeps the backup codes; Ivan starts enrolling and never finishes
        bob = self.login("bob.builder@acme.example", "Bob!Builder-2026")
        enrol = self.call("POST", "/api/security/mfa/enable", token=bob, json={"method": "totp"}) or {}
        secret = enrol.get("secret") or self.security_user("bob.builder@acme.example").mfa.totp_secret
        verified = (
            self.call("POST", "/api/security/mfa/verify", token=bob, json={"code": pyotp.TOTP(secret).now()}) or {}
        )
        self.record(
            "bob.builder@acme.example",
            "Bob!Builder-2026",
            totp_secret=secret,
            backup_codes=verified.get("backup_codes", []),
        )
        time.sleep(1)
        bob = self.login("bob.builder@acme.example", "Bob!Builder-2026", mfa_code=pyotp.TOTP(secret).now())
        ivan = self.login("ivan.ivanov@acme.example", "Ivan#Forge-77x")
        half = self.call("POST", "/api/security/mfa/enable", token=ivan, json={"method": "totp"}) or {}
        self.users["ivan.ivanov@acme.example"]["totp_secret_unfinished"] = half.get("secret")

        # Password change (Carol), forgotten password and reset (Ivan), failed sign-ins and lockout (Leo)
        carol_token = self.login("carol.creator@acme.example", "Carol^Temp-2026")
        if (
            self.call(
                "POST",
                "/api/security/auth/change-password",
                token=carol_token,
                json={"current_password": "Carol^Temp-2026", "new_password": "Carol*Changed-2027"},
            )
            is not None
        ):
            self.record("carol.creator@acme.example", "Carol*Changed-2027", previous_passwords=["Carol^Temp-2026"])
        self.call("POST", "/api/security/auth/forgot-password", json={"email": "ivan.ivanov@acme.example"})
        reset_token = (
            self.mail_token("ivan.ivanov@acme.example", r"token=([A-Za-z0-9_\-]+)")
            or self.security_user("ivan.ivanov@acme.example").reset_password_token
        )
        if (
            self.call(
                "POST",
                "/api/security/auth/reset-password",
                json={"token": reset_token, "new_password": "Ivan@Reset-2027"},
            )
            is not None
        ):
            self.record("ivan.ivanov@acme.example", "Ivan@Reset-2027", previous_passwords=["Ivan#Forge-77x"])
        self.login("carol.creator@acme.example", "wrong-password", expect=(401,))
        for _ in range(5):
            self.login("leo.locked@acme.example", "not-his-password", expect=(401, 423))
        self.users["leo.locked@acme.example"]["note"] = "locked after 5 failed sign-ins"

        # Deactivation and suspension by an administrator
        zoe_id = self.security_user("zoe.zhang@acme.example").id
        self.call("PUT", f"/api/security/users/{zoe_id}", token=admin, json={"status": "inactive"})
        self.users["zoe.zhang@acme.example"]["note"] = "deactivated by an admin"
        self.register("sam.suspended@acme.example", "Sam(Suspended)-8", "Sam", "Suspended")
        self.verify_email("sam.suspended@acme.example")
        sam_id = self.security_user("sam.suspended@acme.example").id
        self.call("PUT", f"/api/security/users/{sam_id}", token=admin, json={"status": "suspended"})
        self.users["sam.suspended@acme.example"]["note"] = "suspended by an admin"

        # Invitations: two stay pending, one is accepted by registering with its token
        for email, roles, message in [
            ("frank.invited@acme.example", [support_id or user_role], "Welcome to the support team"),
            ("grace.invited@acme.example", [viewer_role], None),
            ("henry.accepts@acme.example", [user_role], "Join us"),
        ]:
            answer = self.call(
                "POST",
                "/api/security/users/invite",
                token=admin,
                json={"email": email, "role_ids": roles, "department_id": support_dept_id, "message": message},
            )
            if answer:
                invitation = self.state.invitations[
                    answer.get("invitation_id") or answer.get("invitation", {}).get("id")
                ]
                self.extra["invitations"][email] = {"id": invitation.id, "token": invitation.token}
        henry_token = self.extra["invitations"].get("henry.accepts@acme.example", {}).get("token")
        if henry_token:
            accepted = self.call(
                "POST",
                "/api/security/auth/accept-invitation",
                expect=(200, 404, 405),
                json={
                    "token": henry_token,
                    "first_name": "Henry",
                    "last_name": "Accepts",
                    "password": "Henry+Joined-42",
                },
            )
            if (
                accepted is None
                or "status" not in accepted
                and "user_id" not in accepted
                and "access_token" not in accepted
            ):
                self.register(
                    "henry.accepts@acme.example", "Henry+Joined-42", "Henry", "Accepts", invitation_token=henry_token
                )
                if self.security_user("henry.accepts@acme.example").status.value == "pending":
                    self.verify_email("henry.accepts@acme.example")
            self.record("henry.accepts@acme.example", "Henry+Joined-42", note="joined through an invitation")

        # LDAP and OAuth configuration, then a Google sign-in (code exchange stubbed)
        self.call(
            "POST",
            "/api/security/ldap",
            token=admin,
            json={
                "name": "Corporate AD",
                "server_url": "ldaps://ad.acme.example:636",
                "bind_dn": "CN=svc-agentforge,OU=Service,DC=acme,DC=example",
                "bind_password": "LdapBind!Secret-1",
                "base_dn": "DC=acme,DC=example",
                "use_ssl": True,
                "attribute_mapping": {"email": "mail", "first_name": "givenName"},
                "group_role_mapping": {"CN=Support,DC=acme,DC=example": support_id or user_role},
            },
        )
        self.call(
            "POST",
            "/api/security/oauth/configure",
            token=admin,
            json={
                "provider": "google",
                "client_id": "1234567890-fixture.apps.googleusercontent.com",
                "client_secret": "GOCSPX-fixture-google-secret",
                "scopes": ["openid", "email", "profile"],
            },
        )
        self.call(
            "POST",
            "/api/security/oauth/configure",
            token=admin,
            json={
                "provider": "microsoft",
                "client_id": "00000000-0000-0000-0000-00000000f1c5",
                "client_secret": "ms~fixture~secret",
                "tenant_id": "contoso.onmicrosoft.com",
                "enabled": False,
            },
        )
        login = self.call("GET", "/api/security/oauth/google/login", params={"org_id": "org_default"}) or {}
        state = parse_qs(urlparse(login.get("auth_url", "")).query).get("state", [""])[0]
        self.call(
            "GET",
            "/api/security/oauth/google/callback",
            params={"code": "stub-code", "state": state},
            expect=(200, 302, 307),
            follow_redirects=False,
        )
        self.users["gina.google@gmail.com"] = {
            "password": None,
            "note": "Google sign-in, no password",
            "external_id": GOOGLE_USER["id"],
        }

        # A policy (ABAC)
        self.call(
            "POST",
            "/api/security/policies",
            token=admin,
            json={
                "name": "Office hours only",
                "description": "Agents may chat during office hours",
                "resource_type": "agent",
                "actions": ["chat"],
                "role_ids": [support_id] if support_id else [],
                "rules": [{"conditions": [{"attribute": "time.hour", "operator": "gte", "value": 8}], "logic": "AND"}],
                "effect": "allow",
                "priority": 50,
            },
        )

        # Tools of every type, documents, scraping
        tools = self.create_tools()
        self.extra["tools"] = {name: tool_id for name, tool_id in tools.items()}
        docs_tool = tools.get("Policies KB (documents)")
        if docs_tool:
            for name, content in [
                ("travel-policy.txt", TEXT_DOCUMENT.encode("utf-8")),
                ("holiday-calendar.pdf", tiny_pdf("Office closed on 25 December.")),
            ]:
                self.call("POST", f"/api/tools/{docs_tool}/documents", files={"file": (name, content)})
            self.wait_for_documents()
        site_tool = tools.get("Help Centre (website)")
        if site_tool:
            self.call(
                "POST",
                f"/api/tools/{site_tool}/scrape",
                json={"url": "https://help.acme.example/", "recursive": False, "max_pages": 1},
            )

        # Tool, knowledge-base and database permissions (the endpoint never sets tool_name)
        api_tool = tools.get("Weather API")
        if api_tool:
            self.call(
                "POST",
                "/api/security/permissions/tools",
                token=admin,
                json={
                    "tool_id": api_tool,
                    "role_ids": [support_id] if support_id else [user_role],
                    "can_edit": False,
                    "rate_limit": 100,
                    "allowed_hours_start": 8,
                    "allowed_hours_end": 18,
                },
            )
            self.call(
                "POST",
                "/api/security/permissions/tools",
                token=admin,
                json={"tool_id": api_tool, "user_ids": [bob_id], "can_delete": True},
            )
        if docs_tool:
            self.call(
                "POST",
                "/api/security/permissions/kb",
                token=admin,
                json={
                    "kb_id": docs_tool,
                    "role_ids": [user_role],
                    "can_download": True,
                    "max_classification": "internal",
                },
            )
        db_tool = tools.get("Orders DB")
        if db_tool:
            self.call(
                "POST",
                "/api/security/permissions/db",
                token=admin,
                json={
                    "tool_id": db_tool,
                    "role_ids": [auditor_id] if auditor_id else [viewer_role],
                    "allowed_tables": ["orders"],
                    "denied_tables": ["payments"],
                    "column_permissions": {"orders": {"card_number": False}},
                    "row_filters": {"orders": "region = 'EU'"},
                    "max_rows_returned": 200,
                },
            )

        # Agents with tools, chat conversations
        agents = self.create_agents(tools)
        helper = agents.get("Travel Helper")
        if helper:
            conversation = self.chat(helper, "What is the hotel cap per night?", timezone="Europe/Paris")
            if conversation:
                self.chat(helper, "And meals? \U0001f37d\ufe0f", conversation_id=conversation)
            self.chat(helper, "Hello")
        desk = agents.get("Support Desk")
        if desk:
            self.chat(desk, "When is support open?")

        # System settings and integrations (app level)
        self.call(
            "POST",
            "/api/settings/integrations",
            json={
                "provider": "google",
                "clientId": "1234567890-fixture.apps.googleusercontent.com",
                "clientSecret": "GOCSPX-fixture-google-secret",
            },
        )

        # Second organization: no endpoint creates one, so it is added with AgentForge's own model
        self.second_organization()

        # Sign-ins that leave last_login set
        self.login("carol.creator@acme.example", self.users["carol.creator@acme.example"]["password"])
        self.login("henry.accepts@acme.example", "Henry+Joined-42")
        self.sign_in_matrix()
        self.save()

    def sign_in_matrix(self):
        """What AgentForge answers each user's current password: the rule our sign-in must follow."""
        for email, entry in self.users.items():
            if not entry.get("password"):
                continue
            body = {"email": email, "password": entry["password"]}
            if entry.get("org_id"):
                body["org_id"] = entry["org_id"]
            response = self.client.post("/api/security/auth/login", json=body)
            answer = response.json()
            entry["agentforge_login"] = {
                "status": response.status_code,
                "detail": answer.get("detail") if response.status_code != 200 else None,
                "requires_mfa": bool(answer.get("requires_mfa")) if response.status_code == 200 else None,
            }

    def bootstrap_admin(self):
        """The first super admin: the late era ships one, the first era has to be given one."""
        for user in self.state.users.values():
            if "role_super_admin" in user.role_ids or any(
                getattr(self.state.roles.get(r), "name", "") == "Super Admin" for r in user.role_ids
            ):
                if user.email == "admin@agentforge.app":
                    self.record(user.email, "Admin@123", note="default super admin the app creates on first start")
                    return user.email, "Admin@123"
        email, password = "alice.admin@acme.example", "Alice!Admin-2026"
        self.register(email, password, "Alice", "Admin")
        self.verify_email(email)
        user = self.security_user(email)
        user.role_ids = ["role_super_admin"]
        self.save()
        self.users[email]["note"] = "first account, made super admin in-process"
        return email, password

    def chat(self, agent_id, message, **body):
        """One chat turn through the endpoint the era's UI uses; returns the conversation id."""
        paths = {route.path for route in self.main.app.routes}
        if "/api/agents/{agent_id}/chat/stream" in paths:
            response = self.client.post(
                f"/api/agents/{agent_id}/chat/stream",
                json={"message": message, **body},
                headers={"Authorization": f"Bearer {self.app_token}"},
            )
            found = re.findall(r'"conversation_id":\s*"([0-9a-f-]{36})"', response.text)
            if response.status_code != 200 or '"type": "error"' in response.text:
                self.failures.append(f"chat/stream {agent_id}: {response.status_code} {response.text[-300:]}")
            return found[-1] if found else body.get("conversation_id")
        answer = self.call("POST", f"/api/agents/{agent_id}/chat", json={"message": message, **body}) or {}
        return answer.get("conversation_id")

    def role_named(self, name, admin, permissions):
        for role in self.state.roles.values():
            if role.name.lower() == name.lower():
                return role.id
        return role_id(
            self.call(
                "POST",
                "/api/security/roles",
                token=admin,
                json={
                    "name": name,
                    "description": f"{name} (created by the administrator)",
                    "permissions": permissions,
                },
            )
        )

    def welcome_password(self, email):
        """The temporary password from the welcome e-mail (or from the answer when none was sent)."""
        return self.mail_token(email, r"Temporary Password:</strong>\s*<code[^>]*>([^<]+)</code>")

    def create_tools(self):
        # Every type the tool wizard of the UI offers (its formTypes list).
        specs = [
            {
                "type": "api",
                "name": "Weather API",
                "description": "Current weather by city",
                "api_config": {
                    "base_url": "https://api.weather.example",
                    "http_method": "GET",
                    "endpoint_path": "/v1/current",
                    "auth_type": "api_key",
                    "auth_value": "wx-fixture-key-123",
                    "api_key_name": "X-API-Key",
                    "input_parameters": [
                        {"name": "city", "type": "string", "description": "City", "required": True, "location": "query"}
                    ],
                },
            },
            {
                "type": "knowledge",
                "name": "Policies KB (documents)",
                "description": "HR policies",
                "config": {"chunk_size": 500, "chunk_overlap": 50, "top_k": 3},
            },
            {
                "type": "website",
                "name": "Help Centre (website)",
                "description": "Public help pages",
                "config": {"url": "https://help.acme.example/"},
            },
            {"type": "document", "name": "Contracts", "description": ""},
            {
                "type": "database",
                "name": "Orders DB",
                "description": "Read-only orders replica",
                "config": {
                    "db_type": "postgresql",
                    "host": "db.acme.example",
                    "port": 5432,
                    "database": "orders",
                    "username": "reader",
                    "password": "Db!Reader-Secret",
                },
            },
            {
                "type": "email",
                "name": "Notify by e-mail",
                "description": "Sends notifications",
                "config": {"provider": "sendgrid", "from_email": "noreply@acme.example"},
            },
            {"type": "webhook", "name": "Slack webhook", "config": {"url": "https://hooks.slack.example/T000"}},
            {"type": "spreadsheet", "name": "Price list", "config": {"sheet_id": "1AbCfixture", "range": "A1:D50"}},
            {"type": "slack", "name": "Slack bot", "config": {"bot_token": "xoxb-fixture", "channel": "#support"}},
            {"type": "calendar", "name": "Team calendar", "config": {"provider": "google", "calendar_id": "primary"}},
            {"type": "websearch", "name": "Web search", "config": {"provider": "tavily", "max_results": 3}},
            {"type": "crm", "name": "CRM", "config": {"provider": "hubspot", "api_key": "hub-fixture"}},
            {"type": "imagegen", "name": "Image generator", "config": {"model": "dall-e-3", "size": "1024x1024"}},
            {"type": "code", "name": "Code runner", "config": {"language": "python", "timeout": 10}},
            {"type": "calculator", "name": "Calculator", "config": {}},
            {"type": "storage", "name": "File storage", "config": {"provider": "s3", "bucket": "acme-files"}},
            {"type": "stt", "name": "Speech to text", "config": {"model": "whisper-1"}},
            {"type": "tts", "name": "Text to speech", "config": {"voice": "alloy"}},
            {"type": "translate", "name": "Translator", "config": {"target_language": "fr"}},
            {"type": "ocr", "name": "OCR", "config": {"languages": ["en", "ar"]}},
            {"type": "hitl", "name": "Human approval", "config": {"approvers": ["alice.admin@acme.example"]}},
        ]
        created = {}
        for spec in specs:
            answer = self.call("POST", "/api/tools", json=spec, expect=(200, 400, 422))
            tool_id = (answer or {}).get("tool_id") or (answer or {}).get("tool", {}).get("id")
            if tool_id:
                created[spec["name"]] = tool_id
            else:
                print(f"  - tool type {spec['type']!r} not accepted: {str(answer)[:120]}")
        return created

    def create_agents(self, tools):
        created = {}
        for spec in [
            {
                "name": "Travel Helper",
                "goal": "Answer questions about the travel policy",
                "personality": {"tone": "friendly", "voice": "concise"},
                "guardrails": {"antiHallucination": True, "avoidTopics": "politics\nsalaries", "maxLength": "short"},
                "tasks": [
                    {
                        "name": "Answer policy questions",
                        "description": "Use the KB",
                        "instructions": ["Cite the policy section", {"text": "Ask for the city when unclear"}],
                    }
                ],
                "tool_ids": [t for t in (tools.get("Policies KB (documents)"), tools.get("Weather API")) if t],
                "model_id": "gpt-4o",
                "status": "published",
            },
            {
                "name": "Support Desk",
                "goal": "Help customers with orders",
                "tool_ids": [t for t in (tools.get("Help Centre (website)"), tools.get("Orders DB")) if t],
                "model_id": "gpt-4o-mini",
                "status": "draft",
            },
        ]:
            answer = self.call("POST", "/api/agents", json=spec)
            agent_id = (answer or {}).get("agent_id") or (answer or {}).get("agent", {}).get("id")
            if agent_id:
                created[spec["name"]] = agent_id
        if "Support Desk" in created:
            # The late era checks the owner in its database; without one it answers 403.
            self.call(
                "PUT",
                f"/api/agents/{created['Support Desk']}",
                expect=(200, 403),
                json={"icon": "\U0001f6e0\ufe0f", "status": "published"},
            )
        self.extra["agents"] = created
        return created

    def wait_for_documents(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            pending = [d for d in self.main.app_state.documents.values() if d.status == "processing"]
            if not pending:
                return
            time.sleep(0.2)
        self.failures.append("documents still processing after %ss" % timeout)

    def second_organization(self):
        models = sys.modules["core.security"]
        org = models.Organization(
            name="Globex Corporation",
            slug="globex",
            domain="globex.example",
            allowed_auth_providers=[models.AuthProvider.LOCAL],
            max_users=25,
        )
        self.state.organizations[org.id] = org
        if hasattr(self.state, "get_settings"):
            self.state.get_settings(org.id)
        self.save()
        self.extra["organizations"]["globex"] = org.id
        self.register("olga.globex@globex.example", "Olga!Globex-2026", "Olga", "Globex", org_id=org.id)
        self.verify_email("olga.globex@globex.example")
        self.users["olga.globex@globex.example"]["org_id"] = org.id
        self.login("olga.globex@globex.example", "Olga!Globex-2026", org_id=org.id)


def with_client_address(app):
    """The app logs ``request.client.host``; this TestClient leaves it unset, uvicorn would not."""

    async def asgi(scope, receive, send):
        if scope["type"] in ("http", "websocket") and not scope.get("client"):
            scope = dict(scope, client=("127.0.0.1", 50000))
        await app(scope, receive, send)

    return asgi


def role_id(answer):
    if not answer:
        return None
    return answer.get("role_id") or answer.get("id") or (answer.get("role") or {}).get("id")


def department_id(answer):
    if not answer:
        return None
    return answer.get("department_id") or answer.get("id") or (answer.get("department") or {}).get("id")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", help="an AgentForge checkout (its api/main.py is imported)")
    parser.add_argument("out_dir", help="data directory to write (emptied first)")
    args = parser.parse_args(argv)
    checkout = os.path.abspath(args.checkout)
    out_dir = os.path.abspath(args.out_dir)
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)

    scratch = tempfile.mkdtemp(prefix="agentforge-writer-")
    point_agentforge_at(
        checkout,
        out_dir,
        JWT_SECRET_KEY=JWT_SECRET,
        SQLITE_PATH=os.path.join(scratch, "unused.db"),
        OPENAI_API_KEY="sk-stub-not-a-key",
        ANTHROPIC_API_KEY="stub",
        SENDGRID_API_KEY="SG.stub",
        BASE_URL="http://agentforge.test",
        APP_URL="http://agentforge.test",
    )
    os.chdir(scratch)  # relative defaults of the app ("data/…") land in the scratch dir, not the checkout

    internet = FakeInternet()
    internet.install()
    import api.main as app_module
    from fastapi.testclient import TestClient

    with TestClient(with_client_address(app_module.app), base_url="http://agentforge.test") as client:
        driver = Driver(client, app_module, internet, out_dir)
        driver.run()
        time.sleep(0.5)

    credentials = {
        "checkout_commit": os.environ.get("AGENTFORGE_COMMIT", ""),
        "jwt_secret": JWT_SECRET,
        "organizations": driver.extra["organizations"],
        "users": dict(sorted(driver.users.items())),
        "invitations": driver.extra["invitations"],
        "tools": driver.extra["tools"],
        "agents": driver.extra["agents"],
    }
    with open(os.path.join(out_dir, "credentials.json"), "w", encoding="utf-8") as handle:
        json.dump(credentials, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"wrote {out_dir}; outbound requests answered: {len(internet.requests)}; e-mails: {len(internet.emails)}")
    if driver.failures:
        print("steps that failed:")
        for failure in driver.failures:
            print("  " + failure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
