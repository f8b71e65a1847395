"""Planner statistics as part of the product (issue 18): refreshed after bulk changes.

Both databases choose a query plan from statistics about each table (rows, distinct values per
column or index prefix). Without them PostgreSQL guesses a selectivity and SQLite assumes every
index is equally good: at a million sessions the API's newest-first page took 2,900 ms instead of
1.4 ms on PostgreSQL until someone ran ``ANALYZE``. PostgreSQL's autovacuum gathers statistics on
its own, a minute or so after a table changed by 10% (``autovacuum_analyze_scale_factor``) -- when
it is on; SQLite never does unless told. So every bulk operation of the service (``seed_demo``, the
purge job, mass termination) calls `refresh_after_bulk_change`, which analyses the table when the
change is large enough to have made its statistics wrong:

- at least `REFRESH_ROWS` rows changed, whatever the table's size, or
- at least `REFRESH_SHARE` of the rows the statistics describe (no statistics: zero rows), the
  threshold autovacuum uses; but never fewer than `REFRESH_FLOOR` rows, since the planner's
  defaults do no harm on a table that small.

The size of the table is what the statistics last said (``pg_class.reltuples``; SQLite: the row
count in ``sqlite_stat1``), so deciding costs one catalogue read, never a ``count(*)``.

On PostgreSQL the refresh is ``VACUUM (ANALYZE)`` when it runs outside a transaction (as it does,
after the commit): a freshly loaded or mass-updated table has no visibility map until something
vacuums it, and every index-only scan then visits the heap page of each entry -- with autovacuum
off nobody does, and after ``seed_demo`` at a million sessions the count by credential type took
204 ms instead of 44 and an offset of 500,000 rows 406 ms instead of 57 (bench/RESULTS.md). The
vacuum reads the table once (0.9 s at a million sessions) and also reclaims the dead rows a mass
termination leaves.

Analysing costs little: PostgreSQL samples 30,000 rows whatever the table's size (0.2-0.5 s at a
million sessions); SQLite reads each index in full unless told otherwise, so the product runs its
``ANALYZE`` under ``PRAGMA analysis_limit`` = `SQLITE_ANALYSIS_LIMIT` (SQLite recommends 100-1000),
which bounds it to milliseconds at any size (bench/RESULTS.md, "Planner statistics"). `analyze_database` (``manage.py
analyze``) analyses everything, in full on request.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, router, transaction
from django.db.backends.utils import CursorWrapper
from django.db.models import Model

logger = logging.getLogger(__name__)

#: A change of at least this many rows refreshes the statistics whatever the table's size.
REFRESH_ROWS = 10_000
#: ... and so does a change of at least this share of the rows the statistics describe (autovacuum's
#: default ``autovacuum_analyze_scale_factor``).
REFRESH_SHARE = 0.10
#: ... but a change of fewer rows than this never does: the planner's defaults suit tiny tables.
REFRESH_FLOOR = 100
#: SQLite: rows of each index that ``ANALYZE`` reads (``PRAGMA analysis_limit``); 0 reads all.
SQLITE_ANALYSIS_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class AnalyzeResult:
    """What one ``ANALYZE`` did: the table (``None``: the whole database), how long it took, and
    whether it was a ``VACUUM (ANALYZE)``."""

    table: str | None
    seconds: float
    vacuumed: bool = False


def needs_refresh(changed: int, described: int | None) -> bool:
    """Whether changing ``changed`` rows of a table whose statistics describe ``described`` rows
    (``None``: it has none) makes them worth refreshing (the rule in the module's docstring)."""
    if changed < REFRESH_FLOOR:
        return False
    return changed >= REFRESH_ROWS or changed >= REFRESH_SHARE * (described or 0)


def described_rows(model: type[Model], *, using: str | None = None) -> int | None:
    """The number of rows ``model``'s table had when its statistics were last gathered, or ``None``
    when it has none (never analysed, or analysed while empty). One catalogue read, no scan."""
    conn = connections[using or router.db_for_write(model)]
    table = model._meta.db_table
    with conn.cursor() as cursor:
        if conn.vendor == "postgresql":
            # -1: never analysed nor vacuumed (PostgreSQL >= 14); 0 before 14.
            cursor.execute(
                "SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)", [conn.ops.quote_name(table)]
            )
            row = cursor.fetchone()
            return int(row[0]) if row is not None and row[0] > 0 else None
        if conn.vendor == "sqlite":
            return _sqlite_described_rows(cursor, table)
    return None


def _sqlite_described_rows(cursor: CursorWrapper, table: str) -> int | None:
    cursor.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'")
    if cursor.fetchone() is None:
        return None  # nothing in this database was ever analysed
    # One row per index ("<rows> <rows per key prefix>..."), or one (idx NULL) for an index-less
    # table. A partial index counts only its own rows; under analysis_limit every count is an
    # extrapolation, some far off (SQLite 3.40 at 1M rows: 1.04M-1.42M, and 42M for a unique index
    # of long keys), so the size is the median over the full-table indexes.
    cursor.execute(
        "SELECT s.stat FROM sqlite_stat1 AS s LEFT JOIN pragma_index_list(%s) AS i ON i.name = s.idx "
        "WHERE s.tbl = %s AND coalesce(i.partial, 0) = 0",
        [table, table],
    )
    counts = sorted(int(str(stat).split()[0]) for (stat,) in cursor.fetchall() if stat)
    return counts[len(counts) // 2] if counts and counts[len(counts) // 2] > 0 else None


def refresh_after_bulk_change(model: type[Model], changed: int) -> bool:
    """Refresh the planner's statistics of ``model``'s table when ``changed`` rows is a large share.

    Call it once at the end of a bulk operation with the number of rows inserted, updated or
    deleted. Inside a transaction the ``ANALYZE`` waits for the commit (it should see the change,
    and on PostgreSQL not hold its lock until the transaction ends); a rolled-back change analyses
    nothing. A failure to analyse (a lock held too long, missing privilege) is logged, never raised:
    the bulk operation itself has succeeded. Returns whether an ``ANALYZE`` was run or scheduled.
    """
    if changed < REFRESH_FLOOR:
        return False  # too few rows whatever the statistics say: no catalogue read
    using = router.db_for_write(model)
    table = model._meta.db_table
    try:
        described = described_rows(model, using=using)
    except DatabaseError as exc:
        logger.warning("planner statistics of %s not refreshed: %s", table, exc)
        return False
    if not needs_refresh(changed, described):
        return False

    def run() -> None:
        try:
            result = analyze(table, using=using, vacuum=True)
        except DatabaseError as exc:
            logger.warning("planner statistics of %s not refreshed: %s", table, exc)
            return
        logger.info(
            "planner statistics of %s refreshed%s after %d changed rows (%d described) in %.3f s",
            table,
            " (and vacuumed)" if result.vacuumed else "",
            changed,
            described or 0,
            result.seconds,
        )

    transaction.on_commit(run, using=using)
    return True


def analyze(
    table: str | None = None, *, using: str = DEFAULT_DB_ALIAS, full: bool = False, vacuum: bool = False
) -> AnalyzeResult:
    """``ANALYZE`` ``table`` (``None``: every table of the database) now, outside any deferral.

    On SQLite the statement reads at most `SQLITE_ANALYSIS_LIMIT` rows of each index unless
    ``full``; ``full`` has no effect on PostgreSQL, whose ``ANALYZE`` always samples. ``vacuum``:
    on PostgreSQL, and outside a transaction (``VACUUM`` cannot run in one), ``VACUUM (ANALYZE)``,
    which also sets the visibility map index-only scans rely on (the module's docstring).
    """
    conn = connections[using]
    target = "" if table is None else " " + conn.ops.quote_name(table)
    vacuumed = vacuum and conn.vendor == "postgresql" and not conn.in_atomic_block
    started = time.perf_counter()
    with conn.cursor() as cursor:
        if conn.vendor != "sqlite":
            cursor.execute(f"VACUUM (ANALYZE){target}" if vacuumed else f"ANALYZE{target}")
        else:
            cursor.execute("PRAGMA analysis_limit")
            previous = int(cursor.fetchone()[0])
            cursor.execute(f"PRAGMA analysis_limit={0 if full else SQLITE_ANALYSIS_LIMIT}")
            try:
                cursor.execute(f"ANALYZE{target}")
            finally:
                cursor.execute(f"PRAGMA analysis_limit={previous}")
    return AnalyzeResult(table=table, seconds=time.perf_counter() - started, vacuumed=vacuumed)


def analyze_database(*, using: str = DEFAULT_DB_ALIAS, full: bool = False) -> AnalyzeResult:
    """Gather statistics of every table (``manage.py analyze``): after loading data by other means
    than the service (a restore, an import, ``psql``), and on a schedule where autovacuum is off.
    On PostgreSQL outside a transaction it is ``VACUUM (ANALYZE)`` of the database, for the same
    reason as after a bulk change."""
    return analyze(None, using=using, full=full, vacuum=True)
