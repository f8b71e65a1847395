"""D9: audit completeness under concurrency. Mixed operations run at once (successful and failed
logins, second-factor failures, logouts, terminations by an administrator and by the owner, API key
creation and revocation, account lockouts) -> each leaves exactly its audit records, none lost and
none doubled, each saying who, what, when (UTC) and from where (the origin), and whether it succeeded
(security.md group D; ASVS 5.0 V16.3.1–V16.3.3, V16.2.1, V16.2.2; TrueNAS ``test_audit_websocket.py``).

Every operation is sent through ``POST /api/current`` from its own client address, so each audit
record names the operation it belongs to. What each operation must leave (spec §7: every
authentication attempt, logout, termination, key change and role-protected call):

===================  =============================================================================
login               AUTHENTICATION, success, the user, the new session; plus at most one
                    NEW_SIGN_IN (the user, the session) when it came from a new network (issue 16)
failed login        AUTHENTICATION, failure, the name given
second factor       AUTHENTICATION, failure (``OTP_TOKEN``), the user
logout              LOGOUT, success, the user, the session
terminate (admin)   METHOD_CALL ``auth.terminate_session`` (role-protected call) and METHOD_CALL
                    ``session.end`` (``TERMINATED``, by the administrator, naming the session)
terminate (owner)   METHOD_CALL ``session.end`` (``TERMINATED``, by the owner)
key create/revoke   METHOD_CALL ``api_key.create`` / ``api_key.delete``, by the owner
lockout             ten failed logins of one account at once: ten failures and exactly one
                    AUTHENTICATION record with ``lockout: true``, from one of those ten clients
===================  =============================================================================

Sizes: 200 operations, or 1 000 with ``RELIABILITY_SCALE=full``; 8 threads; bounded by count and by
a deadline.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from django.utils import timezone
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp import models as totp_models
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app.auth import keys
from sessions_app.auth.clients import Client
from sessions_app.middleware import session_cookie_name
from sessions_app.models import AuditRecord, Credentials, UserSession
from sessions_app.services import totp_login as login_service
from sessions_app.services.api_keys import api_key_create
from sessions_app.services.sessions import session_create
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.reliability, pytest.mark.django_db(transaction=True)]

WORKERS = 8
LOCKOUT_THRESHOLD = 10
OTP_NOW = 1_767_225_615.0  # the servers' TOTP clock during this test: fixed, mid-step
SETUP = Client(address="127.254.0.1", port=1)  # where the sessions made before the run come from
#: Relative weights of the operations other than lockouts.
WEIGHTS = {
    "login": 20,
    "failed_login": 15,
    "otp_failure": 10,
    "logout": 15,
    "terminate": 10,
    "terminate_own": 5,
    "key_create": 10,
    "key_delete": 10,
}


@dataclass
class Op:
    index: int
    kind: str
    username: str  # who acts (the administrator for "terminate")
    target: Any = None  # session secret / session / key, by kind
    caller: str | None = None  # the cookie the operation is sent with
    started: dt.datetime | None = None
    finished: dt.datetime | None = None
    answer: Any = None
    session: str | None = None  # the public id the operation's records must name
    expected: Counter[tuple[str, bool, str, str]] = field(default_factory=Counter)

    @property
    def address(self) -> str:
        i = self.index
        return f"127.{1 + i // 62500 % 250}.{i // 250 % 250}.{i % 250 + 1}"

    @property
    def origin(self) -> str:
        return f"{self.address}:0"  # the test client sends no REMOTE_PORT


def what(record: AuditRecord) -> str:
    """What a record says happened, in a few words."""
    data = record.event_data
    if data.get("lockout"):
        return "lockout"
    if data.get("end_reason"):
        return f"end {data['end_reason']}"
    if "method" in data:
        return f"call {data['method']}"
    return f"auth {data.get('mechanism')}"


def plan(count: int, seed: int) -> tuple[list[Op], int]:
    """``count`` operations in a reproducible random order, and the number of lockout victims."""
    victims = max(1, count // 100)
    rest = count - victims * LOCKOUT_THRESHOLD
    total = sum(WEIGHTS.values())
    kinds = [kind for kind, weight in WEIGHTS.items() for _ in range(rest * weight // total)]
    kinds += ["login"] * (rest - len(kinds))
    kinds += [f"lockout {v}" for v in range(victims) for _ in range(LOCKOUT_THRESHOLD)]
    random.Random(seed).shuffle(kinds)
    return [Op(i, kind, "") for i, kind in enumerate(kinds)], victims


@pytest.fixture
def frozen_totp(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = SimpleNamespace(time=lambda: OTP_NOW)
    monkeypatch.setattr(totp_models, "time", clock)
    monkeypatch.setattr(login_service, "time", clock)


def wrong_code(device: TOTPDevice) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, 0)
    valid = set()
    for offset in range(-3, 4):
        totp.time = OTP_NOW + offset * device.step
        valid.add(f"{totp.token():06d}")
    return next(c for c in (f"{n:06d}" for n in range(100_000, 200_000)) if c not in valid)


def test_D9_every_operation_leaves_exactly_its_audit_records(
    rpc: Any, make_user: Any, threads: Any, checks: Any, scaled: Any, settings: Any, frozen_totp: None
) -> None:
    count = scaled(200, 1000)
    settings.SESSIONS_LOCKOUT_THRESHOLD = LOCKOUT_THRESHOLD
    ops, victims = plan(count, seed=count)
    users = [make_user(f"user{n:02d}") for n in range(20)]
    otp_ops = sum(op.kind == "otp_failure" for op in ops)
    # At most five second-factor failures per account: never a lockout of its own.
    otp_users = [make_user(f"otp{n:02d}") for n in range(max(1, -(-otp_ops // 5)))]
    codes = {}
    for user in otp_users:
        device = TOTPDevice.objects.create(
            user=user, name="phone", key=hashlib.sha1(user.username.encode()).hexdigest(), confirmed=True
        )
        codes[user.username] = wrong_code(device)
    admin = session_create(
        credentials=Credentials.LOGIN_PASSWORD, client=SETUP, user=make_user("admin", superuser=True)
    )
    work = {
        u.username: session_create(credentials=Credentials.LOGIN_PASSWORD, client=SETUP, user=u)
        for u in users
    }

    # What each operation acts on, made before the run (its records are not counted).
    otp_turn = 0
    for op in ops:
        user = users[op.index % len(users)]
        op.username = user.username
        if op.kind == "failed_login":
            op.username = f"ghost{op.index}"
        elif op.kind == "otp_failure":  # round robin: at most five failures per account
            op.username = otp_users[otp_turn % len(otp_users)].username
            otp_turn += 1
        elif op.kind.startswith("lockout"):
            op.username = f"victim{op.kind.split()[1]}"
        elif op.kind == "logout":
            new = session_create(credentials=Credentials.LOGIN_PASSWORD, client=SETUP, user=user)
            op.caller, op.session = new.secret, new.session.public_id
        elif op.kind in ("terminate", "terminate_own"):
            op.target = session_create(
                credentials=Credentials.LOGIN_PASSWORD, client=SETUP, user=user
            ).session
            op.session = op.target.public_id
            if op.kind == "terminate":
                op.username, op.caller = "admin", admin.secret
            else:
                op.caller = work[user.username].secret
        elif op.kind in ("key_create", "key_delete"):
            op.caller = work[user.username].secret
            if op.kind == "key_delete":
                op.target, _ = api_key_create(user=user, name=f"d9-old-{op.index}")
    for n in range(victims):
        make_user(f"victim{n}")
    watermark = AuditRecord.objects.order_by("-id").values_list("id", flat=True).first() or 0

    def run(op: Op) -> None:
        client = rpc(remote_addr=op.address)
        if op.caller:
            client.http.cookies[session_cookie_name()] = op.caller
        pw = {"mechanism": "PASSWORD_PLAIN", "username": op.username, "password": PASSWORD}
        op.started = timezone.now()
        if op.kind == "login":
            op.answer = checks.answer(client.raw("auth.login_ex", pw))
        elif op.kind == "failed_login" or op.kind.startswith("lockout"):
            op.answer = checks.answer(client.raw("auth.login_ex", {**pw, "password": f"wrong {op.index}"}))
        elif op.kind == "otp_failure":
            first = checks.answer(client.raw("auth.login_ex", pw))
            assert first.json["result"]["response_type"] == "OTP_REQUIRED", first.json
            code = {"mechanism": "OTP_TOKEN", "otp_token": codes[op.username]}
            op.answer = checks.answer(client.raw("auth.login_ex_continue", code))
        elif op.kind == "logout":
            op.answer = checks.answer(client.raw("auth.logout"))
        elif op.kind == "terminate":
            op.answer = checks.answer(client.raw("auth.terminate_session", op.session))
        elif op.kind == "terminate_own":
            op.answer = checks.answer(client.raw("auth.terminate_my_session", op.session))
        elif op.kind == "key_create":
            op.answer = checks.answer(client.raw("api_key.create", {"name": f"d9-new-{op.index}"}))
        elif op.kind == "key_delete":
            op.answer = checks.answer(client.raw("api_key.delete", op.target.pk))
        op.finished = timezone.now()
        if op.kind == "login" and op.answer.ok:
            secret = op.answer.cookies[session_cookie_name()]
            op.session = UserSession.objects.get(secret_hash=keys.hash_secret(secret)).public_id

    position = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + 120

    def worker(_: int) -> int:
        done = 0
        while time.monotonic() < deadline:  # bounded by the plan's length and by the deadline
            with lock:
                if position[0] >= len(ops):
                    break
                op = ops[position[0]]
                position[0] += 1
            run(op)
            done += 1
        return done

    assert sum(threads.run(WORKERS, worker, timeout=150)) == len(ops), "the run hit its deadline"

    # Every operation was answered as it should have been, with no 5xx.
    answers = [op.answer for op in ops]
    checks.no_undocumented_5xx(answers)
    assert all(a.status == 200 for a in answers), Counter(a.status for a in answers)
    expected_results: dict[str, Any] = {
        "login": {"response_type": "SUCCESS"},
        "failed_login": {"response_type": "AUTH_ERR"},
        "otp_failure": {"response_type": "AUTH_ERR"},
        "logout": True,
        "terminate": True,
        "terminate_own": True,
        "key_delete": True,
    }
    for op in ops:
        result = op.answer.json.get("result")
        kind = "failed_login" if op.kind.startswith("lockout") else op.kind
        if kind == "key_create":
            assert isinstance(result, dict), op.answer.json
            assert result.get("name") == f"d9-new-{op.index}", op.answer.json
        elif kind == "login":
            assert result["response_type"] == "SUCCESS", op.answer.json
        else:
            assert result == expected_results[kind], (op.kind, op.answer.json)

    # The records: each names its operation by the client address.
    records = threads.read(lambda: list(AuditRecord.objects.filter(id__gt=watermark).order_by("id")))
    by_address: dict[str, list[AuditRecord]] = {}
    for record in records:
        by_address.setdefault(record.address.rsplit(":", 1)[0], []).append(record)
    known = {op.address for op in ops}
    assert set(by_address) <= known, f"records from nowhere: {sorted(set(by_address) - known)[:5]}"

    expected_records: dict[str, list[tuple[str, bool, str, str]]] = {
        "login": [("AUTHENTICATION", True, "{user}", "auth PASSWORD_PLAIN")],
        "failed_login": [("AUTHENTICATION", False, "{user}", "auth PASSWORD_PLAIN")],
        "lockout": [("AUTHENTICATION", False, "{user}", "auth PASSWORD_PLAIN")],
        "otp_failure": [("AUTHENTICATION", False, "{user}", "auth OTP_TOKEN")],
        "logout": [("LOGOUT", True, "{user}", "end LOGOUT")],
        "terminate": [
            ("METHOD_CALL", True, "admin", "call auth.terminate_session"),
            ("METHOD_CALL", True, "admin", "end TERMINATED"),
        ],
        "terminate_own": [("METHOD_CALL", True, "{user}", "end TERMINATED")],
        "key_create": [("METHOD_CALL", True, "{user}", "call api_key.create")],
        "key_delete": [("METHOD_CALL", True, "{user}", "call api_key.delete")],
    }
    problems: list[str] = []
    lockouts: Counter[str] = Counter()
    new_sign_ins = 0
    for op in ops:
        kind = op.kind.split()[0]
        own = by_address.get(op.address, [])
        for record in own:
            assert op.started is not None
            assert op.finished is not None
            # When: timezone-aware UTC, inside the operation.
            if record.timestamp.utcoffset() != dt.timedelta(0):
                problems.append(f"{op.kind} #{op.index}: timestamp not UTC: {record.timestamp!r}")
            if not op.started <= record.timestamp <= op.finished:
                problems.append(f"{op.kind} #{op.index}: {record.timestamp} outside the operation")
            # Where: the client's origin.
            if record.address != op.origin:
                problems.append(
                    f"{op.kind} #{op.index}: {what(record)} from {record.address!r}, not {op.origin!r}"
                )
            # Which session, where there is one.
            if op.session and what(record) != "call auth.terminate_session" and record.session != op.session:
                problems.append(f"{op.kind} #{op.index}: {what(record)} names session {record.session!r}")
        if kind == "lockout":
            for record in own:
                if what(record) == "lockout":
                    lockouts[op.username] += 1
                    if (record.event, record.success, record.username) != (
                        "AUTHENTICATION",
                        False,
                        op.username,
                    ):
                        problems.append(f"lockout record of {op.username}: {record.event} {record.username}")
            own = [r for r in own if what(r) != "lockout"]
        if kind == "login":
            noticed = [r for r in own if r.event == "NEW_SIGN_IN"]
            new_sign_ins += len(noticed)
            if len(noticed) > 1 or any(
                (r.success, r.username, r.session) != (True, op.username, op.session) for r in noticed
            ):
                problems.append(f"login #{op.index} ({op.username}): new-sign-in records {noticed}")
            own = [r for r in own if r.event != "NEW_SIGN_IN"]
        got = Counter((r.event, r.success, r.username or "", what(r)) for r in own)
        want = Counter(
            (event, success, user.format(user=op.username), text)
            for event, success, user, text in expected_records[kind]
        )
        if got != want:
            problems.append(f"{op.kind} #{op.index} ({op.username}): records {dict(got)} != {dict(want)}")
    # Exactly one lockout per victim, recorded by one of its ten failures.
    if lockouts != Counter({f"victim{n}": 1 for n in range(victims)}):
        problems.append(f"lockout records per account: {dict(lockouts)}")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:20])
    expected_total = sum(len(expected_records[op.kind.split()[0]]) for op in ops) + victims + new_sign_ins
    assert len(records) == expected_total, "records lost or doubled"
