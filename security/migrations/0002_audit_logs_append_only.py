"""PostgreSQL only: a trigger that refuses UPDATE and DELETE on audit_logs.

Exceptions, both set with set_config(..., is_local => true) inside the transaction that
needs them (security.audit): the retention purge (``agentforge.audit_purge = 'on'``) may
delete; ``rechain`` (``agentforge.audit_rechain = 'on'``) may change prev_hash and
entry_hash and nothing else. Other backends rely on the ORM refusal and on the hash chain
(``verify_audit_log``).
"""

from django.db import migrations

CREATE = r"""
CREATE OR REPLACE FUNCTION agentforge_audit_logs_guard() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF current_setting('agentforge.audit_purge', true) = 'on' THEN
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

DROP TRIGGER IF EXISTS audit_logs_append_only ON audit_logs;
CREATE TRIGGER audit_logs_append_only
    BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION agentforge_audit_logs_guard();
"""

DROP = """
DROP TRIGGER IF EXISTS audit_logs_append_only ON audit_logs;
DROP FUNCTION IF EXISTS agentforge_audit_logs_guard();
"""


def create_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("security", "0001_initial")]

    operations = [migrations.RunPython(create_trigger, drop_trigger, elidable=False)]
