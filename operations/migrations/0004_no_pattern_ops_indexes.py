"""Drop the ``varchar_pattern_ops`` copies PostgreSQL's schema editor adds beside every unique
or indexed text column (``legacy_id``, ``slug``, token digests, ...). They serve only
``LIKE 'prefix%'`` under a non-C collation, which no query of this project makes on those
columns (lookups are exact; the admin's searches are ``icontains``, which no B-tree serves),
so every write paid for an index nothing read. ``tests/test_schema.py`` keeps them out."""

from django.db import migrations

PROJECT_APPS = ("accounts", "agents", "conversations", "knowledge", "legacy", "security", "settings_app")


def drop_pattern_ops_indexes(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    tables = sorted({m._meta.db_table for label in PROJECT_APPS for m in apps.get_app_config(label).get_models()})
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = ANY(%s) "
            "AND indexdef LIKE '%%pattern_ops%%' ORDER BY indexname",
            [tables],
        )
        names = [name for (name,) in cursor.fetchall()]
    for name in names:
        schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(name)}")


class Migration(migrations.Migration):
    # After the last migration of every app whose tables it looks at.
    dependencies = [
        ("accounts", "0004_redundant_indexes_dropped"),
        ("agents", "0003_redundant_indexes_dropped"),
        ("conversations", "0003_redundant_indexes_dropped"),
        ("knowledge", "0005_redundant_indexes_dropped"),
        ("legacy", "0003_redundant_indexes_dropped"),
        ("operations", "0003_tenant_link_statistics"),
        ("security", "0006_redundant_indexes_dropped"),
        ("settings_app", "0002_redundant_indexes_dropped"),
    ]

    # Backwards: nothing to restore that any query used.
    operations = [migrations.RunPython(drop_pattern_ops_indexes, migrations.RunPython.noop)]
