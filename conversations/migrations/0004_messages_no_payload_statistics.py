from django.db import migrations

from agentforge_site.db_statistics import SkipColumnStatistics


class Migration(migrations.Migration):
    """Messages are read by conversation, organization and time; their JSON and primary key
    are never a condition (the admin searches content and legacy_id: those keep theirs)."""

    dependencies = [("conversations", "0003_redundant_indexes_dropped")]

    operations = [
        SkipColumnStatistics("messages", ["id", "tool_calls", "sources", "legacy_extra"]),
    ]
