"""``extra.device`` on the programmatic interfaces: ``auth.sessions`` / ``auth.my_sessions`` over
JSON-RPC keep TrueNAS's row shape by default; the switch adds ``device`` and ``location`` objects
that filters, ``order_by`` and ``select`` can name (issue 16, item 3)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sessions_app.devices import places
from tests.conftest import PASSWORD, RPC
from tests.devices.geoip import write_geoip

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)
CHROME_LINUX = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
SESSION_KEYS = {
    "id",
    "current",
    "internal",
    "origin",
    "credentials",
    "credentials_data",
    "created_at",
    "secure_transport",
}
DEVICE = {"extra": {"device": True}}


def login(username: str, *, remote_addr: str = "127.0.0.1", user_agent: str | None = None) -> RPC:
    client = RPC(remote_addr=remote_addr)
    headers = {"HTTP_USER_AGENT": user_agent} if user_agent is not None else {}
    answer = client.call(
        "auth.login_ex",
        {"mechanism": "PASSWORD_PLAIN", "username": username, "password": PASSWORD},
        **headers,
    )
    assert answer["response_type"] == "SUCCESS", answer
    return client


@pytest.fixture
def clients(make_user: Any, tmp_path: Path, settings: Any) -> Iterator[dict[str, RPC]]:
    """alice on an iPhone in London and on desktop Chrome at home; the admin with curl."""
    settings.SESSIONS_GEOIP_PATH = str(write_geoip(tmp_path / "city.mmdb"))
    places._lookup.cache_clear()
    make_user("alice")
    make_user("admin", superuser=True)
    clients = {
        "iphone": login("alice", remote_addr="81.2.69.10", user_agent=IPHONE),
        "desktop": login("alice", remote_addr="192.168.1.20", user_agent=CHROME_LINUX),
        "admin": login("admin", user_agent="curl/8.5.0"),
    }
    yield clients
    places._lookup.cache_clear()


def invalid(client: RPC, method: str, *params: Any) -> list[list[Any]]:
    error = client.error(method, *params)
    assert error["code"] == -32602, error
    return error["data"]["extra"]


def test_default_rows_keep_the_truenas_shape(clients: dict[str, RPC]) -> None:
    for client, method in ((clients["admin"], "auth.sessions"), (clients["desktop"], "auth.my_sessions")):
        rows = client.call(method, [], {})
        assert rows
        assert all(set(row) == SESSION_KEYS for row in rows), rows
        history = client.call(method, [], {"extra": {"history": True}})
        assert all(set(row) == SESSION_KEYS | {"ended_at", "end_reason", "ended_by"} for row in history)


def test_the_switch_adds_device_and_location(clients: dict[str, RPC]) -> None:
    rows = clients["admin"].call("auth.sessions", [], {**DEVICE, "order_by": ["created_at"]})
    assert all(set(row) == SESSION_KEYS | {"device", "location"} for row in rows)
    assert [(row["device"], row["location"]) for row in rows] == [
        (
            {
                "label": "Safari on iOS",
                "browser": "Safari",
                "os": "iOS",
                "device": "iPhone",
                "user_agent": IPHONE,
            },
            {"country": "United Kingdom", "city": "London"},
        ),
        (
            {
                "label": "Chrome on Linux",
                "browser": "Chrome",
                "os": "Linux",
                "device": None,
                "user_agent": CHROME_LINUX,
            },
            {"country": "Local network", "city": None},
        ),
        (
            {"label": "curl 8.5", "browser": "curl", "os": None, "device": None, "user_agent": "curl/8.5.0"},
            {"country": "Local network", "city": None},
        ),
    ]
    plain = clients["admin"].call("auth.sessions", [], {"order_by": ["created_at"]})
    assert [{k: v for k, v in row.items() if k in SESSION_KEYS} for row in rows] == plain


def test_filter_order_and_select_on_device_fields(clients: dict[str, RPC]) -> None:
    admin = clients["admin"]
    found = admin.call(
        "auth.sessions", [["device.os", "=", "iOS"]], {**DEVICE, "select": ["id", "device.os"]}
    )
    assert len(found) == 1
    assert set(found[0]) == {"id", "device"}
    assert found[0]["device"] == {"os": "iOS"}
    ordered = admin.call(
        "auth.sessions", [], {**DEVICE, "order_by": ["-device.browser"], "select": ["device"]}
    )
    assert [row["device"]["browser"] for row in ordered] == ["curl", "Safari", "Chrome"]
    assert (
        admin.call(
            "auth.sessions",
            [["location.country", "=", "Local network"], ["device.label", "^", "Chrome"]],
            {**DEVICE, "count": True, "force_sql_filters": True},
        )
        == 1
    )
    assert admin.call(
        "auth.sessions",
        [["OR", [["device.browser", "C=", "SAFARI"], ["location.city", "=", "Berlin"]]]],
        {**DEVICE, "get": True, "select": [["device.label", "device"], ["location.city", "city"]]},
    ) == {"device": "Safari on iOS", "city": "London"}


def test_my_sessions_takes_the_switch_within_its_scope(clients: dict[str, RPC]) -> None:
    desktop = clients["desktop"]
    rows = desktop.call("auth.my_sessions", [], {**DEVICE, "order_by": ["device.os"]})
    assert [(row["device"]["os"], row["current"]) for row in rows] == [("Linux", True), ("iOS", False)]
    # The filters cannot widen the scope: the admin's curl session is not alice's.
    assert desktop.call("auth.my_sessions", [["device.browser", "=", "curl"]], DEVICE) == []


def test_history_rows_have_the_device_too(clients: dict[str, RPC]) -> None:
    assert clients["iphone"].call("auth.logout") is True
    admin = clients["admin"]
    ended = admin.call(
        "auth.sessions",
        [["end_reason", "=", "LOGOUT"], ["device.device", "=", "iPhone"]],
        {"extra": {"history": True, "device": True}},
    )
    assert [(row["ended_by"], row["device"]["label"], row["location"]["city"]) for row in ended] == [
        ("alice", "Safari on iOS", "London")
    ]
    assert admin.call("auth.sessions", [["device.device", "=", "iPhone"]], {**DEVICE, "count": True}) == 0


@pytest.mark.parametrize(
    ("filters", "options", "expected"),
    [
        ([["device.os", "=", "iOS"]], {}, [["filters[0]", "'device.os': unknown field", 22]]),
        (
            [],
            {"order_by": ["location.city"]},
            [["options.order_by[0]", "'location.city': unknown field", 22]],
        ),
        ([], {"select": ["id", "device"]}, [["options.select[1]", "'device': unknown field", 22]]),
        ([], {"extra": {"device": 1}}, [["options.extra.device", "must be a boolean", 22]]),
        ([], {"extra": {"device": "yes"}}, [["options.extra.device", "must be a boolean", 22]]),
        ([], {"extra": {"devices": True}}, [["options.extra.devices", "unknown option", 22]]),
        ([], {"extra": ["device"]}, [["options.extra", "must be an object, got array", 22]]),
        (
            [["device.os", "~", "("]],
            DEVICE,
            None,  # the regex error names the value, as for any other field
        ),
    ],
)
def test_validation_errors(
    clients: dict[str, RPC], filters: Any, options: Any, expected: list[list[Any]] | None
) -> None:
    for client, method in ((clients["admin"], "auth.sessions"), (clients["desktop"], "auth.my_sessions")):
        extra = invalid(client, method, filters, options)
        if expected is None:
            assert [attribute for attribute, _, _ in extra] == ["filters[0][2]"]
        else:
            assert extra == expected
