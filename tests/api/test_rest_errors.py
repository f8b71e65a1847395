"""Bad input never gets a 500: one JSON error body for 400 401 403 404 405 406 413 415 429 503."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import OperationalError

from sessions_app import selectors
from tests.api.conftest import API, attributes, errors

QUERY = "/auth/sessions/query"


@pytest.fixture
def admin_client(rest: Any, admin: Any) -> Any:
    return rest("admin")


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[1,]",
        b'{"query-filters": NaN}',
        b'{"query-filters": [["id", "=", Infinity]]}',
        b'{"query-filters": [["id", "=", 1e400]]}',
        b'{"query-filters": [["id", "=", 1234567890123456789012345]]}',
        b"[" * 100 + b"]" * 100,
        b'\xef\xbb\xbf{"query-filters": []}',
        b'{"query-filters": ["\xff"]}',
        b"\x00",
    ],
)
def test_malformed_json_is_400(admin_client: Any, body: bytes) -> None:
    response = admin_client.post(QUERY, body, raw=True)
    assert response.status_code == 400
    assert attributes(response) == ["body"]


def test_deep_nesting_in_a_valid_document_is_400(admin_client: Any) -> None:
    depth = 60
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    response = admin_client.post(QUERY, {"query-filters": [["origin", "in", value]]})
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("value", "attribute"),
    # A NUL is valid JSON and refused by the query checks; an unpaired surrogate is refused while
    # parsing the body (no database can store it), so the error names the body.
    [("a\x00b", "filters[0]"), ("\ud800", "body")],
)
def test_nul_and_lone_surrogates_are_400(admin_client: Any, value: str, attribute: str) -> None:
    response = admin_client.post(QUERY, {"query-filters": [["origin", "=", value]]})
    assert response.status_code == 400
    assert attributes(response) == [attribute]


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_non_json_bodies_are_415(admin_client: Any, content_type: str) -> None:
    response = admin_client.post(QUERY, "a=1", raw=True, content_type=content_type)
    assert response.status_code == 415
    assert attributes(response) == ["content_type"]


def test_bodies_over_the_caps_are_413(rest: Any, admin_client: Any, settings: Any) -> None:
    big_anonymous = {"mechanism": "PASSWORD_PLAIN", "username": "x", "password": "p" * 9000}
    response = rest().post("/auth/login", big_anonymous)
    assert response.status_code == 413
    assert attributes(response) == ["body"]
    assert errors(response)[0]["errno"] == 7
    # Authenticated callers get 64 KiB.
    response = admin_client.post(QUERY, {"query-filters": [["origin", "=", "o" * 9000]]})
    assert response.status_code == 200
    response = admin_client.post(QUERY, {"query-filters": [["origin", "=", "o" * 70000]]})
    assert response.status_code == 413
    # And never more than DATA_UPLOAD_MAX_MEMORY_SIZE.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = admin_client.post(QUERY, {"query-filters": [["origin", "=", "o" * 2000]]})
    assert response.status_code == 413


def test_request_data_too_big_is_413(admin_client: Any, settings: Any) -> None:
    """A form body read by the CSRF check beyond DATA_UPLOAD_MAX_MEMORY_SIZE (Django's RequestDataTooBig)."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    response = admin_client.post(
        "/auth/logout",
        "a=" + "x" * 1000,
        raw=True,
        csrf=False,
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 413
    errors(response)


def test_unknown_paths_are_json_404(admin_client: Any, rest: Any) -> None:
    for path in ("/nope", "/auth/sessions/", "/auth", "/api_key", "/api_key/1/reset", "/auth/sessions/x/y"):
        for client in (admin_client, rest()):
            response = client.get(path)
            assert response.status_code == 404, path
            assert errors(response) == [{"attribute": "", "message": "Not found.", "errno": 2}]
            assert response["Cache-Control"] == "no-store"
    assert rest().post("/nope", {"a": 1}, csrf=False).status_code == 404


def test_unsupported_methods_are_405_with_allow(admin_client: Any) -> None:
    for method, path, allow in (
        ("PUT", "/auth/me", "GET, HEAD"),
        ("DELETE", "/auth/sessions", "GET, HEAD"),
        ("GET", "/auth/login", "POST"),
        ("PATCH", "/api_key/", "GET, POST, HEAD"),
        ("TRACE", "/auth/me", "GET, HEAD"),
        ("OPTIONS", "/auth/me", "GET, HEAD"),
    ):
        response = admin_client.send(method, path)
        assert response.status_code == 405, (method, path)
        assert response["Allow"] == allow
        errors(response)
    assert admin_client.send("HEAD", "/auth/me").status_code == 200


def test_query_parameters_outside_the_lists_are_400(admin_client: Any) -> None:
    """B5/C21: credentials or options in the query string are never silently used or ignored."""
    for path in ("/auth/me?token=abc", "/auth/csrf?sessionid=x", "/api_key/?format=api"):
        response = admin_client.http.get(API + path)
        assert response.status_code == 400, path


def test_database_errors_are_503_with_retry_after(admin_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(**kwargs: Any) -> Any:
        raise OperationalError("database is locked")

    monkeypatch.setattr(selectors, "session_query", broken)
    for response in (admin_client.get("/auth/sessions"), admin_client.post(QUERY, {})):
        assert response.status_code == 503
        assert response["Retry-After"] == "5"
        assert "locked" not in response.content.decode()
        errors(response)


def test_unexpected_errors_are_a_generic_500_with_a_request_id(
    admin_client: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("secret detail /etc/passwd")

    monkeypatch.setattr(selectors, "session_query", broken)
    response = admin_client.get("/auth/sessions")
    assert response.status_code == 500
    body = response.json()
    request_id = body["request_id"]
    assert response["X-Request-ID"] == request_id
    assert request_id in errors(response)[0]["message"]
    text = response.content.decode()
    assert "secret" not in text
    assert "Traceback" not in text
    assert "RuntimeError" not in text
    assert any(request_id in r.getMessage() and r.exc_info for r in caplog.records)


def test_every_answer_is_no_store(rest: Any, admin_client: Any) -> None:
    for response in (
        admin_client.get("/auth/me"),
        admin_client.get("/auth/sessions"),
        admin_client.get("/api_key/"),
        rest().get("/auth/me"),
        admin_client.send("PUT", "/auth/me"),
        admin_client.get("/auth/sessions", {"bad": 1}),
        rest().get("/schema/"),
        rest().get("/docs/"),
    ):
        assert response["Cache-Control"] == "no-store"
