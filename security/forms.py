"""Form fields and widgets for the encrypted model fields (:mod:`agentforge_core.fields`): write-only.

The input renders empty, a blank submission keeps the stored value and a "clear" checkbox
empties it; an ``EncryptedJSONField`` dict shows its keys only, each value replaceable or
removable. The admin wires them in through ``agentforge_site.admin.mixins.SecretFieldsMixin``.
"""

from __future__ import annotations

import json

from django import forms
from django.core.exceptions import ValidationError
from django.utils.html import format_html
from django.utils.safestring import mark_safe

# What a stored secret looks like wherever it is shown: never its value.
MASK = "••••••"


class _Marker:
    """What a secret input cleans to when it carries no new value."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"<{self.name}>"


KEEP = _Marker("keep stored secret")
CLEAR = _Marker("clear stored secret")


class SecretInput(forms.Widget):
    """A password input that never renders a value, with a "set"/"not set" note and "clear"."""

    def __init__(self, attrs=None, allow_clear=True):
        super().__init__(attrs)
        self.allow_clear = allow_clear

    def render(self, name, value, attrs=None, renderer=None):
        is_set = value not in (None, "", KEEP, CLEAR) and value is not False
        attrs = self.build_attrs(self.attrs, attrs)
        input_id = attrs.get("id", f"id_{name}")
        status = f"{MASK} (set)" if is_set else "(not set)"
        clear = ""
        if is_set and self.allow_clear:
            clear = format_html(
                ' <label class="af-secret-clear"><input type="checkbox" name="{}__clear" id="{}__clear"> clear</label>',
                name,
                input_id,
            )
        return format_html(
            '<div class="af-secret"><input type="password" name="{}" id="{}" value="" autocomplete="new-password" '
            'class="vTextField" placeholder="{}"> <span class="af-secret-status">{}</span>{}</div>',
            name,
            input_id,
            "leave blank to keep the current value" if is_set else "enter a value",
            status,
            clear,
        )

    def value_from_datadict(self, data, files, name):
        if data.get(f"{name}__clear"):
            return CLEAR
        value = data.get(name)
        if value in (None, ""):
            return KEEP
        return value

    def value_omitted_from_data(self, data, files, name):
        return False


class SecretField(forms.Field):
    """Write-only text secret; cleans to KEEP, CLEAR or the new plaintext."""

    widget = SecretInput

    def __init__(self, *, max_length=None, empty_value=None, **kwargs):
        kwargs["required"] = False
        kwargs.pop("strip", None)
        self.empty_value = empty_value
        super().__init__(**kwargs)

    def bound_data(self, data, initial):
        if data is KEEP:
            return initial
        if data is CLEAR:
            return None
        return data

    def clean(self, value):
        if value is KEEP or value is CLEAR:
            return value
        return super().clean(value)

    def has_changed(self, initial, data):
        if data is KEEP:
            return False
        if data is CLEAR:
            return bool(initial)
        return data != initial


class SecretJSONPatch:
    """Changes to a dict of secrets: new values per existing key, removed keys, added keys."""

    def __init__(self, set_values=None, delete=None, replace=None):
        self.set_values = set_values or {}
        self.delete = set(delete or ())
        self.replace = replace  # a whole new JSON value (for non-dict secrets)

    def __bool__(self):
        return bool(self.set_values or self.delete or self.replace is not None)

    def apply(self, current):
        if self.replace is not None:
            return self.replace
        result = dict(current) if isinstance(current, dict) else {}
        for key in self.delete:
            result.pop(key, None)
        result.update(self.set_values)
        return result


class SecretJSONWidget(forms.Widget):
    """A dict of secrets: keys listed, values masked and write-only, per-key remove, new rows."""

    new_rows = 3

    def render(self, name, value, attrs=None, renderer=None):
        current = value if isinstance(value, dict) else ({} if value in (None, "", KEEP) else None)
        rows = []
        if current is None:
            # Not a dict: a single write-only JSON replacement.
            return format_html(
                '<div class="af-secret"><span class="af-secret-status">{} (set)</span> '
                '<input type="password" name="{}__replace" class="vTextField" autocomplete="new-password" '
                'placeholder="new JSON value; blank keeps the current one"></div>',
                MASK,
                name,
            )
        for index, key in enumerate(sorted(current)):
            rows.append(
                format_html(
                    '<tr><td><code>{key}</code><input type="hidden" name="{n}__key__{i}" value="{key}"></td>'
                    '<td><span class="af-secret-status">{mask} (set)</span></td>'
                    '<td><input type="password" name="{n}__val__{i}" value="" autocomplete="new-password" '
                    'placeholder="new value; blank keeps it"></td>'
                    '<td><label><input type="checkbox" name="{n}__del__{i}"> remove</label></td></tr>',
                    key=key,
                    n=name,
                    i=index,
                    mask=MASK,
                )
            )
        for index in range(self.new_rows):
            rows.append(
                format_html(
                    '<tr class="af-secret-new"><td><input type="text" name="{n}__newkey__{i}" placeholder="new key"></td>'
                    '<td>(new)</td><td><input type="password" name="{n}__newval__{i}" value="" '
                    'autocomplete="new-password" placeholder="value"></td><td></td></tr>',
                    n=name,
                    i=index,
                )
            )
        return format_html(
            '<table class="af-secret-json" id="id_{}"><thead><tr><th>Key</th><th>Value</th><th>Set a new value</th>'
            "<th></th></tr></thead><tbody>{}</tbody></table>",
            name,
            mark_safe("".join(rows)),
        )

    def value_from_datadict(self, data, files, name):
        replace = data.get(f"{name}__replace")
        if replace:
            return SecretJSONPatch(replace=replace)
        set_values, delete = {}, set()
        index = 0
        while f"{name}__key__{index}" in data:
            key = data.get(f"{name}__key__{index}")
            if data.get(f"{name}__del__{index}"):
                delete.add(key)
            elif data.get(f"{name}__val__{index}"):
                set_values[key] = data.get(f"{name}__val__{index}")
            index += 1
        for index in range(self.new_rows + 50):
            key = (data.get(f"{name}__newkey__{index}") or "").strip()
            value = data.get(f"{name}__newval__{index}") or ""
            if key and value:
                set_values[key] = value
            elif value and not key:
                set_values[("", index)] = value  # reported by the field
        return SecretJSONPatch(set_values, delete)

    def value_omitted_from_data(self, data, files, name):
        return False


class SecretJSONField(forms.Field):
    widget = SecretJSONWidget

    def __init__(self, **kwargs):
        kwargs["required"] = False
        for extra in ("max_length", "empty_value", "strip"):
            kwargs.pop(extra, None)
        super().__init__(**kwargs)

    def bound_data(self, data, initial):
        return initial

    def clean(self, value):
        if not isinstance(value, SecretJSONPatch):
            return SecretJSONPatch()
        if any(isinstance(k, tuple) for k in value.set_values):
            raise ValidationError("Every new value needs a key.")
        if value.replace is not None:
            try:
                value.replace = json.loads(value.replace)
            except ValueError:
                raise ValidationError("The replacement must be valid JSON.") from None
        return value

    def has_changed(self, initial, data):
        return bool(data)


class SecretAwareFormMixin:
    """Turns KEEP/CLEAR/patches into the value to store, so construct_instance just works."""

    secret_field_names: tuple = ()

    def clean(self):
        cleaned = super().clean()
        for name in self.secret_field_names:
            if name not in cleaned:
                continue
            value = cleaned[name]
            stored = getattr(self.instance, name, None)
            model_field = self.instance._meta.get_field(name)
            if value is KEEP:
                cleaned[name] = stored
            elif value is CLEAR:
                cleaned[name] = None if model_field.null else ""
            elif isinstance(value, SecretJSONPatch):
                cleaned[name] = value.apply(stored) if value else stored
        return cleaned
