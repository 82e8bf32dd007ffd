"""System check: every model with an organization foreign key is organization-scoped.

A model that declares ``org = ForeignKey(Organization)`` but keeps Django's plain manager
would hand every organization's rows to ``Model.objects``; ``manage.py check`` (and so
``runserver``, ``migrate`` and the test run) refuses it, like django.contrib.auth's checks.
"""

from __future__ import annotations

from django.apps import apps
from django.conf import settings
from django.core import checks

from accounts.passwords import DEFAULT_POLICY
from agentforge_core.models import HeldToActiveOrg, OrgOwnedModel, OrgScopedQuerySet, is_org_scoped, scope_field


@checks.register(checks.Tags.models)
def check_tenant_models_are_scoped(app_configs=None, **kwargs):
    configs = app_configs or apps.get_app_configs()
    return tenant_model_errors(m for config in configs for m in config.get_models())


def tenant_model_errors(models) -> list:
    errors = []
    for model in models:
        field = scope_field(model)
        if field is None or field.primary_key:
            continue
        label = model._meta.label
        if not is_org_scoped(model._default_manager.all().query):
            errors.append(
                checks.Error(
                    f"{label}.{model._default_manager.name} is not organization-scoped",
                    hint="derive the model from agentforge_core.models.OrgOwnedModel (objects = OrgScopedManager())",
                    obj=model,
                    id="accounts.E001",
                )
            )
        if not hasattr(model, "all_orgs"):
            errors.append(
                checks.Error(f"{label} has no all_orgs manager for system work", obj=model, id="accounts.E002")
            )
        if not issubclass(model, OrgOwnedModel) and label not in UNCHECKED_WRITES:
            errors.append(
                checks.Error(
                    f"{label}: save() does not check the organization of the row and its links",
                    hint="derive the model from agentforge_core.models.OrgOwnedModel",
                    obj=model,
                    id="accounts.E003",
                )
            )
        queryset_class = model._default_manager._queryset_class
        if not issubclass(queryset_class, OrgScopedQuerySet):
            errors.append(
                checks.Error(
                    f"{label}: bulk writes (update, delete, bulk_create) do not check the organization",
                    hint="give the managers an OrgScopedQuerySet (OrgScopedManager.from_queryset)",
                    obj=model,
                    id="accounts.E004",
                )
            )
        if not issubclass(model, HeldToActiveOrg):
            errors.append(
                checks.Error(
                    f"{label}: refresh_from_db(), save's UPDATE and delete() reach another organization's row by its key",
                    hint="derive the model from agentforge_core.models.OrgOwnedModel, or put "
                    "agentforge_core.models.HeldToActiveOrg first among its bases",
                    obj=model,
                    id="accounts.E005",
                )
            )
    return errors


# Tenant models whose save() is not OrgOwnedModel's: the user model checks in User.save();
# audit entries are written by django-auditlog, unscoped, naming the organization of the
# change. Their bulk writes are checked like every other (OrgScopedQuerySet).
UNCHECKED_WRITES = {"accounts.User", "security.AuditLog"}


@checks.register(checks.Tags.security)
def check_signin_throttle_comes_before_the_lockout(app_configs=None, **kwargs):
    """One address must not reach the default lockout (5 failures, 30-minute reset): the pair
    throttle must stop it first and keep it out until the account's count starts again."""
    failures, reset = (
        settings.SIGNIN_THROTTLE_ACCOUNT_FAILURES,
        60 * DEFAULT_POLICY["account_lockout_reset_after_minutes"],
    )
    if failures and (
        failures >= DEFAULT_POLICY["account_lockout_attempts"] or settings.SIGNIN_THROTTLE_ACCOUNT_WINDOW < reset
    ):
        return [
            checks.Warning(
                "one client address can lock an account: the sign-in throttle lets it reach the lockout",
                hint=f"SIGNIN_THROTTLE_ACCOUNT_FAILURES below {DEFAULT_POLICY['account_lockout_attempts']} and "
                f"SIGNIN_THROTTLE_ACCOUNT_WINDOW at least {reset} (docs/security.md)",
                id="accounts.W001",
            )
        ]
    return []
