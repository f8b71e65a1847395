"""Fixtures of the REST API tests: a cookie-keeping client that speaks JSON, users with roles."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from sessions_app.auth.roles import Role
from sessions_app.services.api_keys import api_key_create
from tests.conftest import PASSWORD

API = "/api/v2.0"


class Rest:
    """Django's test client with CSRF checks on, keeping cookies like a browser.

    ``post``/``patch``/``delete`` send JSON and, unless ``csrf=False``, the ``X-CSRFToken`` header
    from the ``csrftoken`` cookie (as a browser page would).
    """

    def __init__(self, remote_addr: str = "127.0.0.1", **extra: Any) -> None:
        self.http = Client(enforce_csrf_checks=True, REMOTE_ADDR=remote_addr, **extra)

    def _headers(self, csrf: bool, headers: dict[str, str]) -> dict[str, str]:
        token = self.http.cookies.get("csrftoken")
        if csrf and token is not None:
            headers = {"X-CSRFToken": token.value, **headers}
        return headers

    def get(self, path: str, params: Any = None, **headers: str) -> Any:
        return self.http.get(API + path, params, headers=headers)

    def send(
        self,
        method: str,
        path: str,
        data: Any = None,
        *,
        csrf: bool = True,
        raw: bool = False,
        **headers: str,
    ) -> Any:
        body = data if raw else ("" if data is None else json.dumps(data))
        content_type = headers.pop("content_type", "application/json")
        return self.http.generic(
            method, API + path, body, content_type=content_type, headers=self._headers(csrf, headers)
        )

    def post(self, path: str, data: Any = None, **kwargs: Any) -> Any:
        return self.send("POST", path, data, **kwargs)

    def patch(self, path: str, data: Any = None, **kwargs: Any) -> Any:
        return self.send("PATCH", path, data, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.send("DELETE", path, **kwargs)

    def login(self, username: str = "alice", password: str = PASSWORD) -> dict[str, Any]:
        response = self.post(
            "/auth/login", {"mechanism": "PASSWORD_PLAIN", "username": username, "password": password}
        )
        assert response.status_code == 200, response.content
        assert response.json()["response_type"] == "SUCCESS", response.json()
        return response.json()


@pytest.fixture
def rest(db: Any) -> Callable[..., Rest]:
    """``rest()`` → a new anonymous client; ``rest("alice")`` → logged in as alice (cookie session)."""

    def make(username: str | None = None, **kwargs: Any) -> Rest:
        client = Rest(**kwargs)
        if username is not None:
            client.login(username)
        return client

    return make


@pytest.fixture
def alice(make_user: Any) -> Any:
    return make_user("alice")


@pytest.fixture
def bob(make_user: Any) -> Any:
    return make_user("bob")


@pytest.fixture
def reader(make_user: Any) -> Any:
    return make_user("reader", roles=[Role.AUTH_SESSIONS_READ])


@pytest.fixture
def writer(make_user: Any) -> Any:
    return make_user("writer", roles=[Role.AUTH_SESSIONS_WRITE])


@pytest.fixture
def admin(make_user: Any) -> Any:
    return make_user("admin", superuser=True)


@pytest.fixture
def bearer(db: Any) -> Callable[[Any], dict[str, str]]:
    """``bearer(user)`` → the headers of a per-request API-key call as ``user``."""

    def make(user: Any, name: str | None = None) -> dict[str, str]:
        _, key = api_key_create(user=user, name=name or f"key-{user.get_username()}")
        return {"Authorization": f"Bearer {key}"}

    return make


def errors(response: Any) -> list[dict[str, Any]]:
    """The ``errors`` list of an error answer (and a check of its shape)."""
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert set(body) <= {"errors", "request_id"}, body
    for error in body["errors"]:
        assert set(error) == {"attribute", "message", "errno"}, error
    return body["errors"]


def attributes(response: Any) -> list[str]:
    return [e["attribute"] for e in errors(response)]
