"""Worker threads on the test database: `Threads` and its fixture, shared by the security and
reliability suites (each conftest exposes the fixture ``threads``)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.core.signals import request_finished
from django.db import close_old_connections, connection, connections

T = TypeVar("T")


class Threads:
    """Run work in threads that each have their own database connection, released together.

    Django's in-memory SQLite test database is shared-cache: a second writer gets "database table is
    locked" at once instead of waiting on the busy timeout. `share` then copies it, once the test has
    set up its rows, to a file that worker connections open instead (same OPTIONS: WAL, IMMEDIATE,
    busy timeout), and the main thread must read through `read`. A file SQLite test database
    (``SQLITE_TEST_NAME``) and PostgreSQL need no copy; `read` works the same on them.

    A request a worker thread sends through Django's test client ends like one a server handles:
    its connection is released (back to the pool, with PostgreSQL's connection pool), which the test
    client alone does not do.
    """

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self._tmp_path = tmp_path
        self._monkeypatch = monkeypatch
        self._shared = False

    def share(self) -> None:
        """Make what the main thread wrote so far visible to worker threads (call after setup)."""
        if self._shared:
            return
        self._shared = True
        if connection.vendor == "sqlite" and connection.is_in_memory_db():
            path = self._tmp_path / "threads.sqlite3"
            connection.ensure_connection()
            target = sqlite3.connect(path)
            try:
                connection.connection.backup(target)
            finally:
                target.close()
            self._monkeypatch.setitem(
                connections.settings, "default", {**connections.settings["default"], "NAME": str(path)}
            )

    @staticmethod
    def release_after_request(sender: Any, **kwargs: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            close_old_connections()

    def run(self, count: int, work: Callable[[int], T], *, timeout: float = 60.0) -> list[T]:
        """``work(i)`` for i in range(count), in ``count`` threads released by a barrier.

        Fails if a thread raised or had not finished after ``timeout`` seconds (threads are daemons:
        a stuck one never keeps the run alive).
        """
        self.share()
        barrier = threading.Barrier(count)
        results: list[Any] = [None] * count

        def target(i: int) -> None:
            try:
                barrier.wait(timeout=timeout)
                results[i] = work(i)
            except BaseException as exc:  # reported below, in the main thread
                results[i] = exc
            finally:
                connections.close_all()

        workers = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(count)]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        stuck = sum(worker.is_alive() for worker in workers)
        assert not stuck, f"{stuck} of {count} worker threads still running after {timeout} s"
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, errors[:3]
        return results

    def read(self, work: Callable[[], T]) -> T:
        """``work()`` on a worker-thread connection: the one that sees what the threads committed."""
        return self.run(1, lambda _: work())[0]


def threads_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Threads]:
    """The body of each suite's ``threads`` fixture (which also asks for ``transactional_db``)."""
    request_finished.connect(Threads.release_after_request)
    try:
        yield Threads(tmp_path, monkeypatch)
    finally:
        request_finished.disconnect(Threads.release_after_request)
