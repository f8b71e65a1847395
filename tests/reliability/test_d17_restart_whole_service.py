"""D17: restart the whole service -- persisted sessions and API keys survive; ended sessions, revoked
and deleted keys stay so; tokens follow the documented policy (security.md group D; TrueNAS
session.rst "Tokens do not persist across middlewared restarts").

The project's policy differs from TrueNAS on purpose (docs/security.md; the specification's auth-sessions §4: "Tokens are stored
hashed, in the database"): nothing lives only in memory, so a token outlives a restart until its own
expiry, a single-use token still works exactly once, and a used one stays used. The service runs as
``bin/serve`` runs it (uvicorn workers) and is restarted twice: stopped cleanly (SIGTERM to the master),
then killed outright (``kill -9`` of the master and every worker, as a crash or an OOM kill would).
"""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from sessions_app.models import ApiKey, UserSession
from tests.integration.servers import COOKIE
from tests.reliability.helpers_late import (
    Instance,
    crash_and_start,
    create_user,
    gunicorn,
    leak_guard,  # noqa: F401 - fixture
    log_problems,
    login,
    me,
    refused,
    restart,
    secret,
)

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("leak_guard"),
]


def api_key_login(server: Instance, username: str, key: str) -> Any:
    return server.call("auth.login_ex", {"mechanism": "API_KEY_PLAIN", "username": username, "api_key": key})


def token_login(server: Instance, token: str) -> Any:
    return server.call("auth.login_ex", {"mechanism": "TOKEN_PLAIN", "token": token})


def prepare(server: Instance) -> dict[str, Any]:
    for name in ("alice", "bob", "carol"):
        create_user(name)
    create_user("admin", superuser=True)
    state: dict[str, Any] = {name: login(server, name) for name in ("alice", "bob", "carol", "admin")}
    bob_id = UserSession.objects.get(username="bob").public_id
    assert server.call("auth.terminate_session", bob_id, cookie=state["admin"]).result is True
    keys = {}
    for name in ("kept", "revoked", "deleted"):
        created = server.call("api_key.create", {"name": name}, cookie=state["carol"]).result
        keys[name] = (created["id"], secret(created["key"]))
    call_command("api_key", "revoke", str(keys["revoked"][0]), "--reason", "compromised", stdout=StringIO())
    assert server.call("api_key.delete", keys["deleted"][0], cookie=state["carol"]).result is True
    key_login = api_key_login(server, "carol", keys["kept"][1])
    state["key session"] = secret(key_login.cookies[COOKIE])
    state["keys"] = {name: key for name, (_, key) in keys.items()}
    alice = state["alice"]
    state["multi-use token"] = secret(
        server.call("auth.generate_token", 600, {}, True, False, cookie=alice).result
    )
    state["single-use token"] = secret(
        server.call("auth.generate_token", 600, {}, True, True, cookie=alice).result
    )
    used = secret(server.call("auth.generate_token", 600, {}, True, True, cookie=alice).result)
    used_login = token_login(server, used)
    assert used_login.result["response_type"] == "SUCCESS"
    state["used token"] = used
    state["token session"] = secret(used_login.cookies[COOKIE])
    return state


def check_persisted(server: Instance, state: dict[str, Any], *, tokens_unused: bool) -> None:
    # Sessions of every kind survive.
    for name in ("alice", "carol", "admin"):
        assert me(server, state[name]).result["pw_name"] == name
    assert me(server, state["key session"]).result["pw_name"] == "carol"
    assert me(server, state["token session"]).result["pw_name"] == "alice"
    # Ended stays ended, with its history.
    assert refused(me(server, state["bob"]))
    history = server.call(
        "auth.sessions",
        [["credentials_data.username", "=", "bob"]],
        {"extra": {"history": True}},
        cookie=state["admin"],
    ).result
    assert [(row["end_reason"], row["ended_by"]) for row in history] == [("TERMINATED", "admin")]
    # Keys: the kept one works, the revoked and the deleted ones do not.
    bearer = {"Authorization": f"Bearer {state['keys']['kept']}"}
    assert server.call("auth.me", headers=bearer).result["pw_name"] == "carol"
    for name in ("revoked", "deleted"):
        assert refused(server.call("auth.me", headers={"Authorization": f"Bearer {state['keys'][name]}"}))
        assert api_key_login(server, "carol", state["keys"][name]).result["response_type"] == "AUTH_ERR"
    assert ApiKey.objects.get(name="revoked").revoked
    # Tokens: stored hashed in the database, so they outlive a restart (the project's documented
    # policy); a used single-use token stays used.
    assert token_login(server, state["used token"]).result["response_type"] == "AUTH_ERR"
    multi = token_login(server, state["multi-use token"])
    assert multi.result["response_type"] == "SUCCESS"
    secret(multi.cookies[COOKIE])
    if tokens_unused:
        single = token_login(server, state["single-use token"])
        assert single.result["response_type"] == "SUCCESS"
        secret(single.cookies[COOKIE])
    assert token_login(server, state["single-use token"]).result["response_type"] == "AUTH_ERR"


def test_D17_restart_keeps_sessions_keys_and_revocations(tmp_path: Any) -> None:
    with gunicorn(tmp_path, name="d17", workers=2, asgi=True) as (server,):
        state = prepare(server)
        first_master = server.master

        restart(server)
        assert server.master != first_master
        check_persisted(server, state, tokens_unused=True)

        crash_and_start(server)
        check_persisted(server, state, tokens_unused=False)
        assert not log_problems([server])
