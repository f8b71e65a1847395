"""Planner statistics as part of the product (issue 18): refreshed after bulk changes, gathered by
``seed_demo``, kept by SQLite's ``PRAGMA optimize``, and a deployment check when they are missing.

Observed through the databases themselves: ``pg_stat_user_tables.analyze_count`` and the row count
the statistics describe (``pg_class.reltuples`` / ``sqlite_stat1``). Every ``ANALYZE`` here runs in
the test's transaction and is rolled back with it (``pg_class.reltuples`` excepted: PostgreSQL
updates it in place), so each test sets up the statistics it starts from.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, connections, transaction

from sessions_app import checks as stats_checks
from sessions_app.checks import check_planner_statistics
from sessions_app.db import connections as db
from sessions_app.db import planner_stats
from sessions_app.db.planner_stats import (
    REFRESH_FLOOR,
    REFRESH_ROWS,
    REFRESH_SHARE,
    analyze,
    described_rows,
    needs_refresh,
    refresh_after_bulk_change,
)
from sessions_app.models import AuditEvent, AuditRecord, UserSession
from tests.factories import session

SQLITE = connection.vendor == "sqlite"
AUDIT = AuditRecord._meta.db_table
SESSIONS = UserSession._meta.db_table

Capture = Callable[..., Any]


def add_audit_records(n: int) -> None:
    AuditRecord.objects.bulk_create(
        [AuditRecord(event=AuditEvent.AUTHENTICATION, username=f"u{i % 37}", success=True) for i in range(n)]
    )


def analyze_count(table: str) -> int | None:
    """PostgreSQL: how many times ``table`` was analysed (``None`` on SQLite, which keeps no count)."""
    if SQLITE:
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # the statistics views cache per transaction
        cursor.execute("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = %s", [table])
        return int(cursor.fetchone()[0])


def forget_statistics(table: str) -> None:
    """The planner's statistics of ``table`` removed (in the test's transaction), as if it had never
    been analysed: PostgreSQL's row count too, which an earlier test's ANALYZE left in place."""
    with connection.cursor() as cursor:
        if SQLITE:
            cursor.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'")
            if cursor.fetchone() is not None:
                cursor.execute("DELETE FROM sqlite_stat1 WHERE tbl = %s", [table])
        else:
            cursor.execute("DELETE FROM pg_statistic WHERE starelid = to_regclass(%s)", [table])
            cursor.execute("UPDATE pg_class SET reltuples = -1 WHERE oid = to_regclass(%s)", [table])


def ids(messages: list[Any]) -> set[str]:
    return {m.id for m in messages}


# -- the rule ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changed", "described", "refresh"),
    [
        (0, None, False),
        (REFRESH_FLOOR - 1, None, False),  # tiny: the planner's defaults are fine
        (REFRESH_FLOOR, None, True),  # no statistics at all
        (REFRESH_FLOOR, 0, True),
        (REFRESH_FLOOR, 10 * REFRESH_FLOOR, True),  # exactly the share
        (REFRESH_FLOOR, 10 * REFRESH_FLOOR + 10, False),  # just under it
        (199, 2000, False),  # the share decides below REFRESH_ROWS
        (200, 2000, True),
        (REFRESH_ROWS, 10**9, True),  # many rows, whatever the table's size
        (REFRESH_ROWS - 1, 10**9, False),
    ],
)
def test_needs_refresh(changed: int, described: int | None, refresh: bool) -> None:
    assert REFRESH_SHARE == 0.10
    assert needs_refresh(changed, described) is refresh


# -- refresh after a bulk change ---------------------------------------------------------------------


@pytest.mark.django_db
def test_large_change_analyses_the_table_after_commit(django_capture_on_commit_callbacks: Capture) -> None:
    add_audit_records(1500)
    analyze(AUDIT)
    before, count = described_rows(AuditRecord), analyze_count(AUDIT)
    assert before is not None
    assert before > 1000

    add_audit_records(1000)  # two thirds of the rows the statistics describe
    with django_capture_on_commit_callbacks(execute=False) as pending:
        assert refresh_after_bulk_change(AuditRecord, 1000) is True
    assert len(pending) == 1  # in a transaction: at commit
    assert described_rows(AuditRecord) == before
    pending[0]()

    after = described_rows(AuditRecord)
    assert after is not None
    assert after > before
    if not SQLITE:
        assert after == 2500  # PostgreSQL counts exactly below its 30,000-row sample
        assert analyze_count(AUDIT) == count + 1  # type: ignore[operator]


@pytest.mark.django_db
def test_small_change_leaves_the_statistics(django_capture_on_commit_callbacks: Capture) -> None:
    add_audit_records(1500)
    analyze(AUDIT)
    before, count = described_rows(AuditRecord), analyze_count(AUDIT)
    assert before is not None

    add_audit_records(120)  # below 10% of 1500, above the floor
    with django_capture_on_commit_callbacks(execute=True) as pending:
        assert refresh_after_bulk_change(AuditRecord, 120) is False
        assert refresh_after_bulk_change(AuditRecord, REFRESH_FLOOR - 1) is False
    assert pending == []
    assert described_rows(AuditRecord) == before
    assert analyze_count(AUDIT) == count


@pytest.mark.django_db
def test_a_table_without_statistics_is_analysed(django_capture_on_commit_callbacks: Capture) -> None:
    UserSession.objects.bulk_create([session(username=f"u{i % 9}") for i in range(REFRESH_FLOOR)])
    forget_statistics(SESSIONS)
    assert described_rows(UserSession) is None
    with django_capture_on_commit_callbacks(execute=True):
        assert refresh_after_bulk_change(UserSession, REFRESH_FLOOR) is True
    assert described_rows(UserSession) == REFRESH_FLOOR


@pytest.mark.django_db
def test_a_failed_analyze_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    django_capture_on_commit_callbacks: Capture,
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise DatabaseError("lock timeout")

    monkeypatch.setattr(planner_stats, "analyze", refuse)
    with django_capture_on_commit_callbacks(execute=True):
        assert refresh_after_bulk_change(AuditRecord, REFRESH_ROWS) is True
    assert f"planner statistics of {AUDIT} not refreshed: lock timeout" in caplog.text


def all_visible_pages(table: str) -> tuple[int, int]:
    """PostgreSQL: (pages of ``table``, pages its visibility map marks all-visible)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT relpages, relallvisible FROM pg_class WHERE oid = to_regclass(%s)", [table])
        pages, visible = cursor.fetchone()
    return int(pages), int(visible)


@pytest.mark.skipif(SQLITE, reason="VACUUM and the visibility map are PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_after_commit_postgresql_vacuums_so_index_only_scans_skip_the_heap() -> None:
    """A freshly loaded table has no visibility map: with autovacuum off, every index-only scan would
    read the heap (the count by type 4.6x slower after seed_demo at 1M). The refresh after the
    commit is ``VACUUM (ANALYZE)``, which sets it; inside a transaction it can only ``ANALYZE``."""
    with transaction.atomic():
        add_audit_records(REFRESH_ROWS)
        assert refresh_after_bulk_change(AuditRecord, REFRESH_ROWS) is True  # runs at the commit
    pages, visible = all_visible_pages(AUDIT)
    assert pages > 0
    assert visible == pages
    with transaction.atomic():
        assert analyze(AUDIT, vacuum=True).vacuumed is False  # VACUUM cannot run in a transaction
    assert analyze(AUDIT, vacuum=True).vacuumed is True


# -- seed_demo, history_purge and manage.py analyze -------------------------------------------------


@pytest.mark.django_db
def test_seed_demo_leaves_statistics_fresh(
    monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Capture
) -> None:
    for table in (SESSIONS, AUDIT):
        forget_statistics(table)
    monkeypatch.setattr(stats_checks, "MANY_ROWS", 50)
    out = StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo", "--no-progress", sessions=300, seed=7, stdout=out)
    assert f"Planner statistics refreshed: {SESSIONS}, {AUDIT}" in out.getvalue()
    sessions = UserSession.objects.count()
    assert described_rows(UserSession) == (sessions if not SQLITE else pytest.approx(sessions, rel=0.25))
    assert described_rows(AuditRecord) is not None
    assert "sessions_app.W202" not in ids(check_planner_statistics())


@pytest.mark.django_db
def test_history_purge_refreshes_what_it_emptied(
    monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Capture
) -> None:
    import datetime as dt

    from django.utils import timezone

    from sessions_app.services.maintenance import history_purge

    refreshed: dict[str, int] = {}
    monkeypatch.setattr(
        planner_stats,
        "refresh_after_bulk_change",
        lambda model, changed: bool(refreshed.setdefault(model._meta.db_table, changed)),
    )
    old = timezone.now() - dt.timedelta(days=200)
    add_audit_records(3)
    AuditRecord.objects.update(timestamp=old)
    with django_capture_on_commit_callbacks(execute=True):
        history_purge(older_than=dt.timedelta(days=90), actor="test")
    assert refreshed[AUDIT] == 3
    assert refreshed[SESSIONS] == 0


@pytest.mark.django_db
def test_analyze_command_gathers_statistics() -> None:
    UserSession.objects.bulk_create([session(username=f"u{i % 9}") for i in range(200)])
    forget_statistics(SESSIONS)
    out = StringIO()
    call_command("analyze", "--full", stdout=out)
    assert "Planner statistics gathered" in out.getvalue()
    assert described_rows(UserSession) == 200


# -- the deployment check --------------------------------------------------------------------------


@pytest.mark.django_db
def test_check_warns_about_a_never_analysed_sessions_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats_checks, "MANY_ROWS", 5)
    forget_statistics(SESSIONS)
    UserSession.objects.bulk_create([session() for _ in range(4)])
    assert "sessions_app.W202" not in ids(check_planner_statistics())  # few rows: plans hardly matter

    UserSession.objects.bulk_create([session()])
    (warning,) = [m for m in check_planner_statistics() if m.id == "sessions_app.W202"]
    assert "has never been analysed" in warning.msg
    assert "manage.py analyze" in warning.hint

    analyze(SESSIONS)
    assert "sessions_app.W202" not in ids(check_planner_statistics())


@pytest.mark.django_db
def test_check_warns_when_autovacuum_is_off() -> None:
    found = ids(check_planner_statistics())
    if SQLITE:
        assert "sessions_app.W201" not in found
        return
    with connection.cursor() as cursor:
        cursor.execute("SHOW autovacuum")
        off = cursor.fetchone()[0] == "off"
    assert ("sessions_app.W201" in found) is off  # off on this project's machines
    if off:
        (warning,) = [m for m in check_planner_statistics() if m.id == "sessions_app.W201"]
        assert "autovacuum is off" in warning.msg
        assert "manage.py analyze" in warning.hint


@pytest.mark.django_db
def test_check_runs_with_check_deploy_only() -> None:
    from django.core.checks.registry import registry

    assert check_planner_statistics in registry.get_checks(include_deployment_checks=True)
    assert check_planner_statistics not in registry.get_checks(include_deployment_checks=False)


@pytest.mark.django_db
def test_check_is_silent_when_the_database_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    unreachable = connections.create_connection("default")
    if unreachable.vendor == "sqlite":
        unreachable.settings_dict = {**unreachable.settings_dict, "NAME": str(tmp_path / "no" / "db.sqlite3")}
    else:  # nothing listens on port 1
        unreachable.settings_dict = {**unreachable.settings_dict, "PORT": 1, "OPTIONS": {}}
    monkeypatch.setattr(stats_checks, "connections", {"default": unreachable})
    try:
        assert check_planner_statistics() == []
    finally:
        unreachable.close()


@pytest.mark.django_db
def test_check_is_silent_before_migrate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(type(connection.introspection), "table_names", lambda self, *a, **k: [])
    assert check_planner_statistics() == []


# -- SQLite: PRAGMA optimize -----------------------------------------------------------------------

sqlite_only = pytest.mark.skipif(not SQLITE, reason="SQLite's PRAGMA optimize")


@sqlite_only
@pytest.mark.django_db
def test_new_sqlite_connections_bound_analyze_and_optimize(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int | None] = []
    real = db.sqlite_optimize
    monkeypatch.setattr(db, "sqlite_optimize", lambda raw, mask=None: calls.append(mask) or real(raw, mask))
    fresh = connections.create_connection("default")
    try:
        fresh.ensure_connection()
        assert calls == [0x10002]
        limit = fresh.connection.execute("PRAGMA analysis_limit").fetchone()[0]
        assert limit == planner_stats.SQLITE_ANALYSIS_LIMIT
    finally:
        fresh.close()


def test_sqlite_optimize_analyses_a_used_table_without_statistics(tmp_path: Path) -> None:
    raw = sqlite3.connect(tmp_path / "t.sqlite3")
    raw.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER)")
    raw.execute("CREATE INDEX t_a ON t (a)")
    raw.executemany("INSERT INTO t (a) VALUES (?)", [(i % 10,) for i in range(2000)])
    raw.commit()
    raw.execute("PRAGMA analysis_limit = 1000")
    raw.execute("SELECT * FROM t WHERE a = 3").fetchall()  # the planner wanted statistics here
    assert db.sqlite_optimize(raw) is True
    assert raw.execute("SELECT stat FROM sqlite_stat1 WHERE idx = 't_a'").fetchone() is not None
    raw.close()


def test_sqlite_optimize_gives_up_on_a_held_lock(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    holder, raw = sqlite3.connect(path, isolation_level=None), sqlite3.connect(path, timeout=20)
    raw.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER)")
    raw.execute("CREATE INDEX t_a ON t (a)")
    raw.executemany("INSERT INTO t (a) VALUES (?)", [(i % 10,) for i in range(500)])
    raw.commit()
    raw.execute("SELECT * FROM t WHERE a = 3").fetchall()
    holder.execute("BEGIN EXCLUSIVE")
    try:
        assert db.sqlite_optimize(raw) is False  # no wait for the busy timeout
        assert raw.execute("PRAGMA busy_timeout").fetchone()[0] == 20000  # put back
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        raw.close()


@sqlite_only
@pytest.mark.django_db
def test_sqlite_optimize_runs_periodically_after_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(db, "sqlite_optimize", lambda raw, mask=None: calls.append(mask) or True)
    monkeypatch.setattr(db, "_optimized_at", None)
    connection.ensure_connection()
    monkeypatch.setattr(connections["default"], "in_atomic_block", False)  # as after a request
    db._sqlite_optimize_periodically(sender=None)
    db._sqlite_optimize_periodically(sender=None)  # within the interval: nothing
    assert calls == [None]
    monkeypatch.setattr(db, "_optimized_at", db._optimized_at - db.SQLITE_OPTIMIZE_INTERVAL)  # type: ignore[operator]
    db._sqlite_optimize_periodically(sender=None)
    assert calls == [None, None]
