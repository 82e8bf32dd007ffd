"""Mappers for the ``settings_app`` tables: ``security/settings.json`` (docs/legacy-format.md
§3), the top-level ``settings.json`` and ``integrations.json`` (§4)."""

from __future__ import annotations

from accounts.models import Organization
from legacy.format.errors import LegacyFieldError
from legacy.format.mappers.base import Mapped, Mapper, Rec, Row
from settings_app.models import OrgSetting, SystemSetting, infer_value_type

# --- security/settings.json ------------------------------------------------------------------------

SECURITY_PREFIX = "security."
SECURITY_SETTINGS_ID = "security_settings"
KEY_BOOK = "__key__"  # the key of "settings" when it differs from the entry's org_id


class SecuritySettingsMapper(Mapper):
    """``{"tenancy_mode": ..., "settings": {org_id: SecuritySettings}}`` → org settings rows
    ``security.<field>`` and the system setting ``security.tenancy_mode``."""

    model = OrgSetting
    satellites = (("system_settings", SystemSetting),)

    def record_id(self, outer_key, record):
        return outer_key

    def map_record(self, record, ctx):
        rec = Rec(record)
        mapped = Mapped("settings")
        tenancy = rec.enum("tenancy_mode", [("single", ""), ("multi", "")], None, null=True)
        if rec.has("tenancy_mode"):
            mapped.rows.append(_system_row(SECURITY_PREFIX + "tenancy_mode", tenancy))
        per_org = rec.dict("settings", {})
        for key, value in rec.extra().items():
            mapped.rows.append(_system_row(SECURITY_PREFIX + key, value))
        for outer, settings in per_org.items():
            if not isinstance(settings, dict):
                rec.fail(f"settings.{outer}", "expected an object")
            org_legacy = settings.get("org_id", outer)
            if not isinstance(org_legacy, str):
                rec.fail(f"settings.{outer}.org_id", "expected a string")
            if org_legacy != outer:
                # AgentForge looks its settings up by the key (get_settings() reads "org_default"),
                # and with its database up the late era writes the database organization's UUID as
                # org_id under "org_default" (docs/legacy-format.md §3.13): the key is kept for the export.
                mapped.warnings.append(
                    f"{self.file}: settings {outer!r}: org_id {org_legacy!r} differs from the key; "
                    "using org_id (the key is written back)"
                )
            org_id = ctx.ref(Organization, org_legacy)
            if org_id is None:
                rec.fail(f"settings.{outer}.org_id", f"{org_legacy!r} refers to no organization")
            for key, value in settings.items():
                if key == "org_id" or (key == "id" and value == SECURITY_SETTINGS_ID):
                    continue
                row = OrgSetting(org_id=org_id, key=SECURITY_PREFIX + key)
                row.set_value(value, secret=False)
                mapped.rows.append(
                    Row(
                        OrgSetting,
                        {
                            "org_id": org_id,
                            "key": row.key,
                            "value_type": row.value_type,
                            "value": value,
                            "is_secret": False,
                            "secret_value": None,
                        },
                        key_fields=("org_id", "key"),
                    )
                )
            if org_legacy != outer:
                mapped.rows.append(_book_row(org_id, KEY_BOOK, outer))
            if "id" not in settings:
                mapped.rows.append(
                    Row(
                        OrgSetting,
                        {
                            "org_id": org_id,
                            "key": SECURITY_PREFIX + "__no_id__",
                            "value_type": "boolean",
                            "value": True,
                            "is_secret": False,
                            "secret_value": None,
                        },
                        key_fields=("org_id", "key"),
                    )
                )
        return mapped

    def export(self, ctx) -> dict:
        out = {}
        for key, value in (
            SystemSetting.objects.filter(key__startswith=SECURITY_PREFIX).order_by("id").values_list("key", "value")
        ):
            out[key[len(SECURITY_PREFIX) :]] = value
        settings = {}
        rows = (
            OrgSetting.all_orgs.filter(key__startswith=SECURITY_PREFIX)
            .order_by("org_id", "id")
            .values_list("org_id", "key", "value")
        )
        for org_id, key, value in rows:
            org_legacy = ctx.legacy_id_of(Organization, org_id)
            entry = settings.setdefault(org_legacy, {"id": SECURITY_SETTINGS_ID, "org_id": org_legacy})
            entry[key[len(SECURITY_PREFIX) :]] = value
        for entry in settings.values():
            if entry.pop("__no_id__", None):
                entry.pop("id", None)
        settings = {entry.pop(KEY_BOOK, None) or org: entry for org, entry in settings.items()}
        result = {"tenancy_mode": out.pop("tenancy_mode")} if "tenancy_mode" in out else {}
        result["settings"] = settings
        result.update(out)
        return result


def _book_row(org_id, name, value) -> Row:
    """An org setting ``security.<name>`` of our own bookkeeping (never a field of AgentForge's)."""
    return Row(
        OrgSetting,
        {
            "org_id": org_id,
            "key": SECURITY_PREFIX + name,
            "value_type": infer_value_type(value),
            "value": value,
            "is_secret": False,
            "secret_value": None,
        },
        key_fields=("org_id", "key"),
    )


def _system_row(key, value, secret=False) -> Row:
    if secret:
        return Row(
            SystemSetting,
            {
                "key": key,
                "value_type": "secret",
                "value": None,
                "is_secret": True,
                "secret_value": "" if value is None else str(value),
            },
            key_fields=("key",),
        )
    return Row(
        SystemSetting,
        {"key": key, "value_type": infer_value_type(value), "value": value, "is_secret": False, "secret_value": None},
        key_fields=("key",),
    )


# --- top-level settings.json and integrations.json ----------------------------------------------

SETTINGS_SECRET_KEYS = {
    "api_key",
    "aws_access_key",
    "aws_secret_key",
    "gemini_key",
    "cloud_key",
    "pinecone_api_key",
    "qdrant_api_key",
    "client_secret",
    "secret",
    "password",
    "token",
}
SETTINGS_GROUP = "__group__"  # a row "<key>" with this marker: the key holds an object (maybe empty)


def _is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return key in SETTINGS_SECRET_KEYS or lowered.endswith(("_key", "_secret", "password", "_token"))


class SystemSettingsMapper(Mapper):
    """Top-level ``settings.json``: one SystemSetting per scalar (``llm.model``), secrets
    (``llm.api_key``, ``llm_providers.0.api_key``) encrypted and flagged ``is_secret``."""

    model = SystemSetting
    prefix = ""

    def record_id(self, outer_key, record):
        return None

    def map_record(self, record, ctx):
        mapped = Mapped("settings")
        order = []
        for key, value in record.items():
            if not isinstance(key, str) or "." in key:
                raise LegacyFieldError(str(key), f"{key!r}: keys must not contain '.'")
            order.append(key)
            self._rows(self.prefix + key, value, mapped, top=True)
        mapped.rows.append(_system_row(self.prefix + "__order__", order))
        return mapped

    def _rows(self, key, value, mapped, top=False):
        if isinstance(value, dict) and top:
            mapped.rows.append(_system_row(key, {SETTINGS_GROUP: list(value.keys())}))
            for sub, subvalue in value.items():
                self._leaf(f"{key}.{sub}", sub, subvalue, mapped)
        else:
            self._leaf(key, key.rsplit(".", 1)[-1], value, mapped)

    def _leaf(self, key, name, value, mapped):
        if isinstance(value, str) and _is_secret_key(name):
            mapped.rows.append(_system_row(key, value, secret=True))
        elif isinstance(value, list) and any(isinstance(item, dict) for item in value):
            plain = []
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    kept = {}
                    for sub, subvalue in item.items():
                        if isinstance(subvalue, str) and _is_secret_key(sub):
                            mapped.rows.append(_system_row(f"{key}.{index}.{sub}", subvalue, secret=True))
                            kept[sub] = {"__secret__": True}
                        else:
                            kept[sub] = subvalue
                    plain.append(kept)
                else:
                    plain.append(item)
            mapped.rows.append(_system_row(key, plain))
        else:
            mapped.rows.append(_system_row(key, value))

    def export(self, ctx) -> dict | None:
        rows = {}
        for setting in SystemSetting.objects.order_by("id"):
            rows[setting.key] = setting.get_value()
        prefix = self.prefix
        order = rows.get(prefix + "__order__")
        if order is None:
            return None
        out = {}
        for key in order:
            value = rows.get(prefix + key)
            if isinstance(value, dict) and SETTINGS_GROUP in value:
                out[key] = {sub: self._value(rows, f"{prefix}{key}.{sub}") for sub in value[SETTINGS_GROUP]}
            else:
                out[key] = self._value(rows, prefix + key)
        return out

    def _value(self, rows, key):
        value = rows.get(key)
        if isinstance(value, list):
            rebuilt = []
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    item = {
                        sub: rows.get(f"{key}.{index}.{sub}", "") if isinstance(v, dict) and v.get("__secret__") else v
                        for sub, v in item.items()
                    }
                rebuilt.append(item)
            return rebuilt
        return value


class IntegrationsMapper(SystemSettingsMapper):
    """``integrations.json``: ``{provider: {client_id, client_secret}}`` → ``integrations.*`` rows."""

    prefix = "integrations."
