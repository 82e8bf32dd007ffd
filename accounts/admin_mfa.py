"""The admin's second step after the password: a TOTP or backup code, or enrolment.

A right password for a user who has MFA (or whose organization requires it) does not sign
in. The session (renewed, so a planted key is useless) records only *who* passed the
password and when; ``request.user`` stays anonymous, so no view of the site, admin or
not, treats the visitor as signed in. The admin sends every one of its pages to the code
step meanwhile (``agentforge_site.admin.site``). The step lasts ``STEP_SECONDS``; wrong
codes count toward the account's lockout like wrong passwords, and after
``MAX_CODE_ATTEMPTS`` the visitor starts again from the password. Each step writes an
audit entry: the password step (``login``, not successful yet), every wrong code
(``login_failed`` and an ``mfa_failed`` security event), enrolment (``mfa_enabled``),
abandoning (``logout``) and the sign-in itself (``login`` with ``mfa_used``).
"""

from __future__ import annotations

import time

from django import forms
from django.contrib import messages
from django.contrib.auth import login as auth_login
from django.contrib.auth.views import LoginView
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from accounts import mfa
from accounts.backends import EmailBackend
from accounts.models import User
from security.audit import record_auth_event, record_security_event
from security.models import SecurityEvent

PENDING = "_admin_mfa_pending"
STEP_SECONDS = 300
MAX_CODE_ATTEMPTS = 5
BACKUP_CODE_LENGTH = 8


class CodeForm(forms.Form):
    code = forms.CharField(
        label="Code",
        max_length=32,
        strip=True,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "autofocus": True, "inputmode": "text"}),
    )


# --- The pending state ----------------------------------------------------------------


def pending_user(request) -> User | None:
    """The user who passed the password on this session and still owes the second factor."""
    session = getattr(request, "session", None)
    state = session.get(PENDING) if session is not None else None
    if not state:
        return None
    user = None
    if time.time() - state.get("since", 0) <= STEP_SECONDS:
        user = User.all_orgs.filter(pk=state.get("user")).first()
    if user is None or not user.is_staff or not EmailBackend().user_can_authenticate(user):
        session.pop(PENDING, None)
        return None
    return user


def step_url(request, site_name: str = "admin") -> str:
    state = request.session.get(PENDING) or {}
    name = "mfa_enrol" if state.get("step") == "enrol" else "mfa_verify"
    return reverse(f"admin:{name}", current_app=site_name)


def _start(request, user, step: str, next_url: str) -> None:
    # A fresh session: whatever key the visitor brought (or was planted) is dropped.
    request.session.flush()
    request.session[PENDING] = {
        "user": str(user.pk),
        "backend": user.backend,
        "since": time.time(),
        "step": step,
        "next": next_url,
        "failures": 0,
    }
    request.session.save()  # the key now, so the audit entry names this session
    record_auth_event(
        "login",
        user=user,
        success=False,
        request=request,
        error="second factor required",
        details={"stage": "password", "next_step": step},
    )


def _finish(request, user, method: str) -> str:
    """Sign in for real; returns where to go next."""
    state = request.session.pop(PENDING)
    request.mfa_used = method  # read by the login audit entry (accounts.signals)
    auth_login(request, user, backend=state["backend"])
    return state["next"]


def _wrong_code(request, user, reason: str) -> HttpResponseRedirect | None:
    """Count a wrong code; a redirect to the password form when the step is over."""
    EmailBackend()._failed(user, request, reason=reason, error="invalid second factor")
    record_security_event(SecurityEvent.EventType.MFA_FAILED, user=user, request=request, details={"reason": reason})
    state = request.session[PENDING]
    state["failures"] += 1
    request.session.modified = True
    user.refresh_from_db(fields=["locked_until", "status"])
    if user.is_locked or state["failures"] >= MAX_CODE_ATTEMPTS:
        request.session.pop(PENDING, None)
        messages.error(request, "Too many wrong codes. Sign in again.")
        return HttpResponseRedirect(reverse("admin:login"))
    return None


# --- Views ----------------------------------------------------------------------------


class SecondFactorLoginView(LoginView):
    """Django's admin login, except that a user who owes a second factor is not signed in yet."""

    def form_valid(self, form):
        user = form.get_user()
        step = mfa.admin_step_for(user)
        if step is None:
            return super().form_valid(form)
        _start(self.request, user, step, self.get_success_url())
        return HttpResponseRedirect(step_url(self.request))


def _context(site, request, **extra) -> dict:
    return {**site.each_context(request), "subtitle": None, **extra}


def verify(request, site):
    user = pending_user(request)
    if user is None:
        return HttpResponseRedirect(reverse("admin:login", current_app=site.name))
    if request.session[PENDING]["step"] == "enrol":
        return HttpResponseRedirect(reverse("admin:mfa_enrol", current_app=site.name))
    form = CodeForm(request.POST or None)
    error = None
    if request.method == "POST" and form.is_valid():
        code = form.cleaned_data["code"]
        settings_row = mfa.mfa_settings_of(user)
        outcome = mfa.accept_totp(settings_row, code) if mfa.has_totp(settings_row) else "wrong"
        if outcome == "ok":
            return HttpResponseRedirect(_finish(request, user, "totp"))
        if (
            outcome == "wrong"
            and len(mfa.normalise_backup_code(code)) == BACKUP_CODE_LENGTH
            and settings_row is not None
            and settings_row.is_active
            and mfa.use_backup_code(settings_row, code)
        ):
            return HttpResponseRedirect(_finish(request, user, "backup_code"))
        reason = "mfa_code_reused" if outcome == "reused" else "invalid_mfa_code"
        restart = _wrong_code(request, user, reason)
        if restart is not None:
            return restart
        error = "That code was already used. Wait for the next one." if outcome == "reused" else "Wrong code."
    return TemplateResponse(
        request,
        "admin/mfa_verify.html",
        _context(
            site,
            request,
            title="Second factor",
            form=form,
            error=error,
            email=user.email,
        ),
    )


def enrol(request, site):
    user = pending_user(request)
    if user is None:
        return HttpResponseRedirect(reverse("admin:login", current_app=site.name))
    state = request.session[PENDING]
    if state["step"] != "enrol":
        return HttpResponseRedirect(reverse("admin:mfa_verify", current_app=site.name))
    if not state.get("secret_issued"):
        mfa.start_enrolment(user)
        state["secret_issued"] = True
        request.session.modified = True
    settings_row = mfa.mfa_settings_of(user)
    form = CodeForm(request.POST or None)
    error = None
    if request.method == "POST" and form.is_valid():
        codes = mfa.confirm_enrolment(settings_row, form.cleaned_data["code"])
        if codes is not None:
            next_url = _finish(request, user, "totp")
            return TemplateResponse(
                request,
                "admin/mfa_backup_codes.html",
                _context(
                    site,
                    request,
                    title="Your backup codes",
                    codes=codes,
                    next_url=next_url,
                ),
            )
        restart = _wrong_code(request, user, "invalid_mfa_code")
        if restart is not None:
            return restart
        error = "Wrong code. Check the time on your device and type the code it shows now."
    return TemplateResponse(
        request,
        "admin/mfa_enrol.html",
        _context(
            site,
            request,
            title="Set up a second factor",
            form=form,
            error=error,
            email=user.email,
            secret=settings_row.totp_secret,
            otpauth_uri=mfa.provisioning_uri(settings_row.totp_secret, user.email),
        ),
    )


def cancel(request, site):
    """Abandon the step (POST): back to the password form."""
    user = pending_user(request)
    if request.method == "POST":
        request.session.flush()
        if user is not None:
            record_auth_event(
                "logout", user=user, request=request, details={"stage": "second_factor", "reason": "abandoned"}
            )
    return HttpResponseRedirect(reverse("admin:login", current_app=site.name))
