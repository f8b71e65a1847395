"""The Django side of the query engine: schema checks, SQL pushdown, fallbacks and limits."""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessions_app.models import ApiKey, AuditRecord, Credentials
from sessions_app.query import MatchNotFound, QueryError
from sessions_app.query.compiler import prefix_successor, regex_literal_prefix
from sessions_app.query.execution import run_in_memory
from sessions_app.selectors import api_key_query, audit_query, session_query, session_rows
from sessions_app.specs import AUDIT_SPEC, SESSION_SPEC
from tests.factories import session

SECRETS = ["secret_hash", "key_hash", "token_hash", "password", "otp_secret", "credentials_data.api_key.hash"]
ALL_OPS = ["=", "!=", "^", "$", "~", ">", "<", "in", "C="]


def _error(call: Any) -> QueryError:
    with pytest.raises(QueryError) as info:
        call()
    return info.value


@pytest.fixture
def sessions(db: Any) -> list[Any]:
    rows = [
        session(username="alice", origin="10.0.0.1:1"),
        session(username="%admin", origin="10.0.0.2:2"),
        session(username="_x", origin="192.168.1.1:3", internal=True),
        session(username="ALICE", credentials=Credentials.API_KEY, api_key_id=7, api_key_name="ci"),
        session(username="a" * 30 + "!", origin="[::1]:4"),
        session(credentials=Credentials.TRUENAS_NODE, username=None, origin="10.9.9.9:9", internal=True),
    ]
    for i, row in enumerate(rows):
        row.created_at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=i)
        row.save()
    return rows


def names(rows: Any) -> list[Any]:
    return [r.get("credentials_data", {}).get("username") for r in rows]


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("op", ALL_OPS)
def test_secret_field_error_is_the_unknown_field_error(sessions: Any, secret: str, op: str) -> None:
    """C1/C2: a secret column is indistinguishable from a field that does not exist."""
    for options in ({}, {"count": True}, {"get": True}):
        secret_error = _error(lambda o=options: session_query(filters=[[secret, op, "x"]], options=o))
        unknown_error = _error(
            lambda o=options: session_query(filters=[["no_such_field", op, "x"]], options=o)
        )
        assert secret_error.attribute == unknown_error.attribute
        assert secret_error.message.replace(secret, "F") == unknown_error.message.replace(
            "no_such_field", "F"
        )


@pytest.mark.parametrize(
    "options",
    [
        {"order_by": ["secret_hash"]},
        {"order_by": ["-secret_hash"]},
        {"order_by": ["nulls_first:secret_hash"]},
        {"select": ["secret_hash"]},
        {"select": ["credentials_data.api_key.hash"]},
        {"select": [["secret_hash", "alias"]]},
    ],
)
def test_secret_fields_cannot_be_ordered_or_selected(sessions: Any, options: dict[str, Any]) -> None:
    """C3/C4."""
    assert "unknown field" in _error(lambda: session_query(options=options)).message


@pytest.mark.parametrize(
    "path",
    [
        "user.password",
        "api_key.user.password",
        "user.groups.name",
        "username__startswith",
        "credentials_data__username",
        "_connector",
        "_negated",
        "__class__",
        "id; DROP TABLE x",
        'a"b',
        "x" * 2000,
    ],
)
def test_hostile_field_names_fail_before_any_query(sessions: Any, path: str) -> None:
    """C5/C6: only declared paths resolve, and nothing reaches the database before validation."""
    with CaptureQueriesContext(connection) as queries:
        _error(lambda: session_query(filters=[[path, "=", "x"]]))
        _error(lambda: session_query(options={"order_by": [path]}))
        _error(lambda: session_query(options={"select": [[path, "alias"]]}))
    assert len(queries) == 0


def test_like_wildcards_are_literal(sessions: Any) -> None:
    """C7."""
    assert names(session_query(filters=[["credentials_data.username", "^", "%"]])) == ["%admin"]
    assert names(session_query(filters=[["credentials_data.username", "^", "_"]])) == ["_x"]
    assert names(session_query(filters=[["credentials_data.username", "$", "%"]])) == []
    assert session_query(filters=[["credentials_data.username", "=", "' OR 1=1 --"]]) == []


def test_catastrophic_regex_is_bounded(sessions: Any) -> None:
    """C8: the match either finishes or is a QueryError; it never stalls."""
    outcome: Any
    try:
        outcome = session_query(filters=[["credentials_data.username", "~", "^(a+)+$"]])
    except QueryError as exc:
        outcome = exc.attribute
    assert outcome in ([], "filters[0]")


def test_regex_validation_errors_name_the_leaf(sessions: Any) -> None:
    """C9."""
    assert _error(lambda: session_query(filters=[["origin", "~", "("]])).attribute == "filters[0][2]"
    assert _error(lambda: session_query(filters=[["origin", "~", "a" * 257]])).attribute == "filters[0][2]"


def test_case_insensitive_username_uses_the_casefolded_column(sessions: Any) -> None:
    filters = [["credentials_data.username", "C=", "Alice"]]
    assert names(session_query(filters=filters, options={"force_sql_filters": True})) == ["alice", "ALICE"]


def test_force_sql_filters_rejects_leaves_evaluated_in_python(sessions: Any) -> None:
    filters = [["internal", "=", False], ["origin", "~", "10\\.0"]]
    error = _error(lambda: session_query(filters=filters, options={"force_sql_filters": True}))
    assert error.attribute == "filters[1]"
    assert "force_sql_filters" in error.message
    # Without the option the regex runs in Python after a SQL prefilter on the literal prefix "10.0".
    assert [r["origin"] for r in session_query(filters=filters)] == ["10.0.0.1:1", "10.0.0.2:2"]


def test_missing_keys_never_match(sessions: Any) -> None:
    """A node session has no username key: even != and nin do not match it."""
    rows = session_query(filters=[["credentials_data.username", "!=", "nobody"]])
    assert Credentials.TRUENAS_NODE not in [r["credentials"] for r in rows]
    assert len(rows) == 5
    rows = session_query(filters=[["credentials_data.api_key.name", "!=", "x"]])
    assert names(rows) == ["ALICE"]


def test_get_and_count(sessions: Any) -> None:
    assert session_query(options={"count": True}) == 6
    assert session_query(filters=[["internal", "=", True]], options={"count": True}) == 2
    assert session_query(options={"get": True, "order_by": ["-created_at"]})["credentials"] == "TRUENAS_NODE"
    with pytest.raises(MatchNotFound):
        session_query(filters=[["origin", "=", "nowhere"]], options={"get": True})
    assert session_query(filters=[["origin", "=", "nowhere"]], options={"get": True, "count": True}) == 0


def test_history_fields_need_the_history_switch(sessions: Any) -> None:
    assert "unknown field" in _error(lambda: session_query(filters=[["end_reason", "=", "LOGOUT"]])).message
    assert (
        session_query(
            filters=[["end_reason", "=", None]], options={"extra": {"history": True}, "count": True}
        )
        == 6
    )
    assert _error(lambda: session_query(options={"extra": {"nope": 1}})).attribute == "options.extra.nope"


def test_scope_cannot_be_widened_by_filters(sessions: Any, django_user_model: Any) -> None:
    """C19: the owner scope is an outer AND."""
    owner = django_user_model.objects.create(username="alice")
    sessions[0].user = owner
    sessions[0].save()
    rows = session_query(
        filters=[["OR", [["credentials_data.username", "=", "ALICE"], ["internal", "=", True]]]], user=owner
    )
    assert rows == []
    assert len(session_query(user=owner)) == 1


@pytest.mark.parametrize(
    ("prefix", "successor"),
    [("abc", "abd"), ("a\U0010ffff", "b"), ("\U0010ffff", None), ("\ud7ff", "\ue000"), ("10.", "10/")],
)
def test_prefix_successor(prefix: str, successor: str | None) -> None:
    assert prefix_successor(prefix) == successor


@pytest.mark.parametrize(
    ("pattern", "prefix"),
    [
        ("10\\.0", "10.0"),
        ("^abc.*", "abc"),
        ("abc?", "ab"),
        ("ab*", "a"),
        ("a|b", ""),
        ("(?i)abc", ""),
        ("\\d+", ""),
        ("[a]bc", ""),
        ("ab{2}", "a"),
    ],
)
def test_regex_literal_prefix(pattern: str, prefix: str) -> None:
    assert regex_literal_prefix(pattern) == prefix


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)


@pytest.mark.django_db
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(filters=json_values, options=json_values)
def test_any_json_is_a_result_or_a_query_error(filters: Any, options: Any) -> None:
    """No input, however malformed, raises anything but QueryError through the SQL path."""
    with contextlib.suppress(QueryError):
        session_query(filters=filters, options=options)


@pytest.mark.django_db
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(
    filters=st.lists(
        st.tuples(
            st.sampled_from(
                ["id", "name", "username", "user_identifier", "revoked", "local", "expires_at", "keyhash"]
            ),
            st.sampled_from(["=", "!=", "<", ">=", "in", "^", "C=", "~"]),
            st.sampled_from([None, True, 1, "k", "1", ["k1", 2], "ali", "k.*"]),
        ).map(list),
        max_size=3,
    ),
    order=st.lists(
        st.sampled_from(["id", "-name", "expires_at", "nulls_first:-expires_at", "local", "keyhash"]),
        max_size=2,
    ),
)
def test_api_key_pushdown_matches_in_memory(filters: Any, order: Any) -> None:
    from sessions_app.specs import API_KEY_SPEC

    user_model = get_user_model()
    alice, _ = user_model.objects.get_or_create(username="alice")
    bob, _ = user_model.objects.get_or_create(username="bob")
    if not ApiKey.objects.exists():
        for i, (user, expires) in enumerate(
            [(alice, None), (bob, dt.datetime(2030, 1, 1, tzinfo=dt.UTC)), (alice, None)]
        ):
            ApiKey.objects.create(
                name=f"k{i}", user=user, key_hash="0" * 64, expires_at=expires, revoked=i == 2
            )
    rows = api_key_query(options={})
    options = {"order_by": order}
    try:
        expected: Any = run_in_memory(API_KEY_SPEC, rows, filters, options)
    except QueryError as exc:
        expected = ("error", exc.attribute, exc.message)
    try:
        got: Any = api_key_query(filters=filters, options=options)
    except QueryError as exc:
        got = ("error", exc.attribute, exc.message)
    assert got == expected


@pytest.mark.django_db
def test_audit_query_filters_event_data_in_python() -> None:
    AuditRecord.objects.create(
        event="AUTHENTICATION", username="alice", success=False, event_data={"credentials": "LOGIN_PASSWORD"}
    )
    AuditRecord.objects.create(event="LOGOUT", username="alice", success=True, event_data={})
    AuditRecord.objects.create(
        event="AUTHENTICATION", username="bob", success=True, event_data={"credentials": "API_KEY"}
    )
    rows = audit_query(filters=[["event_data.credentials", "=", "API_KEY"]])
    assert [r["username"] for r in rows] == ["bob"]
    assert (
        audit_query(
            filters=[["event", "=", "AUTHENTICATION"], ["success", "=", False]], options={"count": True}
        )
        == 1
    )
    assert _error(
        lambda: audit_query(filters=[["event_data.x", "=", 1]], options={"force_sql_filters": True})
    )
    memory = run_in_memory(AUDIT_SPEC, audit_query(), [["event_data", "=", {}]], {})
    assert memory == audit_query(filters=[["event_data", "=", {}]])


# --- extra.device: device.* and location.* -----------------------------------------------------------

DEVICE = {"extra": {"device": True}}


@pytest.fixture
def devices(db: Any) -> list[Any]:
    """Four sessions: an iPhone in Berlin, Chrome on Linux, curl, and one with nothing recorded."""
    rows = [
        session(
            username="alice",
            device_label="Safari on iOS",
            device_browser="Safari",
            device_os="iOS",
            device_family="iPhone",
            user_agent="Mozilla/5.0 (iPhone)",
            location_country="Germany",
            location_city="Berlin",
        ),
        session(
            username="bob",
            device_label="Chrome on Linux",
            device_browser="Chrome",
            device_os="Linux",
            user_agent="Mozilla/5.0 (X11; Linux x86_64)",
            location_country="Local network",
        ),
        session(username="carol", device_label="curl 8.5", device_browser="curl", user_agent="curl/8.5.0"),
        session(credentials=Credentials.TRUENAS_NODE, username=None),
    ]
    for i, row in enumerate(rows):
        row.created_at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=i)
        row.save()
    return rows


@pytest.mark.parametrize(
    ("filters", "options", "attribute", "message"),
    [
        ([["device.os", "=", "iOS"]], {}, "filters[0]", "'device.os': unknown field"),
        ([["location.country", "=", "x"]], {}, "filters[0]", "'location.country': unknown field"),
        ([["device", "=", {}]], {"extra": {"history": True}}, "filters[0]", "'device': unknown field"),
        ([], {"order_by": ["device.browser"]}, "options.order_by[0]", "'device.browser': unknown field"),
        ([], {"select": ["id", "device.os"]}, "options.select[1]", "'device.os': unknown field"),
        ([], {"select": [["location", "where"]]}, "options.select[0]", "'location': unknown field"),
        (
            [["device.os", "=", "iOS"]],
            {"extra": {"device": False}},
            "filters[0]",
            "'device.os': unknown field",
        ),
        ([], {"extra": {"device": 1}}, "options.extra.device", "must be a boolean"),
        ([], {"extra": {"device": "true"}}, "options.extra.device", "must be a boolean"),
        ([], {"extra": {"device": None}}, "options.extra.device", "must be a boolean"),
        ([], {"extra": {"devices": True}}, "options.extra.devices", "unknown option"),
        ([["device.nope", "=", 1]], DEVICE, "filters[0]", "'device.nope': unknown field"),
        ([["device.os.x", "=", 1]], DEVICE, "filters[0]", "'device.os.x': unknown field"),
        (
            [],
            {**DEVICE, "order_by": ["device"]},
            "options.order_by[0]",
            "'device' cannot be ordered (object)",
        ),
        (
            [["device.os", ">", 1]],
            DEVICE,
            "filters[0]",
            "'device.os' (string) cannot be ordered against 1",
        ),
    ],
)
def test_device_fields_need_the_device_switch(
    devices: Any, filters: Any, options: Any, attribute: str, message: str
) -> None:
    """Without ``extra.device`` its fields are unknown fields, exactly like ``history``'s; ``extra``
    is validated (an unknown key, a non-boolean value)."""
    with CaptureQueriesContext(connection) as queries:
        error = _error(lambda: session_query(filters=filters, options=options))
    assert (error.attribute, error.message) == (attribute, message)
    assert len(queries) == 0


def test_device_rows_keep_the_truenas_shape_and_add_two_objects(devices: Any) -> None:
    plain = session_query()
    assert all("device" not in row and "location" not in row for row in plain)
    rows = session_query(options=DEVICE)
    assert [{k: v for k, v in row.items() if k not in ("device", "location")} for row in rows] == plain
    assert [(row["device"], row["location"]) for row in rows] == [
        (
            {
                "label": "Safari on iOS",
                "browser": "Safari",
                "os": "iOS",
                "device": "iPhone",
                "user_agent": "Mozilla/5.0 (iPhone)",
            },
            {"country": "Germany", "city": "Berlin"},
        ),
        (
            {
                "label": "Chrome on Linux",
                "browser": "Chrome",
                "os": "Linux",
                "device": None,
                "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
            },
            {"country": "Local network", "city": None},
        ),
        (
            {"label": "curl 8.5", "browser": "curl", "os": None, "device": None, "user_agent": "curl/8.5.0"},
            {"country": None, "city": None},
        ),
        (
            {"label": None, "browser": None, "os": None, "device": None, "user_agent": None},
            {"country": None, "city": None},
        ),
    ]
    assert session_query(options=DEVICE) == rows  # the cached statement builds the same rows
    history = session_query(options={"extra": {"device": True, "history": True}})
    assert [row["device"] for row in history] == [row["device"] for row in rows]
    assert all("ended_at" in row for row in history)


def test_device_columns_are_read_only_with_the_switch(devices: Any) -> None:
    with CaptureQueriesContext(connection) as queries:
        session_query(options={"order_by": ["-created_at"]})
    assert not any("device_os" in q["sql"] or "user_agent" in q["sql"] for q in queries.captured_queries)
    with CaptureQueriesContext(connection) as queries:
        session_query(options={**DEVICE, "order_by": ["-created_at"]})
    assert any("device_os" in q["sql"] and "user_agent" in q["sql"] for q in queries.captured_queries)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ([["device.os", "=", "iOS"]], ["alice"]),
        ([["device.os", "!=", "iOS"]], ["bob", "carol", None]),  # null != "iOS": Python equality
        ([["device.os", "=", None]], ["carol", None]),
        ([["device.browser", "in", ["Safari", "curl", None]]], ["alice", "carol", None]),
        ([["device.browser", "nin", ["Safari"]]], ["bob", "carol"]),  # nin never matches a null
        ([["device.label", "^", "Chrome"]], ["bob"]),
        ([["device.label", "$", " on iOS"]], ["alice"]),
        ([["device.user_agent", "rin", "Linux"]], ["bob"]),
        ([["device.user_agent", "in", "xx curl/8.5.0 xx"]], ["carol"]),
        ([["location.country", ">=", "H"]], ["bob"]),
        ([["location.city", "!=", "Berlin"]], ["bob", "carol", None]),
        ([["device.device", "=", "iPhone"], ["location.city", "=", "Berlin"]], ["alice"]),
        ([["OR", [["device.os", "=", "Linux"], ["device.browser", "=", "curl"]]]], ["bob", "carol"]),
    ],
)
def test_device_filters_run_in_sql(devices: Any, filters: Any, expected: list[Any]) -> None:
    options = {**DEVICE, "force_sql_filters": True}
    rows = session_query(filters=filters, options=options)
    assert names(rows) == expected
    assert run_in_memory(SESSION_SPEC, session_rows(device=True), filters, options) == rows


def test_device_order_and_select(devices: Any) -> None:
    options = {**DEVICE, "order_by": ["device.browser"], "select": ["device.browser"]}
    browsers = [r["device"]["browser"] for r in session_query(options=options)]
    assert browsers == ["Chrome", "Safari", "curl", None]  # code-point order, nulls last
    options["order_by"] = ["-device.browser"]
    assert [r["device"]["browser"] for r in session_query(options=options)] == [
        None,
        "curl",
        "Safari",
        "Chrome",
    ]
    options["order_by"] = ["nulls_first:location.country", "-created_at"]
    options["select"] = ["id", "location.country", ["device.os", "os"]]
    rows = session_query(options=options)
    assert [r["location"]["country"] for r in rows] == [None, None, "Germany", "Local network"]
    assert [set(r) for r in rows] == [{"id", "location", "os"}] * 4
    assert rows == run_in_memory(SESSION_SPEC, session_rows(device=True), [], options)
    assert session_query(
        filters=[["device.os", "=", "iOS"]], options={**DEVICE, "get": True, "select": ["device.label"]}
    ) == {"device": {"label": "Safari on iOS"}}
    assert session_query(filters=[["device.os", "=", None]], options={**DEVICE, "count": True}) == 2


def test_device_case_insensitive_filters_run_in_python(devices: Any) -> None:
    """There is no casefolded copy of the device columns: ``C`` operators and free regexes are
    evaluated in Python after the SQL prefilter, so ``force_sql_filters`` refuses them."""
    filters = [["device.os", "C=", "IOS"]]
    error = _error(lambda: session_query(filters=filters, options={**DEVICE, "force_sql_filters": True}))
    assert (error.attribute, "force_sql_filters" in error.message) == ("filters[0]", True)
    assert names(session_query(filters=filters, options=DEVICE)) == ["alice"]
    assert names(session_query(filters=[["device.label", "~", ".* on "]], options=DEVICE)) == ["alice", "bob"]
    assert names(session_query(filters=[["device", "=", {}]], options=DEVICE)) == []


@pytest.mark.parametrize(
    ("order", "select"),
    [
        ("credentials_data", "credentials_data.username"),
        ("-credentials_data", "credentials_data.api_key.name"),
        ("credentials_data.parent", "credentials_data.parent.credentials"),
        ("nulls_first:location", "location.city"),
        ("device", "device.os"),
    ],
)
def test_ordering_by_an_object_that_select_rebuilt_is_an_error(devices: Any, order: str, select: str) -> None:
    """Found by the pushdown test: SQL ignored such a key, the in-memory engine failed comparing two
    objects. Both now refuse it before running, like ordering by an object without ``select``."""
    options = {**DEVICE, "order_by": [order], "select": ["id", select]}
    error = _error(lambda: session_query(options=options))
    assert (error.attribute, error.message) == (
        "options.order_by[0]",
        f"{order.split(':')[-1].lstrip('-')!r} cannot be ordered (object)",
    )
    assert _error(lambda: run_in_memory(SESSION_SPEC, session_rows(device=True), [], options)).message == (
        error.message
    )
    # Below a selected path, or beside it, is fine.
    session_query(options={**DEVICE, "order_by": ["device.os", "location.country"], "select": ["device"]})
