"""D13: migrations on a populated database -- no row lost or changed (counts and checksums before and
after), the code of the previous release keeps working on the new schema during a rollout, and
``makemigrations --check`` is clean (security.md group D; ASVS 5.0 V2.3.3).

The database is filled with sessions (a third of them ended) and audit records: ~5k / 20k by default,
100k / 1M with ``RELIABILITY_SCALE=full``. ``manage.py migrate`` runs in a process of its own, as a
deployment runs it, twice: the latest migration is unapplied and applied again; then the app goes back
to `ROLLBACK_POINT` (unapplying the migrations that rebuilt the session table) and forward to the
latest again. The durations are the figures of the migration window (docs/operations.md, "Several hosts, upgrades and migrations").
"""

from __future__ import annotations

import datetime as dt
import secrets as random
import time

import pytest
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.utils import timezone

from sessions_app.auth import keys
from sessions_app.auth.clients import Client
from sessions_app.models import AuditRecord, UserSession
from sessions_app.services.sessions import session_authenticate
from tests.reliability.helpers_late import (
    AUDIT_COLUMNS,
    SESSION_COLUMNS,
    analyze,
    audit_rows,
    bulk_insert,
    create_user,
    leak_guard,  # noqa: F401 - fixture
    manage,
    new_run,
    record_figures,
    scaled,
    session_rows,
    table_columns,
    table_digest,
)

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("leak_guard"),
]

APP = "sessions_app"
#: Before 0004, which added columns to the session table (a table rebuild on SQLite).
ROLLBACK_POINT = "0003_role_groups"
#: A hang ceiling for a forward migration of the full-size database (seconds): about 100 times the
#: measured 1-3 s that docs/operations.md reports (the figures are reported, not asserted).
WINDOW_SECONDS = 300


def migrations() -> tuple[str, str]:
    """(latest migration of the app, the one before it)."""
    loader = MigrationLoader(connection)
    (leaf,) = loader.graph.leaf_nodes(APP)
    parents = [p for p in loader.graph.node_map[leaf].parents if p.key[0] == APP]
    return leaf[1], parents[0].key[1]


def migrate(*target: str) -> float:
    connection.close()  # no open transaction of this process may hold a lock a migration needs
    seconds, done = manage("migrate", *target, "--noinput", "-v", "0", timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return seconds


def historical_columns(migration: str, model: str) -> list[str]:
    state = MigrationLoader(connection).project_state((APP, migration))
    return [f.column for f in state.apps.get_model(APP, model)._meta.concrete_fields]


def snapshot(columns: dict[str, list[str]]) -> dict[str, tuple[int, str]]:
    return {table: table_digest(table, cols) for table, cols in columns.items()}


def populate(sessions: int, records: int) -> float:
    started = time.perf_counter()
    users = [(create_user(f"user{i}").pk, f"user{i}") for i in range(50)]
    now = timezone.now()
    run = new_run()
    active = sessions - sessions // 3
    bulk_insert(
        UserSession,
        SESSION_COLUMNS,
        session_rows(
            active,
            run=run,
            users=users,
            created=now - dt.timedelta(days=1),
            expires=now + dt.timedelta(days=29),
            secret_hash=lambda i: f"{i:064x}",
        ),
    )
    bulk_insert(
        UserSession,
        SESSION_COLUMNS,
        session_rows(
            sessions // 3,
            run=run,
            users=users,
            created=now - dt.timedelta(days=10),
            expires=now + dt.timedelta(days=20),
            ended=now - dt.timedelta(days=5),
            end_reason="LOGOUT",
            start=active,
        ),
    )
    bulk_insert(AuditRecord, AUDIT_COLUMNS, audit_rows(records, run=run, at=now - dt.timedelta(days=2)))
    analyze()
    return time.perf_counter() - started


def test_D13_migrations_on_a_populated_database() -> None:
    sessions, records = scaled(5_000, 100_000), scaled(20_000, 1_000_000)
    latest, previous = migrations()
    fill = populate(sessions, records)
    tables = {
        UserSession._meta.db_table: table_columns(UserSession._meta.db_table),
        AuditRecord._meta.db_table: table_columns(AuditRecord._meta.db_table),
        "auth_user": table_columns("auth_user"),
    }
    before = snapshot(tables)
    assert before[UserSession._meta.db_table][0] == sessions
    assert before[AuditRecord._meta.db_table][0] == records

    # 1. The latest migration, unapplied and applied again.
    back_latest = migrate(APP, previous)
    forward_latest = migrate()
    assert snapshot(tables) == before

    # 2. Back before the migrations that rebuilt the session table, and forward to the latest. Only
    # the columns that existed at the rollback point can survive the way back; every row must.
    old = {
        UserSession._meta.db_table: historical_columns(ROLLBACK_POINT, "UserSession"),
        AuditRecord._meta.db_table: historical_columns(ROLLBACK_POINT, "AuditRecord"),
        "auth_user": tables["auth_user"],
    }
    before_old = snapshot(old)
    back_far = migrate(APP, ROLLBACK_POINT)
    assert snapshot(old) == before_old
    forward_far = migrate()
    assert snapshot(old) == before_old
    assert {t: count for t, (count, _) in snapshot(tables).items()} == {t: c for t, (c, _) in before.items()}
    assert forward_far < WINDOW_SECONDS

    record_figures(
        "D13",
        sessions=sessions,
        audit_records=records,
        populate_seconds=round(fill, 2),
        unapply_latest_seconds=round(back_latest, 2),
        apply_latest_seconds=round(forward_latest, 2),
        back_to=ROLLBACK_POINT,
        unapply_to_rollback_point_seconds=round(back_far, 2),
        forward_from_rollback_point_seconds=round(forward_far, 2),
        latest=latest,
    )


def test_D13_previous_release_code_works_on_the_new_schema() -> None:
    """During a rolling deployment, processes of the previous release (the models as of the migration
    before the latest) run against the new schema: they create, read and end sessions and write audit
    records, and the new code sees their rows and theirs see the new code's."""
    latest, previous = migrations()
    old = MigrationLoader(connection).project_state((APP, previous)).apps
    OldSession = old.get_model(APP, "UserSession")  # noqa: N806 - a model class
    OldAudit = old.get_model(APP, "AuditRecord")  # noqa: N806
    user = create_user("alice")
    now = timezone.now()
    secret = random.token_urlsafe(32)
    made_by_old = OldSession.objects.create(
        public_id=random.token_urlsafe(48),
        secret_hash=keys.hash_secret(secret),
        user_id=user.pk,
        credentials="LOGIN_PASSWORD",
        username="alice",
        username_folded="alice",
        login_at=now,
        origin="127.0.0.1:5000",
        created_at=now,
        last_seen_at=now,
        expires_at=now + dt.timedelta(days=1),
    )
    OldAudit.objects.create(
        event="AUTHENTICATION", success=True, username="alice", session=made_by_old.public_id
    )
    # The new code authenticates the old code's session and reads its audit record ...
    found = session_authenticate(secret=secret, client=Client(address="127.0.0.1", port=5000))
    assert found is not None
    assert found.pk == made_by_old.pk
    assert AuditRecord.objects.filter(session=made_by_old.public_id).count() == 1
    # ... and the old code sees the new code's rows and ends them.
    made_by_new = UserSession.objects.create(
        public_id=random.token_urlsafe(48),
        user=user,
        credentials="LOGIN_PASSWORD",
        username="alice",
        username_folded="alice",
        origin="127.0.0.1:5001",
        expires_at=now + dt.timedelta(days=1),
    )
    assert OldSession.objects.filter(ended_at__isnull=True).count() == 2
    OldSession.objects.filter(pk=made_by_new.pk).update(ended_at=now, end_reason="TERMINATED")
    made_by_new.refresh_from_db()
    assert made_by_new.end_reason == "TERMINATED"
    record_figures("D13-rollout", old_code=previous, schema=latest)


def test_D13_makemigrations_check_is_clean() -> None:
    _, done = manage("makemigrations", "--check", "--dry-run", timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


#: Migrations that went out before this check existed: 0004 added NOT NULL columns without a database
#: default, so sessions could not be created by processes of the release before it during that
#: rollout (verified: NOT NULL constraint failed on ``password_change_required``).
BEFORE_ROLLOUT_RULE = {"0001_initial", "0002_lockout_roles", "0003_role_groups", "0004_auth_lifecycle"}


def test_D13_migrations_keep_the_previous_release_working() -> None:
    """Expand, then contract: a migration may add tables, nullable columns or columns with a database
    default, and indexes; removing or renaming a column or a table, or adding a NOT NULL column without
    ``db_default``, breaks the processes of the previous release still running during a rollout (they
    select or insert the old columns) and needs two releases instead."""
    from django.db import migrations as ops
    from django.db.models import NOT_PROVIDED

    loader = MigrationLoader(connection)
    breaking = []
    for (app, name), migration in sorted(loader.disk_migrations.items()):
        if app != APP or name in BEFORE_ROLLOUT_RULE:
            continue
        for operation in migration.operations:
            if isinstance(operation, ops.RemoveField | ops.RenameField | ops.DeleteModel | ops.RenameModel):
                breaking.append(f"{name}: {operation.describe()}")
            elif (
                isinstance(operation, ops.AddField)
                and not operation.field.null
                and operation.field.db_default is NOT_PROVIDED
            ):
                breaking.append(f"{name}: {operation.describe()} (NOT NULL without db_default)")
    assert breaking == []
