"""The admin site: Django's, with AgentForge's titles and the second-factor step between the
password and the pages.

Installed as ``admin.site`` by ``agentforge_site.apps.AdminConfig`` (``INSTALLED_APPS``), so every
``admin.register`` lands here. The step's views live in :mod:`accounts.admin_mfa`.
"""

from __future__ import annotations

import functools

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth.decorators import login_not_required
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters

from accounts import admin_mfa
from agentforge_site.admin.scoping import superuser_unscoped


class AgentForgeAdminSite(admin.AdminSite):
    site_header = "AgentForge DB"
    site_title = "AgentForge DB admin"
    index_title = "Administration"

    def admin_view(self, view, cacheable=False):
        """Django's guard, plus: a visitor who owes the second factor is sent to that step."""
        guarded = super().admin_view(view, cacheable)

        def inner(request, *args, **kwargs):
            if not self.has_permission(request) and admin_mfa.pending_user(request) is not None:
                return HttpResponseRedirect(admin_mfa.step_url(request, self.name))
            return guarded(request, *args, **kwargs)

        return functools.update_wrapper(inner, guarded)

    @method_decorator(never_cache)
    @login_not_required
    def login(self, request, extra_context=None):
        """Django's ``AdminSite.login`` with :class:`accounts.admin_mfa.SecondFactorLoginView`."""
        if request.method == "GET" and self.has_permission(request):
            return HttpResponseRedirect(reverse("admin:index", current_app=self.name))
        if request.method == "GET" and admin_mfa.pending_user(request) is not None:
            return HttpResponseRedirect(admin_mfa.step_url(request, self.name))
        context = {
            **self.each_context(request),
            "title": "Log in",
            "subtitle": None,
            "app_path": request.get_full_path(),
            "username": request.user.get_username(),
        }
        if REDIRECT_FIELD_NAME not in request.GET and REDIRECT_FIELD_NAME not in request.POST:
            context[REDIRECT_FIELD_NAME] = reverse("admin:index", current_app=self.name)
        context.update(extra_context or {})
        request.current_app = self.name
        return admin_mfa.SecondFactorLoginView.as_view(
            extra_context=context,
            authentication_form=self.login_form or AdminAuthenticationForm,
            template_name=self.login_template or "admin/login.html",
        )(request)

    def autocomplete_view(self, request):
        # It serves every model admin: a superuser's runs unscoped like their model admin
        # views (PostgreSQL's row-level security would otherwise hold it to their own organization).
        return superuser_unscoped(super().autocomplete_view)(request)

    def _second_factor_view(self, view):
        @never_cache
        @csrf_protect
        @sensitive_post_parameters("code")
        @login_not_required
        def inner(request):
            request.current_app = self.name
            return view(request, self)

        return functools.update_wrapper(inner, view)

    def get_urls(self):
        return [
            path("mfa/", self._second_factor_view(admin_mfa.verify), name="mfa_verify"),
            path("mfa/enrol/", self._second_factor_view(admin_mfa.enrol), name="mfa_enrol"),
            path("mfa/cancel/", self._second_factor_view(admin_mfa.cancel), name="mfa_cancel"),
            *super().get_urls(),
        ]
