from django.db import migrations

from knowledge.fulltext import CreateChunkFullText


class Migration(migrations.Migration):
    dependencies = [
        ("knowledge", "0002_vector_sets"),
    ]

    operations = [
        CreateChunkFullText(),
    ]
