"""Fixtures of the reliability tests (security.md group D): bounded sizes, worker threads that share
the test database, real gunicorn processes on loopback, and holders of database locks.

Every load loop here is bounded twice, by a count and by a deadline, and stops by itself; all traffic
goes to 127.0.0.1 (the Django test client sends none at all). Sizes follow ``RELIABILITY_SCALE``:
``small`` (the default, what ``.ci/run`` uses) or ``full`` (the figures security.md names, e.g. 1 000
operations for D9).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from tests.integration.servers import Server, create_user
from tests.threads import Threads, threads_fixture

SCALES = ("small", "full")


def reliability_scale() -> str:
    scale = os.environ.get("RELIABILITY_SCALE", "").strip().lower() or "small"
    if scale not in SCALES:
        raise pytest.UsageError(f"RELIABILITY_SCALE must be one of {', '.join(SCALES)}, not {scale!r}")
    return scale


@pytest.fixture
def scaled() -> Callable[[int, int], int]:
    """``scaled(small, full)``: the size of a load for the ``RELIABILITY_SCALE`` in force."""
    full = reliability_scale() == "full"
    return lambda small, big: big if full else small


# --- worker threads on the test database ------------------------------------------------------------


@pytest.fixture
def threads(transactional_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Threads]:
    yield from threads_fixture(tmp_path, monkeypatch)


# --- answers --------------------------------------------------------------------------------------


@dataclass
class Answer:
    """One HTTP answer, from the test client or from a real server."""

    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    cookies: dict[str, str]

    @classmethod
    def of(cls, response: Any) -> Answer:
        """From a Django test-client response."""
        return cls(
            response.status_code,
            {name.lower(): value for name, value in response.headers.items()},
            response.content,
            {name: morsel.value for name, morsel in response.cookies.items()},
        )

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def ok(self) -> bool:
        """A JSON-RPC call that returned a result."""
        return self.status == 200 and "result" in self.json

    @property
    def not_authenticated(self) -> bool:
        """Refused as unauthenticated: HTTP 401, or JSON-RPC's ``ENOTAUTHENTICATED`` (207)."""
        if self.status == 401:
            return True
        if self.status != 200:
            return False
        error = self.json.get("error") or {}
        return (error.get("data") or {}).get("errname") == "ENOTAUTHENTICATED"


class Checks:
    """What every reliability test asserts about answers (a fixture: tests import nothing from here)."""

    answer = staticmethod(Answer.of)

    @staticmethod
    def documented_503(answer: Answer) -> None:
        """The documented answer of a database that cannot be used: 503, JSON, ``Retry-After``."""
        assert answer.status == 503, (answer.status, answer.body[:300])
        assert answer.headers.get("content-type", "").startswith("application/json"), answer.headers
        retry_after = answer.headers.get("retry-after", "")
        assert retry_after.isdigit(), answer.headers
        assert int(retry_after) >= 1, answer.headers
        assert isinstance(answer.json, dict), answer.body[:300]
        assert b"<html" not in answer.body.lower()
        assert b"traceback" not in answer.body.lower()

    @classmethod
    def no_undocumented_5xx(cls, answers: list[Answer]) -> None:
        """Every 5xx among ``answers`` is the documented 503."""
        for answer in answers:
            if answer.status >= 500:
                cls.documented_503(answer)


@pytest.fixture
def checks() -> Checks:
    return Checks()


# --- real servers ---------------------------------------------------------------------------------


def call_server(
    server: Server,
    method: str,
    *params: Any,
    cookie: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Answer:
    """One JSON-RPC call to ``POST /api/current`` of a gunicorn started by `running_servers`, with the
    status, headers and raw body (`Server.call` keeps only the JSON)."""
    response, data, cookies = server.post(method, *params, cookie=cookie, headers=headers, timeout=timeout)
    return Answer(
        response.status, {name.lower(): value for name, value in response.getheaders()}, data, cookies
    )


@pytest.fixture
def server_call() -> Callable[..., Answer]:
    """``server_call(server, method, *params, cookie=..., headers=..., timeout=...)`` -> `Answer`."""
    return call_server


@pytest.fixture
def server_user() -> Callable[..., Any]:
    """``server_user("alice", superuser=False)``: a user the servers can log in (password PASSWORD)."""
    return create_user


# --- holding the database busy ------------------------------------------------------------------------


class DatabaseLocks:
    """Locks taken from a connection of the test's own, outside Django, to make the servers wait."""

    @contextlib.contextmanager
    def sqlite_write_lock(self) -> Iterator[None]:
        """Hold SQLite's write lock (``BEGIN IMMEDIATE``) on the test database file until the block ends."""
        path = connection.settings_dict["NAME"]
        holder = sqlite3.connect(path, isolation_level=None, timeout=10)
        try:
            holder.execute("BEGIN IMMEDIATE")
            yield
        finally:
            with contextlib.suppress(sqlite3.Error):
                holder.execute("ROLLBACK")
            holder.close()

    def pg_connect(self) -> Any:
        import psycopg

        db = connection.settings_dict
        return psycopg.connect(
            dbname=db["NAME"],
            user=db["USER"] or None,
            password=db["PASSWORD"] or None,
            host=db["HOST"] or "127.0.0.1",
            port=db["PORT"] or None,
            application_name="reliability-lock-holder",
        )

    @contextlib.contextmanager
    def pg_table_lock(self, table: str, mode: str) -> Iterator[None]:
        """Hold ``LOCK TABLE <table> IN <mode> MODE`` until the block ends."""
        from psycopg import sql

        holder = self.pg_connect()
        try:
            holder.execute(sql.SQL("LOCK TABLE {} IN " + mode + " MODE").format(sql.Identifier(table)))
            yield
        finally:
            with contextlib.suppress(Exception):
                holder.rollback()
            holder.close()

    def pg_backends(
        self, application_name: str | None, *, waiting_on_lock: bool = False, in_transaction: bool = False
    ) -> list[int]:
        """Backend pids of a server's connections (found by their ``application_name``; ``None``: any
        backend on the test database but this holder's and the caller's own), optionally only those
        waiting on a lock or inside a transaction."""
        query = "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
        params: list[Any] = [connection.settings_dict["NAME"]]
        if application_name is None:
            query += " AND application_name <> 'reliability-lock-holder' AND pid <> %s"
            params.append(connection.connection.info.backend_pid if connection.connection else 0)
        else:
            query += " AND application_name = %s"
            params.append(application_name)
        if waiting_on_lock:
            query += " AND wait_event_type = 'Lock'"
        if in_transaction:
            query += " AND xact_start IS NOT NULL"
        with contextlib.closing(self.pg_connect()) as admin:
            admin.autocommit = True
            rows = admin.execute(query, params).fetchall()
        return [pid for (pid,) in rows]

    def pg_terminate(self, pid: int) -> bool:
        with contextlib.closing(self.pg_connect()) as admin:
            admin.autocommit = True
            row = admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()
        return bool(row and row[0])


@pytest.fixture
def db_locks() -> DatabaseLocks:
    return DatabaseLocks()


def skip_unless_sqlite() -> None:
    if connection.vendor != "sqlite":
        pytest.skip(f"SQLite-only: {connection.vendor} has no database-wide write lock")


def skip_unless_postgresql(reason: str) -> None:
    if connection.vendor != "postgresql":
        pytest.skip(f"PostgreSQL-only: {reason}")


@pytest.fixture
def vendor_only() -> Any:
    """``vendor_only.sqlite()`` / ``vendor_only.postgresql(reason)``: skip on the other backend."""

    class VendorOnly:
        sqlite = staticmethod(skip_unless_sqlite)
        postgresql = staticmethod(skip_unless_postgresql)

    return VendorOnly()
