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
from sessions_app.query.compiler import prefix_successor, regex_literal_prefix, run_in_memory
from sessions_app.selectors import api_key_query, audit_query, session_query
from sessions_app.specs import AUDIT_SPEC
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
