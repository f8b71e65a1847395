"""D10: a worker killed (``kill -9``) between "state changed" and "audit written" leaves both or neither
(security.md group D; ASVS 5.0 V2.3.3).

Two gunicorn instances run with the fault-injection hook of `sessions_app.audit.audit_record`
(``SESSIONS_FAULT_INJECT``): one kills its worker just before the audit record is written (after the
change), the other just after it is written (before the commit). A third, normal instance prepares
every operation and checks the outcome after the master has restarted the killed worker. A killed
operation must leave the database exactly as it was: every table of the app, the users and the TOTP
devices are compared row by row (``last_seen_at`` / ``last_login`` bookkeeping excepted).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import connection

from sessions_app.models import ApiKey, AuditEvent, AuditRecord, EndReason, Token, UserSession
from sessions_app.services.users import onetime_password_issue
from tests.conftest import PASSWORD
from tests.reliability.helpers_late import (
    Instance,
    call_killed,
    create_user,
    gunicorn,
    leak_guard,  # noqa: F401 - fixture
    log_problems,
    login,
    me,
    refused,
    secret,
    wait_until,
)

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("leak_guard"),
]

FAULTS = ("before_audit", "after_audit")
#: Bookkeeping columns written without an audit record by design (coalesced "last seen" times).
UNAUDITED = {"last_seen_at", "last_login"}
KILLED = r"Worker \(pid:\d+\) was sent SIGKILL|WORKER TIMEOUT|Perhaps out of memory"


@pytest.fixture(scope="module")
def servers(django_db_setup: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Instance]]:
    tmp = tmp_path_factory.mktemp("d10")
    with (
        gunicorn(tmp, name="normal") as (normal,),
        gunicorn(tmp, name="before", workers=2, SESSIONS_FAULT_INJECT="before_audit") as (before,),
        gunicorn(tmp, name="after", workers=2, SESSIONS_FAULT_INJECT="after_audit") as (after,),
    ):
        yield {"normal": normal, "before_audit": before, "after_audit": after}


def database_state() -> dict[str, tuple[int, str]]:
    """Row count and digest of every table an audited operation can change."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    models = [*apps.get_app_config("sessions_app").get_models(), get_user_model(), TOTPDevice]
    state = {}
    for model in models:
        columns = [f.column for f in model._meta.concrete_fields if f.column not in UNAUDITED]
        quoted = ", ".join(connection.ops.quote_name(c) for c in columns)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {quoted} FROM {connection.ops.quote_name(model._meta.db_table)} ORDER BY 1"
            )
            rows = cursor.fetchall()
        state[model._meta.label] = (len(rows), hashlib.sha256(repr(rows).encode()).hexdigest())
    return state


def changed(before: dict[str, tuple[int, str]], after: dict[str, tuple[int, str]]) -> list[str]:
    return [
        f"{name}: {before[name][0]} -> {after[name][0]} rows"
        for name in before
        if before[name] != after[name]
    ]


@pytest.fixture
def world(servers: dict[str, Instance]) -> dict[str, Any]:
    """Users and the sessions and keys the operations act on, made through the normal instance."""
    normal = servers["normal"]
    create_user("admin", superuser=True)
    create_user("alice")
    admin = login(normal, "admin")
    alice = login(normal, "alice")
    key = normal.call("api_key.create", {"name": "alice-key"}, cookie=alice).result
    secret(key["key"])
    key_login = normal.call(
        "auth.login_ex", {"mechanism": "API_KEY_PLAIN", "username": "alice", "api_key": key["key"]}
    )
    key_session = secret(key_login.cookies["__Host-sid"])
    alice_id = UserSession.objects.get(username="alice", credentials="LOGIN_PASSWORD").public_id
    return {
        "admin": admin,
        "alice": alice,
        "alice_id": alice_id,
        "key": key,
        "key_session": key_session,
    }


# Each operation: (method, params) built from the world; every one changes state and writes one audit
# record in the same transaction when it is not killed.
OPERATIONS: dict[str, Callable[[dict[str, Any]], tuple[str, list[Any], str | None]]] = {
    "password login": lambda w: (
        "auth.login_ex",
        [{"mechanism": "PASSWORD_PLAIN", "username": "alice", "password": PASSWORD}],
        None,
    ),
    "terminate": lambda w: ("auth.terminate_session", [w["alice_id"]], w["admin"]),
    "logout": lambda w: ("auth.logout", [], w["alice"]),
    "api key create": lambda w: ("api_key.create", [{"name": "new-key"}], w["alice"]),
    "api key delete (ends its sessions)": lambda w: ("api_key.delete", [w["key"]["id"]], w["alice"]),
    "generate token": lambda w: ("auth.generate_token", [], w["alice"]),
    "set password (ends other sessions)": lambda w: (
        "auth.set_password",
        [{"old_password": PASSWORD, "new_password": secret("Fresh-pass-7351-x")}],
        w["alice"],
    ),
}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_D10_kill_between_change_and_audit(
    servers: dict[str, Instance], world: dict[str, Any], fault: str, operation: str
) -> None:
    faulty, normal = servers[fault], servers["normal"]
    method, params, cookie = OPERATIONS[operation](world)
    audits_before = AuditRecord.objects.count()
    before = database_state()

    assert call_killed(faulty, method, *params, cookie=cookie)

    assert changed(before, database_state()) == [], f"{operation} killed at {fault}: half-applied"
    assert AuditRecord.objects.count() == audits_before
    # The restarted service still sees the old state: the sessions work, the key works.
    assert me(normal, world["alice"]).result["pw_name"] == "alice"
    assert me(normal, world["key_session"]).result["pw_name"] == "alice"
    bearer = normal.call("auth.me", headers={"Authorization": f"Bearer {world['key']['key']}"})
    assert bearer.result["pw_name"] == "alice"
    assert not log_problems([normal])
    assert not log_problems([faulty], allow=[KILLED])


def test_D10_unkilled_change_and_its_audit_commit_together(
    servers: dict[str, Instance], world: dict[str, Any]
) -> None:
    """The control: through the normal instance the same change commits with exactly one record."""
    normal = servers["normal"]
    records = AuditRecord.objects.count()
    assert normal.call("auth.terminate_session", world["alice_id"], cookie=world["admin"]).result is True
    ended = UserSession.objects.get(public_id=world["alice_id"])
    assert ended.end_reason == EndReason.TERMINATED
    added = list(AuditRecord.objects.order_by("id")[records:])
    ends = [r for r in added if r.event_data.get("target") == world["alice_id"]]
    assert [(r.event, r.event_data["end_reason"]) for r in ends] == [(AuditEvent.METHOD_CALL, "TERMINATED")]
    # Besides it, only the record of the role-protected call itself.
    assert [r.event_data.get("method") for r in added if r not in ends] == ["auth.terminate_session"]
    assert refused(me(normal, world["alice"]))


def test_D10_killed_workers_are_replaced(servers: dict[str, Instance], world: dict[str, Any]) -> None:
    """After a kill the master starts a new worker and the instance keeps answering."""
    faulty = servers["before_audit"]
    workers = faulty.worker_pids()
    assert call_killed(faulty, "auth.logout", cookie=world["alice"])

    def replaced() -> bool:
        pids = faulty.worker_pids()
        return len(pids) == faulty.workers and pids != workers

    wait_until(replaced, timeout=20, what="a new worker")
    assert faulty.call("core.ping").status == 200
    assert "SIGKILL" in Path(faulty.log).read_text(errors="replace")
    assert not log_problems([faulty], allow=[KILLED])


# A credential consumed outside the transaction that records its use: killed in between, the
# credential is gone (or marked used) and nothing says so. See the proposed patches in the report:
# consume the single-use token / one-time password inside the transaction of `session_create`
# (services/login.py), and write the key's ``last_used_at`` with its audit record (middleware.py).
CONSUMING = {
    "single-use token login": "token",
    "one-time password login": "otpw",
    "API key Bearer use (last_used_at)": "bearer",
}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("operation", list(CONSUMING))
def test_D10_kill_between_consuming_a_credential_and_audit(
    servers: dict[str, Instance], world: dict[str, Any], fault: str, operation: str
) -> None:
    faulty, normal = servers[fault], servers["normal"]
    kind = CONSUMING[operation]
    if kind == "token":
        token = secret(normal.call("auth.generate_token", 600, {}, True, True, cookie=world["alice"]).result)
        assert Token.objects.filter(single_use=True).count() == 1
        method, params, headers = "auth.login_ex", [{"mechanism": "TOKEN_PLAIN", "token": token}], None
    elif kind == "otpw":
        password = secret(
            onetime_password_issue(user=get_user_model().objects.get(username="alice"), actor="admin")
        )
        method = "auth.login_ex"
        params = [{"mechanism": "PASSWORD_PLAIN", "username": "alice", "password": password}]
        headers = None
    else:
        # Never used per request yet: the next use writes last_used_at (at most once a minute).
        ApiKey.objects.filter(pk=world["key"]["id"]).update(last_used_at=None)
        method, params, headers = "auth.me", [], {"Authorization": f"Bearer {world['key']['key']}"}
    before = database_state()

    assert call_killed(faulty, method, *params, headers=headers)

    assert changed(before, database_state()) == [], f"{operation} killed at {fault}: half-applied"
