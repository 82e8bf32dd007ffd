"""Organization scoping in the admin: a staff user sees and edits their organization only.

:class:`OrgScopedAdmin` keeps every page of a tenant model (querysets, foreign-key and
many-to-many choices, autocompletes, list filters, object URLs) to the signed-in staff
user's organization; superusers see every organization, with an organization filter, and
their views run inside :func:`agentforge_core.tenancy.unscoped`.

The rows come from the models' scoped managers (``Model.objects``, through Django's
``_default_manager``): the request middleware activates the staff user's organization, so
every queryset, choice list and related filter is held to it, and fails closed without one.
"""

from __future__ import annotations

import functools

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.core.exceptions import FieldDoesNotExist, PermissionDenied, ValidationError
from django.db import IntegrityError, models, router, transaction
from django.db.models.constants import LOOKUP_SEP
from django.http import Http404, HttpResponseRedirect
from django.template.response import SimpleTemplateResponse
from django.urls import URLPattern, reverse
from django.utils.functional import cached_property

from agentforge_core.models import scope_field
from agentforge_core.tenancy import org_scope, unscoped


def model_has_org(model) -> bool:
    try:
        field = model._meta.get_field("org")
    except Exception:
        return False
    return (
        getattr(field, "related_model", None) is not None and field.related_model._meta.label == "accounts.Organization"
    )


def is_superuser(request) -> bool:
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_superuser)


def request_scope(request):
    """The organization scope an admin view of ``request`` runs in: the signed-in user's
    organization (the middleware's), lifted for a superuser (``superuser_unscoped``). For work
    that runs after the view has returned, such as a streamed response's rows."""
    return unscoped() if is_superuser(request) else org_scope(request.user.org_id)


def superuser_unscoped(view):
    """Run a superuser's admin view with scoping lifted (and render inside the scope).

    The request middleware activates the signed-in user's own organization; a superuser
    working on another organization's row needs the unscoped writes and related managers.
    """

    @functools.wraps(view)
    def inner(request, *args, **kwargs):
        if not is_superuser(request):
            return view(request, *args, **kwargs)
        with unscoped():
            response = view(request, *args, **kwargs)
            if isinstance(response, SimpleTemplateResponse) and not response.is_rendered:
                response.render()
            return response

    return inner


class OrganizationListFilter(admin.SimpleListFilter):
    """The organization filter, shown to superusers only."""

    title = "organization"
    parameter_name = "org"

    def lookups(self, request, model_admin):
        from accounts.models import Organization

        return [(str(pk), name) for pk, name in Organization.all_orgs.order_by("name").values_list("pk", "name")]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        try:
            return queryset.filter(org_id=value)
        except (ValueError, ValidationError):
            return queryset.none()


class OrgConsistencyFormMixin:
    """Refuse a row whose related rows belong to another organization (superusers pick any).

    Also validates unique constraints that include the organization even when the org
    is not a form field (org admins never choose it; it is preset on the instance).
    """

    forced_org_id = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.forced_org_id is not None and hasattr(self.instance, "org_id") and self.instance.org_id is None:
            self.instance.org_id = self.forced_org_id

    def _get_validation_exclusions(self):
        exclude = super()._get_validation_exclusions()
        if getattr(self.instance, "org_id", None) is not None and "org" in exclude:
            exclude.discard("org")
        return exclude

    def clean(self):
        cleaned = super().clean()
        org = cleaned.get("org") if "org" in cleaned else None
        refuse_foreign_rows(self, getattr(org, "pk", None) or getattr(self.instance, "org_id", None))
        return cleaned


def refuse_foreign_rows(form, org_id, skip=()) -> None:
    """Add a form error for each chosen row (foreign key or many-to-many) of another organization."""
    if org_id is None:
        return
    for name, value in list(form.cleaned_data.items()):
        if name == "org" or name in skip:
            continue
        values = value if isinstance(value, (list, tuple, models.QuerySet)) else [value]
        for item in values:
            if isinstance(item, models.Model) and getattr(item, "org_id", org_id) not in (org_id, None):
                form.add_error(name, f"{item} belongs to another organization.")
                break


def reaches_tenant_table(model, lookup: str) -> bool:
    """Whether ``lookup`` (``roles__id``, ``user__id``) crosses a relation from ``model`` into a tenant table."""
    for part in lookup.split(LOOKUP_SEP):
        try:
            field = model._meta.get_field(part)
        except FieldDoesNotExist:
            return False
        if not field.is_relation:
            return False
        model = field.related_model
        if scope_field(model) is not None:
            return True
    return False


def without_other_orgs_links(queryset):
    """``queryset`` of a global table without its rows that point to a tenant row outside the
    active organization: what row-level security's joins leave out on PostgreSQL, here in the
    count as well (a count does not join)."""
    for field in queryset.model._meta.concrete_fields:
        if field.many_to_one or field.one_to_one:
            target = field.related_model
            if scope_field(target) is not None:
                keys = target._default_manager.values(field.remote_field.field_name)
                queryset = queryset.filter(
                    models.Q(**{f"{field.name}__isnull": True}) | models.Q(**{f"{field.name}__in": keys})
                )
    return queryset


class HeldJoinsMixin:
    """The pages of a global table (and the history page of any row), for an organization admin,
    reach no tenant row outside their organization.

    A global table's queryset is not scoped, so what it reaches was read unscoped on SQLite and
    MariaDB: the history page's LogEntry rows named their users (another organization's superuser
    who changed the row; PostgreSQL's row-level security left the entry out, and every backend
    counted it), and a changelist lookup across a relation into a tenant table (``?roles__id=`` on
    the permission catalog, ``?user__id=`` on Django's groups, which Django allows for any relation
    one level deep) answered for another organization's rows.
    """

    def lookup_allowed(self, lookup, value, request=None):
        if scope_field(self.model) is None and not is_superuser(request) and reaches_tenant_table(self.model, lookup):
            return False  # a 400, as for a lookup Django does not offer
        return super().lookup_allowed(lookup, value, request)

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        # The history page's LogEntry rows reach the view through here only.
        if isinstance(queryset, models.QuerySet) and scope_field(queryset.model) is None and not is_superuser(request):
            queryset = without_other_orgs_links(queryset)
        return super().get_paginator(request, queryset, per_page, orphans, allow_empty_first_page)


class OrgScopedAdmin(HeldJoinsMixin, admin.ModelAdmin):
    """A ModelAdmin for a tenant model (works for global models too).

    Non-superusers see and edit their organization's rows only and never choose the
    organization (it is filled in on save); other organizations' objects are 404s.
    """

    org_field = "org"
    # Many-to-many fields with a ``through`` model, edited as a plain multiple choice
    # (name -> widget class); the through rows are written with the parent's org.
    through_m2m: dict = {}
    # Like ``fieldsets`` but may name ``through_m2m`` fields (Django's system checks
    # refuse those in ``fields``/``fieldsets``, though the form handles them fine).
    all_fieldsets = None

    # -- helpers ---------------------------------------------------------------------

    @cached_property
    def has_org(self) -> bool:
        return bool(self.org_field) and model_has_org(self.model)

    # -- views -----------------------------------------------------------------------

    def get_urls(self):
        urls = super().get_urls()
        for pattern in urls:
            if isinstance(pattern, URLPattern):
                pattern.callback = superuser_unscoped(pattern.callback)
        return urls

    # A deletion the database refuses: rows the admin cannot see still refer to the row (links
    # between organizations an import or an older writer left; the cascade leaves other
    # organizations' rows alone). A message and the page again, not a server error.
    REFERRED_TO = (
        "%(what)s not deleted: rows outside your organization still refer to %(them)s "
        "(links between organizations, which import_json reports as “organization links”). "
        "Point those rows elsewhere first."
    )

    def delete_view(self, request, object_id, extra_context=None):
        opts = self.opts
        change = reverse(
            f"admin:{opts.app_label}_{opts.model_name}_change",
            args=[quote(object_id)],
            current_app=self.admin_site.name,
        )
        return self._deleting(
            request,
            lambda: super(OrgScopedAdmin, self).delete_view(request, object_id, extra_context),
            refused=self.REFERRED_TO % {"what": f"The {opts.verbose_name} was", "them": "it"},
            back_to=change,
        )

    def response_action(self, request, queryset):
        # One transaction per action, as delete_view has: a deletion's log entries go with it.
        def action():
            with transaction.atomic(using=router.db_for_write(self.model)):
                return super(OrgScopedAdmin, self).response_action(request, queryset)

        return self._deleting(
            request,
            action,
            refused=self.REFERRED_TO % {"what": f"The {self.opts.verbose_name_plural} were", "them": "them"},
            back_to=request.get_full_path(),
        )

    def _deleting(self, request, view, refused: str, back_to: str):
        # The view's own messages ("deleted successfully") wait for its transaction: the foreign
        # key refuses at COMMIT where it is deferred, after they were written.
        request.held_admin_messages = held = []
        try:
            response = view()
        except IntegrityError:
            held = [((refused, messages.ERROR), {})]
            response = HttpResponseRedirect(back_to)
        finally:
            del request.held_admin_messages
        for args, kwargs in held:
            self.message_user(request, *args, **kwargs)
        return response

    def message_user(self, request, *args, **kwargs):
        held = getattr(request, "held_admin_messages", None)
        if held is not None:
            held.append((args, kwargs))
        else:
            super().message_user(request, *args, **kwargs)

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is None and not is_superuser(request):
            # Another organization's object (or none at all): the same answer, a 404.
            raise Http404("No such object.")
        return obj

    def get_list_filter(self, request):
        filters = []
        for item in super().get_list_filter(request):
            if item in ("org", self.org_field) or item is OrganizationListFilter:
                continue
            filters.append(item)
        if is_superuser(request) and self.has_org:
            filters.insert(0, OrganizationListFilter)
        return filters

    def get_list_display(self, request):
        columns = list(super().get_list_display(request))
        if not is_superuser(request) and self.has_org:
            columns = [c for c in columns if c not in ("org", "org_link")]
        return columns

    # -- forms -----------------------------------------------------------------------

    def get_fieldsets(self, request, obj=None):
        if self.all_fieldsets is not None and not (obj is None and getattr(self, "add_fieldsets", None)):
            fieldsets = [(title, dict(opts)) for title, opts in self.all_fieldsets]
        else:
            fieldsets = super().get_fieldsets(request, obj)
        if is_superuser(request) or not self.has_org:
            return fieldsets
        cleaned = []
        for name, options in fieldsets:
            options = dict(options)
            options["fields"] = [f for f in options.get("fields", ()) if f != self.org_field]
            if options["fields"]:
                cleaned.append((name, options))
        return cleaned

    def get_exclude(self, request, obj=None):
        exclude = list(super().get_exclude(request, obj) or [])
        if self.has_org and not is_superuser(request):
            exclude.append(self.org_field)
        return exclude

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        attrs = {"__module__": form.__module__}
        if self.has_org and not is_superuser(request):
            attrs["forced_org_id"] = request.user.org_id
        return type(form.__name__, (OrgConsistencyFormMixin, form), attrs)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name in self.through_m2m:
            # Django offers no field for a many-to-many with its own through model.
            queryset = kwargs.get("queryset")
            if queryset is None:
                queryset = self.get_field_queryset(kwargs.get("using"), db_field, request)
            if queryset is None:
                queryset = db_field.related_model._default_manager.all()
            widget = self.through_m2m[db_field.name]
            if isinstance(widget, type) and issubclass(widget, admin.widgets.FilteredSelectMultiple):
                widget = widget(db_field.verbose_name, False)
            elif isinstance(widget, type):
                widget = widget()
            return forms.ModelMultipleChoiceField(
                queryset=queryset,
                required=False,
                widget=widget,
                label=kwargs.get("label", db_field.verbose_name.capitalize()),
                help_text=kwargs.get("help_text", ""),
            )
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        if self.has_org and not is_superuser(request):
            current = getattr(obj, f"{self.org_field}_id", None)
            if current is None:
                setattr(obj, f"{self.org_field}_id", request.user.org_id)
            elif current != request.user.org_id:
                raise PermissionDenied
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        chosen = {name: form.cleaned_data.pop(name) for name in self.through_m2m if name in form.cleaned_data}
        super().save_related(request, form, formsets, change)
        for name, targets in chosen.items():
            sync_through(form.instance, name, targets)

    # -- permissions -----------------------------------------------------------------

    def _owns(self, request, obj) -> bool:
        if obj is None or is_superuser(request):
            return True
        if self.model._meta.label == "accounts.Organization":
            return obj.pk == request.user.org_id
        if self.has_org:
            return getattr(obj, f"{self.org_field}_id", None) == request.user.org_id
        return True

    def has_view_permission(self, request, obj=None):
        return super().has_view_permission(request, obj) and self._owns(request, obj)

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and self._owns(request, obj)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and self._owns(request, obj)


def outranking_ids(request) -> set:
    """Users of the signed-in admin's organization with more privileges (once per request)."""
    from accounts.privileges import outranking_user_ids

    if not hasattr(request, "_af_outranking_ids"):
        request._af_outranking_ids = outranking_user_ids(request.user)
    return request._af_outranking_ids


class UserCredentialsAdminMixin:
    """Admin of a user's credentials (API keys, MFA, sessions, password history).

    Nobody creates, sees or changes the credentials of a user with more privileges
    than their own (see ``accounts.privileges``): such rows are left out of lists and
    choices, their pages are 404s, and a form naming such a user is refused.
    """

    credential_user_field = "user"

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if is_superuser(request):
            return queryset
        return queryset.exclude(**{f"{self.credential_user_field}_id__in": outranking_ids(request)})

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == self.credential_user_field and field is not None and not is_superuser(request):
            field.queryset = field.queryset.exclude(pk__in=outranking_ids(request))
        return field

    def _may_touch(self, request, obj) -> bool:
        user_id = getattr(obj, f"{self.credential_user_field}_id", None) if obj is not None else None
        return is_superuser(request) or user_id is None or user_id not in outranking_ids(request)

    def has_view_permission(self, request, obj=None):
        return super().has_view_permission(request, obj) and self._may_touch(request, obj)

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and self._may_touch(request, obj)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and self._may_touch(request, obj)

    def save_model(self, request, obj, form, change):
        if not self._may_touch(request, obj):
            raise PermissionDenied
        super().save_model(request, obj, form, change)


class OrgScopedInlineMixin:
    """Inline formsets: the parent's organization filled in, and checked, on every row.

    The rows and their choices are scoped like any other queryset of the request.
    """

    def get_queryset(self, request):
        # Django's inline empties the rows for a user without view permission on the
        # inline's model; here the parent's permissions decide, as they always have.
        queryset = self.model._default_manager.get_queryset()
        ordering = self.get_ordering(request)
        return queryset.order_by(*ordering) if ordering else queryset

    def get_exclude(self, request, obj=None):
        exclude = list(super().get_exclude(request, obj) or [])
        if model_has_org(self.model):
            exclude.append("org")  # filled from the parent row
        return exclude

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)
        org_id = getattr(obj, "org_id", None)

        class OrgFillingFormSet(formset):
            def clean(self):
                # The rows take the parent's organization (superusers included): a row
                # may not link it to another organization's user, role or tool.
                super().clean()
                parent_org = getattr(self.instance, "org_id", None) or org_id
                for form in self.forms:
                    if getattr(form, "cleaned_data", None) and not form.cleaned_data.get("DELETE"):
                        refuse_foreign_rows(form, parent_org, skip=(self.fk.name,))

            def save_new(self, form, commit=True):
                instance = form.instance
                setattr(instance, self.fk.name, self.instance)
                if model_has_org(instance.__class__) and instance.org_id is None:
                    instance.org_id = self.instance.org_id or org_id
                return super().save_new(form, commit=commit)

        OrgFillingFormSet.__name__ = formset.__name__
        return OrgFillingFormSet


class ScopedTabularInline(OrgScopedInlineMixin, admin.TabularInline):
    pass


def sync_through(obj, field_name: str, targets) -> None:
    """Make ``obj``'s through rows for ``field_name`` exactly ``targets`` (org from obj)."""
    field = obj._meta.get_field(field_name)
    through = field.remote_field.through
    source = field.m2m_field_name()
    target = field.m2m_reverse_field_name()
    # The scoped manager: another organization's through rows naming ``obj`` (links planted
    # around the checks) are neither counted as chosen nor deleted here.
    manager = through._default_manager
    existing = set(manager.filter(**{source: obj}).values_list(f"{target}_id", flat=True))
    wanted = {t.pk for t in targets}
    if existing - wanted:
        manager.filter(**{source: obj, f"{target}_id__in": existing - wanted}).delete()
    extra = {}
    if model_has_org(through):
        extra["org_id"] = obj.org_id
    for pk in sorted(wanted - existing, key=str):
        through(**extra, **{source: obj, f"{target}_id": pk}).save()
