"""Database connection hooks.

Django's SQLite backend implements the ``regex`` / ``iregex`` lookups with a Python ``re.search``
user function, which has no time bound: ``^(a+)+$`` against 30 ``a``s and a ``!`` stalls a worker
for seconds (ReDoS). Every new SQLite connection gets a ``REGEXP`` function with the same
``re.search`` semantics, run by the ``regex`` package with a timeout; a timeout aborts the statement
("user-defined function raised exception"), which the interfaces map to a client error. On
PostgreSQL, regexes run in the server and are bounded by ``statement_timeout``.

SQLite database files are also made private to the service's account on each new connection
(`make_private`), and `atomic_or_give_up` runs a transaction that gives up on a lock after a
short wait instead of the connection's long one.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import OperationalError, connection, transaction
from django.db.backends.signals import connection_created
from django.dispatch import receiver

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
