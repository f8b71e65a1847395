"""A login keeps its User-Agent, address, device and place on the session row (parsed once, there)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sessions_app.devices import places
from sessions_app.models import UserSession
from tests.conftest import PASSWORD
from tests.devices.geoip import write_geoip
from tests.devices.test_agents import IPHONE

LOGIN = {"mechanism": "PASSWORD_PLAIN", "username": "alice", "password": PASSWORD}


@pytest.fixture
def alice(make_user: Any) -> Any:
    return make_user("alice")


def test_password_login_keeps_device_and_address(alice: Any, rpc: Any) -> None:
    assert (
        rpc(remote_addr="10.1.2.3").call("auth.login_ex", LOGIN, HTTP_USER_AGENT=IPHONE)["response_type"]
        == "SUCCESS"
    )
    row = UserSession.objects.get(username="alice")
    assert (row.device_label, row.device_browser, row.device_os, row.device_family) == (
        "Safari on iOS",
        "Safari",
        "iOS",
        "iPhone",
    )
    assert (row.user_agent, row.client_address) == (IPHONE, "10.1.2.3")
    assert row.location_country is None  # no GeoIP configured


def test_place_with_geoip(alice: Any, rpc: Any, tmp_path: Path, settings: Any) -> None:
    settings.SESSIONS_GEOIP_PATH = str(write_geoip(tmp_path / "city.mmdb"))
    places._lookup.cache_clear()
    rpc(remote_addr="81.2.69.10").call("auth.login_ex", LOGIN)
    rpc(remote_addr="192.168.1.9").call("auth.login_ex", LOGIN)
    rows = UserSession.objects.filter(username="alice").order_by("pk")
    assert [(r.location_country, r.location_city) for r in rows] == [
        ("United Kingdom", "London"),
        ("Local network", None),
    ]


def test_a_huge_user_agent_is_kept_truncated_and_a_missing_one_is_unknown(alice: Any, rpc: Any) -> None:
    assert rpc().call("auth.login_ex", LOGIN, HTTP_USER_AGENT="curl/8.5.0 " + "x" * 100_000)[
        "response_type"
    ] == ("SUCCESS")
    assert rpc().call("auth.login_ex", LOGIN)["response_type"] == "SUCCESS"
    huge, missing = UserSession.objects.filter(username="alice").order_by("pk")
    assert huge.user_agent is not None
    assert len(huge.user_agent) == 512
    assert huge.device_label == "curl 8.5"
    assert (missing.user_agent, missing.device_label) == (None, "Unknown device")
