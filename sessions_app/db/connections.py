"""Database connection hooks.

Django's SQLite backend implements the ``regex`` / ``iregex`` lookups with a Python ``re.search``
user function, which has no time bound: ``^(a+)+$`` against 30 ``a``s and a ``!`` stalls a worker
for seconds (ReDoS). Every new SQLite connection gets a ``REGEXP`` function with the same
``re.search`` semantics, run by the ``regex`` package with a timeout; a timeout aborts the statement
("user-defined function raised exception"), which the interfaces map to a client error. On
PostgreSQL, regexes run in the server and are bounded by ``statement_timeout``.

Query endpoints run under a statement budget (`statement_budget`, ``SESSIONS_QUERY_TIMEOUT``,
security.md C20): PostgreSQL ``statement_timeout`` for the query, SQLite a progress handler with a
deadline; either way the database cancels the statement and the caller
gets `QueryTimeout`.

SQLite database files are also made private to the service's account on each new connection
(`make_private`), and `atomic_or_give_up` runs a transaction that gives up on a lock after a
short wait instead of the connection's long one.

SQLite gathers no planner statistics unless told (issue 18), so connections follow its recommended
usage: ``PRAGMA analysis_limit`` bounds any ``ANALYZE``, ``PRAGMA optimize=0x10002`` runs when a
connection opens, and ``PRAGMA optimize`` after a request at most every `SQLITE_OPTIMIZE_INTERVAL`
per process (`sqlite_optimize`); bulk operations refresh statistics themselves (`planner_stats`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from django.conf import settings
from django.core.signals import request_finished
from django.db import DEFAULT_DB_ALIAS, OperationalError, connection, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from django.dispatch import receiver

from sessions_app import conf
from sessions_app.exceptions import QueryTimeout
from sessions_app.query.operators import REGEX_TIMEOUT_SECONDS, compile_regex

logger = logging.getLogger(__name__)
T = TypeVar("T")
_random = random.Random()


def bounded_regexp(pattern: str | None, value: Any) -> bool | None:
    """SQLite ``REGEXP``: ``re.search`` semantics, size-checked pattern, bounded match time."""
    if pattern is None or value is None:
        return None
    return bool(compile_regex(pattern).search(str(value), timeout=REGEX_TIMEOUT_SECONDS))


def make_private(database: str) -> None:
    """Make a SQLite database file and its ``-wal`` / ``-shm`` files 0600 (security.md F6).

    Run on every new connection, so it also tightens files an older release (or a umask of 022)
    left 0644. SQLite creates ``-wal`` and ``-shm`` with the mode of the database file itself,
    whatever the process umask, so once the database is 0600 they are born 0600 too. The window
    in which a brand-new database file has the umask's mode is closed by ``umask 077`` in
    ``bin/serve`` and by ``var/`` being 0700 (``project/settings.py``).
    """
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    for path in (database, f"{database}-wal", f"{database}-shm"):
        try:
            if os.stat(path).st_mode & 0o077:
                os.chmod(path, 0o600)
        except FileNotFoundError:
            continue
        except OSError as exc:  # not ours to change: say so once per connection, keep serving
            logger.warning("cannot make %s private (mode 0600): %s", path, exc.strerror)


@receiver(connection_created)
def _install_sqlite_functions(sender: Any, connection: Any, **kwargs: Any) -> None:
    if connection.vendor == "sqlite":
        connection.connection.create_function("REGEXP", 2, bounded_regexp, deterministic=True)
        make_private(str(connection.settings_dict["NAME"]))


#: Seconds between two ``PRAGMA optimize`` of one server process after requests (SQLite: "every few
#: hours" for long-lived connections).
SQLITE_OPTIMIZE_INTERVAL = 2 * 3600.0
#: ``PRAGMA optimize`` on a new connection: ANALYZE (0x2) every table whose size changed a lot since
#: its statistics, used in this connection or not (0x10000, SQLite >= 3.46; older ones ignore it).
SQLITE_OPTIMIZE_ON_OPEN = 0x10002
_optimized_at: float | None = None  # monotonic time of this process's last periodic PRAGMA optimize


def sqlite_optimize(raw: Any, mask: int | None = None) -> bool:
    """Run ``PRAGMA optimize`` (with ``mask``) on the sqlite3 connection ``raw``; False if it could
    not have the write lock at once.

    Any ``ANALYZE`` it starts reads at most `planner_stats.SQLITE_ANALYSIS_LIMIT` rows per index:
    set on every connection, as SQLite recommends, because SQLite < 3.46 sets no limit of its own
    and would read every index in full. It is a no-op (microseconds) unless statistics are missing
    or stale. Nothing waits here: with no busy timeout, a connection that cannot have the write lock
    right away skips the refresh (the next one will do it) instead of stalling a request.
    """
    previous = int(raw.execute("PRAGMA busy_timeout").fetchone()[0])
    raw.execute("PRAGMA busy_timeout = 0").close()
    try:
        raw.execute("PRAGMA optimize" if mask is None else f"PRAGMA optimize={int(mask)}").fetchall()
    except sqlite3.OperationalError as exc:  # "database is locked" / "database table is locked"
        logger.debug("PRAGMA optimize skipped: %s", exc)
        return False
    finally:
        raw.execute(f"PRAGMA busy_timeout = {previous}").close()
    return True


@receiver(connection_created)
def _sqlite_planner_statistics(sender: Any, connection: Any, **kwargs: Any) -> None:
    """SQLite's recommended usage (https://sqlite.org/lang_analyze.html): a bounded
    ``analysis_limit``, and ``PRAGMA optimize=0x10002`` when a connection opens (issue 18)."""
    if connection.vendor != "sqlite":
        return
    from sessions_app.db.planner_stats import SQLITE_ANALYSIS_LIMIT

    raw = connection.connection
    raw.execute(f"PRAGMA analysis_limit = {SQLITE_ANALYSIS_LIMIT}").close()
    sqlite_optimize(raw, SQLITE_OPTIMIZE_ON_OPEN)


@receiver(request_finished)
def _sqlite_optimize_periodically(sender: Any, **kwargs: Any) -> None:
    """At most every `SQLITE_OPTIMIZE_INTERVAL` per process, ``PRAGMA optimize`` on a SQLite
    connection still open after a request (``CONN_MAX_AGE`` > 0).

    SQLite's complement to the check on open: up to 3.45 ``PRAGMA optimize`` considers only the
    tables the connection has queried, so it is useful after work, not on open. (Django has no hook
    before it closes a connection; with ``CONN_MAX_AGE`` = 0 it is closed before this runs.)
    """
    global _optimized_at
    now = time.monotonic()
    if _optimized_at is not None and now - _optimized_at < SQLITE_OPTIMIZE_INTERVAL:
        return
    for conn in connections.all(initialized_only=True):
        usable = conn.vendor == "sqlite" and conn.connection is not None and not conn.in_atomic_block
        if usable and sqlite_optimize(conn.connection):
            _optimized_at = now


def atomic_or_give_up(work: Callable[[], T], *, within: float, every: tuple[float, float] = (0.02, 0.1)) -> T:
    """Run ``work`` in ``transaction.atomic()``, giving up on a database lock after ``within``
    seconds with ``OperationalError`` instead of the connection's long busy or statement timeout.

    For bookkeeping that must neither hold a request for the database's full timeout nor crowd out
    real work (the failed-credential counters, `throttle.record_request_failure`). SQLite has no
    queue for its write lock: every waiter polls, and the busy handler polls densely in its first
    second, so a stream of short-budget waiters would win the lock over a long-waiting login again
    and again. Here SQLite's busy timeout is 0 for the attempt and the lock is tried again after a
    random pause within ``every`` seconds: about as often as a long waiter polls it (100 ms), and
    not in step with the other bookkeepers. PostgreSQL: ``SET LOCAL lock_timeout``.
    Inside an outer transaction the locks are already held (SQLite) or its settings apply.
    """
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute(f"SET LOCAL lock_timeout = {max(1, int(within * 1000))}")
            return work()
    connection.ensure_connection()
    raw = connection.connection
    previous = int(raw.execute("PRAGMA busy_timeout").fetchone()[0])
    deadline = time.monotonic() + within
    raw.execute("PRAGMA busy_timeout = 0").close()
    try:
        while True:
            try:
                with transaction.atomic():  # BEGIN IMMEDIATE: the write lock, or "database is locked"
                    return work()
            except OperationalError:
                pause = _random.uniform(*every)
                if time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
    finally:
        raw.execute(f"PRAGMA busy_timeout = {previous}").close()


#: SQLite virtual-machine instructions between two looks at the clock of a statement budget.
_PROGRESS_STEPS = 10_000
#: The connections (one per thread: what ``connection`` stands for there) inside a statement budget.
_IN_BUDGET: weakref.WeakSet[BaseDatabaseWrapper] = weakref.WeakSet()


@contextlib.contextmanager
def statement_budget(seconds: float) -> Iterator[None]:
    """Let the database cancel any statement of the block still running ``seconds`` after the block
    began (SQLite) or after it started (PostgreSQL), raising `QueryTimeout` (security.md C20).

    PostgreSQL: ``statement_timeout`` for the block (`_postgresql_budget`). SQLite: a progress
    handler that interrupts once the deadline has passed, removed after the block. Other database errors pass
    through unchanged.
    """
    current = connections[DEFAULT_DB_ALIAS]
    if seconds <= 0 or current in _IN_BUDGET:
        yield  # no budget, or inside one already (the outer budget holds)
        return
    _IN_BUDGET.add(current)
    try:
        with _statement_budget(seconds):
            yield
    finally:
        _IN_BUDGET.discard(current)


@contextlib.contextmanager
def _statement_budget(seconds: float) -> Iterator[None]:
    if connection.vendor == "postgresql":
        ceiling = int(getattr(settings, "PG_STATEMENT_TIMEOUT_MS", 0) or 0)
        if ceiling and seconds * 1000 >= ceiling:
            yield  # the connection's own statement_timeout is already at most the budget
            return
        with _postgresql_budget(seconds):
            yield
        return
    connection.ensure_connection()
    raw = connection.connection
    deadline = time.monotonic() + seconds
    raw.set_progress_handler(lambda: int(time.monotonic() > deadline), _PROGRESS_STEPS)
    try:
        yield
    except OperationalError as exc:
        if "interrupted" in str(exc) and time.monotonic() > deadline:
            raise QueryTimeout(seconds) from exc
        raise
    finally:
        raw.set_progress_handler(None, 0)


@contextlib.contextmanager
def _postgresql_budget(seconds: float) -> Iterator[None]:
    """One round trip before the block, and one after it outside a transaction.

    In a transaction, ``set_config(..., is_local => true)``: the budget holds to the transaction's
    end (the rest of a request's transaction is short; nothing is put back). In autocommit,
    ``SET statement_timeout`` for the block and ``RESET`` (back to the connection's
    ``PG_STATEMENT_TIMEOUT_MS``) after it, whatever happened -- no BEGIN/COMMIT round trips added.
    """
    from psycopg import errors

    milliseconds = str(max(1, int(seconds * 1000)))
    in_transaction = connection.in_atomic_block
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('statement_timeout', %s, %s)", [milliseconds, in_transaction])
    try:
        yield
    except OperationalError as exc:
        if isinstance(exc.__cause__, errors.QueryCanceled):
            raise QueryTimeout(seconds) from exc
        raise
    finally:
        if not in_transaction and connection.connection is not None:
            _reset_statement_timeout()


def _reset_statement_timeout() -> None:
    """``RESET statement_timeout``, which the short budget itself governs: on a starved machine even
    the RESET can outlast a 250 ms budget and be cancelled (seen under load), which must not turn a
    finished query into an error. A cancelled RESET changed nothing, so it is sent again."""
    from psycopg import errors

    for attempt in range(3):
        try:
            with connection.cursor() as cursor:
                cursor.execute("RESET statement_timeout")
            return
        except OperationalError as exc:
            if not isinstance(exc.__cause__, errors.QueryCanceled) or attempt == 2:
                raise


def query_budget() -> contextlib.AbstractContextManager[None]:
    """`statement_budget` of ``SESSIONS_QUERY_TIMEOUT`` seconds: the budget of query endpoints."""
    return statement_budget(float(conf.get("SESSIONS_QUERY_TIMEOUT")))


def within_query_budget(func: Callable[..., T]) -> Callable[..., T]:
    """Run a selector under `query_budget`."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        with query_budget():
            return func(*args, **kwargs)

    return wrapper
