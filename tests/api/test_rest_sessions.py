"""REST session endpoints: lists through the FilterSet, the POST query, terminate, my_sessions."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.http import QueryDict

from sessions_app import selectors
from sessions_app.api.rest.filtersets import OPERATORS, SUFFIXES_BY_TYPE, SessionFilterSet
from sessions_app.api.rest.renderers import EJSONRenderer
from sessions_app.models import AuditRecord, UserSession
from tests.api.conftest import attributes, errors

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
HISTORY_KEYS = SESSION_KEYS | {"ended_at", "end_reason", "ended_by"}


def wire(value: Any) -> Any:
    """``value`` as the API renders it (datetimes as {"$date": ms})."""
    import json

    return json.loads(EJSONRenderer().render(value))


@pytest.fixture
def sessions(rest: Any, alice: Any, bob: Any, admin: Any) -> dict[str, Any]:
    """alice ×3, bob ×1, admin ×1 (the client that lists)."""
    alice_clients = [rest("alice") for _ in range(3)]
    return {"admin": rest("admin"), "alice": alice_clients, "bob": rest("bob")}


# --- the list -----------------------------------------------------------------------------------------


def test_list_rows_have_exactly_the_auth_sessions_keys(sessions: Any, rpc: Any) -> None:
    response = sessions["admin"].get("/auth/sessions")
    assert response.status_code == 200
    rows = response.json()
    assert len(rows) == 5
    assert all(set(row) == SESSION_KEYS for row in rows)
    assert sum(row["current"] for row in rows) == 1
    # The same rows as JSON-RPC's auth.sessions (whose caller is another session).
    client = rpc()
    client.login("admin")
    rpc_rows = client.call("auth.sessions", [["id", "in", [r["id"] for r in rows]]], {})
    strip = [{k: v for k, v in r.items() if k != "current"} for r in rows]
    assert strip == [{k: v for k, v in r.items() if k != "current"} for r in rpc_rows]
    assert isinstance(rows[0]["created_at"], dict)
    assert set(rows[0]["created_at"]) == {"$date"}


def test_history_adds_the_ended_keys(sessions: Any) -> None:
    sessions["bob"].post("/auth/logout")
    rows = sessions["admin"].get("/auth/sessions", {"history": "true"}).json()
    assert len(rows) == 5
    assert all(set(row) == HISTORY_KEYS for row in rows)
    ended = [r for r in rows if r["end_reason"] is not None]
    assert [(r["credentials_data"]["username"], r["end_reason"], r["ended_by"]) for r in ended] == [
        ("bob", "LOGOUT", "bob")
    ]
    assert sessions["admin"].get("/auth/sessions", {"history": "false"}).json() == [
        {k: v for k, v in r.items() if k in SESSION_KEYS} for r in rows if r["end_reason"] is None
    ]


def test_history_fields_need_history(sessions: Any) -> None:
    response = sessions["admin"].get("/auth/sessions", {"end_reason": "LOGOUT"})
    assert response.status_code == 400
    assert attributes(response) == ["end_reason"]
    response = sessions["admin"].get("/auth/sessions", {"end_reason": "LOGOUT", "history": "true"})
    assert response.status_code == 200
    assert response.json() == []


def _query(url: str | None) -> dict[str, str] | None:
    if url is None:
        return None
    parts = urlsplit(url)
    assert parts.path == "/api/v2.0/auth/sessions"
    return dict(parse_qsl(parts.query))


def test_pagination_with_limit_and_offset(sessions: Any) -> None:
    admin = sessions["admin"]
    everything = admin.get("/auth/sessions", {"order_by": "-created_at"}).json()
    first = admin.get("/auth/sessions", {"order_by": "-created_at", "limit": 2}).json()
    assert first["count"] == 5
    assert first["previous"] is None
    assert first["results"] == everything[:2]
    assert _query(first["next"]) == {"order_by": "-created_at", "limit": "2", "offset": "2"}
    second = admin.http.get(first["next"]).json()
    assert second["results"] == everything[2:4]
    assert _query(second["previous"]) == {"order_by": "-created_at", "limit": "2"}
    last = admin.http.get(second["next"]).json()
    assert last["results"] == everything[4:]
    assert last["next"] is None
    assert _query(last["previous"]) == {"order_by": "-created_at", "limit": "2", "offset": "2"}
    everything_paged = admin.get("/auth/sessions", {"limit": 0}).json()
    assert everything_paged["count"] == 5
    assert len(everything_paged["results"]) == 5
    assert everything_paged["next"] is None


def test_count(sessions: Any) -> None:
    admin = sessions["admin"]
    assert admin.get("/auth/sessions", {"count": "true"}).json() == 5
    assert admin.get("/auth/sessions", {"count": "true", "limit": 1}).json() == 5
    assert admin.get("/auth/sessions", {"count": "true", "credentials_data.username": "alice"}).json() == 3
    assert admin.get("/auth/sessions", {"count": "false", "limit": 1}).json()["count"] == 5


def test_typed_values(sessions: Any) -> None:
    admin = sessions["admin"]

    def count(params: dict[str, Any]) -> int:
        response = admin.get("/auth/sessions", {**params, "count": "true"})
        assert response.status_code == 200, response.json()
        return int(response.json())

    assert count({"internal": "false"}) == 5
    assert count({"internal": "true"}) == 0
    assert count({"current": "TRUE"}) == 1
    assert count({"secure_transport__in": "true,false"}) == 5
    assert count({"created_at__gt": "2000-01-01T00:00:00Z"}) == 5
    assert count({"created_at__lt": "2000-01-01T00:00:00"}) == 0  # no offset: UTC
    assert count({"credentials_data.login_at__gte": "2000-01-01T00:00:00+00:00"}) == 5
    assert count({"credentials_data.api_key.id__gte": "1"}) == 0
    assert count({"credentials__in": "LOGIN_PASSWORD,API_KEY"}) == 5
    assert count({"credentials_data.username__nin": "alice,bob"}) == 1
    assert count({"origin": ""}) == 0


@pytest.mark.parametrize(
    ("params", "attribute"),
    [
        ({"internal": "yes"}, "internal"),
        ({"internal": ""}, "internal"),
        ({"internal__in": "true,maybe"}, "internal__in"),
        ({"credentials_data.api_key.id": "abc"}, "credentials_data.api_key.id"),
        ({"credentials_data.api_key.id": "1e18"}, "credentials_data.api_key.id"),
        ({"credentials_data.api_key.id": "99999999999999999999"}, "credentials_data.api_key.id"),
        ({"created_at__gt": "yesterday"}, "created_at__gt"),
        ({"created_at__gt": "1700000000000"}, "created_at__gt"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "10001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"count": "1"}, "count"),
        ({"history": "yes"}, "history"),
        ({"order_by": "credentials_data"}, "order_by"),
        ({"order_by": "nope"}, "order_by"),
        ({"order_by": "a,,b"}, "order_by"),
        ({"credentials_data.username__regex": "("}, "credentials_data.username__regex"),
        ({"origin": "a\x00b"}, "origin"),
    ],
)
def test_bad_values_are_400_naming_the_parameter(
    sessions: Any, params: dict[str, str], attribute: str
) -> None:
    response = sessions["admin"].get("/auth/sessions", params)
    assert response.status_code == 400
    assert attributes(response) == [attribute]
    assert all(e["errno"] == 22 for e in errors(response))


@pytest.mark.parametrize(
    "name",
    [
        "bogus",
        "secret_hash",
        "key_hash",
        "credentials_data",  # an object: not a query parameter
        "credentials_data.api_key.hash",
        "user__password",
        "username__startswith",
        "internal__regex",  # not for booleans
        "created_at__startswith",
        "credentials_data.api_key.id__ieq",  # C variants: strings only
        "id__contains",
        "format",
        "select",
    ],
)
def test_unknown_parameters_are_400_like_any_unknown_name(sessions: Any, name: str) -> None:
    response = sessions["admin"].get("/auth/sessions", {name: "x"})
    assert response.status_code == 400
    assert errors(response) == [{"attribute": name, "message": "unknown query parameter", "errno": 22}]


def test_repeated_parameters_are_400(sessions: Any) -> None:
    for query in ("limit=1&limit=2", "internal=false&internal=false", "order_by=id&order_by=-id"):
        response = sessions["admin"].http.get(f"/api/v2.0/auth/sessions?{query}")
        assert response.status_code == 400
        assert errors(response)[0]["message"] == "given more than once"


def test_every_operator_has_a_parameter() -> None:
    names = set(SessionFilterSet.base_filters)
    for suffix in OPERATORS:
        assert f"credentials_data.username__{suffix}" in names
        assert f"credentials_data.username__i{suffix}" in names
    for kind, suffixes in SUFFIXES_BY_TYPE.items():
        assert suffixes, kind
    assert {"order_by", "limit", "offset", "count", "history"} <= names


USERNAME_CASES = {
    "eq": "alice",
    "neq": "alice",
    "gt": "alice",
    "gte": "alice",
    "lt": "bob",
    "lte": "bob",
    "regex": "a.*",
    "in": "alice,bob",
    "nin": "alice,admin",
    "rin": "lic",
    "rnin": "lic",
    "startswith": "al",
    "nstartswith": "al",
    "endswith": "ce",
    "nendswith": "ce",
}


@pytest.mark.parametrize("casefold", [False, True])
@pytest.mark.parametrize(("suffix", "value"), list(USERNAME_CASES.items()))
def test_every_operator_is_reachable_and_matches_the_query_language(
    sessions: Any, suffix: str, value: str, casefold: bool
) -> None:
    name = f"credentials_data.username__{'i' if casefold else ''}{suffix}"
    value = value.upper() if casefold else value
    params = QueryDict(mutable=True)
    params[name] = value
    query = SessionFilterSet(params).query()
    operator = ("C" if casefold else "") + OPERATORS[suffix]
    typed: Any = value.split(",") if suffix in ("in", "nin") else value
    assert query.filters == [["credentials_data.username", operator, typed]]
    response = sessions["admin"].get("/auth/sessions", {name: value})
    assert response.status_code == 200, response.json()
    expected = selectors.session_query(filters=[["credentials_data.username", operator, typed]], options={})
    assert [r["id"] for r in response.json()] == [r["id"] for r in expected]


def test_filters_and_order_compose(sessions: Any) -> None:
    rows = (
        sessions["admin"]
        .get("/auth/sessions", {"credentials_data.username__in": "alice,bob", "order_by": "-created_at"})
        .json()
    )
    assert [r["credentials_data"]["username"] for r in rows] == ["bob", "alice", "alice", "alice"]
    ordered = [r["created_at"]["$date"] for r in rows]
    assert ordered == sorted(ordered, reverse=True)


# --- roles ------------------------------------------------------------------------------------------


def test_list_needs_authentication_then_the_role(sessions: Any, rest: Any, reader: Any) -> None:
    anonymous = rest()
    for path in ("/auth/sessions", "/auth/my_sessions", "/auth/me"):
        response = anonymous.get(path)
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Bearer realm="api"'
        assert errors(response)[0]["errno"] == 207
    response = sessions["bob"].get("/auth/sessions", {"count": "true"})
    assert response.status_code == 403
    assert errors(response) == [{"attribute": "", "message": "Not authorized", "errno": 13}]
    assert sessions["bob"].post("/auth/sessions/query", {}).status_code == 403
    assert rest("reader").get("/auth/sessions").status_code == 200


def test_role_protected_calls_are_audited(sessions: Any, rest: Any, reader: Any) -> None:
    sessions["bob"].get("/auth/sessions")
    rest("reader").get("/auth/sessions")
    records = AuditRecord.objects.filter(event="METHOD_CALL", event_data__method="auth.sessions")
    assert sorted((r.username, r.success) for r in records) == [("bob", False), ("reader", True)]


# --- POST query -----------------------------------------------------------------------------------


def test_post_query_returns_exactly_what_auth_sessions_returns(sessions: Any, rpc: Any) -> None:
    client = rpc()
    client.login("admin")
    for body in (
        {
            "query-filters": [["credentials_data.username", "=", "alice"]],
            "query-options": {"order_by": ["id"]},
        },
        {"query-filters": [["OR", [["credentials_data.username", "=", "bob"], ["internal", "=", True]]]]},
        {"query-options": {"count": True}},
        {"query-options": {"select": ["id", ["credentials_data.username", "who"]], "order_by": ["id"]}},
        {"query-filters": None, "query-options": None},
        {},
    ):
        response = sessions["admin"].post("/auth/sessions/query", body)
        assert response.status_code == 200, response.json()
        expected = client.call("auth.sessions", body.get("query-filters", []), body.get("query-options", {}))
        if isinstance(expected, list) and expected and "current" in expected[0]:
            expected = [{**r, "current": False} for r in expected]
            got = [{**r, "current": False} for r in response.json()]
        else:
            got = response.json()
        assert got == expected


def test_post_query_get_and_match_not_found(sessions: Any) -> None:
    admin = sessions["admin"]
    body = {"query-filters": [["credentials_data.username", "=", "bob"]], "query-options": {"get": True}}
    row = admin.post("/auth/sessions/query", body).json()
    assert row["credentials_data"]["username"] == "bob"
    body["query-filters"][0][2] = "nobody"
    response = admin.post("/auth/sessions/query", body)
    assert response.status_code == 404
    assert errors(response)[0]["message"] == "MatchNotFound()"


@pytest.mark.parametrize(
    ("body", "attribute"),
    [
        ({"query-filters": [["key_hash", "=", "x"]]}, "filters[0]"),
        ({"query-filters": [["credentials_data.api_key.hash", "^", "x"]]}, "filters[0]"),
        ({"query-filters": "a=1"}, "filters"),
        ({"query-filters": [["created_at", ">", "abc"]]}, "filters[0]"),
        ({"query-options": {"limit": 10001}}, "options.limit"),
        ({"query-options": {"order_by": ["key_hash"]}}, "options.order_by[0]"),
        ({"query-options": {"get": True, "count": True, "limit": 2}}, "options.limit"),
        ({"query-options": {"extend": "x"}}, "options.extend"),
        ({"query-filters": [], "filters": []}, "filters"),
        ({"query-options": []}, "options"),
    ],
)
def test_post_query_errors_name_the_element(sessions: Any, body: dict[str, Any], attribute: str) -> None:
    response = sessions["admin"].post("/auth/sessions/query", body)
    assert response.status_code == 400
    assert attributes(response) == [attribute]


def test_post_query_takes_no_query_parameters(sessions: Any) -> None:
    response = sessions["admin"].post("/auth/sessions/query?limit=1", {"query-options": {"limit": 5}})
    assert response.status_code == 400
    assert attributes(response) == ["limit"]


# --- terminate ----------------------------------------------------------------------------------


def _bob_session(sessions: Any) -> str:
    return sessions["bob"].get("/auth/my_sessions").json()[0]["id"]


def test_terminate_needs_auth_sessions_write(sessions: Any, rest: Any, reader: Any, writer: Any) -> None:
    target = _bob_session(sessions)
    assert rest().post(f"/auth/sessions/{target}/terminate").status_code == 401
    assert sessions["alice"][0].post(f"/auth/sessions/{target}/terminate").status_code == 403
    assert rest("reader").post(f"/auth/sessions/{target}/terminate").status_code == 403
    assert sessions["bob"].get("/auth/me").status_code == 200
    response = rest("writer").post(f"/auth/sessions/{target}/terminate")
    assert response.status_code == 200
    assert response.json() == {"id": target, "terminated": True}
    assert sessions["bob"].get("/auth/me").status_code == 401
    assert UserSession.objects.get(public_id=target).end_reason == "TERMINATED"


def test_terminate_unknown_or_ended_session_is_404(sessions: Any, writer: Any, rest: Any) -> None:
    client = rest("writer")
    for session_id in ("x" * 64, "abc", "-_-"):
        response = client.post(f"/auth/sessions/{session_id}/terminate")
        assert response.status_code == 404
        assert errors(response)[0]["errno"] == 2
    target = _bob_session(sessions)
    assert client.post(f"/auth/sessions/{target}/terminate").status_code == 200
    assert client.post(f"/auth/sessions/{target}/terminate").status_code == 404


@pytest.mark.parametrize("path", ["abc%00", "a%2Fb", "%E2%9C%93", "x" * 129, "abc.def"])
def test_odd_session_ids_are_json_404(sessions: Any, writer: Any, rest: Any, path: str) -> None:
    response = rest("writer").post(f"/auth/sessions/{path}/terminate")
    assert response.status_code == 404
    errors(response)


def test_terminate_method_matrix(sessions: Any, writer: Any, rest: Any) -> None:
    target = _bob_session(sessions)
    client = rest("writer")
    for method in ("GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE", "TRACE"):
        response = client.send(method, f"/auth/sessions/{target}/terminate")
        assert response.status_code == 405, method
        assert response["Allow"] == "POST"
    assert sessions["bob"].get("/auth/me").status_code == 200


def test_terminate_others_keeps_the_callers_session(sessions: Any, writer: Any, rest: Any) -> None:
    client = rest("writer")
    response = client.post("/auth/sessions/terminate_others")
    assert response.status_code == 200
    assert response.json() == {"terminated": 5}
    assert client.get("/auth/me").status_code == 200
    assert sessions["bob"].get("/auth/me").status_code == 401
    assert client.post("/auth/sessions/terminate_others").json() == {"terminated": 0}


def test_terminate_others_with_per_request_credentials_is_403(writer: Any, rest: Any, bearer: Any) -> None:
    response = rest().post("/auth/sessions/terminate_others", **bearer(writer))
    assert response.status_code == 403


# --- my_sessions --------------------------------------------------------------------------------


def test_my_sessions_lists_only_the_callers(sessions: Any) -> None:
    alice = sessions["alice"][0]
    rows = alice.get("/auth/my_sessions").json()
    assert len(rows) == 3
    assert {r["credentials_data"]["username"] for r in rows} == {"alice"}
    assert all(set(r) == SESSION_KEYS for r in rows)
    # Filters cannot widen the scope (C19).
    wide = alice.get("/auth/my_sessions", {"credentials_data.username__in": "alice,bob,admin"}).json()
    assert len(wide) == 3
    body = {"query-filters": [["OR", [["credentials_data.username", "=", "bob"], ["internal", "=", False]]]]}
    assert len(alice.post("/auth/my_sessions/query", body).json()) == 3
    assert alice.get("/auth/my_sessions", {"limit": 1}).json()["count"] == 3


def test_my_sessions_terminate_own_only(sessions: Any) -> None:
    alice, other_alice = sessions["alice"][0], sessions["alice"][1]
    target = _bob_session(sessions)
    response = alice.post(f"/auth/my_sessions/{target}/terminate")
    assert response.status_code == 404
    assert sessions["bob"].get("/auth/me").status_code == 200
    own = other_alice.get("/auth/my_sessions", {"current": "true"}).json()[0]["id"]
    response = alice.post(f"/auth/my_sessions/{own}/terminate")
    assert response.status_code == 200
    assert response.json() == {"id": own, "terminated": True}
    assert other_alice.get("/auth/me").status_code == 401


def test_my_sessions_terminate_others(sessions: Any) -> None:
    alice = sessions["alice"][0]
    assert alice.post("/auth/my_sessions/terminate_others").json() == {"terminated": 2}
    assert alice.get("/auth/me").status_code == 200
    assert sessions["alice"][1].get("/auth/me").status_code == 401
    assert sessions["bob"].get("/auth/me").status_code == 200


# --- device=true (extra.device) -----------------------------------------------------------------------

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)
CHROME_LINUX = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
DEVICE_KEYS = SESSION_KEYS | {"device", "location"}


@pytest.fixture
def devices(rest: Any, alice: Any, admin: Any) -> dict[str, Any]:
    """alice on an iPhone and on desktop Chrome; the admin's client sends no User-Agent."""
    return {
        "iphone": rest("alice", HTTP_USER_AGENT=IPHONE),
        "desktop": rest("alice", HTTP_USER_AGENT=CHROME_LINUX),
        "admin": rest("admin"),
    }


def test_device_true_adds_the_device_and_location_objects(devices: Any) -> None:
    admin = devices["admin"]
    plain = admin.get("/auth/sessions", {"order_by": "created_at"}).json()
    assert all(set(row) == SESSION_KEYS for row in plain)
    assert admin.get("/auth/sessions", {"device": "false"}).json() == plain
    rows = admin.get("/auth/sessions", {"device": "true", "order_by": "created_at"}).json()
    assert all(set(row) == DEVICE_KEYS for row in rows)
    assert [{k: v for k, v in row.items() if k in SESSION_KEYS} for row in rows] == plain
    assert [row["device"]["label"] for row in rows] == ["Safari on iOS", "Chrome on Linux", "Unknown device"]
    assert rows[0]["device"] == {
        "label": "Safari on iOS",
        "browser": "Safari",
        "os": "iOS",
        "device": "iPhone",
        "user_agent": IPHONE,
    }
    assert all(row["location"] == {"country": None, "city": None} for row in rows)  # no GeoIP here
    history = admin.get("/auth/sessions", {"device": "true", "history": "true"}).json()
    assert all(set(row) == HISTORY_KEYS | {"device", "location"} for row in history)


def test_device_fields_are_query_parameters(devices: Any) -> None:
    admin = devices["admin"]

    def labels(params: dict[str, str]) -> list[str]:
        response = admin.get("/auth/sessions", {"device": "true", **params})
        assert response.status_code == 200, response.json()
        return [row["device"]["label"] for row in response.json()]

    assert labels({"device.os": "iOS"}) == ["Safari on iOS"]
    assert labels({"device.os__ieq": "IOS"}) == ["Safari on iOS"]
    assert labels({"device.browser__in": "Chrome,Safari", "order_by": "device.browser"}) == [
        "Chrome on Linux",
        "Safari on iOS",
    ]
    assert labels({"device.user_agent__rin": "iPhone"}) == ["Safari on iOS"]
    assert labels({"order_by": "-device.label"}) == ["Unknown device", "Safari on iOS", "Chrome on Linux"]
    assert labels({"location.country__neq": "x", "order_by": "device.os"}) == [
        "Chrome on Linux",
        "Safari on iOS",
        "Unknown device",
    ]
    page = admin.get("/auth/sessions", {"device": "true", "device.os__nin": "Windows", "limit": "1"}).json()
    assert (page["count"], len(page["results"])) == (2, 1)
    assert admin.get("/auth/sessions", {"device": "true", "device.os": "iOS", "count": "true"}).json() == 1
    mine = devices["desktop"].get("/auth/my_sessions", {"device": "true", "order_by": "device.os"}).json()
    assert [(row["device"]["os"], row["current"]) for row in mine] == [("Linux", True), ("iOS", False)]


@pytest.mark.parametrize(
    ("params", "attribute", "message"),
    [
        ({"device.os": "iOS"}, "device.os", "'device.os': unknown field"),
        ({"device.os": "iOS", "device": "false"}, "device.os", "'device.os': unknown field"),
        ({"order_by": "location.city"}, "order_by", "'location.city': unknown field"),
        ({"device": "yes"}, "device", "must be true or false"),
        ({"device": "1"}, "device", "must be true or false"),
        ({"device": "true", "order_by": "device"}, "order_by", "'device' cannot be ordered (object)"),
        ({"device": "true", "device.os__regex": "("}, "device.os__regex", None),
    ],
)
def test_device_parameters_errors(
    devices: Any, params: dict[str, str], attribute: str, message: str | None
) -> None:
    response = devices["admin"].get("/auth/sessions", params)
    assert response.status_code == 400
    if message is None:
        assert attributes(response) == [attribute]
        return
    assert errors(response) == [{"attribute": attribute, "message": message, "errno": 22}]


def test_device_parameter_given_twice_or_unknown_is_400(devices: Any) -> None:
    admin = devices["admin"]
    response = admin.http.get("/api/v2.0/auth/sessions?device=true&device=true")
    assert response.status_code == 400
    assert errors(response)[0] == {"attribute": "device", "message": "given more than once", "errno": 22}
    for name in ("device.nope", "location", "extra.device", "devices", "device.os__contains"):
        response = admin.get("/auth/sessions", {name: "true"})
        assert response.status_code == 400, name
        assert errors(response) == [{"attribute": name, "message": "unknown query parameter", "errno": 22}]


def test_post_query_takes_extra_device(devices: Any, rpc: Any) -> None:
    client = rpc()
    client.login("admin")
    body = {
        "query-filters": [["device.os", "in", ["iOS", "Linux"]]],
        "query-options": {"extra": {"device": True}, "order_by": ["device.os"], "select": ["id", "device"]},
    }
    for path, method, caller in (
        ("/auth/sessions/query", "auth.sessions", devices["admin"]),
        ("/auth/my_sessions/query", "auth.my_sessions", devices["desktop"]),
    ):
        response = caller.post(path, body)
        assert response.status_code == 200, response.json()
        rows = response.json()
        assert [row["device"]["os"] for row in rows] == ["Linux", "iOS"]
        if method == "auth.sessions":
            assert rows == client.call(method, body["query-filters"], body["query-options"])
    for options, attribute in (
        ({"extra": {"device": "true"}}, "options.extra.device"),
        ({"extra": {"gadget": True}}, "options.extra.gadget"),
        ({"select": ["device.os"]}, "options.select[0]"),
    ):
        response = devices["admin"].post("/auth/sessions/query", {"query-options": options})
        assert response.status_code == 400
        assert attributes(response) == [attribute]
