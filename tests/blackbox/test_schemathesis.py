"""Schemathesis against the live OpenAPI schema of a running server (``GET /api/v2.0/schema/``).

Every operation is fuzzed with generated inputs, three ways: anonymously, with ``Authorization:
Bearer <API key>`` of a superuser, and with the superuser's session cookie plus its CSRF token
(positive inputs everywhere; negative ones where they can reach the code: every operation with the
key, the unsafe ones with the cookie, the open POST endpoints anonymously). Checks: no 5xx, and
every answer documented: status code, content type, headers and body schema.

Bounded and reproducible for CI: `EXAMPLES` cases per operation and mode, derandomized Hypothesis,
no example database. Operations that end the caller's credential (logout, terminate others, key
reset/delete) do not starve the rest: a fresh credential is made in this process before any case
whose credential is gone.

Each operation is driven by ``APIOperation.as_strategy`` under ``hypothesis.given`` rather than
``schemathesis.pytest.from_fixture``, whose lazy runner reads ``Node._nodeid`` (gone in pytest 9.2).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.blackbox.conftest import API, COOKIE, CSRF_COOKIE, seed_session
from tests.integration.servers import Server

pytestmark = pytest.mark.django_db(transaction=True)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = 12
SEED = 20261101
BOUNDED = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


class Credentials:
    """A superuser's API key and cookie session, remade whenever a case has ended them."""

    def __init__(self, user: Any) -> None:
        self.user = user
        self.key_id: int | None = None
        self.key_hash = ""
        self.key = ""
        self.session_secret = ""
        self.csrf = secrets.token_hex(16)  # a CSRF secret (32 characters) sent as cookie and header

    def bearer(self) -> dict[str, str]:
        from django.utils import timezone

        from sessions_app.models import ApiKey
        from sessions_app.services.api_keys import api_key_create

        valid = (
            ApiKey.objects.filter(pk=self.key_id, key_hash=self.key_hash, revoked=False)
            .exclude(expires_at__lte=timezone.now())
            .exists()
        )
        if not valid:
            key, self.key = api_key_create(user=self.user, name=f"fuzz-{secrets.token_hex(8)}")
            self.key_id, self.key_hash = key.pk, key.key_hash
        return {"Authorization": f"Bearer {self.key}"}

    def cookie(self) -> dict[str, str]:
        from sessions_app.auth import keys
        from sessions_app.models import UserSession

        valid = UserSession.objects.filter(
            secret_hash=keys.hash_secret(self.session_secret) if self.session_secret else "",
            ended_at__isnull=True,
        ).exists()
        if not valid:
            self.session_secret = seed_session(self.user)
        return {
            "Cookie": f"{COOKIE}={self.session_secret}; {CSRF_COOKIE}={self.csrf}",
            "X-CSRFToken": self.csrf,
        }


@pytest.fixture
def live_schema(server: Server) -> Any:
    """The schema as the running server serves it (what generated clients and fuzzers read)."""
    base = f"http://{server.bind}"
    config = schemathesis.Config.from_dict(
        {"base-url": base, "seed": SEED, "generation": {"with-security-parameters": False}}
    )
    return schemathesis.openapi.from_url(
        f"{base}{API}/schema/", config=config, headers={"Accept": "application/vnd.oai.openapi+json"}
    )


@pytest.fixture
def credentials(user: Callable[..., Any]) -> Credentials:
    return Credentials(user("fuzzer", superuser=True))


def _short(text: str, limit: int = 3000) -> str:
    """A failure report without its kilobytes of generated URL."""
    text = re.sub(r"(%[0-9A-F]{2}|[^\s'\"]){200,}", lambda m: m.group(0)[:120] + "…", text)
    return text if len(text) <= limit else text[:limit] + "…"


def _bounded_test(
    operation: Any, mode: GenerationMode, headers: Callable[[], dict[str, str]], seen: set[int]
) -> Callable[[], None]:
    @BOUNDED
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        seen.add(case.call_and_validate(headers=headers(), checks=CHECKS).status_code)

    return run


def fuzz(
    schema: Any, headers: Callable[[], dict[str, str]], negative: Callable[[Any], bool] = lambda op: True
) -> None:
    """Every operation with positive inputs, and with negative ones where ``negative(operation)``;
    `EXAMPLES` cases each. All failures are reported together at the end; returns the statuses
    each operation answered."""
    failures: list[str] = []
    statuses: dict[str, set[int]] = {}
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if negative(operation) else [])
        for mode in modes:
            try:
                _bounded_test(operation, mode, headers, statuses.setdefault(operation.label, set()))()
            except Unsatisfiable:
                if mode is GenerationMode.POSITIVE:  # a valid request must always be possible
                    failures.append(f"{operation.label} (positive): no valid request could be generated")
                continue  # negative mode: nothing to make invalid (no parameters, no body)
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - reported together below
                failures.append(f"{operation.label} ({mode.value}): {_short(str(exc))}")
    assert operations == 22, operations
    assert not failures, "\n\n".join(failures)
    return statuses


def test_anonymous(live_schema: Any) -> None:
    """Anonymous callers: the open endpoints answer, the others 401 whatever the input."""
    statuses = fuzz(live_schema, dict, negative=lambda operation: operation.method.upper() == "POST")
    assert statuses[f"GET {API}/auth/me"] == {401}
    assert statuses[f"GET {API}/auth/csrf"] == {200}


def test_bearer_api_key(live_schema: Any, credentials: Credentials) -> None:
    """A superuser's API key: every operation, valid and invalid inputs."""
    statuses = fuzz(live_schema, credentials.bearer)
    assert statuses[f"GET {API}/auth/me"] == {200}  # the key was accepted throughout
    assert 201 in statuses[f"POST {API}/api_key/"]


def test_session_cookie(live_schema: Any, credentials: Credentials) -> None:
    """A superuser's session (cookie + CSRF token): what only a session can do (tokens, logout,
    terminate others, current session); invalid inputs on the unsafe methods (CSRF, session checks)."""
    statuses = fuzz(
        live_schema, credentials.cookie, negative=lambda operation: operation.method.upper() != "GET"
    )
    assert statuses[f"GET {API}/auth/me"] == {200}  # the session was accepted throughout
    assert 201 in statuses[f"POST {API}/api_key/"]  # CSRF passed
    assert 200 in statuses[f"POST {API}/auth/generate_token"]  # only a session can
    assert 204 in statuses[f"POST {API}/auth/logout"]
