"""Deployment checks of the database's planner statistics (issue 18), run by ``check --deploy``.

A sessions table without statistics makes the planner guess, and at a million rows a guess can cost
three orders of magnitude (bench/RESULTS.md, "Planner statistics"). The service refreshes statistics after its own
bulk operations (`planner_stats`), but nothing does after data arrives by other means -- a restore,
an import, a ``psql`` session -- unless PostgreSQL's autovacuum is on, and SQLite has no such thing.
So ``manage.py check --deploy`` (and ``bin/serve``, which runs it at start) warns:

- ``sessions_app.W201``: PostgreSQL's ``autovacuum`` is off;
- ``sessions_app.W202``: the sessions table holds at least `MANY_ROWS` rows and has never been
  analysed (PostgreSQL: no row in ``pg_stats`` for it; SQLite: none in ``sqlite_stat1``).

Both are warnings, not errors: the service works, only slower. The checks are silent when the
database cannot be reached or is not migrated yet (``check`` before ``migrate``): other checks and
the first query say so better.
"""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.db import DatabaseError, connections, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper

#: Rows from which a never-analysed sessions table is worth a warning: below it, plans hardly matter
#: (and autovacuum would not have analysed it yet anyway).
MANY_ROWS = 10_000

_ANALYZE_HINT = (
    "Run `manage.py analyze` (seconds at a million sessions). The service refreshes statistics "
    "itself after its bulk operations (seed_demo, sessions purge, mass termination); run the command "
    "after loading data any other way (a restore, an import)."
)


def check_planner_statistics(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """System check (``sessions_app.W201``, ``W202``): the planner has, and keeps, statistics."""
    from sessions_app.models import UserSession

    conn = connections[router.db_for_read(UserSession)]
    table = UserSession._meta.db_table
    try:
        if table not in conn.introspection.table_names():
            return []  # not migrated yet
        with conn.cursor() as cursor:
            return _findings(conn, cursor, table)
    except DatabaseError:
        return []  # unreachable or refusing: not this check's to report


def _findings(conn: BaseDatabaseWrapper, cursor: CursorWrapper, table: str) -> list[checks.CheckMessage]:
    found: list[checks.CheckMessage] = []
    if conn.vendor == "postgresql":
        cursor.execute("SHOW autovacuum")
        if str(cursor.fetchone()[0]).lower() != "on":
            found.append(
                checks.Warning(
                    "PostgreSQL's autovacuum is off: nothing but this service's own bulk operations "
                    "refreshes the planner's statistics or clears dead rows, and session queries can "
                    "become orders of magnitude slower as the tables change.",
                    hint="Turn it on (autovacuum = on in postgresql.conf, the default), or run "
                    "`manage.py analyze` (a VACUUM (ANALYZE) of the database) on a schedule, e.g. daily, "
                    "and after loading data by other means than the service (a restore, an import).",
                    id="sessions_app.W201",
                )
            )
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_stats WHERE schemaname = current_schema() AND tablename = %s)",
            [table],
        )
        analysed = bool(cursor.fetchone()[0])
    elif conn.vendor == "sqlite":
        cursor.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'")
        analysed = cursor.fetchone() is not None
        if analysed:
            cursor.execute("SELECT 1 FROM sqlite_stat1 WHERE tbl = %s LIMIT 1", [table])
            analysed = cursor.fetchone() is not None
    else:
        return found
    if not analysed:
        # Bounded: reads at most MANY_ROWS index entries, never the whole table.
        quoted = conn.ops.quote_name(table)
        cursor.execute(f"SELECT count(*) FROM (SELECT 1 FROM {quoted} LIMIT {MANY_ROWS}) AS head")
        if int(cursor.fetchone()[0]) >= MANY_ROWS:
            found.append(
                checks.Warning(
                    f"The sessions table ({table}, {MANY_ROWS:,} rows or more) has never been analysed: "
                    "the query planner has no statistics about it and may choose plans that read most "
                    "of the table for a page of 50 rows.",
                    hint=_ANALYZE_HINT,
                    id="sessions_app.W202",
                )
            )
    return found
