"""The SQL pushdown returns exactly what the in-memory engine returns (differential, property-based).

Random session rows are written to the test database (SQLite, or PostgreSQL when ``DATABASE_URL``
says so; CI runs both), random filters and options are drawn over the declared fields, and
`session_query` (compiled to SQL) must give the same rows, in the same order, the same count and
the same errors as the in-memory engine run on the same rows with the same schema. The fields of
``extra.device`` (``device.*``, ``location.*``) are drawn like the others, with and without the
switch; a second test draws mostly those fields, with the switch on.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import transaction
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sessions_app.models import Credentials, EndReason, UserSession
from sessions_app.query import MatchNotFound, QueryError
from sessions_app.query.execution import run_in_memory
from sessions_app.selectors import session_query, session_rows
from sessions_app.specs import SESSION_SPEC
from tests.factories import session

UTC = dt.UTC
NAMES = [
    "alice", "Alice", "ALICE", "bob", "straße", "STRASSE", "kelvin", "\u212aelvin", "İstanbul", "istanbul",
    "a%b", "a_b", "a\\b", "", "zed", "émile", "Émile", "😀x", "root", "al",
]  # fmt: skip
ORIGINS = [
    "10.0.0.1:443", "10.0.0.2:80", "10.1.2.3:5", "192.168.0.3:40392", "[::1]:8080", "127.0.0.1:1",
    "UNIX socket (pid=12 uid=0 gid=0)", "1.2.3.4:10", "10.",
]  # fmt: skip
TIMES = [dt.datetime(2026, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=s) for s in (0, 0.5, 1, 86400, 86400.25)]
PATTERNS = [
    "a",
    "A.*",
    "10\\.0",
    ".*",
    "^$",
    "[a-c]",
    "(a|b)",
    "10\\.",
    "al",
    "ALICE",
    "\\d+",
    "x*",
    "S+",
    "é",
    "Saf",
    "S.*",
    "i[OP]",
    "Mac OS",
]
#: Values of the device and place columns: families as ua-parser names them, case and Unicode
#: folding traps, LIKE wildcards, the empty string.
DEVICE_WORDS = [
    "Safari", "safari", "SAFARI", "Mobile Safari", "Chrome", "Chromium", "Firefox", "curl",
    "python-requests", "TrueNAS API client", "Unknown device", "Safari on iOS", "Chrome on Linux",
    "iOS", "ios", "Mac OS X", "Linux", "Ubuntu", "Windows", "iPhone", "iPad", "Other", "",
    "Straße", "STRASSE", "İstanbul", "istanbul", "Zürich", "zürich", "😀", "a%b", "a_b", "\u212aelvin",
    "Germany", "Local network", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)", "curl/8.5.0",
]  # fmt: skip
DEVICE_COLUMNS = {
    "device_label": "device.label",
    "device_browser": "device.browser",
    "device_os": "device.os",
    "device_family": "device.device",
    "user_agent": "device.user_agent",
    "location_country": "location.country",
    "location_city": "location.city",
}
DEVICE_DECLARED = ["device", "location", *DEVICE_COLUMNS.values()]

DECLARED = [
    "id", "current", "internal", "origin", "credentials", "credentials_data", "credentials_data.username",
    "credentials_data.login_at", "credentials_data.api_key", "credentials_data.api_key.id",
    "credentials_data.api_key.name", "credentials_data.parent", "credentials_data.parent.credentials",
    "credentials_data.parent.credentials_data", "credentials_data.parent.credentials_data.username",
    "credentials_data.parent.credentials_data.login_at", "credentials_data.parent.credentials_data.api_key.id",
    "created_at", "secure_transport", "ended_at", "end_reason", "ended_by", *DEVICE_DECLARED,
]  # fmt: skip
UNDECLARED = [
    "secret_hash", "credentials_data.api_key.hash", "user.password", "username", "nope", "device.nope",
    "device_os", "location.address", "device.os.x",
]  # fmt: skip
OPS = ["=", "!=", ">", ">=", "<", "<=", "~", "in", "nin", "rin", "rnin", "^", "!^", "$", "!$"]

times = st.sampled_from(TIMES) | st.datetimes(
    min_value=dt.datetime(2025, 1, 1), max_value=dt.datetime(2027, 1, 1), timezones=st.just(UTC)
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 6),
    st.sampled_from([2**63, -(2**63) - 1, 10**30]),
    st.sampled_from([1.0, 1.5, 0.0, float("inf"), -2.5]),
    st.sampled_from(NAMES + ORIGINS + [c.value for c in Credentials] + [r.value for r in EndReason]),
    st.sampled_from(DEVICE_WORDS),
    st.text(alphabet="aAlLiIcCeE01.ßS:", max_size=4),
    times.map(lambda t: {"$date": int(t.timestamp() * 1000)}),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=4),
    st.sampled_from([{"alice": 1}, {}, {"username": 1}, {"iOS": 1}, {"os": "iOS"}]),
    st.sampled_from(PATTERNS),
)


@st.composite
def leaves(draw: Any, declared: list[str] = DECLARED) -> list[Any]:
    if draw(st.integers(0, 15)) == 0:
        path = draw(st.sampled_from(UNDECLARED))
    else:
        path = draw(st.sampled_from(declared))
    op = draw(st.sampled_from(OPS))
    if draw(st.integers(0, 3)) == 0:
        op = "C" + op
    if path in ("created_at", "ended_at", "credentials_data.login_at") and draw(st.booleans()):
        path += ".$date"
        value = draw(st.sampled_from(["2026-01-01T00:00:00.5Z", "2026-01-02", "2026-01-01T01:00:00+01:00"]))
        return [path, draw(st.sampled_from(["=", "!=", ">", ">=", "<", "<="])), value]
    if op.endswith("~"):
        return [path, op, draw(st.sampled_from(PATTERNS))]
    return [path, op, draw(values)]


def filters_strategy(declared: list[str] = DECLARED) -> Any:
    def extend(children: Any) -> Any:
        and_group = st.lists(children, min_size=1, max_size=3)
        return st.builds(lambda bs: ["OR", bs], st.lists(children | and_group, max_size=3))

    node = st.recursive(leaves(declared), extend, max_leaves=6)
    return st.lists(node, max_size=3)


def order_keys(declared: list[str] = DECLARED) -> Any:
    return st.builds(
        lambda prefix, desc, path: f"{prefix}{'-' if desc else ''}{path}",
        st.sampled_from(["", "", "nulls_first:", "nulls_last:"]),
        st.booleans(),
        st.sampled_from([*declared, "alias", "nope"]),
    )


def select_items(declared: list[str] = DECLARED) -> Any:
    return st.sampled_from(declared) | st.builds(lambda p: [p, "alias"], st.sampled_from(declared))


EXTRAS = [
    {},
    {"history": True},
    {"history": False},
    {"device": True},
    {"device": False},
    {"history": True, "device": True},
]


def options_strategy(declared: list[str] = DECLARED, extras: list[dict[str, Any]] = EXTRAS) -> Any:
    return st.fixed_dictionaries(
        {},
        optional={
            "order_by": st.lists(order_keys(declared), max_size=3),
            "select": st.lists(select_items(declared), max_size=3),
            "count": st.booleans(),
            "get": st.booleans(),
            "offset": st.integers(0, 3),
            "limit": st.integers(0, 4),
            "extra": st.sampled_from(extras),
        },
    )


@st.composite
def session_fields(draw: Any) -> dict[str, Any]:
    credentials = draw(st.sampled_from(list(Credentials)))
    created = draw(times)
    fields: dict[str, Any] = {
        "credentials": credentials,
        "created_at": created,
        "origin": draw(st.sampled_from(ORIGINS)),
        "internal": draw(st.booleans()),
        "secure_transport": draw(st.booleans()),
    }
    if credentials != Credentials.TRUENAS_NODE:
        fields["username"] = draw(
            st.sampled_from(NAMES) | st.none() if credentials == Credentials.TOKEN else st.sampled_from(NAMES)
        )
    if credentials not in (Credentials.TRUENAS_NODE, Credentials.TOKEN):
        fields["login_at"] = draw(times)
    if credentials == Credentials.API_KEY:
        fields["api_key_id"] = draw(st.integers(1, 4) | st.just(2**62))
        fields["api_key_name"] = draw(st.sampled_from(NAMES))
    if credentials == Credentials.TOKEN:
        root = draw(st.sampled_from([c for c in Credentials if c != Credentials.TOKEN]))
        fields["root_credentials"] = root
        if root != Credentials.TRUENAS_NODE:
            fields["root_username"] = draw(st.sampled_from(NAMES))
            fields["root_login_at"] = draw(times)
        if root == Credentials.API_KEY:
            fields["root_api_key_id"] = draw(st.integers(1, 4))
            fields["root_api_key_name"] = draw(st.sampled_from(NAMES))
    if draw(st.integers(0, 3)) == 0:
        fields["ended_at"] = draw(times)
        fields["end_reason"] = draw(st.sampled_from(list(EndReason)))
        fields["ended_by"] = draw(st.sampled_from(NAMES) | st.none())
    for column in DEVICE_COLUMNS:
        # Null as often as not: sessions without HTTP headers, rows from before devices were kept.
        fields[column] = draw(st.none() | st.sampled_from(DEVICE_WORDS))
    return fields


class _Rollback(Exception):
    pass


def outcome(call: Any) -> tuple[Any, ...]:
    try:
        return ("ok", call())
    except MatchNotFound:
        return ("MatchNotFound",)
    except QueryError as exc:
        return ("QueryError", exc.attribute, exc.message)


def _check_pushdown(rows: list[dict[str, Any]], filters: Any, options: Any, current: int) -> None:
    try:
        with transaction.atomic():
            created = UserSession.objects.bulk_create([session(**fields) for fields in rows])
            current_pk = created[current].pk if 0 <= current < len(created) else None
            extra = options.get("extra", {})
            memory_rows = session_rows(
                history=extra.get("history") is True,
                device=extra.get("device") is True,
                current_pk=current_pk,
            )
            expected = outcome(lambda: run_in_memory(SESSION_SPEC, memory_rows, filters, options))
            got = outcome(lambda: session_query(filters=filters, options=options, current_pk=current_pk))
            assert got == expected, f"filters={filters!r} options={options!r}"
            event(f"outcome: {got[0]}")
            if got[0] == "ok" and isinstance(got[1], list):
                event(f"rows: {'none' if not got[1] else 'some'} of {'none' if not memory_rows else 'some'}")
            raise _Rollback
    except _Rollback:
        pass


@pytest.mark.django_db
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None)
@given(
    rows=st.lists(session_fields(), max_size=12),
    filters=filters_strategy(),
    options=options_strategy(),
    current=st.integers(-1, 11),
)
def test_sql_pushdown_matches_in_memory_engine(
    rows: list[dict[str, Any]], filters: Any, options: Any, current: int
) -> None:
    _check_pushdown(rows, filters, options, current)


#: Mostly the ``extra.device`` fields, a few others to mix them with.
DEVICE_HEAVY = [*DEVICE_DECLARED, "origin", "credentials_data.username", "ended_by"]
device_words = st.sampled_from(DEVICE_WORDS)


@st.composite
def device_leaves(draw: Any) -> list[Any]:
    """Leaves on the device strings with values of the shape each operator takes, so that most
    queries are evaluated (`leaves` keeps the malformed and mistyped ones)."""
    if draw(st.integers(0, 4)) == 0:
        return draw(leaves(DEVICE_HEAVY))
    path = draw(st.sampled_from(list(DEVICE_COLUMNS.values())))
    op = draw(st.sampled_from(OPS))
    casefold = "C" if draw(st.integers(0, 2)) == 0 and op != "~" else ""
    if op == "~":
        return [path, draw(st.sampled_from(["", "C"])) + op, draw(st.sampled_from(PATTERNS))]
    if op in ("in", "nin"):
        value: Any = draw(st.lists(device_words | st.none(), max_size=4) | device_words)
    elif op in ("=", "!="):
        value = draw(device_words | st.none())
    else:
        value = draw(device_words)
    return [path, casefold + op, value]


def device_filters() -> Any:
    def extend(children: Any) -> Any:
        and_group = st.lists(children, min_size=1, max_size=3)
        return st.builds(lambda bs: ["OR", bs], st.lists(children | and_group, min_size=1, max_size=3))

    return st.lists(st.recursive(device_leaves(), extend, max_leaves=5), max_size=3)


@pytest.mark.django_db
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None)
@given(
    rows=st.lists(session_fields(), min_size=1, max_size=12),
    filters=device_filters(),
    options=options_strategy(DEVICE_HEAVY, [{"device": True}, {"device": True, "history": True}]).map(
        lambda o: {**o, "extra": o.get("extra", {"device": True})}
    ),
    current=st.integers(-1, 11),
)
def test_device_fields_pushdown_matches_in_memory_engine(
    rows: list[dict[str, Any]], filters: Any, options: Any, current: int
) -> None:
    """``extra.device`` on: ``device.*`` / ``location.*`` filters, orders and selections agree."""
    _check_pushdown(rows, filters, options, current)
