"""API-key names are unique per owner, not across users (security.md F14).

Forwards only relaxes the constraint, so processes of the previous release keep working on the new
schema. Backwards restores the global uniqueness; names that different users now share are first
made unique by appending the key's id (`` (#12)``), so that the rollback cannot fail on data.
"""

from django.db import migrations, models


def _disambiguate(apps, schema_editor):
    ApiKey = apps.get_model("sessions_app", "ApiKey")
    seen = set()
    for key in ApiKey.objects.order_by("pk").only("pk", "name").iterator():
        if key.name in seen:
            suffix = f" (#{key.pk})"
            key.name = key.name[: 200 - len(suffix)] + suffix
            key.save(update_fields=["name"])
        seen.add(key.name)


class Migration(migrations.Migration):
    dependencies = [
        ("sessions_app", "0008_session_reauthenticated_at"),
    ]

    operations = [
        migrations.AlterField(
            model_name="apikey",
            name="name",
            field=models.CharField(max_length=200),
        ),
        migrations.AddConstraint(
            model_name="apikey",
            constraint=models.UniqueConstraint(fields=("user", "name"), name="apikey_user_name_unique"),
        ),
        # Runs first when unapplying (operations are reversed): before the global unique is back.
        migrations.RunPython(migrations.RunPython.noop, _disambiguate, elidable=True),
    ]
