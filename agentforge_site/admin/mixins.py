"""Small model-admin behaviours shared by the apps' admins."""

from __future__ import annotations

from agentforge_core.fields import EncryptedJSONField, EncryptedTextField, encrypted_fields
from agentforge_site.admin.display import masked
from agentforge_site.admin.scoping import is_superuser
from security.forms import SecretAwareFormMixin, SecretField, SecretJSONField


class SuperuserWritesMixin:
    """Global catalogs: everyone with view rights may look, only superusers add, change or delete."""

    def has_add_permission(self, request, *args):
        return is_superuser(request)

    def has_change_permission(self, request, obj=None):
        return is_superuser(request)

    def has_delete_permission(self, request, obj=None):
        return is_superuser(request)


class CreatedByAdminMixin:
    """Record the admin who created a row in its ``created_by``."""

    def save_model(self, request, obj, form, change):
        if not change and obj.created_by_id is None:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


class ReadOnlyAdminMixin:
    """View-only for everyone, superusers included."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyInlineMixin(ReadOnlyAdminMixin):
    """Inline rows shown, never added, changed or deleted (and no empty rows offered)."""

    can_delete = False
    extra = 0
    max_num = 0


class SecretFieldsMixin:
    """Every EncryptedTextField / EncryptedJSONField masked on display, write-only in forms."""

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if isinstance(db_field, EncryptedJSONField):
            return SecretJSONField(label=db_field.verbose_name.capitalize(), help_text=db_field.help_text)
        if isinstance(db_field, EncryptedTextField):
            return SecretField(label=db_field.verbose_name.capitalize(), help_text=db_field.help_text)
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        names = tuple(f.name for f in encrypted_fields(self.model) if f.name in form.base_fields)
        if names:
            form = type(
                form.__name__,
                (SecretAwareFormMixin, form),
                {"secret_field_names": names, "__module__": form.__module__},
            )
        return form

    def _masked_name(self, name: str) -> str:
        masked_name = f"masked_{name}"
        if not hasattr(self, masked_name):
            field = self.model._meta.get_field(name)

            def display(obj, _name=name):
                return masked(getattr(obj, _name, None)) if obj is not None else "—"

            display.short_description = field.verbose_name.capitalize()
            setattr(self, masked_name, display)
        return masked_name

    def _mask_names(self, names):
        secret = {f.name for f in encrypted_fields(self.model)}
        return [self._masked_name(n) if isinstance(n, str) and n in secret else n for n in names]

    def get_readonly_fields(self, request, obj=None):
        return self._mask_names(super().get_readonly_fields(request, obj))

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or self.has_change_permission(request, obj):
            # Readonly fields named in fieldsets must match the masked readonly names.
            readonly = set(super().get_readonly_fields(request, obj))
            secret = {f.name for f in encrypted_fields(self.model)}
            swap = readonly & secret
            if not swap:
                return fieldsets
        else:
            swap = {f.name for f in encrypted_fields(self.model)}
        return [
            (title, {**opts, "fields": [self._masked_name(f) if f in swap else f for f in opts.get("fields", ())]})
            for title, opts in fieldsets
        ]
