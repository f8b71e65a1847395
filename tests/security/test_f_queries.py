"""F10, F11: queries answer every well-formed input without a 5xx, whoever asks and however, and
their cost is bounded per query (security.md group F).

A *carrier* is how a request proves who it is: a cookie session (password login), a Bearer API key
and Basic credentials (per-request, no session: nothing is ``current``), a cookie session opened
with a token, and the unix socket (the peer's kernel credentials; simulated in-process the way the
ASGI worker hands them over, ``META["asgi.scope"]["extensions"]["peercred"]``). Each query method
is driven through JSON-RPC (``POST /api/current``), the REST query endpoints and the REST lists
with query parameters.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessions_app.api.rest.filtersets import CASEFOLD_PREFIX, OPERATORS, parameter_name
from sessions_app.auth.roles import Role
from sessions_app.exceptions import InvalidParams
from sessions_app.models import ApiKey, AuditRecord, Credentials, EndReason, UserSession
from sessions_app.query import QueryError, execution, filter_list, make_predicate, parse_filters
from sessions_app.query.ast import QueryOptions
from sessions_app.query.compiler import QuerySpec
from sessions_app.query.engine import RegexBudget
from sessions_app.query.schema import Field, FieldType, Schema
from sessions_app.services.api_keys import api_key_create, api_key_delete, api_key_revoke
from sessions_app.specs import API_KEY_SPEC, AUDIT_SPEC, SESSION_SPEC
from tests.conftest import PASSWORD
from tests.factories import FAR_FUTURE, session

pytestmark = pytest.mark.django_db

API = "/api/v2.0"
USERNAME = "quinn"


# --- carriers -------------------------------------------------------------------------------------


@dataclass
class Carrier:
    """A client that presents one kind of credential on every request."""

    name: str
    http: Client
    headers: dict[str, str]
    #: Whether the caller has a session of its own (``current`` is true for exactly one row).
    has_session: bool

    def _csrf(self) -> dict[str, str]:
        token = self.http.cookies.get("csrftoken")
        return {"X-CSRFToken": token.value} if token is not None else {}

    def rpc(self, method: str, *params: Any) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
        return self.http.post(
            "/api/current", body, content_type="application/json", headers={**self.headers, **self._csrf()}
        )

    def post(self, path: str, data: Any) -> Any:
        return self.http.post(
            API + path,
            json.dumps(data),
            content_type="application/json",
            headers={**self.headers, **self._csrf()},
        )

    def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        return self.http.get(API + path, params or {}, headers=self.headers)


def _login(http: Client, body: dict[str, Any]) -> None:
    response = http.post(API + "/auth/login", json.dumps(body), content_type="application/json")
    assert response.status_code == 200, response.content
    assert response.json()["response_type"] == "SUCCESS", response.json()


def _cookie(user: Any) -> Carrier:
    http = Client(enforce_csrf_checks=True, REMOTE_ADDR="127.0.0.1")
    _login(http, {"mechanism": "PASSWORD_PLAIN", "username": user.get_username(), "password": PASSWORD})
    return Carrier("cookie", http, {}, True)


def _bearer(user: Any) -> Carrier:
    _, key = api_key_create(user=user, name="f10-bearer")
    http = Client(enforce_csrf_checks=True, REMOTE_ADDR="127.0.0.1")
    return Carrier("bearer", http, {"Authorization": f"Bearer {key}"}, False)


def _basic(user: Any) -> Carrier:
    raw = base64.b64encode(f"{user.get_username()}:{PASSWORD}".encode()).decode()
    http = Client(enforce_csrf_checks=True, REMOTE_ADDR="127.0.0.1")
    return Carrier("basic", http, {"Authorization": f"Basic {raw}"}, False)


def _token(user: Any) -> Carrier:
    parent = _cookie(user)
    response = parent.rpc("auth.generate_token", 600, {}, True, False)
    token = response.json()["result"]
    http = Client(enforce_csrf_checks=True, REMOTE_ADDR="127.0.0.1")
    _login(http, {"mechanism": "TOKEN_PLAIN", "token": token})
    return Carrier("token", http, {}, True)


def _unix_socket(user: Any, settings: Any) -> Carrier:
    # uid 0 maps to SESSIONS_ROOT_USERNAME; the pid is this (live) process, so the session stays.
    settings.SESSIONS_ROOT_USERNAME = user.get_username()
    peer = {"pid": os.getpid(), "uid": 0, "gid": 0}
    http = Client(
        enforce_csrf_checks=True, **{"asgi.scope": {"type": "http", "extensions": {"peercred": peer}}}
    )
    return Carrier("unix_socket", http, {}, True)


CARRIER_NAMES = ("cookie", "bearer", "basic", "token", "unix_socket")


def make_carriers(user: Any, settings: Any) -> dict[str, Carrier]:
    return {
        "cookie": _cookie(user),
        "bearer": _bearer(user),
        "basic": _basic(user),
        "token": _token(user),
        "unix_socket": _unix_socket(user, settings),
    }


@pytest.fixture
def quinn(make_user: Any) -> Any:
    """A user holding every read role, so that every query method answers with rows."""
    return make_user(USERNAME, roles=[Role.AUTH_SESSIONS_READ, Role.API_KEY_READ, Role.AUDIT_READ])


@pytest.fixture
def carriers(quinn: Any, settings: Any) -> dict[str, Carrier]:
    # Basic is rate limited per address like a login (A-group policy): not what is tested here.
    settings.SESSIONS_LOGIN_RATE = 1_000_000
    return make_carriers(quinn, settings)


def rpc_result(response: Any) -> Any:
    assert response.status_code == 200, (response.status_code, response.content)
    payload = response.json()
    assert "result" in payload, payload
    return payload["result"]


def rpc_error(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, (response.status_code, response.content)
    payload = response.json()
    assert "error" in payload, payload
    return payload["error"]


# --- F10: the reproduction --------------------------------------------------------------------------


@pytest.mark.parametrize("carrier", CARRIER_NAMES)
def test_f10_current_filter_answers_with_every_carrier(carriers: dict[str, Carrier], carrier: str) -> None:
    """``current = true`` with a caller that has no session (Bearer, Basic) is simply no row: a
    list ``[]``, a count 0, ``get`` the not-found error; with a session, exactly that one row."""
    client = carriers[carrier]
    expected = 1 if client.has_session else 0
    for _ in range(2):  # the second run goes through the cache of compiled statements
        rows = rpc_result(client.rpc("auth.my_sessions", [["current", "=", True]], {}))
        assert len(rows) == expected, rows
        assert all(r["current"] for r in rows), rows
        assert (
            rpc_result(client.rpc("auth.my_sessions", [["current", "=", True]], {"count": True})) == expected
        )
        assert rpc_result(client.rpc("auth.sessions", [["current", "=", True]], {"count": True})) == expected
        others = rpc_result(client.rpc("auth.my_sessions", [["current", "=", False]], {"count": True}))
        assert others == len(rpc_result(client.rpc("auth.my_sessions", [], {}))) - expected
        got = client.rpc("auth.my_sessions", [["current", "=", True]], {"get": True})
        if expected:
            assert rpc_result(got)["current"] is True
        else:
            assert rpc_error(got)["data"]["reason"] == "MatchNotFound()"
        response = client.get("/auth/my_sessions", {"current": "true"})
        assert response.status_code == 200, response.content
        assert len(response.json()) == expected
        response = client.get("/auth/my_sessions", {"current": "true", "count": "true"})
        assert response.status_code == 200, response.content
        assert response.json() == expected
        response = client.post("/auth/my_sessions/query", {"query-filters": [["current", "=", True]]})
        assert response.status_code == 200, response.content
        assert len(response.json()) == expected
        response = client.get("/auth/sessions", {"current": "true", "order_by": "-current"})
        assert response.status_code == 200, response.content


# --- F10: every query method × every carrier × generated filters: 0 × 5xx ---------------------------


@dataclass(frozen=True)
class QueryMethod:
    """A query method, its declared fields, and where the interfaces expose it."""

    name: str
    spec: QuerySpec
    #: REST ``POST`` endpoint taking ``query-filters`` / ``query-options`` (None: none).
    post: str | None
    #: REST ``GET`` list taking query parameters (None: none).
    get: str | None

    def schema(self, history: bool) -> Schema:
        return self.spec.schema_for(QueryOptions(extra={"history": history}))

    @property
    def has_history(self) -> bool:
        return "history" in self.spec.schema.extra

    def computed(self, schema: Schema) -> list[str]:
        """Paths the compiler answers by evaluating the leaf itself (booleans, closed value sets,
        conditions such as ``current``, constants): its special cases, drawn more often."""
        return sorted(
            ".".join(path)
            for path, column in self.spec.columns.items()
            if path in schema.fields
            and (
                column.condition is not None
                or column.constant is not None
                or column.domain is not None
                or schema.fields[path].type is FieldType.BOOLEAN
            )
        )


QUERY_METHODS = (
    QueryMethod("auth.sessions", SESSION_SPEC, "/auth/sessions/query", "/auth/sessions"),
    QueryMethod("auth.my_sessions", SESSION_SPEC, "/auth/my_sessions/query", "/auth/my_sessions"),
    QueryMethod("api_key.query", API_KEY_SPEC, None, "/api_key/"),
    QueryMethod("api_key.my_keys", API_KEY_SPEC, None, None),
    QueryMethod("audit.query", AUDIT_SPEC, "/audit/query", "/audit/"),
)

_ORDERING = (">", ">=", "<", "<=")
_COMPARE = ("=", "!=", *_ORDERING, "in", "nin")
_STRING_OPS = (*_COMPARE, "~", "rin", "rnin", "^", "!^", "$", "!$")
OPS_BY_TYPE = {
    FieldType.STRING: _STRING_OPS + tuple("C" + op for op in _STRING_OPS),
    FieldType.INTEGER: _COMPARE,
    FieldType.BOOLEAN: _COMPARE,
    FieldType.DATETIME: _COMPARE,
    FieldType.OBJECT: ("=", "!=", "in", "nin", "rin", "rnin"),
}
#: Patterns in the shapes clients write (prefixes, alternations, classes, anchors, the empty one).
PATTERNS = ("", ".*", "a", "^al", "(a|b)+", "[0-9]+", r"10\.", "LOGIN_.*", "x$", "(?i)Q", ".*key.*", r"\d")
#: Text the database can store and compare (no NUL, no lone surrogate): well-formed input.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
MS = st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_000)


def scalar(field: Field) -> st.SearchStrategy[Any]:
    if field.type is FieldType.STRING:
        base: st.SearchStrategy[Any] = st.one_of(
            TEXT, st.sampled_from(["quinn", "LOGIN_PASSWORD", "127.0.0.1"])
        )
    elif field.type is FieldType.INTEGER:
        base = st.one_of(
            st.integers(min_value=-(2**64), max_value=2**64),
            st.floats(allow_nan=False, allow_infinity=False),
        )
    elif field.type is FieldType.BOOLEAN:
        base = st.booleans()
    elif field.type is FieldType.DATETIME:
        base = MS.map(lambda ms: {"$date": ms})
    else:
        base = st.one_of(st.none(), st.just({}), TEXT)
    return st.one_of(st.none(), base) if field.nullable else base


def leaf(schema: Schema, computed: list[str]) -> st.SearchStrategy[list[Any]]:
    paths = sorted(".".join(k) for k, f in schema.fields.items() if f.type in OPS_BY_TYPE)

    @st.composite
    def build(draw: st.DrawFn) -> list[Any]:
        path = draw(st.one_of(st.sampled_from(paths), st.sampled_from(computed)))
        field = schema.fields[tuple(path.split("."))]
        op = draw(st.sampled_from(OPS_BY_TYPE[field.type]))
        base = op.removeprefix("C")
        if base == "~":
            value: Any = draw(st.one_of(st.sampled_from(PATTERNS), TEXT.map(re.escape)))
        elif base in ("in", "nin"):
            items = st.lists(scalar(field), max_size=4)
            value = draw(st.one_of(items, TEXT) if field.type is FieldType.STRING else items)
        elif base in ("rin", "rnin", "^", "!^", "$", "!$"):
            value = draw(TEXT)
        else:
            value = draw(scalar(field))
        if op.startswith("C") and value is not None and not isinstance(value, str | list):
            value = str(value)
        if op.startswith("C") and isinstance(value, list):
            value = [v for v in value if isinstance(v, str)]
        return [path, op, value]

    return build()


def filters(schema: Schema, computed: list[str]) -> st.SearchStrategy[list[Any]]:
    one = leaf(schema, computed)
    branch = st.one_of(one, st.lists(one, min_size=1, max_size=2))
    node = st.one_of(one, st.builds(lambda bs: ["OR", bs], st.lists(branch, min_size=1, max_size=3)))
    return st.lists(node, max_size=3)


@st.composite
def options(draw: st.DrawFn, schema: Schema, history: bool | None) -> dict[str, Any]:
    orderable = sorted(".".join(k) for k, f in schema.fields.items() if f.orderable and f.type in OPS_BY_TYPE)
    selectable = sorted(".".join(k) for k in schema.fields)
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        keys = st.tuples(
            st.sampled_from(["", "nulls_first:", "nulls_last:"]), st.booleans(), st.sampled_from(orderable)
        )
        out["order_by"] = [f"{p}{'-' if d else ''}{f}" for p, d, f in draw(st.lists(keys, max_size=3))]
    if draw(st.booleans()):
        out["select"] = draw(st.lists(st.sampled_from(selectable), min_size=1, max_size=3, unique=True))
    mode = draw(st.sampled_from(["rows", "count", "get", "count_get", "page"]))
    if mode in ("count", "count_get"):
        out["count"] = True
    if mode in ("get", "count_get"):
        out["get"] = True
    if mode == "page":
        out["limit"] = draw(st.integers(min_value=0, max_value=20))
        out["offset"] = draw(st.integers(min_value=0, max_value=5))
    if history is not None and (history or draw(st.booleans())):
        out["extra"] = {"history": history}
    return out


def _text_of(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):  # {"$date": ms}
        return (
            dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=value["$date"])
        ).isoformat()
    return str(value)


@st.composite
def query_parameters(
    draw: st.DrawFn, schema: Schema, computed: list[str], history: bool | None
) -> dict[str, str]:
    """GET parameters of a method's list: leaves as ``path__suffix=value``, and the options."""
    params: dict[str, str] = {}
    for path, op, value in draw(st.lists(leaf(schema, computed), max_size=3)):
        suffix = next((s for s, o in OPERATORS.items() if o == op.removeprefix("C")), None)
        field = schema.fields[tuple(path.split("."))]
        if suffix is None or field.type is FieldType.OBJECT or value is None:
            continue
        if op.startswith("C"):
            if field.type is not FieldType.STRING:
                continue
            suffix = CASEFOLD_PREFIX + suffix
        if isinstance(value, list):
            if any(v is None or "," in _text_of(v) for v in value) or not value:
                continue
            text = ",".join(_text_of(v) for v in value)
        elif isinstance(value, str) and suffix.removeprefix("i") in ("in", "nin"):
            continue  # a substring test is not a query parameter
        else:
            text = _text_of(value)
        if field.type is FieldType.INTEGER and not re.fullmatch(r"-?[0-9]{1,18}", text):
            continue
        params[parameter_name(path, suffix)] = text
    opts = draw(options(schema, history))
    if opts.get("order_by"):
        params["order_by"] = ",".join(k for k in opts["order_by"] if not k.startswith("nulls_"))
    for name in ("limit", "offset"):
        if name in opts:
            params[name] = str(opts[name])
    if opts.get("count"):
        params["count"] = "true"
    if "extra" in opts:
        params["history"] = _text_of(opts["extra"]["history"])
    return {k: v for k, v in params.items() if v != "" or k not in ("order_by",)}


def assert_no_5xx(response: Any, what: str) -> None:
    """A result or a clear client error: never a 5xx, never the internal-error body."""
    assert response.status_code < 500, (what, response.status_code, response.content[:500])
    body = response.json()
    if isinstance(body, dict) and "error" in body and "jsonrpc" in body:
        data = body["error"].get("data") or {}
        assert body["error"]["code"] != -32603, (what, body)
        assert data.get("errname") != "EFAULT", (what, body)
    if response.status_code >= 400 and isinstance(body, dict) and "errors" in body:
        assert all(e.get("message") for e in body["errors"]), (what, body)


@pytest.fixture
def variety(quinn: Any, make_user: Any) -> None:
    """Rows of every shape the schemas describe: each credential type, a revoked and an expiring
    key, an ended session (history) and another user's rows."""
    other = make_user("olga")
    key = ApiKey.objects.create(name="ci", user=quinn, key_hash="0" * 64, revoked=True, revoked_reason="test")
    ApiKey.objects.create(name="ci", user=other, key_hash="1" * 64, expires_at=FAR_FUTURE)
    now = dt.datetime.now(dt.UTC)
    UserSession.objects.bulk_create(
        [
            session(
                user=quinn, username=USERNAME, credentials=Credentials.API_KEY, api_key=key, api_key_name="ci"
            ),
            session(
                user=quinn,
                username=USERNAME,
                credentials=Credentials.TOKEN,
                root_credentials=Credentials.API_KEY,
                root_username=USERNAME,
                root_login_at=now,
                root_api_key_id=key.pk,
                root_api_key_name="ci",
            ),
            session(credentials=Credentials.TRUENAS_NODE, username=None, internal=True, origin="10.0.0.9:1"),
            session(
                user=quinn, username=USERNAME, ended_at=now, end_reason=EndReason.LOGOUT, ended_by="quinn"
            ),
            session(user=other, username="olga", origin="[::1]:5"),
        ]
    )


def drive(client: Carrier, data: st.DataObject) -> None:
    method = data.draw(st.sampled_from(QUERY_METHODS), label="method")
    history = data.draw(st.booleans(), label="history") if method.has_history else None
    schema = method.schema(bool(history))
    computed = method.computed(schema)
    query = (
        data.draw(filters(schema, computed), label="filters"),
        data.draw(options(schema, history), label="options"),
    )
    assert_no_5xx(client.rpc(method.name, *query), f"{client.name} {method.name} {query!r}")
    if method.post is not None:
        body = {"query-filters": query[0], "query-options": query[1]}
        assert_no_5xx(client.post(method.post, body), f"{client.name} POST {method.post} {body!r}")
    if method.get is not None:
        params = data.draw(query_parameters(schema, computed, history), label="params")
        assert_no_5xx(client.get(method.get, params), f"{client.name} GET {method.get} {params!r}")


@pytest.mark.parametrize("carrier", CARRIER_NAMES)
def test_f10_every_query_method_with_every_carrier_never_answers_5xx(
    carriers: dict[str, Carrier], variety: None, carrier: str
) -> None:
    """Hypothesis draws a method, well-formed filters and options over its declared fields (and
    query parameters for the REST list), and sends them with one carrier over JSON-RPC, the REST
    query endpoint and the REST list: every answer is a result or a clear 4xx / JSON-RPC error."""
    client = carriers[carrier]

    @settings(
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        drive(client, data)

    run()


# --- F11: query cost is bounded per query, not per row ------------------------------------------------

#: Each match of ``(a|aa)+$`` against this backtracks for a good part of the one-match budget
#: (0.1 s), but not all of it: per row it stays under the per-match limit.
SLOW_NAME = "a" * 26 + "!"
SLOW_PATTERN = "(a|aa)+$"
BUDGET_MESSAGE = "ran longer than their time budget"
ROWS = 150


def test_f11_the_regex_budget_covers_the_whole_query_in_the_engine() -> None:
    """The in-memory engine: the rows are pulled one by one; the query is refused with the budget
    error long before the last row, instead of spending just under 0.1 s on each of them."""
    pulled = 0

    def rows() -> Iterator[dict[str, Any]]:
        nonlocal pulled
        for index in range(ROWS):
            pulled += 1
            yield {"name": f"{SLOW_NAME}{index}"}

    with pytest.raises(QueryError) as raised:
        filter_list(rows(), [["name", "~", SLOW_PATTERN]], {"count": True})
    assert raised.value.attribute == "filters[0]"
    assert BUDGET_MESSAGE in raised.value.message
    assert pulled < ROWS // 2, pulled


def test_f11_a_budget_is_shared_by_all_rows_and_leaves() -> None:
    """One `RegexBudget` per query: matches stop once it is spent; a repeated (pattern, value) is
    matched once per query."""
    budget = RegexBudget()
    predicate = make_predicate(
        parse_filters([["name", "~", "ab"], ["OR", [["name", "~", "ab"], ["name", "~", "x"]]]]), budget
    )
    assert [predicate({"name": name}) for name in ["abc", "abc", "abd", "abc"]] == [True, True, True, True]
    assert budget.matches == 2  # "ab" on "abc" and on "abd"; every repeat comes from the memo
    budget.remaining = 0.0
    with pytest.raises(QueryError, match=BUDGET_MESSAGE):
        predicate({"name": "new value"})


def test_f11_the_regex_budget_covers_the_whole_query_in_the_database_path(
    quinn: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """150 keys named ``aaa…a!<n>``, ``api_key.my_keys [["name", "~", "(a|aa)+$"]]``: the pattern
    has no literal prefix, so the compiler filters in Python after SQL. The answer is the budget
    error (JSON-RPC -32602 naming the leaf, REST 400), and the rows read stop well short of 150."""
    settings.SESSIONS_MAX_KEYS_PER_USER = ROWS
    settings.SESSIONS_LOGIN_RATE = 1_000_000
    ApiKey.objects.bulk_create(
        ApiKey(name=f"{SLOW_NAME}{index}", user=quinn, key_hash=f"{index:064d}") for index in range(ROWS)
    )
    built = 0
    real_iter_rows = execution.iter_rows

    def counting_iter_rows(*args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        nonlocal built
        for row in real_iter_rows(*args, **kwargs):
            built += 1
            yield row

    monkeypatch.setattr(execution, "iter_rows", counting_iter_rows)
    client = _basic(quinn)
    error = rpc_error(client.rpc("api_key.my_keys", [["name", "~", SLOW_PATTERN]], {}))
    assert error["code"] == -32602, error
    [(attribute, message, errno)] = error["data"]["extra"]
    assert (attribute, errno) == ("filters[0]", 22)
    assert BUDGET_MESSAGE in message
    assert 0 < built < ROWS // 2, built
    response = client.get("/api_key/", {"name__regex": SLOW_PATTERN})
    assert response.status_code == 400, response.content
    assert BUDGET_MESSAGE in response.json()["errors"][0]["message"]


def test_f11_api_keys_per_user_are_capped(quinn: Any, make_user: Any, settings: Any) -> None:
    """At ``SESSIONS_MAX_KEYS_PER_USER`` a new key is a validation error and nothing is written;
    revoked keys still count (else create/revoke would grow the table forever), deleted ones do
    not, and another user's keys are not counted against this one."""
    settings.SESSIONS_MAX_KEYS_PER_USER = 3
    olga = make_user("olga")
    keys = [api_key_create(user=quinn, name=f"k{n}")[0] for n in range(3)]
    api_key_create(user=olga, name="k0")
    stored, audited = ApiKey.objects.count(), AuditRecord.objects.count()
    with pytest.raises(InvalidParams) as refused:
        api_key_create(user=quinn, name="k3")
    [(attribute, message)] = refused.value.errors
    assert attribute == "api_key_create"
    assert "3 API keys" in message
    assert (ApiKey.objects.count(), AuditRecord.objects.count()) == (stored, audited)
    api_key_revoke(key=keys[0], reason="test", actor=USERNAME)
    with pytest.raises(InvalidParams):
        api_key_create(user=quinn, name="k3")
    api_key_delete(key=keys[0], actor=USERNAME)
    api_key_create(user=quinn, name="k3")
    assert ApiKey.objects.filter(user=quinn).count() == 3


def test_f11_the_key_cap_through_the_interfaces(quinn: Any, make_user: Any, settings: Any) -> None:
    """JSON-RPC ``api_key.create`` (an administrator creating keys for another user) and REST
    ``POST /api_key/`` answer the cap as a clear validation error, never a 5xx."""
    settings.SESSIONS_MAX_KEYS_PER_USER = 2
    admin = make_user("boss", superuser=True)
    olga = make_user("olga")
    _, key = api_key_create(user=admin, name="admin-key")
    headers = {"Authorization": f"Bearer {key}"}
    http = Client(enforce_csrf_checks=True, REMOTE_ADDR="127.0.0.1")
    carrier = Carrier("bearer", http, headers, False)
    for n in range(2):
        assert rpc_result(carrier.rpc("api_key.create", {"name": f"k{n}", "username": "olga"}))["key"]
    error = rpc_error(carrier.rpc("api_key.create", {"name": "k2", "username": "olga"}))
    assert error["code"] == -32602, error
    assert error["data"]["extra"][0][0] == "api_key_create"
    response = carrier.post("/api_key/", {"name": "k2", "username": "olga"})
    assert response.status_code == 400, response.content
    assert ApiKey.objects.filter(user=olga).count() == 2


def test_f11_concurrent_creations_cannot_overshoot_the_key_cap(
    make_user: Any, settings: Any, threads: Any
) -> None:
    """Threads creating keys for one user at once: exactly the cap is stored, the rest refused."""
    settings.SESSIONS_MAX_KEYS_PER_USER = 3
    user = make_user("racer")
    outcomes: list[str] = []

    def work(index: int) -> None:
        try:
            api_key_create(user=user, name=f"race-{index}")
            outcomes.append("created")
        except InvalidParams:
            outcomes.append("refused")

    threads.share()  # the user row, for the workers' connections (an in-memory test database)
    threads.run(6, work)
    assert sorted(outcomes) == ["created"] * 3 + ["refused"] * 3
    assert threads.read(lambda: ApiKey.objects.filter(user=user).count()) == 3
