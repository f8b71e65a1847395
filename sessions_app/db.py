"""Database connection hooks.

Django's SQLite backend implements the ``regex`` / ``iregex`` lookups with a Python ``re.search``
user function, which has no time bound: ``^(a+)+$`` against 30 ``a``s and a ``!`` stalls a worker
for seconds (ReDoS). Every new SQLite connection gets a ``REGEXP`` function with the same
``re.search`` semantics, run by the ``regex`` package with a timeout; a timeout aborts the statement
("user-defined function raised exception"), which the interfaces map to a client error. On
PostgreSQL, regexes run in the server and are bounded by ``statement_timeout``.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.signals import connection_created
from django.dispatch import receiver

from sessions_app.query.operators import REGEX_TIMEOUT_SECONDS, compile_regex


def bounded_regexp(pattern: str | None, value: Any) -> bool | None:
    """SQLite ``REGEXP``: ``re.search`` semantics, size-checked pattern, bounded match time."""
    if pattern is None or value is None:
        return None
    return bool(compile_regex(pattern).search(str(value), timeout=REGEX_TIMEOUT_SECONDS))


@receiver(connection_created)
def _install_sqlite_functions(sender: Any, connection: Any, **kwargs: Any) -> None:
    if connection.vendor == "sqlite":
        connection.connection.create_function("REGEXP", 2, bounded_regexp, deterministic=True)
