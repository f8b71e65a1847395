"""D16: multi-worker revocation -- a session terminated (or logged out, or whose key is deleted, or
whose user changes password) through one worker of one gunicorn instance is refused by every other
worker of both instances from the very next request: nothing is cached per process (security.md group
D; ASVS 5.0 V8.3.2; §4 "revocation latency").

Two instances of two workers each, both ways of serving (sync WSGI workers, and ``bin/serve``'s
uvicorn workers). Which worker answered each request is read from /proc (the worker holding the
server side of the connection), so "the other worker" is checked, not assumed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from sessions_app.models import UserSession
from tests.conftest import PASSWORD
from tests.integration.servers import COOKIE
from tests.reliability.helpers_late import (
    Instance,
    create_user,
    gunicorn,
    leak_guard,  # noqa: F401 - fixture
    log_problems,
    login,
    record_figures,
    refused,
    secret,
    spread,
)

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("leak_guard"),
]


@pytest.fixture(scope="module", params=["sync", "asgi"])
def instances(
    request: pytest.FixtureRequest, django_db_setup: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Instance]]:
    served = request.param
    tmp = tmp_path_factory.mktemp(f"d16-{served}")
    with gunicorn(tmp, name=f"d16-{served}", instances=2, workers=2, asgi=served == "asgi") as started:
        yield started


def everywhere(instances: list[Instance], **call: Any) -> list[tuple[int, Any]]:
    """``auth.me`` (with ``call``'s cookie or headers) until every worker of every instance answered."""
    answers = []
    for instance in instances:
        answers += spread(instance, lambda s: s.via_worker("auth.me", **call))
    return answers


def rest_me_status(instance: Instance, cookie: str) -> int:
    connection_ = instance.connect()
    try:
        connection_.request("GET", "/api/v2.0/auth/me", headers={"Cookie": f"{COOKIE}={cookie}"})
        response = connection_.getresponse()
        response.read()
        return response.status
    finally:
        connection_.close()


def test_D16_terminated_on_one_worker_is_refused_by_every_other(instances: list[Instance]) -> None:
    first, second = instances
    create_user("alice")
    create_user("admin", superuser=True)
    alice, admin = login(first, "alice"), login(first, "admin")
    # Every worker of both instances has served alice's session (a per-process cache would hold it now).
    assert {reply.result["pw_name"] for _, reply in everywhere(instances, cookie=alice)} == {"alice"}
    assert rest_me_status(second, alice) == 200
    target = UserSession.objects.get(username="alice").public_id

    terminator, reply = first.via_worker("auth.terminate_session", target, cookie=admin)
    assert reply.result is True
    ended = time.perf_counter()
    _, next_reply = second.via_worker("auth.me", cookie=alice)
    latency_ms = (time.perf_counter() - ended) * 1000
    assert refused(next_reply)

    answers = everywhere(instances, cookie=alice)
    assert all(refused(reply) for _, reply in answers)
    others_on_first = {pid for pid, _ in answers if pid in first.worker_pids() and pid != terminator}
    assert others_on_first, "no request reached the other worker of the terminating instance"
    assert rest_me_status(second, alice) == 401
    assert rest_me_status(first, alice) == 401
    # The administrator's own session is untouched everywhere.
    assert {reply.result["pw_name"] for _, reply in everywhere(instances, cookie=admin)} == {"admin"}
    record_figures("D16", revocation_to_first_refusal_ms=round(latency_ms, 1), requests_checked=len(answers))
    assert not log_problems(instances)


def test_D16_logout_key_deletion_and_password_change_seen_by_every_worker(instances: list[Instance]) -> None:
    first, second = instances
    for name in ("bob", "carol", "dave"):
        create_user(name)

    # Logout through the second instance.
    bob = login(second, "bob")
    assert {reply.result["pw_name"] for _, reply in everywhere(instances, cookie=bob)} == {"bob"}
    assert second.via_worker("auth.logout", cookie=bob)[1].result is True
    assert all(refused(reply) for _, reply in everywhere(instances, cookie=bob))

    # An API key deleted through the first instance: Bearer use and its API_KEY session, everywhere.
    carol = login(first, "carol")
    key = secret(first.call("api_key.create", {"name": "deploy"}, cookie=carol).result["key"])
    bearer = {"Authorization": f"Bearer {key}"}
    key_login = second.call(
        "auth.login_ex", {"mechanism": "API_KEY_PLAIN", "username": "carol", "api_key": key}
    )
    key_session = secret(key_login.cookies[COOKIE])
    assert {reply.result["pw_name"] for _, reply in everywhere(instances, headers=bearer)} == {"carol"}
    assert {reply.result["pw_name"] for _, reply in everywhere(instances, cookie=key_session)} == {"carol"}
    key_id = int(key.partition("-")[0])
    assert first.via_worker("api_key.delete", key_id, cookie=carol)[1].result is True
    assert all(refused(reply) for _, reply in everywhere(instances, headers=bearer))
    assert all(refused(reply) for _, reply in everywhere(instances, cookie=key_session))
    assert {reply.result["pw_name"] for _, reply in everywhere(instances, cookie=carol)} == {"carol"}

    # A password change through one worker ends the user's other sessions on every worker.
    dave_here, dave_there = login(first, "dave"), login(second, "dave")
    new_password = secret("Renewed-pass-2931-q")
    change = second.via_worker(
        "auth.set_password",
        {"old_password": PASSWORD, "new_password": new_password},
        cookie=dave_there,
    )[1]
    assert change.result is True
    assert all(refused(reply) for _, reply in everywhere(instances, cookie=dave_here))
    assert not log_problems(instances)
