from django.db import migrations

from agentforge_site.db_statistics import SkipColumnStatistics


class Migration(migrations.Migration):
    """The audit log's payloads, hashes, unique keys and the request and actor details it keeps for
    display: no query filters on them (the admin's filters and search use the action, success,
    time, actor, address and resource key columns)."""

    dependencies = [("security", "0006_redundant_indexes_dropped")]

    operations = [
        SkipColumnStatistics(
            "audit_logs",
            [
                "id",
                "legacy_id",
                "prev_hash",
                "entry_hash",
                "serialized_data",
                "changes",
                "changes_text",
                "additional_data",
                "object_repr",
                "resource_name",
                "user_agent",
                "request_path",
                "error_message",
                # request and actor details kept for display and export only
                "remote_port",
                "actor_email",
                "legacy_user_id",
                "user_name",
                "session_id",
                "request_id",
                "request_method",
                "resource_type",
            ],
        ),
    ]
