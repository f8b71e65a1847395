"""C1–C21: the query language as an attack surface (security.md group C), through both interfaces.

Every test goes through HTTP: JSON-RPC ``auth.sessions`` / ``auth.my_sessions`` (``POST /api/current``,
``params = [filters, options]``) and the REST API (``POST /api/v2.0/auth/sessions/query`` with
``{"query-filters", "query-options"}``, and ``GET /api/v2.0/auth/sessions?...`` where a case can be
written as query parameters). The selector-level versions of some cases live in
``tests/query/test_compiler.py``; this module proves that the interfaces add nothing to undo them.

"400" means HTTP 400 ``{"errors": [...]}`` on REST and ``-32602 Invalid params`` (``data.extra``
triples) on JSON-RPC. "No query ran" is asserted with ``CaptureQueriesContext``: the request's own
bookkeeping (the session lookup of the middleware and the audit record of a role-protected call) is
measured with an input that fails before the selector touches the database, and a rejected attack
must cost exactly that many statements.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext

from sessions_app import selectors
from sessions_app.models import ApiKey, Credentials, UserSession
from sessions_app.query import parser
from sessions_app.query.operators import MAX_IN_VALUES
from sessions_app.services.api_keys import api_key_create
from tests.api.conftest import Rest, errors
from tests.conftest import RPC
from tests.factories import FAR_FUTURE, session

pytestmark = pytest.mark.django_db

SECRETS = ["secret_hash", "key_hash", "token_hash", "password", "otp_secret", "credentials_data.api_key.hash"]
ALL_OPS = ["=", "!=", "^", "$", "~", ">", "<", "in", "C="]
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
EVIL_USERNAME = "a" * 30 + "!"


# --- the two interfaces -------------------------------------------------------------------------------


@dataclass
class Api:
    """One interface, logged in: ``query`` sends filters/options, ``invalid``/``ok`` read the answer."""

    name: str
    client: Any

    def query(self, filters: Any = None, options: Any = None, *, mine: bool = False) -> Any:
        if self.name == "jsonrpc":
            return self.client.raw("auth.my_sessions" if mine else "auth.sessions", filters, options)
        path = "/auth/my_sessions/query" if mine else "/auth/sessions/query"
        return self.client.post(path, {"query-filters": filters, "query-options": options})

    def raw(self, body: bytes) -> Any:
        """A hand-written body: for JSON-RPC the whole message, for REST the query body."""
        if self.name == "jsonrpc":
            return self.client.http.post("/api/current", body, content_type="application/json")
        return self.client.post("/auth/sessions/query", body, raw=True)

    def envelope(self, params_json: str, filters_json: str) -> bytes:
        """A body around hand-written JSON: JSON-RPC ``params`` / REST ``query-filters``."""
        if self.name == "jsonrpc":
            return (
                f'{{"jsonrpc": "2.0", "id": 1, "method": "auth.sessions", "params": {params_json}}}'.encode()
            )
        return f'{{"query-filters": {filters_json}}}'.encode()

    def invalid(self, response: Any) -> list[tuple[str, str]]:
        """The (attribute, message) pairs of a validation error (and a check of its shape)."""
        if self.name == "jsonrpc":
            assert response.status_code == 200, (response.status_code, response.content)
            error = response.json()["error"]
            assert error["code"] == -32602, error
            assert error["message"] == "Invalid params"
            data = error["data"]
            assert (data["error"], data["errname"], data["trace"]) == (22, "EINVAL", None), data
            assert all(errno == 22 for _, _, errno in data["extra"]), data
            return [(attribute, message) for attribute, message, _ in data["extra"]]
        assert response.status_code == 400, (response.status_code, response.content)
        return [(e["attribute"], e["message"]) for e in errors(response)]

    def ok(self, response: Any) -> Any:
        if self.name == "jsonrpc":
            assert response.status_code == 200, (response.status_code, response.content)
            payload = response.json()
            assert "result" in payload, payload
            return payload["result"]
        assert response.status_code == 200, (response.status_code, response.content)
        return response.json()

    def rejected(self, response: Any) -> bool:
        """A client error (400 / -32602), as opposed to a result."""
        if self.name == "jsonrpc":
            return "error" in response.json() and response.json()["error"]["code"] == -32602
        return response.status_code == 400


def login(name: str, username: str) -> Api:
    if name == "jsonrpc":
        client = RPC()
        client.login(username)
        return Api(name, client)
    rest = Rest()
    rest.login(username)
    return Api(name, rest)


def each(cases: Any, check: Callable[..., None]) -> None:
    """``check(*case)`` for every case; one failure lists every failing case (cheaper than a
    parametrized test per case, which would log in again for each)."""
    failures = []
    for case in cases:
        try:
            if isinstance(case, tuple):
                check(*case)
            else:
                check(case)
        except AssertionError as exc:
            failures.append(f"{case!r:.120}: {exc}")
    assert not failures, "\n".join(failures)


def attributes(pairs: list[tuple[str, str]]) -> list[str]:
    return [attribute for attribute, _ in pairs]


def usernames(rows: list[dict[str, Any]]) -> list[Any]:
    return sorted(str(r.get("credentials_data", {}).get("username")) for r in rows)


def same_length_unknown(secret: str) -> str:
    """A field of the same shape and length that does not exist (``a.b.hash`` -> ``a.b.qqqq``)."""
    head, dot, tail = secret.rpartition(".")
    return head + dot + "q" * len(tail)


class Queries:
    """How many statements a request costs beyond the request's own bookkeeping."""

    def __init__(self, api: Api) -> None:
        self.api = api
        # Bookkeeping only: filters of the wrong type are refused before any row is looked at.
        with CaptureQueriesContext(connection) as baseline:
            assert api.rejected(api.query("not a list", {}))
        self.baseline = len(baseline)

    def run(self, send: Callable[[], Any]) -> tuple[Any, list[str]]:
        with CaptureQueriesContext(connection) as captured:
            response = send()
        return response, [q["sql"] for q in captured.captured_queries]


def assert_same_as_unknown(
    api: Api, secret: str, make: Callable[[str], tuple[Any, Any]], queries: Queries
) -> None:
    """The answer about ``secret`` is byte-identical to the one about a same-length unknown field,
    both are 400, and neither costs a statement beyond the request's bookkeeping."""
    unknown = same_length_unknown(secret)
    secret_response, secret_sql = queries.run(lambda: api.query(*make(secret)))
    unknown_response, unknown_sql = queries.run(lambda: api.query(*make(unknown)))
    assert api.invalid(secret_response)
    assert secret_response.status_code == unknown_response.status_code
    assert secret_response.content.replace(secret.encode(), b"NAME") == unknown_response.content.replace(
        unknown.encode(), b"NAME"
    )
    assert dict(secret_response.headers) == dict(unknown_response.headers)
    assert len(secret_sql) == len(unknown_sql) == queries.baseline, secret_sql


# --- data ---------------------------------------------------------------------------------------------


@pytest.fixture
def seeded(make_user: Any) -> dict[str, Any]:
    """Admin (superuser), a plain user ``other`` with two active sessions and an ended one, and
    sessions whose usernames contain LIKE wildcards, a backslash and the ReDoS bait."""
    make_user("admin", superuser=True)
    other = make_user("other")
    key = ApiKey.objects.create(name="ci", user=other, key_hash="0" * 64)
    rows = [
        session(username="alice", origin="10.0.0.1:1"),
        session(username="%admin", origin="10.0.0.2:2"),
        session(username="_x", origin="192.168.1.1:3", internal=True),
        session(username="\\x", origin="192.168.1.2:3"),
        session(username="ALICE", credentials=Credentials.API_KEY, api_key=key, api_key_name="ci"),
        session(username=EVIL_USERNAME, origin="[::1]:4"),
        session(credentials=Credentials.TRUENAS_NODE, username=None, origin="10.9.9.9:9", internal=True),
        session(username="other", user=other, origin="10.1.1.1:5"),
        session(username="other", user=other, origin="10.1.1.2:6"),
        # History: ended sessions, one of "other" and one of someone else.
        session(username="other", user=other, origin="10.1.1.3:7", ended_at=START, end_reason="LOGOUT"),
        session(username="alice", origin="10.0.0.3:8", ended_at=START, end_reason="TERMINATED"),
    ]
    for index, row in enumerate(rows):
        row.created_at = START + dt.timedelta(minutes=index)
        row.save()
    return {"other": other, "rows": rows}


@pytest.fixture(params=["jsonrpc", "rest"])
def api(request: pytest.FixtureRequest, seeded: dict[str, Any]) -> Api:
    """The administrator, logged in through one interface (the test runs once per interface)."""
    return login(request.param, "admin")


@pytest.fixture
def queries(api: Api) -> Queries:
    return Queries(api)


@pytest.fixture
def admin_rest(seeded: dict[str, Any]) -> Rest:
    client = Rest()
    client.login("admin")
    return client


def rest_get(
    client: Rest, params: dict[str, Any] | list[tuple[str, Any]], path: str = "/auth/sessions"
) -> Any:
    return client.http.get(f"/api/v2.0{path}?{urlencode(params)}")


# --- C1–C4: secrets are unknown fields ------------------------------------------------------------------


@pytest.mark.parametrize("secret", SECRETS)
def test_C1_filtering_on_a_secret_is_the_unknown_field_error(api: Api, queries: Queries, secret: str) -> None:
    """Every operator on every secret column: 400, byte-identical to a same-length field that does
    not exist, and no query ran for either (so the latency cannot differ by a database round trip)."""
    for op in ALL_OPS:
        assert_same_as_unknown(api, secret, lambda name, op=op: ([[name, op, "x"]], {}), queries)
        # Inside an OR branch and an AND group too.
        assert_same_as_unknown(
            api,
            secret,
            lambda name, op=op: ([["OR", [["origin", "=", "x"], [[name, op, "x"]]]]], {}),
            queries,
        )


def test_C1_secret_query_parameters_are_unknown_parameters(admin_rest: Rest) -> None:
    each(SECRETS, lambda secret: _c1_parameters(admin_rest, secret))


def _c1_parameters(admin_rest: Rest, secret: str) -> None:
    unknown = same_length_unknown(secret)
    for suffix in ("", "__startswith", "__regex", "__gt", "__in", "__ieq"):
        secret_response = rest_get(admin_rest, {secret + suffix: "x"})
        unknown_response = rest_get(admin_rest, {unknown + suffix: "x"})
        assert secret_response.status_code == 400
        assert secret_response.content.replace(secret.encode(), b"NAME") == unknown_response.content.replace(
            unknown.encode(), b"NAME"
        )


@pytest.mark.parametrize("secret", SECRETS)
def test_C2_count_and_get_are_not_oracles(api: Api, queries: Queries, secret: str) -> None:
    """``count`` (a number) and ``get`` (a row or 404) would be boolean oracles on a secret: the same
    unknown-field 400, for every operator, with no query."""
    for options in ({"count": True}, {"get": True}, {"get": True, "count": True}):
        for op in ALL_OPS:
            assert_same_as_unknown(
                api, secret, lambda name, op=op, o=options: ([[name, op, "x"]], o), queries
            )


def test_C3_ordering_by_a_secret_is_the_unknown_field_error(api: Api, queries: Queries) -> None:
    each(SECRETS, lambda secret: _c3(api, queries, secret))


def _c3(api: Api, queries: Queries, secret: str) -> None:
    for prefix in ("", "-", "nulls_first:", "nulls_last:-"):
        assert_same_as_unknown(api, secret, lambda name, p=prefix: ([], {"order_by": [p + name]}), queries)
        assert_same_as_unknown(
            api, secret, lambda name, p=prefix: ([], {"order_by": ["origin", p + name]}), queries
        )


def test_C3_ordering_by_a_secret_query_parameter(admin_rest: Rest) -> None:
    for secret in SECRETS:
        unknown = same_length_unknown(secret)
        for prefix in ("", "-"):
            secret_response = rest_get(admin_rest, {"order_by": prefix + secret})
            unknown_response = rest_get(admin_rest, {"order_by": prefix + unknown})
            assert secret_response.status_code == 400
            assert errors(secret_response)[0]["attribute"] == "order_by"
            assert secret_response.content.replace(secret.encode(), b"N") == unknown_response.content.replace(
                unknown.encode(), b"N"
            )


def test_C4_selecting_a_secret_is_the_unknown_field_error(api: Api, queries: Queries) -> None:
    each(SECRETS, lambda secret: _c4(api, queries, secret))


def _c4(api: Api, queries: Queries, secret: str) -> None:
    for make in (
        lambda name: [name],
        lambda name: [[name, "alias"]],
        lambda name: ["id", name],
        lambda name: [[name, "id"]],
        lambda name: [["origin", "o"], [name + ".x", "x"]],
    ):
        assert_same_as_unknown(api, secret, lambda name, m=make: ([], {"select": m(name)}), queries)


def test_C4_an_alias_neither_unmasks_nor_shadows_a_field(api: Api) -> None:
    """An alias is an output key only: naming it like a secret shows the aliased field's value, and an
    alias named like a real field does not change what filters and ``order_by`` on that field see."""
    everything = api.ok(api.query([], {}))
    ids = sorted(r["id"] for r in everything)
    rows = api.ok(api.query([], {"select": [["id", "secret_hash"]], "order_by": ["-secret_hash"]}))
    assert all(set(r) == {"secret_hash"} for r in rows)
    assert [r["secret_hash"] for r in rows] == sorted(ids, reverse=True)  # ordered by the alias's source
    target = next(r for r in everything if r["origin"] == "10.0.0.1:1")
    rows = api.ok(api.query([["id", "=", target["id"]]], {"select": [["origin", "id"]]}))
    assert rows == [{"id": "10.0.0.1:1"}]  # the filter saw the real id, not the alias


# --- C5–C7: paths and values cannot reach the ORM as syntax ----------------------------------------------

C5_PATHS = [
    "user.password",
    "user.username",
    "api_key.user.password",
    "api_key.key_hash",
    "user.groups.name",
    "parent.secret_hash",
    "username__startswith",
    "credentials_data__username",
    "credentials_data.username__startswith",
    "origin__regex",
    "user__password",
    "user_id",
    "pk",
    "public_id",
]


def test_C5_relations_and_django_lookups_do_not_resolve(api: Api, queries: Queries) -> None:
    """Only declared paths resolve: relation-crossing paths and Django ``__`` syntax are unknown
    fields in filters, ``order_by`` and ``select``, refused before any query."""
    each(C5_PATHS, lambda path: _c5(api, queries, path))


def _c5(api: Api, queries: Queries, path: str) -> None:
    for filters, options, attribute in (
        ([[path, "=", "x"]], {}, "filters[0]"),
        ([[path, "^", "x"]], {"count": True}, "filters[0]"),
        ([], {"order_by": [path]}, "options.order_by[0]"),
        ([], {"select": [path]}, "options.select[0]"),
        ([], {"select": [[path, "x"]]}, "options.select[0]"),
    ):
        response, sql = queries.run(lambda f=filters, o=options: api.query(f, o))
        assert api.invalid(response) == [(attribute, f"{path!r}: unknown field")]
        assert len(sql) == queries.baseline, sql


def test_C5_relations_and_django_lookups_as_query_parameters(admin_rest: Rest) -> None:
    for name in ("user__password", "user.password", "credentials_data__username", "api_key__key_hash", "pk"):
        response = rest_get(admin_rest, {name: "x"})
        assert response.status_code == 400, name
        assert errors(response) == [{"attribute": name, "message": "unknown query parameter", "errno": 22}]


HOSTILE_NAMES = [
    'id"',
    "id'",
    "id;",
    "id --",
    "id)",
    "id OR 1=1",
    "origin; DROP TABLE sessions_app_usersession; --",
    "credentials_data.username.x",
    "credentials_data..username",
    "credentials_data.username.",
    ".origin",
    "_connector",
    "_negated",
    "__class__",
    "origin.__class__",
    "id__class__",
    "x" * 1024,
    "x" * 2000,
]


def test_C6_hostile_names_are_400_before_any_query(api: Api, queries: Queries) -> None:
    each(HOSTILE_NAMES, lambda name: _c6(api, queries, name))


def _c6(api: Api, queries: Queries, name: str) -> None:
    cases: list[tuple[Any, Any]] = [
        ([[name, "=", "x"]], {}),
        ([["OR", [[name, "=", "x"], ["origin", "=", "y"]]]], {}),
        ([], {"order_by": [name]}),
        ([], {"order_by": ["-" + name]}),
        ([], {"select": [name]}),
        ([], {"select": [[name, "alias"]]}),
    ]
    for filters, options in cases:
        response, sql = queries.run(lambda f=filters, o=options: api.query(f, o))
        assert api.invalid(response)
        assert len(sql) == queries.baseline, sql


def test_C6_kwargs_smuggling_shapes_are_400(api: Api, queries: Queries) -> None:
    """Objects where the ORM would take ``**kwargs`` (CVE-2025-64459 ``_connector``/``_negated``)."""
    for filters, options, attribute in (
        ({"_connector": "OR", "origin": "x"}, {}, "filters"),
        ([{"_connector": "OR"}], {}, "filters[0]"),
        ([["origin", "=", "x"], {"_negated": True}], {}, "filters[1]"),
        ([], {"_connector": "OR"}, "options._connector"),
        ([], {"_negated": True}, "options._negated"),
        ([], {"extra": {"_connector": "OR"}}, "options.extra._connector"),
    ):
        response, sql = queries.run(lambda f=filters, o=options: api.query(f, o))
        assert attributes(api.invalid(response)) == [attribute]
        assert len(sql) == queries.baseline, sql


def test_C6_select_aliases_are_output_keys_never_sql(api: Api, queries: Queries) -> None:
    """query-language.md §2 lets an alias be any string of at most 1024 characters: it is the key of the
    output row and nothing else. So a hostile alias is accepted -- and never reaches SQL, as a
    filter, an order key or anything else; past 1024 characters it is a 400."""
    aliases = ['x"; DROP TABLE sessions_app_usersession; --', "_connector", "__class__", "id) OR (1=1", "a.b"]
    each(aliases, lambda alias: _c6_alias(api, queries, alias))


def _c6_alias(api: Api, queries: Queries, alias: str) -> None:
    key = "-" + alias.replace(".", "\\.")  # in a path, "." separates keys: the flat key is escaped
    response, sql = queries.run(lambda: api.query([], {"select": [["origin", alias]], "order_by": [key]}))
    rows = api.ok(response)
    assert rows
    assert all(set(r) == {alias} for r in rows)
    assert [r[alias] for r in rows] == sorted((r[alias] for r in rows), reverse=True)
    assert not any(alias in statement for statement in sql)
    response = api.query([], {"select": [["origin", alias + "x" * 1024]]})
    assert attributes(api.invalid(response)) == ["options.select[0][1]"]


def test_C7_sql_wildcards_and_quotes_are_literal_data(api: Api) -> None:
    """``%``, ``_`` and ``\\`` are characters like any other (no LIKE pattern anywhere), and a quote is
    data (``["username", "^", "%"]`` finds only names starting with ``%``)."""
    path = "credentials_data.username"
    for filters, expected in (
        ([[path, "^", "%"]], ["%admin"]),
        ([[path, "^", "_"]], ["_x"]),
        ([[path, "^", "\\"]], ["\\x"]),
        ([[path, "C^", "%"]], ["%admin"]),
        ([[path, "C^", "_"]], ["_x"]),
        ([[path, "$", "%"]], []),
        ([[path, "$", "_"]], []),
        ([[path, "rin", "%"]], ["%admin"]),
        ([[path, "rin", "_"]], ["_x"]),
        ([[path, "rin", "\\"]], ["\\x"]),
        ([[path, "=", "%"]], []),
        ([[path, "=", "' OR 1=1 --"]], []),
        ([[path, "=", "alice' OR '1'='1"]], []),
        ([[path, "in", ["' OR 1=1 --", "%", "_"]]], []),
        ([["origin", "=", '" OR ""="']], []),
        ([[path, "!^", "%"], [path, "^", "%"]], []),
    ):
        assert usernames(api.ok(api.query(filters, {}))) == expected, filters


def test_C7_wildcards_in_query_parameters_are_literal(admin_rest: Rest) -> None:
    for value, expected in (("%", ["%admin"]), ("_", ["_x"]), ("\\", ["\\x"]), ("%25", [])):
        response = rest_get(admin_rest, {"credentials_data.username__startswith": value})
        assert usernames(response.json()) == expected, value
    response = rest_get(admin_rest, {"credentials_data.username": "' OR 1=1 --"})
    assert response.json() == []


# --- C8–C10: regular expressions --------------------------------------------------------------------------

REDOS_PATTERNS = ["^(a+)+$", "(a+)+$", "(a|aa)+$", "(a*)*b", "(a|a?)+$", "^(([a-z])+.)+[A-Z]([a-z])+$"]


def assert_bounded(api: Api, response: Any) -> Any:
    """A result, or a 400 naming the regex leaf; never a 5xx or a stall (the call returned)."""
    assert response.status_code < 500, response.content
    if api.rejected(response):
        pairs = api.invalid(response)
        assert attributes(pairs)[0].startswith("filters[0]"), pairs
        return None
    return api.ok(response)


def test_C8_catastrophic_regex_is_rejected_or_bounded(api: Api) -> None:
    """``^(a+)+$`` against a stored ``aaaa…!`` (30 ``a``): the answer comes back -- a result without
    that row, or a 400 when the match ran over its time budget -- and never a 500/503."""
    each(REDOS_PATTERNS, lambda pattern: _c8(api, pattern))


def _c8(api: Api, pattern: str) -> None:
    for op in ("~", "C~"):
        rows = assert_bounded(api, api.query([["credentials_data.username", op, pattern]], {}))
        if rows is not None:
            assert EVIL_USERNAME not in usernames(rows)
        # Behind an OR, with count and get: the same.
        filters = [["OR", [["origin", "=", "nowhere"], ["credentials_data.username", op, pattern]]]]
        assert_bounded(api, api.query(filters, {"count": True}))
        response = api.query([["credentials_data.username", op, pattern]], {"get": True})
        assert response.status_code < 500


def test_C8_catastrophic_regex_in_a_query_parameter(admin_rest: Rest) -> None:
    response = rest_get(admin_rest, {"credentials_data.username__regex": "^(a+)+$"})
    assert response.status_code in (200, 400), response.content
    if response.status_code == 400:
        assert errors(response)[0]["attribute"] == "credentials_data.username__regex"


def test_C8_normal_requests_are_served_while_a_regex_attack_runs(
    seeded: dict[str, Any], threads: Any
) -> None:
    """Parallel normal requests still get their answers (no timing: see the module docstring of
    tests/security; the point is that nothing is stuck or refused)."""
    attacker, user = login("jsonrpc", "admin"), login("jsonrpc", "admin")
    outcomes: dict[str, list[int]] = {"attack": [], "normal": []}

    def work(i: int) -> None:
        for _ in range(3):
            if i == 0:
                response = attacker.query([["credentials_data.username", "~", "^(a+)+$"]], {})
                outcomes["attack"].append(response.status_code)
            else:
                response = user.query([["origin", "^", "10."]], {"count": True})
                assert response.json()["result"] >= 1, response.content
                outcomes["normal"].append(response.status_code)

    threads.run(2, work)
    assert outcomes == {"attack": [200, 200, 200], "normal": [200, 200, 200]}


def test_C9_invalid_or_oversized_patterns_are_400_naming_the_value(api: Api) -> None:
    def check(pattern: str) -> None:
        for filters, attribute in (
            ([["origin", "~", pattern]], "filters[0][2]"),
            ([["origin", "=", "x"], ["credentials_data.username", "C~", pattern]], "filters[1][2]"),
            ([["OR", [["origin", "=", "x"], ["origin", "~", pattern]]]], "filters[0][1][1][2]"),
        ):
            assert attributes(api.invalid(api.query(filters, {}))) == [attribute]

    each(["(", "[a-", "a{2,1}", "*a", "a" * 257, "(?P<1>a)"], check)


def test_C9_the_256_character_cap_is_exact(api: Api) -> None:
    assert api.ok(api.query([["origin", "~", "a" * 256]], {})) == []
    assert attributes(api.invalid(api.query([["origin", "~", "a" * 257]], {}))) == ["filters[0][2]"]


def test_C9_backreferences_and_lookarounds_are_a_result_or_400(api: Api) -> None:
    patterns = [r"(a)\1", r"(?=1)1", r"(?<=1)0", r"(?P<x>1)(?P=x)", r"\p{L}", r"a{e<=1}"]
    each(patterns, lambda pattern: assert_bounded(api, api.query([["origin", "~", pattern]], {})))


def test_C9_invalid_pattern_in_a_query_parameter(admin_rest: Rest) -> None:
    response = rest_get(admin_rest, {"origin__regex": "("})
    assert response.status_code == 400
    assert [e["attribute"] for e in errors(response)] == ["origin__regex"]


C10_CASES = [
    ("origin", r"0\.0", 0),  # anchored at the start: "10.0..." does not match
    ("origin", r".*0\.0", 0),  # ".*x" = contains
    ("origin", r"10\.0\.0\.", 0),
    ("origin", r"1(0|9)", 0),
    ("credentials_data.username", "ali", 0),
    ("credentials_data.username", "ALI", re.IGNORECASE),
    ("credentials_data.username", r"a+!$", 0),
]


def test_C10_regex_semantics_are_re_match(api: Api) -> None:
    """``~`` is Python ``re.match`` (anchored at the start, TrueNAS ``op_re``); ``C~`` ignores case.
    Checked against the unfiltered rows evaluated here with ``re``."""
    everything = api.ok(api.query([], {}))

    def check(path: str, pattern: str, flags: int) -> None:
        def value(row: dict[str, Any]) -> Any:
            return row["origin"] if path == "origin" else row["credentials_data"].get("username")

        has_path = [r for r in everything if path == "origin" or "username" in r["credentials_data"]]
        expected = sorted(r["id"] for r in has_path if re.match(pattern, value(r) or "", flags))
        got = sorted(r["id"] for r in api.ok(api.query([[path, "C~" if flags else "~", pattern]], {})))
        assert got == expected

    each(C10_CASES, check)
    assert api.ok(api.query([["origin", "~", r"0\.0"]], {})) == []


# --- C11–C13: size and shape caps ------------------------------------------------------------------------


def nested_or(levels: int) -> list[Any]:
    """``levels`` nested OR nodes (each OR adds one level of depth)."""
    node: list[Any] = ["origin", "=", "x"]
    for _ in range(levels):
        node = ["OR", [node, ["origin", "=", "y"]]]
    return node


def nested_and_groups(levels: int) -> list[Any]:
    """OR / AND group alternating: ``["OR", [[[ "OR", [...] ]]]]``, ``levels`` levels in all."""
    node: list[Any] = ["origin", "=", "x"]
    for level in range(levels):
        node = ["OR", [node]] if level % 2 == 0 else [node]
    return node if node[0] == "OR" else ["OR", [node]]


def test_C11_or_nesting_beyond_three_levels_is_max_recursion_depth(api: Api) -> None:
    assert api.ok(api.query([nested_or(3)], {})) == []
    for filters in (
        [nested_or(4)],
        [nested_or(20)],
        [["origin", "=", "x"], nested_or(5)],
        [nested_and_groups(4)],
    ):
        pairs = api.invalid(api.query(filters, {}))
        assert len(pairs) == 1
        assert pairs[0][1] == "query-filters max recursion depth exceeded", pairs
        assert pairs[0][0].startswith("filters["), pairs


def test_C11_ten_thousand_deep_lists_are_400_not_a_recursion_error(api: Api) -> None:
    """10 000 nested arrays fit the 64 KiB body (20 000 bytes) and are refused by the JSON depth
    limit before anything recurses: -32700 parse error (HTTP 400) / REST 400 ``body``."""
    deep = "[" * 10_000 + "]" * 10_000
    response = api.raw(api.envelope(f"[{deep}, {{}}]", deep))
    assert response.status_code == 400, response.content
    if api.name == "jsonrpc":
        assert response.json()["error"]["code"] == -32700
    else:
        assert [e["attribute"] for e in errors(response)] == ["body"]
    # Below the JSON depth limit, deep values inside a filter are refused by the query language.
    value: Any = "x"
    for _ in range(50):
        value = [value]
    assert attributes(api.invalid(api.query([["origin", "in", value]], {}))) == ["filters[0][2]"]
    assert "max recursion depth" in api.invalid(api.query([nested_or(15)], {}))[0][1]


def test_C12_breadth_within_the_body_is_refused_by_the_documented_caps(api: Api) -> None:
    """Cases that fit the 64 KiB body but break a cap of the policy (≤ 100 leaves, ``in`` ≤ 1000)."""
    leaf = ["origin", "=", "x"]
    assert api.ok(api.query([leaf] * parser.MAX_LEAVES, {})) == []
    for filters, attribute in (
        ([leaf] * 150, "filters"),
        ([["OR", [leaf] * 150]], "filters"),
        ([["OR", [[leaf] * 60, [leaf] * 60]]], "filters"),
        ([["credentials_data.api_key.id", "in", list(range(MAX_IN_VALUES + 1))]], "filters[0][2]"),
        ([["id", "nin", ["a"] * (MAX_IN_VALUES + 1)]], "filters[0][2]"),
    ):
        pairs = api.invalid(api.query(filters, {}))
        assert attributes(pairs) == [attribute], pairs


def test_C12_breadth_beyond_the_body_cap_is_413(api: Api) -> None:
    """10 000 filters, an OR of 10 000 branches, ``in`` with 100 000 values: far over the 64 KiB body
    of an authenticated caller, so 413 before parsing."""
    leaf = ["origin", "=", "x"]
    for filters in (
        [leaf] * 10_000,
        [["OR", [leaf] * 10_000]],
        [["credentials_data.api_key.id", "in", list(range(100_000))]],
    ):
        response = api.query(filters, {})
        assert response.status_code == 413, response.content[:200]
        assert response["Content-Type"].startswith("application/json")


def test_C12_the_worst_case_that_fits_is_answered_not_too_many_sql_variables(api: Api) -> None:
    """12 ``in`` leaves of 1000 distinct integers (12 000 bind parameters, ~60 KiB): a result, never
    SQLite's "too many SQL variables" or PostgreSQL's parameter limit as a 500."""
    values = list(range(MAX_IN_VALUES))
    filters: list[Any] = [["credentials_data.api_key.id", "in", values] for _ in range(6)]
    filters.append(["OR", [["credentials_data.api_key.id", "nin", values] for _ in range(6)]])
    strings = [["id", "in", [str(v) for v in range(MAX_IN_VALUES)]] for _ in range(8)]
    for worst in (filters, strings):
        assert 50 * 1024 < len(json.dumps(worst)) < 64 * 1024 - 200
        assert api.ok(api.query(worst, {"count": True})) == 0


def test_C12_in_lists_in_query_parameters_are_capped(admin_rest: Rest) -> None:
    response = rest_get(admin_rest, {"credentials_data.api_key.id__in": ",".join(map(str, range(1001)))})
    assert response.status_code == 400
    assert [e["attribute"] for e in errors(response)] == ["credentials_data.api_key.id__in"]
    response = rest_get(admin_rest, {"credentials_data.api_key.id__in": ",".join(map(str, range(1000)))})
    assert response.status_code == 200


C13_CASES = [
    ({"limit": 10_001}, "options.limit"),
    ({"limit": -1}, "options.limit"),
    ({"limit": 1.5}, "options.limit"),
    ({"limit": 10.0}, "options.limit"),
    ({"limit": "10"}, "options.limit"),
    ({"limit": 1e18}, "options.limit"),
    ({"limit": 10**18}, "options.limit"),
    ({"limit": True}, "options.limit"),
    ({"limit": None}, "options.limit"),
    ({"limit": [1]}, "options.limit"),
    ({"offset": -1}, "options.offset"),
    ({"offset": 1.5}, "options.offset"),
    ({"offset": "1"}, "options.offset"),
    ({"offset": 10**18 + 0.5}, "options.offset"),
    ({"get": True, "limit": 2}, "options.limit"),
    ({"get": True, "offset": 1}, "options.offset"),
]


def test_C13_limit_and_offset_must_be_small_non_negative_integers(api: Api) -> None:
    each(C13_CASES, lambda options, attribute: _only(api, [], options, attribute))


def _only(api: Api, filters: Any, options: Any, attribute: str) -> None:
    """The query is a 400 naming exactly ``attribute``."""
    assert attributes(api.invalid(api.query(filters, options))) == [attribute]


def test_C13_limit_bounds_and_zero_means_no_limit(api: Api) -> None:
    """``limit`` 10 000 is allowed; ``limit: 0`` means "no limit" (TrueNAS, query-language.md §2).
    A huge ``offset`` is just past the end."""
    everything = api.ok(api.query([], {}))
    assert len(everything) == 10  # the 9 seeded sessions and the admin's own
    assert api.ok(api.query([], {"limit": 0})) == everything
    assert api.ok(api.query([], {"limit": 10_000})) == everything
    assert api.ok(api.query([], {"limit": 3})) == everything[:3]
    assert api.ok(api.query([], {"offset": 2**62})) == []


def test_C13_limit_and_offset_query_parameters(admin_rest: Rest) -> None:
    for name, value in (
        ("limit", "10001"),
        ("limit", "-1"),
        ("limit", "abc"),
        ("limit", "1e18"),
        ("limit", "1.5"),
        ("limit", "99999999999999999999"),
        ("limit", ""),
        ("offset", "-1"),
        ("offset", "0x10"),
    ):
        response = rest_get(admin_rest, {name: value})
        assert response.status_code == 400, (name, value)
        assert [e["attribute"] for e in errors(response)] == [name], (name, value)
    assert rest_get(admin_rest, {"limit": "10000"}).status_code == 200


# --- C14–C18: results, types, shapes --------------------------------------------------------------------


def test_C14_get_without_a_match_is_match_not_found(api: Api) -> None:
    response = api.query([["origin", "=", "nowhere"]], {"get": True})
    if api.name == "jsonrpc":
        error = response.json()["error"]
        assert error["code"] == -32001
        assert error["message"] == "Method call error"
        assert error["data"] == {
            "error": 22,
            "errname": "EINVAL",
            "reason": "MatchNotFound()",
            "trace": None,
            "extra": None,
        }
    else:
        assert response.status_code == 404
        assert errors(response) == [{"attribute": "", "message": "MatchNotFound()", "errno": 2}]
    row = api.ok(api.query([["origin", "=", "10.0.0.1:1"]], {"get": True}))
    assert row["credentials_data"]["username"] == "alice"


def test_C14_get_with_count_is_zero_or_one(api: Api) -> None:
    """query-language.md §2 ("``get`` + ``count`` returns 0 or 1") is the contract here; security.md
    C14 asks for a 400 instead. The language contract wins: the answer is a number, which leaks no
    more than ``count`` alone does."""
    assert api.ok(api.query([["origin", "=", "nowhere"]], {"get": True, "count": True})) == 0
    assert api.ok(api.query([["origin", "^", "10."]], {"get": True, "count": True})) == 1
    assert api.ok(api.query([], {"get": True, "count": True, "order_by": ["-created_at"]})) == 1


C15_ERRORS = [
    (["created_at", ">", "abc"], "filters[0]"),
    (["created_at", ">", 5], "filters[0]"),
    (["created_at", ">", True], "filters[0]"),
    (["created_at", "=", {"$date": "x"}], "filters[0][2]"),
    (["id", "in", 5], "filters[0][2]"),
    (["id", "in", True], "filters[0][2]"),
    (["origin", "~", 5], "filters[0][2]"),
    (["origin", "~", None], "filters[0][2]"),
    (["origin", "^", 1], "filters[0][2]"),
    (["origin", "C=", 5], "filters[0][2]"),
    (["origin", "Cin", ["a", 1]], "filters[0][2][1]"),
    (["credentials_data.api_key.id", ">", "5"], "filters[0]"),
    (["credentials_data.api_key.id", "^", "5"], "filters[0]"),
    (["internal", "^", "t"], "filters[0]"),
    (["internal", ">", "a"], "filters[0]"),
    (["credentials_data", ">", 1], "filters[0]"),
    ([None, "=", 1], "filters[0][0]"),
    ([1, "=", 1], "filters[0][0]"),
    (["origin", None, 1], "filters[0][1]"),
    (["origin", 5, 1], "filters[0][1]"),
]


def test_C15_type_confusion_is_400(api: Api) -> None:
    each(C15_ERRORS, lambda leaf, attribute: _only(api, [leaf], {}, attribute))


def test_C15_type_confusion_with_documented_semantics(api: Api) -> None:
    """Equality is Python equality (query-language.md §1.2): ``"1"`` is not ``1``, ``true == 1``,
    ``7.0 == 7``; a string is never equal to a boolean; ordering never matches null."""

    def ids(filters: list[Any]) -> list[str]:
        return sorted(r["id"] for r in api.ok(api.query(filters, {})))

    internal = ids([["internal", "=", True]])
    assert len(internal) == 2
    assert ids([["internal", "=", 1]]) == internal
    assert ids([["internal", "=", 1.0]]) == internal
    assert ids([["internal", "=", "true"]]) == []
    assert ids([["internal", "in", [1]]]) == internal
    key_row = ids([["credentials", "=", "API_KEY"]])
    key_id = api.ok(api.query([["credentials", "=", "API_KEY"]], {"get": True}))["credentials_data"][
        "api_key"
    ]["id"]
    assert ids([["credentials_data.api_key.id", "=", key_id]]) == key_row
    assert ids([["credentials_data.api_key.id", "=", float(key_id)]]) == key_row
    assert ids([["credentials_data.api_key.id", "=", str(key_id)]]) == []
    assert ids([["credentials_data.api_key.id", ">", 2**64]]) == []  # beyond any column value
    assert ids([["credentials_data.api_key.id", "<", 2**64]]) == key_row
    assert ids([["credentials_data.api_key.id", "=", -(2**64)]]) == []
    assert ids([["id", "=", "1"]]) == ids([["id", "=", 1]]) == []
    assert ids([["origin", "=", None]]) == []
    assert ids([["origin", ">", None]]) == ids([["origin", "<", None]]) == []
    assert ids([["credentials_data.username", "in", [None, "alice"]]]) == ids(
        [["credentials_data.username", "=", "alice"]]
    )
    assert ids([["created_at", "=", "2026-01-01T00:00:00+00:00"]]) == []  # a string is not a datetime
    assert len(ids([["created_at", "=", {"$date": int(START.timestamp() * 1000)}]])) == 1


C16_CASES = [
    ([["origin", "="]], {}, "filters[0]"),
    ([["origin", "=", "x", "y"]], {}, "filters[0]"),
    ([["origin"]], {}, "filters[0]"),
    ([[]], {}, "filters[0]"),
    ([["origin", "==", "x"]], {}, "filters[0][1]"),
    ([["origin", "=~", "x"]], {}, "filters[0][1]"),
    ([["origin", "c=", "x"]], {}, "filters[0][1]"),
    ([["OR", "x"]], {}, "filters[0][1]"),
    ([["OR", {"a": 1}]], {}, "filters[0][1]"),
    ([["OR", [["origin", "=", "x"], ["origin", "==", "y"]]]], {}, "filters[0][1][1][1]"),
    ([["OR", [[]]]], {}, "filters[0][1][0]"),
    ([["AND", [["origin", "=", "x"]]]], {}, "filters[0]"),
    ([[["origin", "=", "x"]]], {}, "filters[0]"),
    ([["origin", "=", "x"], "a=1"], {}, "filters[1]"),
    ("a=1", {}, "filters"),
    ({"origin": "x"}, {}, "filters"),
    (5, {}, "filters"),
    ([], {"extend_fk": True}, "options.extend_fk"),
    ([], {"delete_invalid_rows": True}, "options.delete_invalid_rows"),
    ([], {"bogus": 1}, "options.bogus"),
    ([], {"extend": "nope"}, "options.extend"),
    ([], {"extend_context": "nope"}, "options.extend_context"),
    ([], {"force_sql_filters": 1}, "options.force_sql_filters"),
    ([], {"count": "true"}, "options.count"),
    ([], {"extra": {"history": 1}}, "options.extra.history"),
    ([], {"extra": {"nope": True}}, "options.extra.nope"),
    ([], {"order_by": "origin"}, "options.order_by"),
    ([], {"order_by": ["asc:origin"]}, "options.order_by[0]"),
    ([], {"order_by": ["+origin"]}, "options.order_by[0]"),
    ([], {"order_by": ["nulls_middle:origin"]}, "options.order_by[0]"),
    ([], {"order_by": ["origin", 5]}, "options.order_by[1]"),
    ([], {"order_by": ["-"]}, "options.order_by[0]"),
    ([], {"order_by": ["credentials_data"]}, "options.order_by[0]"),
    ([], {"select": "origin"}, "options.select"),
    ([], {"select": [["origin"]]}, "options.select[0]"),
    ([], {"select": [["origin", "a", "b"]]}, "options.select[0]"),
    ([], {"select": [["origin", ""]]}, "options.select[0][1]"),
    ([], {"select": [5]}, "options.select[0]"),
    ([], [], "options"),
    ([], "limit=1", "options"),
]


def test_C16_malformed_filters_and_options_name_the_bad_element(api: Api) -> None:
    each(C16_CASES, lambda filters, options, attribute: _only(api, filters, options, attribute))


def test_C16_extra_members_of_the_request_are_400(api: Api) -> None:
    """A third positional parameter (JSON-RPC) or an unknown body member (REST) is refused, not
    ignored."""
    if api.name == "jsonrpc":
        assert attributes(api.invalid(api.client.raw("auth.sessions", [], {}, {}))) == ["params"]
        return
    response = api.client.post("/auth/sessions/query", {"query-filters": [], "query-limit": 1})
    assert attributes(api.invalid(response)) == ["query-limit"]


def test_C16_ordering_by_current_without_a_session(seeded: dict[str, Any]) -> None:
    """A per-request API key has no session, so ``current`` is false on every row: ordering by it is
    a no-op, never a database error (PostgreSQL refused ``ORDER BY false``: a 503)."""
    _, key = api_key_create(user=get_user_model().objects.get(username="admin"), name="reader-key")
    rpc, rest = RPC(), Rest()
    for order_by in (["current"], ["-current", "origin"], ["nulls_first:-current"]):
        options = {"order_by": order_by, "select": ["id", "current"]}
        rows = rpc.call("auth.sessions", [], options, HTTP_AUTHORIZATION=f"Bearer {key}")
        assert rows
        assert not any(r["current"] for r in rows)
        response = rest.post(
            "/auth/sessions/query", {"query-options": options}, csrf=False, Authorization=f"Bearer {key}"
        )
        assert response.status_code == 200, response.content
        assert response.json() == rows


def test_C17_unknown_fields_are_400_never_ignored(api: Api) -> None:
    """django-filter drops unknown names (#1740); here they are the C1 error everywhere."""
    for filters, options, attribute, path in (
        ([["nope", "=", 1]], {}, "filters[0]", "nope"),
        (
            [["origin", "=", "x"], ["OR", [["origin", "=", "y"], ["nope", "=", 1]]]],
            {},
            "filters[1][1][1]",
            "nope",
        ),
        ([["credentials_data.nope", "=", 1]], {}, "filters[0]", "credentials_data.nope"),
        ([["credentials_data.api_key.nope", "=", 1]], {}, "filters[0]", "credentials_data.api_key.nope"),
        ([["ended_at", "=", None]], {}, "filters[0]", "ended_at"),  # history field without extra.history
        ([], {"order_by": ["-nope"]}, "options.order_by[0]", "nope"),
        ([], {"select": ["nope"]}, "options.select[0]", "nope"),
    ):
        pairs = api.invalid(api.query(filters, options))
        assert pairs == [(attribute, f"{path!r}: unknown field")]


def test_C17_unknown_query_parameters_are_400(admin_rest: Rest) -> None:
    for name in ("nope", "credentials_data.nope", "origin__nope", "origin__", "format", "search", "ordering"):
        response = rest_get(admin_rest, {name: "1"})
        assert response.status_code == 400, name
        assert errors(response) == [{"attribute": name, "message": "unknown query parameter", "errno": 22}]


C18_CASES = [
    (["created_at.$date", ">", "yesterday"], "filters[0][2]"),
    (["created_at.$date", ">", "2026-13-01"], "filters[0][2]"),
    (["created_at.$date", ">", ""], "filters[0][2]"),
    (["created_at.$date", ">", 5], "filters[0][2]"),
    (["created_at.$date", ">", 1.5], "filters[0][2]"),
    (["created_at.$date", ">", None], "filters[0][2]"),
    (["created_at.$date", ">", ["2026-01-01"]], "filters[0][2]"),
    (["created_at.$date", "^", "2026"], "filters[0][1]"),
    (["created_at.$date", "~", "2026"], "filters[0][1]"),
    (["created_at.$date", "in", ["2026-01-01"]], "filters[0][1]"),
    (["created_at.$date", "C=", "2026-01-01"], "filters[0][1]"),
    (["origin.$date", "=", "2026-01-01"], "filters[0]"),
    (["created_at", ">", {"$date": "2026-01-01"}], "filters[0][2]"),
    (["created_at", ">", {"$date": 1.5}], "filters[0][2]"),
    (["created_at", ">", {"$date": True}], "filters[0][2]"),
    (["created_at", ">", {"$date": 10**19}], "filters[0][2]"),
    (["created_at", ">", {"$date": 1, "x": 2}], "filters[0][2]"),
]


def test_C18_bad_date_comparisons_are_400(api: Api) -> None:
    each(C18_CASES, lambda leaf, attribute: _only(api, [leaf], {}, attribute))


def test_C18_valid_date_comparisons(api: Api) -> None:
    def origins(filters: list[Any]) -> list[str]:
        seeded_only = [["created_at.$date", "<", "2026-01-02"]]
        return sorted(r["origin"] for r in api.ok(api.query(filters + seeded_only, {})))

    late = origins([["created_at.$date", ">=", "2026-01-01T00:07:00"]])
    assert late == ["10.1.1.1:5", "10.1.1.2:6"]
    assert (
        origins([["created_at", ">=", {"$date": int((START + dt.timedelta(minutes=7)).timestamp() * 1000)}]])
        == late
    )
    assert origins([["created_at.$date", ">=", "2026-01-01T01:07:00+01:00"]]) == late


def test_C18_bad_dates_in_query_parameters(admin_rest: Rest) -> None:
    for name, value in (
        ("created_at__gt", "yesterday"),
        ("created_at", "5"),
        ("created_at__lt", "2026-13-01"),
    ):
        response = rest_get(admin_rest, {name: value})
        assert response.status_code == 400
        assert [e["attribute"] for e in errors(response)] == [name]


# --- C19: the owner scope cannot be widened -------------------------------------------------------------

WIDENING = [
    ["OR", [["credentials_data.username", "=", "alice"], ["credentials_data.username", "!=", "x"]]],
    ["OR", [["internal", "=", True], ["internal", "=", False]]],
    ["OR", [["origin", "!=", ""], ["origin", "=", ""], ["credentials", "=", "TRUENAS_NODE"]]],
    ["OR", [[["credentials_data.username", "=", "admin"]], [["credentials_data.username", "!=", "admin"]]]],
]


@pytest.mark.parametrize("name", ["jsonrpc", "rest"])
def test_C19_own_sessions_scope_is_an_outer_and(seeded: dict[str, Any], name: str) -> None:
    user = login(name, "other")
    own = user.ok(user.query([], {}, mine=True))
    assert len(own) == 3  # two seeded and the login's own
    assert {r["credentials_data"]["username"] for r in own} == {"other"}
    own_ids = sorted(r["id"] for r in own)
    for widening in WIDENING:
        rows = user.ok(user.query([widening], {}, mine=True))
        assert sorted(r["id"] for r in rows) == own_ids, widening
        assert user.ok(user.query([widening], {"count": True}, mine=True)) == 3
        assert (
            user.ok(user.query([widening, ["credentials_data.username", "=", "alice"]], {}, mine=True)) == []
        )
    assert user.ok(user.query([["credentials_data.username", "=", "alice"]], {"count": True}, mine=True)) == 0
    response = user.query([["credentials_data.username", "=", "alice"]], {"get": True}, mine=True)
    assert response.status_code == (200 if name == "jsonrpc" else 404)
    # history=true widens in time only, never to other users.
    for widening in WIDENING:
        rows = user.ok(user.query([widening], {"extra": {"history": True}}, mine=True))
        assert len(rows) == 4, widening
        assert {r["credentials_data"]["username"] for r in rows} == {"other"}, widening
    # The full list stays closed to a caller without AUTH_SESSIONS_READ.
    if name == "jsonrpc":
        assert user.query([], {}).json()["error"]["data"]["errname"] == "EACCES"
    else:
        assert user.query([], {}).status_code == 403
        for params in ({"credentials_data.username": "alice"}, {"internal": "true"}, {"history": "true"}):
            rows = rest_get(user.client, params, path="/auth/my_sessions").json()
            assert {r["credentials_data"]["username"] for r in rows} <= {"other"}, params


# --- C20: cost budget --------------------------------------------------------------------------------------


def bulk_sessions(count: int) -> None:
    """``count`` active password sessions, quickly: one ``executemany`` of backend-adapted values."""
    names = (
        "public_id",
        "credentials",
        "username",
        "username_folded",
        "origin",
        "internal",
        "secure_transport",
        "user_auth_hash",
        "password_change_required",
        "expires_at",
        "login_at",
        "created_at",
        "last_seen_at",
    )
    adapt = connection.ops.adapt_datetimefield_value
    expires = adapt(FAR_FUTURE)
    rows = []
    for index in range(count):
        created = adapt(START + dt.timedelta(seconds=index))
        username = f"user{index % 5000:04d}"
        origin = f"10.{index % 256}.{(index // 256) % 256}.{index % 7}:{1024 + index % 60000}"
        rows.append(
            (
                f"bulk{index:08d}",
                "LOGIN_PASSWORD",
                username,
                username,
                origin,
                index % 97 == 0,
                True,
                "",
                False,
            )
            + (expires, created, created, created)
        )
    table = connection.ops.quote_name(UserSession._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(UserSession._meta.get_field(n).column) for n in names)
    marks = ", ".join(["%s"] * len(names))
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":  # COPY: executemany is ~10x slower there
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)  # noqa: S608


def worst_allowed_query() -> tuple[list[Any], dict[str, Any]]:
    """At every cap at once: 100 leaves, OR depth 3, ``in`` lists of 1000, regexes evaluated in Python
    (no literal prefix to push down), substring scans, case folding, three order keys, limit 10 000."""
    values = [f"user{v:04d}" for v in range(1000)]
    depth3 = [  # OR (level 1) > OR (level 2) > AND group (level 3)
        "OR",
        [
            ["OR", [[["origin", "~", ".*\\.1\\."], ["origin", "$", ":1"]], ["internal", "=", False]]],
            ["internal", "=", True],
        ],
    ]
    filters: list[Any] = [depth3, ["credentials_data.username", "in", values]]
    filters += [["credentials_data.username", "~", "(u|x)ser[0-9]+"] for _ in range(30)]
    filters += [["origin", "rnin", f":{p}zz"] for p in range(30)]
    filters += [["credentials_data.username", "C!=", f"NOBODY{p}"] for p in range(35)]
    assert sum(1 for _ in _leaves(filters)) == parser.MAX_LEAVES
    options = {
        "order_by": ["-credentials_data.username", "nulls_first:credentials_data.api_key.name", "origin"],
        "limit": 10_000,
    }
    return filters, options


def _leaves(node: Any) -> Iterator[Any]:
    if isinstance(node, list) and len(node) == 3 and isinstance(node[0], str) and node[0] != "OR":
        yield node
    elif isinstance(node, list) and len(node) == 2 and node[0] == "OR":
        for branch in node[1]:
            yield from _leaves(branch)
    elif isinstance(node, list):
        for child in node:
            yield from _leaves(child)


C20_ROWS = 100_000


@pytest.mark.slow
def test_C20_the_worst_allowed_query_over_100k_sessions_finishes(seeded: dict[str, Any]) -> None:
    """No timing assertion (the figures go to the benchmarks); the query must come back with the
    right answer. The page (``limit`` 10 000) goes through JSON-RPC, the ``count`` -- the real worst
    case: every row is evaluated, nothing stops early -- through REST (both interfaces call the same
    selector, so running each twice would only double the time)."""
    bulk_sessions(C20_ROWS)
    filters, options = worst_allowed_query()
    timings = []
    rpc, rest = login("jsonrpc", "admin"), login("rest", "admin")
    started = time.monotonic()
    rows = rpc.ok(rpc.query(filters, options))
    timings.append(time.monotonic() - started)
    assert len(rows) == 10_000
    assert all(r["credentials_data"]["username"].startswith("user") for r in rows)
    names = [r["credentials_data"]["username"] for r in rows]
    assert names == sorted(names, reverse=True)
    started = time.monotonic()
    count = rest.ok(rest.query(filters, {"count": True}))
    timings.append(time.monotonic() - started)
    assert count >= len(rows)
    print(f"C20 {C20_ROWS} rows, {connection.vendor}: page {timings[0]:.1f} s, count {timings[1]:.1f} s")  # noqa: T201


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", ["jsonrpc", "rest"])
def test_C20_a_query_past_its_budget_is_cancelled_and_503_not_a_stuck_worker(
    seeded: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """The product's own statement budget (``SESSIONS_QUERY_TIMEOUT``): PostgreSQL ``SET LOCAL
    statement_timeout`` in the query's transaction, SQLite a progress handler with a deadline. A
    query still running past it is cancelled by the database and answered 503 (``Retry-After``,
    ``ETIMEDOUT``) at once; the worker serves the next request. The test only makes a statement
    slow (an endless recursive count / ``pg_sleep``); nothing in it cancels anything."""
    settings.SESSIONS_QUERY_TIMEOUT = 0.2
    client = login(name, "admin")
    real_scope = selectors.session_scope
    if connection.vendor == "postgresql":
        slow = "pg_sleep(5) IS NOT NULL"
    else:
        slow = (
            "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000000) "
            "SELECT count(*) FROM n) > 0"
        )

    def slow_scope(**kwargs: Any) -> Any:
        qs, context = real_scope(**kwargs)
        return qs.extra(where=[slow]), context

    monkeypatch.setattr(selectors, "session_scope", slow_scope)
    started = time.monotonic()
    response = client.query([["origin", "^", "10."]], {"count": True})
    waited = time.monotonic() - started
    assert response.status_code == 503, response.content
    assert response["Retry-After"] == "5"
    assert response["Content-Type"].startswith("application/json")
    assert "budget of 0.2 s" in response.content.decode()
    assert waited < 5 * 10, waited  # a hang ceiling only: the slow statement alone would take far longer
    monkeypatch.setattr(selectors, "session_scope", real_scope)
    assert client.ok(client.query([["origin", "^", "10.0."]], {"count": True})) == 2


@pytest.mark.django_db(transaction=True)
def test_C20_the_dashboard_reports_a_query_past_its_budget(
    seeded: dict[str, Any], monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.SESSIONS_QUERY_TIMEOUT = 0.2
    sleep = (
        "pg_sleep(5) IS NOT NULL"
        if connection.vendor == "postgresql"
        else "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000000) "
        "SELECT count(*) FROM n) > 0"
    )
    real_scope = selectors.session_scope
    monkeypatch.setattr(
        selectors,
        "session_scope",
        lambda **kw: (real_scope(**kw)[0].extra(where=[sleep]), real_scope(**kw)[1]),
    )
    browser = RPC()
    browser.login("admin")  # its session cookie opens the pages too
    page = browser.http.get("/sessions/", {"query": '[["origin", "^", "10."]]'})
    assert page.status_code == 503
    assert "budget of 0.2 s" in page.content.decode()


@pytest.mark.django_db(transaction=True)
def test_C20_the_budget_ends_with_the_query(seeded: dict[str, Any], settings: Any) -> None:
    """Outside the query, statements keep the connection's ceiling (PostgreSQL) and no progress
    handler is left behind (SQLite): a slow statement after a budgeted query is not cancelled."""
    settings.SESSIONS_QUERY_TIMEOUT = 0.2
    assert selectors.session_query(filters=[], options={"count": True}) >= 1
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT setting FROM pg_settings WHERE name = 'statement_timeout'")
            assert int(cursor.fetchone()[0]) == django_settings.PG_STATEMENT_TIMEOUT_MS
            cursor.execute("SELECT pg_sleep(0.4)")
        else:
            cursor.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000) "
                "SELECT count(*) FROM n"
            )
            assert cursor.fetchone()[0] == 3_000_000


def test_C20_database_errors_of_the_query_are_503(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    def cancelled(**kwargs: Any) -> Any:
        raise OperationalError("canceling statement due to statement timeout")

    monkeypatch.setattr(selectors, "session_query", cancelled)
    response = api.query([], {})
    assert response.status_code == 503
    assert "statement timeout" not in response.content.decode()


# --- C21: parameter pollution ----------------------------------------------------------------------------


def test_C21_repeated_query_parameters_are_400(admin_rest: Rest) -> None:
    for params in (
        [("limit", "1"), ("limit", "2")],
        [("limit", "1"), ("limit", "1")],
        [("credentials_data.username", "alice"), ("credentials_data.username", "other")],
        [("order_by", "origin"), ("order_by", "-origin")],
        [("count", "true"), ("count", "false")],
    ):
        response = admin_rest.http.get(f"/api/v2.0/auth/sessions?{urlencode(params)}")
        assert response.status_code == 400, params
        assert errors(response) == [
            {"attribute": params[0][0], "message": "given more than once", "errno": 22}
        ]


def test_C21_query_string_and_body_never_mix(admin_rest: Rest) -> None:
    """The POST query endpoints take no query parameters: a ``?limit=`` next to a body is a 400."""
    for query in ("limit=1", "query-filters=[]", "offset=0&limit=1"):
        response = admin_rest.http.post(
            f"/api/v2.0/auth/sessions/query?{query}",
            json.dumps({"query-options": {"limit": 5}}),
            content_type="application/json",
            headers={"X-CSRFToken": admin_rest.http.cookies["csrftoken"].value},
        )
        assert response.status_code == 400, query
        assert errors(response)[0]["message"] == "unknown query parameter"


def test_C21_duplicate_json_keys_are_400(api: Api) -> None:
    """A JSON object naming a key twice is refused (Python would keep the last one silently, a proxy or
    a WAF may read the first)."""
    if api.name == "jsonrpc":
        bodies = [
            b'{"jsonrpc": "2.0", "id": 1, "method": "auth.sessions", "params": [[], {"limit": 1, "limit": 0}]}',
            b'{"jsonrpc": "2.0", "id": 1, "method": "auth.sessions", "method": "auth.me", "params": []}',
            b'{"jsonrpc": "2.0", "id": 1, "method": "auth.sessions", "params": [], "params": [[], {}]}',
        ]
    else:
        bodies = [
            b'{"query-options": {"limit": 1, "limit": 0}}',
            b'{"query-filters": [], "query-filters": [["origin", "=", "x"]]}',
            b'{"query-options": {"extra": {"history": false, "history": true}}}',
        ]
    for body in bodies:
        response = api.raw(body)
        assert response.status_code == 400, response.content
        if api.name == "jsonrpc":
            assert response.json()["error"]["code"] == -32700
            assert "duplicate" in response.json()["error"]["message"]
        else:
            assert errors(response)[0]["attribute"] == "body"
            assert "duplicate" in errors(response)[0]["message"]
