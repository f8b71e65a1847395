"""Fixtures of the security tests: TOTP devices with codes at a frozen server clock, and worker
threads that share the test database (race tests)."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest
from django.db import connection, connections
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp import models as totp_models
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app.services import login as login_service

T = TypeVar("T")

#: The server's TOTP clock during a test: mid-step, fixed, so that codes are deterministic.
OTP_NOW = 1_767_225_615.0


class Totp:
    """Confirmed TOTP devices (key derived from the username) and their codes at `OTP_NOW`."""

    now = OTP_NOW

    def device(self, user: Any) -> TOTPDevice:
        key = hashlib.sha1(user.get_username().encode()).hexdigest()  # noqa: S324 - a test seed
        return TOTPDevice.objects.create(user=user, name="phone", key=key, confirmed=True)

    def code(self, device: TOTPDevice, offset: int = 0) -> str:
        """The code of ``device`` ``offset`` steps away from the server clock (drift ignored)."""
        totp = TOTP(device.bin_key, device.step, device.t0, device.digits, 0)
        totp.time = self.now + offset * device.step
        return f"{totp.token():0{device.digits}d}"

    def wrong_codes(self, device: TOTPDevice, count: int = 1) -> list[str]:
        """``count`` well-formed codes that are valid at no step within ±2 of the clock."""
        valid = {self.code(device, offset) for offset in range(-2, 3)}
        return [c for c in (f"{n:06d}" for n in range(100_000, 200_000)) if c not in valid][:count]

    def reset_throttle(self, device: TOTPDevice) -> None:
        """Clear django-otp's per-device back-off (1, 2, 4 … s after each wrong code)."""
        TOTPDevice.objects.filter(pk=device.pk).update(
            throttling_failure_count=0, throttling_failure_timestamp=None
        )


@pytest.fixture
def totp(monkeypatch: pytest.MonkeyPatch) -> Totp:
    """TOTP helpers; the server's TOTP clock (django-otp's and login's) is frozen at `OTP_NOW`."""
    clock = SimpleNamespace(time=lambda: OTP_NOW)
    monkeypatch.setattr(totp_models, "time", clock)
    monkeypatch.setattr(login_service, "time", clock)
    return Totp()


class Threads:
    """Run work in threads that each have their own database connection, released together.

    Django's SQLite test database is a shared-cache in-memory one: threads reach it, but a second
    writer gets "database table is locked" at once instead of waiting on the busy timeout. `share`
    copies it, once the test has set up its rows, to a file that the worker threads' connections
    open instead; from then on the main thread must read through `read`. PostgreSQL needs nothing.
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

    def run(self, count: int, work: Callable[[int], T]) -> list[T]:
        """``work(i)`` for i in range(count), in ``count`` threads released by a barrier."""
        self.share()
        barrier = threading.Barrier(count)
        results: list[Any] = [None] * count

        def target(i: int) -> None:
            try:
                barrier.wait()
                results[i] = work(i)
            except BaseException as exc:  # reported below, in the main thread
                results[i] = exc
            finally:
                connections.close_all()

        workers = [threading.Thread(target=target, args=(i,)) for i in range(count)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, errors[:3]
        return results

    def read(self, work: Callable[[], T]) -> T:
        """``work()`` on a worker-thread connection: the one that sees what the threads committed."""
        return self.run(1, lambda _: work())[0]


@pytest.fixture
def threads(transactional_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Threads:
    return Threads(tmp_path, monkeypatch)
