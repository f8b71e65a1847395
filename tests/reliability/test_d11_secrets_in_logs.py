"""D11: secrets in logs -- no password, OTP code, API key, token or session secret in the audit table,
the app's logs or gunicorn's logs; a misspelled secret field (``passwrod``) never reaches audit data;
audit records do not leak into the general logs (security.md group D; TrueNAS
``test_typo_in_secret_credential_name`` / ``test_check_syslog_leak``; ASVS 5.0 V16.2.5; OWASP MFA
cheat sheet "SHOULD NOT log OTP values").

The workload runs through a gunicorn started the way ``bin/serve`` starts it (gunicorn's default
access-log format) with the app logging at DEBUG, and covers every pathway that carries a secret:
password, wrong password, misspelled fields, password + TOTP (wrong and right codes), one-time
password, API key (Bearer, login, wrong, reset, delete), token, Basic, password change, a malformed
body and a value the database refuses. Every secret is registered (`helpers_late.secret`): the leak
guard of every D10–D17 test also greps the audit table and every log file of the run for all of them.
"""

from __future__ import annotations

import base64
import secrets as random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app.audit import MASK, audit_record
from sessions_app.models import AuditEvent, AuditRecord
from sessions_app.services.users import onetime_password_issue
from tests.conftest import PASSWORD
from tests.integration.servers import COOKIE, PENDING
from tests.reliability.helpers_late import (
    LEAKS,
    Instance,
    create_user,
    find_leaks,
    gunicorn,
    leak_guard,  # noqa: F401 - fixture
    log_problems,
    login,
    me,
    secret,
)

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("leak_guard"),
]

#: Misspellings of secret field names (and their right spellings) that audit data must mask.
MISSPELLED = [
    "passwrod",
    "pasword",
    "passowrd",
    "Password",
    "new_pasword",
    "api_kye",
    "apiKey",
    "otp_tokn",
    "secert",
    "tokn",
]
#: Keys the app itself writes into audit data: never masked (an audit record must stay useful).
AUDIT_KEYS = [
    "method",
    "error",
    "mechanism",
    "credentials",
    "end_reason",
    "target",
    "target_username",
    "note",
    "reason",
    "parent",
    "selection",
    "api_key_ref",
    "fields",
    "username",
]


@pytest.fixture(scope="module")
def server(django_db_setup: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    tmp = tmp_path_factory.mktemp("d11")
    with gunicorn(tmp, name="d11", DJANGO_LOG_LEVEL="DEBUG") as (started,):
        yield started


def totp_code(device: TOTPDevice, offset: int = 0) -> str:
    """The device's code at the real clock (the servers' clock is not frozen)."""
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() + offset * device.step
    return f"{totp.token():0{device.digits}d}"


def wrong_code(device: TOTPDevice) -> str:
    valid = {totp_code(device, offset) for offset in range(-2, 3)}
    return next(c for c in (f"{random.randbelow(900_000) + 100_000}" for _ in range(100)) if c not in valid)


def login_ex(server: Instance, **params: Any) -> Any:
    return server.call("auth.login_ex", {"mechanism": "PASSWORD_PLAIN", **params})


def run_workload(server: Instance) -> dict[str, int]:
    """Every pathway that carries a secret, right and wrong; returns how many calls of each kind."""
    create_user("alice")
    create_user("admin", superuser=True)
    olga = create_user("olga")
    device = TOTPDevice.objects.create(
        user=olga, name="phone", key=random.token_hex(20), confirmed=True, tolerance=1
    )
    secret(device.key)  # the sealed column value (security.md F6) ...
    secret(device.bin_key.hex())  # ... and the seed itself
    done: dict[str, int] = {}

    # Passwords: right, wrong, unknown user, misspelled fields, legacy auth.login.
    alice = login(server, "alice")
    wrong = secret(f"wrong-{random.token_hex(8)}")
    assert login_ex(server, username="alice", password=wrong).result["response_type"] == "AUTH_ERR"
    assert login_ex(server, username="nobody", password=wrong).result["response_type"] == "AUTH_ERR"
    typo = secret(f"typo-{random.token_hex(8)}")
    assert login_ex(server, username="alice", passwrod=typo).error["code"] == -32602
    assert login_ex(server, username="alice", password=PASSWORD, passwrod=typo).error["code"] == -32602
    assert server.call("auth.login", "alice", typo).result is False
    done["password"] = 6

    # Password + TOTP: a wrong code, then the right one (the pending step's cookie is a secret too).
    first = login_ex(server, username="olga", password=PASSWORD)
    assert first.result["response_type"] == "OTP_REQUIRED"
    pending = {"Cookie": f"{PENDING}={secret(first.cookies[PENDING])}"}
    bad = secret(wrong_code(device))
    otp = {"mechanism": "OTP_TOKEN"}
    assert server.call("auth.login_ex_continue", {**otp, "otp_token": bad}, headers=pending).result == {
        "response_type": "AUTH_ERR"
    }
    # A fresh password step, then the current code (after django-otp's back-off of the wrong one).
    TOTPDevice.objects.filter(pk=device.pk).update(
        throttling_failure_count=0, throttling_failure_timestamp=None
    )
    first = login_ex(server, username="olga", password=PASSWORD)
    pending = {"Cookie": f"{PENDING}={secret(first.cookies[PENDING])}"}
    good = secret(totp_code(device))
    answer = server.call("auth.login_ex_continue", {**otp, "otp_token": good}, headers=pending)
    assert answer.result["response_type"] == "SUCCESS", answer.payload
    secret(answer.cookies[COOKIE])
    done["totp"] = 4

    # A one-time password issued by an administrator, used once, then replaced by a new password.
    user = get_user_model().objects.get(username="alice")
    onetime = secret(onetime_password_issue(user=user, actor="admin"))
    otpw = login(server, "alice", onetime)
    new_password = secret(f"Changed-{random.token_hex(6)}-pw")
    assert server.call("auth.set_password", {"new_password": new_password}, cookie=otpw).result is True
    wrong_old = secret(f"old-{random.token_hex(8)}")
    again = login(server, "alice", new_password)
    assert (
        server.call(
            "auth.set_password",
            {"old_password": wrong_old, "new_password": secret(f"Other-{random.token_hex(6)}-pw")},
            cookie=again,
        ).error["code"]
        == -32602
    )
    done["onetime password"] = 4

    # API keys: create, per-request Bearer, login with it, a wrong one, reset, delete.
    alice = again
    created = server.call("api_key.create", {"name": "deploy"}, cookie=alice).result
    key = secret(created["key"])
    secret(key.partition("-")[2])
    assert server.call("auth.me", headers={"Authorization": f"Bearer {key}"}).result["pw_name"] == "alice"
    key_login = server.call(
        "auth.login_ex", {"mechanism": "API_KEY_PLAIN", "username": "alice", "api_key": key}
    )
    assert key_login.result["response_type"] == "SUCCESS"
    secret(key_login.cookies[COOKIE])
    forged = secret(f"{created['id']}-{random.token_urlsafe(48)}")
    assert (
        server.call(
            "auth.login_ex", {"mechanism": "API_KEY_PLAIN", "username": "alice", "api_key": forged}
        ).result["response_type"]
        == "AUTH_ERR"
    )
    assert server.call("auth.me", headers={"Authorization": f"Bearer {forged}"}).payload.get("error")
    reset = server.call("api_key.update", created["id"], {"reset": True}, cookie=alice).result
    secret(reset["key"])
    assert server.call("api_key.delete", created["id"], cookie=alice).result is True
    done["api key"] = 7

    # Tokens: generate, log in with it, an unknown one.
    token = secret(server.call("auth.generate_token", cookie=alice).result)
    token_login = server.call("auth.login_ex", {"mechanism": "TOKEN_PLAIN", "token": token})
    assert token_login.result["response_type"] == "SUCCESS"
    secret(token_login.cookies[COOKIE])
    unknown = secret(random.token_urlsafe(48))
    assert server.call("auth.login_ex", {"mechanism": "TOKEN_PLAIN", "token": unknown}).result == {
        "response_type": "AUTH_ERR"
    }
    done["token"] = 3

    # Basic (per request): right and wrong; the header value itself is a secret.
    good_basic = secret(base64.b64encode(f"admin:{PASSWORD}".encode()).decode())
    bad_basic = secret(base64.b64encode(f"admin:{wrong}".encode()).decode())
    assert (
        server.call("auth.me", headers={"Authorization": f"Basic {good_basic}"}).result["pw_name"] == "admin"
    )
    assert server.call("auth.me", headers={"Authorization": f"Basic {bad_basic}"}).payload.get("error")
    done["basic"] = 2

    # Secrets in requests the service refuses: a cut-off body, a NUL the database refuses, an unknown
    # session cookie.
    cut = secret(f"cut-{random.token_hex(8)}")
    body = '{"jsonrpc": "2.0", "id": 1, "method": "auth.login_ex", "params": [{"password": "' + cut
    connection_ = server.connect()
    try:
        connection_.request("POST", "/api/current", body, {"Content-Type": "application/json"})
        assert connection_.getresponse().status == 400
    finally:
        connection_.close()
    nul = secret(f"nul-{random.token_hex(8)}")
    assert login_ex(server, username="eve\x00", password=nul).status < 500
    forged_cookie = secret(random.token_urlsafe(48))
    assert me(server, forged_cookie).payload.get("error")
    done["refused"] = 3
    return done


def test_D11_no_secret_in_audit_table_or_logs(
    server: Instance, tmp_path_factory: pytest.TempPathFactory
) -> None:
    done = run_workload(server)

    records = list(AuditRecord.objects.all())
    failures = [r for r in records if r.event == AuditEvent.AUTHENTICATION and not r.success]
    successes = [r for r in records if r.event == AuditEvent.AUTHENTICATION and r.success]
    # The workload was audited (the grep below is not vacuous).
    assert len(failures) >= 6, [r.event_data for r in failures]
    assert len(successes) >= 6, [r.event_data for r in successes]
    assert server.log.stat().st_size > 0
    assert server.access_log is not None
    assert server.access_log.stat().st_size > 0
    # Every registered secret, grepped in the audit table and every log file of this run so far:
    # the servers of every test (reliability and others) write theirs under the run's base temp dir.
    everything = list(tmp_path_factory.getbasetemp().rglob("*.log"))
    assert find_leaks(extra_logs=everything) == []
    assert not log_problems([server])
    print(
        f"\nD11: {sum(done.values())} calls, {len(LEAKS.secrets) + len(LEAKS.numbers)} secrets, {len(everything)} logs"
    )


def test_D11_audit_records_do_not_leak_into_general_logs(server: Instance) -> None:
    """Audit records live in the audit table only: none of their ids or contents is logged."""
    run_workload(server)
    logs = server.log.read_text(errors="replace") + (server.access_log or Path("/dev/null")).read_text()
    ids = list(AuditRecord.objects.values_list("audit_id", flat=True))
    assert ids
    assert [i for i in ids if i in logs] == []
    assert "event_data" not in logs
    assert "AUTHENTICATION" not in logs


def test_D11_misspelled_secret_fields_are_masked_in_audit_data() -> None:
    """Whatever a caller passes as audit data, values under secret-looking names are masked,
    misspellings, nested objects and lists included; the app's own keys are kept."""
    values = {name: secret(f"{name}-{random.token_hex(6)}") for name in MISSPELLED}
    record = audit_record(
        event=AuditEvent.METHOD_CALL,
        success=False,
        event_data={
            "params": [{**values, "list": {"password": [values["passwrod"], "x" * 8]}}],
            **{key: f"value of {key}" for key in AUDIT_KEYS},
            "token_id": 7,
        },
    )
    stored = AuditRecord.objects.get(pk=record.pk).event_data
    assert stored["params"][0] == {**dict.fromkeys(MISSPELLED, MASK), "list": {"password": [MASK, MASK]}}
    assert {key: stored[key] for key in AUDIT_KEYS} == {key: f"value of {key}" for key in AUDIT_KEYS}
    assert stored["token_id"] == 7
