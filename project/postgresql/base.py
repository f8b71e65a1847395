"""Django's PostgreSQL backend, with a connection check that needs no round trip in the common case:
on checkout from the pool, and as the health check of a persistent connection when the pool is off.

Selected by the settings (ENGINE ``project.postgresql``) for every ``postgres://`` DATABASE_URL.

psycopg_pool's own check (`ConnectionPool.check_connection`, what Django installs when
``CONN_HEALTH_CHECKS`` is on) sends an empty query every time a connection is taken from the pool:
one network round trip per request, as long as the one lookup that authenticates the request
(~0.1 ms on this loopback). A connection the server has ended -- restart, ``pg_terminate_backend``,
``idle_session_timeout`` -- is readable when it is idle: its FATAL message and the end of the stream
are waiting on the socket. A healthy idle connection has nothing to read. So a connection whose
socket is quiet and whose session is idle is handed out as it is; anything else (something to read,
a hang-up, a transaction left open, a closed connection) gets the full check, which replaces a dead
connection before any request uses it (D7). A server that vanishes silently (no FIN) is caught by
neither check: the request's own query fails and is answered 503.
"""

from __future__ import annotations

import select
from typing import Any

from django.db.backends.postgresql import base
from psycopg import pq
from psycopg_pool import ConnectionPool


def check_connection(conn: Any) -> None:
    """Raise if ``conn`` is unusable (the pool then discards it and takes another)."""
    if not conn.closed and conn.pgconn.transaction_status == pq.TransactionStatus.IDLE:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN | select.POLLPRI)
        if not poller.poll(0):
            return
    ConnectionPool.check_connection(conn)


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        """The health check of a persistent connection (pool off, ``CONN_HEALTH_CHECKS`` on): the
        same test as the pool's, instead of Django's ``SELECT 1`` round trip on every request."""
        if self.connection is None:
            return False
        try:
            check_connection(self.connection)
        except self.Database.Error:
            return False
        return True

    @property
    def pool(self) -> Any:
        """Django's pool, whose check (Django passes ``ConnectionPool.check_connection`` when
        ``CONN_HEALTH_CHECKS`` is on) is replaced by `check_connection`. Django offers no setting for
        the check; should psycopg_pool rename the attribute, the full check stays (slower, as safe),
        and tests/test_prepared.py fails."""
        pool = super().pool
        if pool is not None and getattr(pool, "_check", None) is ConnectionPool.check_connection:
            pool._check = check_connection
        return pool
