# Sessions move to hashed_sessions, keyed by the SHA-256 of the cookie value. The old
# django_session rows (keys in clear) are deleted, not converted: everyone signs in again,
# and staff who have MFA pass the admin's new second-factor step on the way.

from django.db import migrations, models


def drop_cleartext_sessions(apps, schema_editor):
    Session = apps.get_model("sessions", "Session")
    Session.objects.using(schema_editor.connection.alias).all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_user_scoped_manager"),
        ("sessions", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="HashedSession",
            fields=[
                ("session_data", models.TextField(verbose_name="session data")),
                ("expire_date", models.DateTimeField(db_index=True, verbose_name="expire date")),
                (
                    "session_key",
                    models.CharField(
                        max_length=64, primary_key=True, serialize=False, verbose_name="session key digest"
                    ),
                ),
            ],
            options={
                "verbose_name": "session",
                "verbose_name_plural": "sessions",
                "db_table": "hashed_sessions",
                "abstract": False,
            },
        ),
        migrations.RunPython(drop_cleartext_sessions, migrations.RunPython.noop, elidable=True),
    ]
