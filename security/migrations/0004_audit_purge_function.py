"""PostgreSQL only: the retention purge becomes a function of the owner role.

Before, the append-only trigger let any session DELETE once it had set
``agentforge.audit_purge = 'on'``, a flag the application role can set itself. Now a
DELETE passes only when the flag is on *and* the statement runs as the table's owner:
inside ``agentforge_audit_purge`` (SECURITY DEFINER, created here by the owner), which
deletes nothing but a prefix of one chain, of entries older than a cutoff at least a day
back. When the application connects as a separate role it cannot delete otherwise; when
it connects as the owner, the owner can drop the trigger anyway and the signed
checkpoints (security.checkpoints) are what detects a purge nobody signed.
"""

import importlib

from django.db import migrations

CREATE = r"""
CREATE OR REPLACE FUNCTION agentforge_audit_logs_guard() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF current_setting('agentforge.audit_purge', true) = 'on'
           AND current_user = (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = TG_RELID) THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'audit_logs is append-only: DELETE refused (only the retention purge may delete)';
    END IF;
    IF current_setting('agentforge.audit_rechain', true) = 'on'
       AND (to_jsonb(NEW) - 'prev_hash' - 'entry_hash') = (to_jsonb(OLD) - 'prev_hash' - 'entry_hash') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_logs is append-only: UPDATE refused';
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION agentforge_audit_purge(p_org uuid, p_last_id bigint, p_cutoff timestamptz)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    deleted bigint;
BEGIN
    IF p_cutoff > now() - interval '1 day' THEN
        RAISE EXCEPTION 'audit purge refused: cutoff % keeps less than a day', p_cutoff;
    END IF;
    IF p_org IS NULL THEN
        IF EXISTS (SELECT 1 FROM audit_logs WHERE org_id IS NULL AND id <= p_last_id AND created_at >= p_cutoff) THEN
            RAISE EXCEPTION 'audit purge refused: entries up to % are not all older than %', p_last_id, p_cutoff;
        END IF;
        PERFORM set_config('agentforge.audit_purge', 'on', true);
        DELETE FROM audit_logs WHERE org_id IS NULL AND id <= p_last_id;
    ELSE
        IF EXISTS (SELECT 1 FROM audit_logs WHERE org_id = p_org AND id <= p_last_id AND created_at >= p_cutoff) THEN
            RAISE EXCEPTION 'audit purge refused: entries up to % are not all older than %', p_last_id, p_cutoff;
        END IF;
        PERFORM set_config('agentforge.audit_purge', 'on', true);
        DELETE FROM audit_logs WHERE org_id = p_org AND id <= p_last_id;
    END IF;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    PERFORM set_config('agentforge.audit_purge', 'off', true);
    RETURN deleted;
END;
$$;
"""

DROP = "DROP FUNCTION IF EXISTS agentforge_audit_purge(uuid, bigint, timestamptz);"


def _run(schema_editor, sql):
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(sql)  # no parameters: the % of RAISE stays as it is


def create(apps, schema_editor):
    _run(schema_editor, CREATE)


def drop(apps, schema_editor):
    _run(schema_editor, DROP)
    # Back to 0002's guard (the flag alone lets a DELETE through).
    _run(schema_editor, importlib.import_module("security.migrations.0002_audit_logs_append_only").CREATE)


class Migration(migrations.Migration):
    dependencies = [("security", "0003_audit_logs_fewer_indexes")]

    operations = [migrations.RunPython(create, drop, elidable=False)]
