"""Fixtures of the security tests: TOTP devices with codes at a frozen server clock, and worker
threads that share the test database (race tests)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp import models as totp_models
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app.services import totp_login as login_service
from tests.threads import Threads, threads_fixture

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


@pytest.fixture
def threads(transactional_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Threads]:
    yield from threads_fixture(tmp_path, monkeypatch)
