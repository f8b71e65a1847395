"""Seal the TOTP seeds at rest (security.md F6): django-otp's ``TOTPDevice.key`` from plain hex to a
``sessions_app.auth.fieldcrypt`` envelope (``enc1:…``) under the current field key.

No schema change (the envelope of a 20-byte seed is 75 characters; the column holds 80). Backwards
opens them again into plain hex (needs the same keys). Rows already sealed are left alone, so the
migration can be re-run; ``manage.py rotate_field_key`` moves sealed rows to a new key.

Processes of the previous release read the key column as hex: during the rollout to this migration
they cannot check TOTP codes until they are replaced (docs/operations.md "Several hosts, upgrades and migrations").
"""

from django.db import migrations

BATCH = 500


def _rewrite(apps, change):
    from sessions_app.auth import fieldcrypt
    from sessions_app.auth.totp_seeds import open_seed, seal_seed

    TOTPDevice = apps.get_model("otp_totp", "TOTPDevice")
    changed = []
    for device in TOTPDevice.objects.only("pk", "user_id", "key").order_by("pk"):
        value = change(device, fieldcrypt, open_seed, seal_seed)
        if value != device.key:
            device.key = value
            changed.append(device)
    TOTPDevice.objects.bulk_update(changed, ["key"], batch_size=BATCH)


def seal_seeds(apps, schema_editor):
    def change(device, fieldcrypt, open_seed, seal_seed):
        if fieldcrypt.is_sealed(device.key):
            return device.key
        return seal_seed(device.key, user_id=device.user_id)

    _rewrite(apps, change)


def open_seeds(apps, schema_editor):
    def change(device, fieldcrypt, open_seed, seal_seed):
        if not fieldcrypt.is_sealed(device.key):
            return device.key
        return open_seed(device.key, user_id=device.user_id).hex()

    _rewrite(apps, change)


class Migration(migrations.Migration):
    dependencies = [
        ("sessions_app", "0009_apikey_name_per_user"),
        ("otp_totp", "0003_add_timestamps"),
    ]

    operations = [migrations.RunPython(seal_seeds, open_seeds)]
