"""`sessions_app.auth.roles` and the role groups of migration 0003 (spec auth-sessions.md §6)."""

from __future__ import annotations

import importlib
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser, Group, Permission, User
from django.db import connection
from django.db.migrations.loader import MigrationLoader

from sessions_app.auth.roles import (
    IMPLIES,
    Role,
    grant,
    has_role,
    implied_roles,
    revoke,
    role_codenames,
    role_group,
    user_roles,
)
from sessions_app.models import UserSession

R = Role
READS = frozenset({R.AUTH_SESSIONS_READ, R.API_KEY_READ, R.AUDIT_READ})
migration = importlib.import_module("sessions_app.migrations.0003_role_groups")


@pytest.fixture
def user(db: None) -> User:
    return User.objects.create_user("carol", password=None)


def test_role_names_and_codenames_match_the_model_permissions() -> None:
    codenames = {codename for codename, _ in UserSession._meta.permissions}
    assert {role.codename for role in Role} - {None} == codenames
    assert R.FULL_ADMIN.codename is None
    assert R.AUTH_SESSIONS_READ.perm == "sessions_app.auth_sessions_read"
    assert str(R.AUDIT_READ) == "AUDIT_READ"


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        (R.FULL_ADMIN, frozenset(Role)),
        (R.READONLY_ADMIN, READS | {R.READONLY_ADMIN}),
        (R.AUTH_SESSIONS_WRITE, {R.AUTH_SESSIONS_WRITE, R.AUTH_SESSIONS_READ}),
        (R.API_KEY_WRITE, {R.API_KEY_WRITE, R.API_KEY_READ}),
        (R.AUTH_SESSIONS_READ, {R.AUTH_SESSIONS_READ}),
        (R.API_KEY_READ, {R.API_KEY_READ}),
        (R.AUDIT_READ, {R.AUDIT_READ}),
    ],
)
def test_implications(role: Role, expected: frozenset[Role]) -> None:
    assert implied_roles(role) == expected


def test_no_write_role_is_implied_by_a_read_role() -> None:
    for role in (R.READONLY_ADMIN, *READS):
        assert not any(r.value.endswith("_WRITE") for r in implied_roles(role))
    assert set(IMPLIES) == {R.FULL_ADMIN, R.READONLY_ADMIN, R.AUTH_SESSIONS_WRITE, R.API_KEY_WRITE}


@pytest.mark.django_db
def test_anonymous_missing_and_plain_users_hold_no_role(user: User) -> None:
    assert user_roles(None) == frozenset()
    assert user_roles(AnonymousUser()) == frozenset()
    assert user_roles(user) == frozenset()
    assert not has_role(user, R.AUDIT_READ)


@pytest.mark.django_db
def test_superuser_is_full_admin_and_holds_every_role(user: User) -> None:
    grant(user, R.FULL_ADMIN)
    user.refresh_from_db()
    assert user.is_superuser
    assert user_roles(user) == frozenset(Role)
    revoke(user, R.FULL_ADMIN)
    user.refresh_from_db()
    assert not user.is_superuser
    assert user_roles(user) == frozenset()


@pytest.mark.django_db
def test_inactive_users_hold_no_role_even_as_superuser(user: User) -> None:
    grant(user, R.AUTH_SESSIONS_WRITE)
    user.is_superuser = True
    user.is_active = False
    assert user_roles(user) == frozenset()


@pytest.mark.django_db
@pytest.mark.parametrize("role", [r for r in Role if r is not R.FULL_ADMIN])
def test_grant_through_the_group_expands_implications(user: User, role: Role) -> None:
    grant(user, role)
    assert user.groups.filter(name=role.value).exists()
    assert user_roles(user) == implied_roles(role)  # visible at once: the permission cache is cleared
    assert all(has_role(user, r) for r in implied_roles(role))
    revoke(user, role)
    assert user_roles(user) == frozenset()


@pytest.mark.django_db
def test_a_direct_permission_counts_and_expands(user: User) -> None:
    user.user_permissions.add(Permission.objects.get(codename="readonly_admin"))
    assert user_roles(User.objects.get(pk=user.pk)) == READS | {R.READONLY_ADMIN}


@pytest.mark.django_db
def test_revoke_keeps_roles_implied_by_another_role(user: User) -> None:
    grant(user, R.AUTH_SESSIONS_WRITE)
    grant(user, R.AUTH_SESSIONS_READ)
    revoke(user, R.AUTH_SESSIONS_READ)
    assert user_roles(user) == {R.AUTH_SESSIONS_WRITE, R.AUTH_SESSIONS_READ}
    revoke(user, R.API_KEY_WRITE)  # not held: nothing happens
    assert has_role(user, R.AUTH_SESSIONS_READ)


@pytest.mark.django_db
def test_role_group_recreates_a_deleted_group_and_respects_an_existing_one() -> None:
    Group.objects.filter(name="AUTH_SESSIONS_WRITE").delete()
    group = role_group(R.AUTH_SESSIONS_WRITE)
    assert set(group.permissions.values_list("codename", flat=True)) == {
        "auth_sessions_write",
        "auth_sessions_read",
    }
    group.permissions.remove(Permission.objects.get(codename="auth_sessions_read"))
    assert set(role_group(R.AUTH_SESSIONS_WRITE).permissions.values_list("codename", flat=True)) == {
        "auth_sessions_write"
    }
    with pytest.raises(ValueError, match="FULL_ADMIN"):
        role_group(R.FULL_ADMIN)


def group_permissions() -> dict[str, set[str]]:
    return {
        group.name: {
            (p.content_type.app_label, p.content_type.model, p.codename) for p in group.permissions.all()
        }
        for group in Group.objects.filter(name__in=[r.value for r in Role]).prefetch_related(
            "permissions__content_type"
        )
    }


EXPECTED_GROUPS = {
    role.value: {("sessions_app", "usersession", codename) for codename in role_codenames(role)}
    for role in Role
    if role is not R.FULL_ADMIN
}


@pytest.mark.django_db
def test_migration_creates_one_group_per_role_and_is_reversible() -> None:
    # Run the migration's own functions on the historical models of its state, both ways.
    apps: Any = MigrationLoader(connection).project_state(("sessions_app", "0003_role_groups")).apps
    editor = SimpleNamespace(connection=connection)
    migration.delete_role_groups(apps, editor)
    assert group_permissions() == {}
    # Also on a database where post_migrate has not created the permissions yet.
    Permission.objects.filter(content_type__app_label="sessions_app").delete()
    migration.create_role_groups(apps, editor)
    assert group_permissions() == EXPECTED_GROUPS
    migration.create_role_groups(apps, editor)  # idempotent
    assert group_permissions() == EXPECTED_GROUPS
    names = dict(UserSession._meta.permissions)
    assert {
        p.codename: p.name for p in Permission.objects.filter(content_type__app_label="sessions_app")
    } == names
    assert migration.Migration.operations[0].reversible


def test_migration_table_matches_the_roles_module() -> None:
    assert {name: set(codenames) for name, codenames in migration.ROLE_GROUPS.items()} == {
        role.value: set(role_codenames(role)) for role in Role if role is not R.FULL_ADMIN
    }
    assert dict(UserSession._meta.permissions) == migration.PERMISSION_NAMES
