"""``GET /healthz`` (issue 20): what a load balancer or a service manager asks before sending traffic.

200 ``{"status": "ok"}`` when the process can run a query, 503 ``{"status": "unavailable", ...}``
when it cannot, with no internals in the body; never cached; no authentication, session, audit record
or CSRF token involved; answered even for an address the failure limiter is refusing.
"""

from __future__ import annotations

import logging
from typing import Any
from unittest import mock

import pytest
from django.db import OperationalError
from django.db.backends.base.base import BaseDatabaseWrapper
from django.test import Client

from sessions_app.auth import keys
from sessions_app.middleware import session_cookie_name
from sessions_app.models import AuditRecord, UserSession

pytestmark = pytest.mark.django_db

ADDRESS = "203.0.113.80"


def test_healthz_is_ok_for_anyone_and_never_cached() -> None:
    for method in ("get", "head"):
        response = getattr(Client(), method)("/healthz")
        assert response.status_code == 200, method
        assert response["Content-Type"] == "application/json"
        assert response["Cache-Control"] == "no-store"
    assert Client().get("/healthz").json() == {"status": "ok"}
    assert not UserSession.objects.exists()
    assert not AuditRecord.objects.exists()


def test_healthz_is_503_without_internals_when_the_database_cannot_be_reached(
    caplog: pytest.LogCaptureFixture,
) -> None:
    detail = 'connection to server at "10.0.9.9", port 5432 failed: password authentication failed'
    with (
        mock.patch.object(BaseDatabaseWrapper, "cursor", side_effect=OperationalError(detail)),
        caplog.at_level(logging.WARNING, logger="project.urls"),
    ):
        response = Client().get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "reason": "database unreachable"}
    assert response["Cache-Control"] == "no-store"
    assert b"10.0.9.9" not in response.content
    assert b"password" not in response.content
    # The operator's log has what the answer leaves out.
    assert any(record.exc_info and detail in str(record.exc_info[1]) for record in caplog.records)


def test_healthz_needs_no_csrf_token_and_only_reads() -> None:
    client = Client(enforce_csrf_checks=True)
    assert client.get("/healthz").status_code == 200
    response = client.post("/healthz")
    assert response.status_code == 405  # not 403: the probe is never a CSRF failure
    assert response["Allow"] == "GET, HEAD"


def test_healthz_answers_an_address_the_failure_limiter_refuses(settings: Any) -> None:
    settings.SESSIONS_LOGIN_RATE = 3
    settings.SESSIONS_LOGIN_RATE_WINDOW = 60
    prober = Client(REMOTE_ADDR=ADDRESS)
    statuses = [
        prober.get("/api/v2.0/auth/me", HTTP_AUTHORIZATION=f"Bearer 1-{'x' * 64}").status_code
        for _ in range(4)
    ]
    assert statuses == [401, 401, 401, 429]
    assert prober.get("/healthz").status_code == 200


def test_healthz_ignores_credentials_it_is_sent() -> None:
    """A probe that carries a stale cookie or a wrong key is neither audited nor counted: the health
    answer is about the process, and must not depend on (or write) any credential."""
    stale = Client(REMOTE_ADDR=ADDRESS)
    stale.cookies[session_cookie_name()] = keys.new_token()
    assert stale.get("/healthz").status_code == 200
    wrong = Client(REMOTE_ADDR=ADDRESS, HTTP_AUTHORIZATION=f"Bearer 1-{'x' * 64}")
    assert wrong.get("/healthz").status_code == 200
    assert not AuditRecord.objects.exists()


def test_healthz_is_not_redirected_to_https(settings: Any) -> None:
    """A plain-HTTP probe gets its answer even where the app redirects HTTP to HTTPS."""
    settings.SECURE_SSL_REDIRECT = True
    assert Client().get("/healthz").status_code == 200
    assert Client().get("/sign-in/").status_code == 301  # the rest is redirected
