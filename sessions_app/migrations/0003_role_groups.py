"""Data migration: one group per role of spec §6 (sessions_app.auth.roles), with its permissions.

The role table is frozen here on purpose (a migration must not follow later code changes).
Permissions are normally created by the post_migrate signal, after every migration has run, so
they are created here if missing; ContentType.objects.get_for_model does not work with historical
models, hence the lookup by app label and model name. Reversing deletes the groups only: the
permissions belong to UserSession.Meta and post_migrate would recreate them anyway.
"""

from django.db import migrations

PERMISSION_NAMES = {
    "auth_sessions_read": "AUTH_SESSIONS_READ: list every user's sessions",
    "auth_sessions_write": "AUTH_SESSIONS_WRITE: end any session",
    "api_key_read": "API_KEY_READ: list every user's API keys",
    "api_key_write": "API_KEY_WRITE: manage every user's API keys",
    "audit_read": "AUDIT_READ: read the audit trail",
    "readonly_admin": "READONLY_ADMIN: every *_READ role",
}

# Group name -> permission codenames, implied roles included. FULL_ADMIN is is_superuser.
ROLE_GROUPS = {
    "READONLY_ADMIN": ["readonly_admin", "auth_sessions_read", "api_key_read", "audit_read"],
    "AUTH_SESSIONS_READ": ["auth_sessions_read"],
    "AUTH_SESSIONS_WRITE": ["auth_sessions_write", "auth_sessions_read"],
    "API_KEY_READ": ["api_key_read"],
    "API_KEY_WRITE": ["api_key_write", "api_key_read"],
    "AUDIT_READ": ["audit_read"],
}


def create_role_groups(apps, schema_editor):
    db = schema_editor.connection.alias
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    content_type, _ = ContentType.objects.using(db).get_or_create(
        app_label="sessions_app", model="usersession"
    )
    permissions = {
        codename: Permission.objects.using(db).get_or_create(
            content_type=content_type, codename=codename, defaults={"name": name}
        )[0]
        for codename, name in PERMISSION_NAMES.items()
    }
    for group_name, codenames in ROLE_GROUPS.items():
        group, _ = Group.objects.using(db).get_or_create(name=group_name)
        group.permissions.add(*(permissions[codename] for codename in codenames))


def delete_role_groups(apps, schema_editor):
    db = schema_editor.connection.alias
    Group = apps.get_model("auth", "Group")
    Group.objects.using(db).filter(name__in=ROLE_GROUPS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("sessions_app", "0002_lockout_roles"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(create_role_groups, delete_role_groups),
    ]
