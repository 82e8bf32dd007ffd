"""Admin for system settings, organization settings (typed values, secrets write-only)
and user preferences."""

from __future__ import annotations

from django import forms
from django.contrib import admin

from agentforge_site.admin.display import masked, truncate
from agentforge_site.admin.mixins import SuperuserWritesMixin
from agentforge_site.admin.scoping import OrgScopedAdmin, is_superuser
from security.forms import CLEAR, KEEP, SecretField
from settings_app.models import OrgSetting, SystemSetting, UserPreference, ValueType

BOOLEAN_CHOICES = (("", "—"), ("true", "True"), ("false", "False"))
TYPED_FIELDS = {t.value: f"value_{t.value}" for t in ValueType}


class TypedSettingForm(forms.ModelForm):
    """One input per value type; the one matching ``value_type`` is used (the page's
    script shows only that one). A secret is write-only: blank keeps it."""

    value_string = forms.CharField(
        label="Value (text)", required=False, strip=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60})
    )
    value_integer = forms.IntegerField(label="Value (integer)", required=False)
    value_float = forms.FloatField(label="Value (number)", required=False)
    value_boolean = forms.TypedChoiceField(
        label="Value (yes/no)", choices=BOOLEAN_CHOICES, required=False, coerce=lambda v: v == "true", empty_value=None
    )
    value_json = forms.JSONField(
        label="Value (JSON)", required=False, widget=forms.Textarea(attrs={"rows": 4, "cols": 60})
    )
    value_secret = SecretField(
        label="Value (secret)", help_text="Write-only: stored encrypted; leave blank to keep the current value."
    )

    class Meta:
        fields = ("key", "value_type", "description")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        instance = self.instance
        if instance.pk is not None or instance.value is not None or instance.secret_value:
            kind = ValueType.SECRET if instance.is_secret else instance.value_type
            if kind == ValueType.SECRET:
                self.initial["value_secret"] = instance.secret_value
            elif kind == ValueType.BOOLEAN:
                self.initial["value_boolean"] = "true" if instance.value else "false"
            elif kind in TYPED_FIELDS:
                self.initial[TYPED_FIELDS[kind]] = instance.value
        if "value_type" in self.fields:
            self.fields["value_type"].widget.attrs["class"] = "af-value-type"

    def clean(self):
        cleaned = super().clean()
        kind = cleaned.get("value_type")
        if not kind:
            return cleaned
        field_name = TYPED_FIELDS[kind]
        value = cleaned.get(field_name)
        if kind == ValueType.SECRET:
            was_secret = self.instance.pk is not None and self.instance.is_secret
            if value is KEEP and not was_secret:
                self.add_error(field_name, "Enter the secret value.")
        elif (
            kind in (ValueType.INTEGER, ValueType.FLOAT, ValueType.BOOLEAN)
            and value is None
            and field_name not in self.errors
        ):
            self.add_error(field_name, f"Enter a {kind} value.")
        elif kind == ValueType.STRING and value is None:
            cleaned[field_name] = ""
        return cleaned

    def _post_clean(self):
        super()._post_clean()
        if self.errors or not self.cleaned_data.get("value_type"):
            return
        kind = self.cleaned_data["value_type"]
        value = self.cleaned_data.get(TYPED_FIELDS[kind])
        instance = self.instance
        if kind == ValueType.SECRET:
            instance.is_secret = True
            instance.value = None
            if value is CLEAR:
                instance.secret_value = ""
            elif value is not KEEP:
                instance.secret_value = value
        else:
            instance.is_secret = False
            instance.secret_value = None
            instance.value = value
        instance.value_type = kind


class TypedSettingAdminMixin:
    form = TypedSettingForm
    list_display = ("key", "value_type", "shown_value", "updated_at", "updated_by")
    list_filter = ("value_type", "is_secret")
    search_fields = ("key", "description")
    readonly_fields = ("updated_at", "updated_by")
    typed_fields = tuple(TYPED_FIELDS.values())

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is not None and not self.has_change_permission(request, obj):
            # View-only: the typed inputs make no sense; show the (masked) value.
            typed = set(self.typed_fields)
            fieldsets = [
                (
                    title,
                    {
                        **opts,
                        "fields": [
                            "shown_value" if f == "value_string" else f
                            for f in opts["fields"]
                            if f not in typed or f == "value_string"
                        ],
                    },
                )
                for title, opts in fieldsets
            ]
        return fieldsets

    @admin.display(description="value")
    def shown_value(self, obj):
        if obj.is_secret:
            return masked(obj.secret_value)
        if obj.value_type == ValueType.JSON:
            import json

            return truncate(json.dumps(obj.value, sort_keys=True), 80)
        return truncate(obj.value, 80)

    def save_model(self, request, obj, form, change):
        obj.updated_by = request.user
        super().save_model(request, obj, form, change)


@admin.register(SystemSetting)
class SystemSettingAdmin(SuperuserWritesMixin, TypedSettingAdminMixin, admin.ModelAdmin):
    """Platform-wide settings: superusers only."""

    fieldsets = (
        (None, {"fields": ("key", "description", "value_type")}),
        ("Value", {"fields": TypedSettingAdminMixin.typed_fields}),
        ("Changed", {"fields": ("updated_at", "updated_by")}),
    )

    def has_module_permission(self, request):
        return is_superuser(request)

    def has_view_permission(self, request, obj=None):
        return is_superuser(request)


@admin.register(OrgSetting)
class OrgSettingAdmin(TypedSettingAdminMixin, OrgScopedAdmin):
    list_display = ("key", "org", "value_type", "shown_value", "updated_at", "updated_by")
    list_select_related = ("org", "updated_by")
    fieldsets = (
        (None, {"fields": ("org", "key", "description", "value_type")}),
        ("Value", {"fields": TypedSettingAdminMixin.typed_fields}),
        ("Changed", {"fields": ("updated_at", "updated_by")}),
    )


@admin.register(UserPreference)
class UserPreferenceAdmin(OrgScopedAdmin):
    list_display = ("user", "org", "timezone", "language", "updated_at")
    list_select_related = ("user", "org")
    list_filter = ("language", "timezone")
    search_fields = ("user__email",)
    autocomplete_fields = ("user",)
    readonly_fields = ("updated_at",)
