"""Every credential type's ``auth.sessions`` row, and every end reason through its real pathway.

auth-sessions.md §1 (row shape), §2 (how sessions begin), §3 (how they end), §4 (tokens).
Rows are read back through ``POST /api/current`` as an administrator, so the wire form is tested
(datetimes as ``{"$date": ms}``).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import subprocess
import sys
import time
from typing import Any

import pytest
from django.utils import timezone
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app import conf
from sessions_app.auth import keys
from sessions_app.auth.clients import Client
from sessions_app.middleware import session_cookie_name, unix_socket_session
from sessions_app.models import AuditEvent, Credentials, EndReason, UserSession
from sessions_app.services.api_keys import api_key_create
from sessions_app.services.tokens import token_generate
from sessions_app.services.users import user_set_password

PASSWORD = "credential-tests correct horse battery staple"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
ROW_KEYS = {
    "id",
    "current",
    "internal",
    "origin",
    "credentials",
    "credentials_data",
    "created_at",
    "secure_transport",
}
HISTORY_KEYS = {"ended_at", "end_reason", "ended_by"}


@pytest.fixture(autouse=True)
def _no_rate_limit(settings: Any) -> None:
    settings.SESSIONS_LOGIN_RATE = 0


def wire(value: dt.datetime | None) -> dict[str, int] | None:
    return None if value is None else {"$date": (value - EPOCH) // dt.timedelta(milliseconds=1)}


def sid(client: Any) -> str:
    return client.http.cookies[session_cookie_name()].value


def row_of(client: Any) -> UserSession:
    return UserSession.objects.get(secret_hash=keys.hash_secret(sid(client)))


def password_login(client: Any, username: str, password: str = PASSWORD, **headers: Any) -> str:
    params = {"mechanism": "PASSWORD_PLAIN", "username": username, "password": password}
    return client.call("auth.login_ex", params, **headers)["response_type"]


def token_login(client: Any, token: str) -> str:
    return client.call("auth.login_ex", {"mechanism": "TOKEN_PLAIN", "token": token})["response_type"]


def api_key_login(client: Any, username: str, key: str) -> str:
    params = {"mechanism": "API_KEY_PLAIN", "username": username, "api_key": key}
    return client.call("auth.login_ex", params)["response_type"]


def authed(client: Any) -> bool:
    payload = client.raw("auth.me").json()
    if "result" in payload:
        return True
    assert payload["error"]["data"]["error"] == 207, payload
    return False


def user_data(session: UserSession) -> dict[str, Any]:
    return {"username": session.username, "login_at": wire(session.login_at)}


@pytest.fixture
def alice(make_user: Any) -> Any:
    return make_user("alice", password=PASSWORD)


@pytest.fixture
def admin(make_user: Any, rpc: Any) -> Any:
    make_user("admin", password=PASSWORD, superuser=True)
    client = rpc()
    assert password_login(client, "admin") == "SUCCESS"
    return client


def listed(admin: Any, public_id: str, *, history: bool = False) -> dict[str, Any]:
    options: dict[str, Any] = {"get": True}
    if history:
        options["extra"] = {"history": True}
    return admin.call("auth.sessions", [["id", "=", public_id]], options)


def check_row(
    admin: Any,
    session: UserSession,
    *,
    credentials: str,
    credentials_data: dict[str, Any],
    origin: str,
    internal: bool = False,
    secure_transport: bool = True,
) -> dict[str, Any]:
    """The exact ``auth.sessions`` row of ``session``, with and without ``extra.history``."""
    session.refresh_from_db()
    row = listed(admin, session.public_id)
    assert set(row) == ROW_KEYS
    assert row == {
        "id": session.public_id,
        "current": False,
        "internal": internal,
        "origin": origin,
        "credentials": credentials,
        "credentials_data": credentials_data,
        "created_at": wire(session.created_at),
        "secure_transport": secure_transport,
    }
    assert len(row["id"]) == 64
    history_row = listed(admin, session.public_id, history=True)
    assert set(history_row) == ROW_KEYS | HISTORY_KEYS
    assert history_row == {**row, "ended_at": None, "end_reason": None, "ended_by": None}
    return row


# --- credential types -------------------------------------------------------------------------------


def test_login_password_row(alice: Any, admin: Any, rpc: Any) -> None:
    client = rpc(REMOTE_PORT="50001")
    assert password_login(client, "alice") == "SUCCESS"
    session = row_of(client)
    assert session.login_at == session.created_at
    check_row(
        admin,
        session,
        credentials="LOGIN_PASSWORD",
        credentials_data=user_data(session),
        origin="127.0.0.1:50001",
    )
    own = client.call("auth.my_sessions", [["id", "=", session.public_id]], {"get": True})
    assert own["current"] is True
    assert set(own) == ROW_KEYS


@pytest.mark.parametrize(
    ("remote_addr", "https", "origin", "secure"),
    [
        ("::1", False, "[::1]:50002", True),
        ("192.0.2.7", False, "192.0.2.7:50002", False),
        ("192.0.2.7", True, "192.0.2.7:50002", True),
    ],
)
def test_origin_and_secure_transport(
    remote_addr: str, https: bool, origin: str, secure: bool, alice: Any, admin: Any, rpc: Any
) -> None:
    client = rpc(remote_addr=remote_addr, REMOTE_PORT="50002")
    assert password_login(client, "alice", secure=https) == "SUCCESS"
    session = row_of(client)
    check_row(
        admin,
        session,
        credentials="LOGIN_PASSWORD",
        credentials_data=user_data(session),
        origin=origin,
        secure_transport=secure,
    )


def _totp_login(client: Any, make_user: Any, username: str = "bob") -> UserSession:
    user = make_user(username, password=PASSWORD)
    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    assert client.call(
        "auth.login_ex", {"mechanism": "PASSWORD_PLAIN", "username": username, "password": PASSWORD}
    ) == {"response_type": "OTP_REQUIRED", "username": username}
    code = str(totp(device.bin_key, device.step, device.t0, device.digits, device.drift)).zfill(device.digits)
    result = client.call("auth.login_ex_continue", {"mechanism": "OTP_TOKEN", "otp_token": code})
    assert result["response_type"] == "SUCCESS"
    return row_of(client)


def test_login_twofactor_row(make_user: Any, admin: Any, rpc: Any) -> None:
    session = _totp_login(rpc(), make_user)
    check_row(
        admin,
        session,
        credentials="LOGIN_TWOFACTOR",
        credentials_data=user_data(session),
        origin="127.0.0.1:0",
    )


def test_login_onetime_password_row(alice: Any, admin: Any, rpc: Any) -> None:
    otpw = admin.call("auth.generate_onetime_password", {"username": "alice"})
    client = rpc()
    assert password_login(client, "alice", otpw) == "SUCCESS"
    session = row_of(client)
    check_row(
        admin,
        session,
        credentials="LOGIN_ONETIME_PASSWORD",
        credentials_data=user_data(session),
        origin="127.0.0.1:0",
    )


def test_api_key_row(alice: Any, admin: Any, rpc: Any) -> None:
    key, plaintext = api_key_create(user=alice, name="backup script")
    client = rpc()
    assert api_key_login(client, "alice", plaintext) == "SUCCESS"
    session = row_of(client)
    check_row(
        admin,
        session,
        credentials="API_KEY",
        credentials_data={**user_data(session), "api_key": {"id": key.pk, "name": "backup script"}},
        origin="127.0.0.1:0",
    )


def _root(kind: str, rpc: Any, make_user: Any, alice: Any) -> tuple[str, UserSession, dict[str, Any]]:
    """A root session of ``kind`` and a multi-use, origin-free token minted by it."""
    if kind == "UNIX_SOCKET":
        make_user("daemon", password=PASSWORD)
        peer = Client(peer=(4321, 1, 1))
        session = unix_socket_session(peer)
        assert session is not None
        token = token_generate(session=session, client=peer, match_origin=False)
        return token, session, user_data(session)
    client = rpc()
    data: dict[str, Any] = {}
    if kind == "LOGIN_PASSWORD":
        password_login(client, "alice")
    elif kind == "LOGIN_TWOFACTOR":
        _totp_login(client, make_user)
    else:
        key, plaintext = api_key_create(user=alice, name="root key")
        api_key_login(client, "alice", plaintext)
        data["api_key"] = {"id": key.pk, "name": "root key"}
    session = row_of(client)
    token = client.call("auth.generate_token", 600, {}, False, False)
    return token, session, {**user_data(session), **data}


@pytest.mark.parametrize("root_kind", ["LOGIN_PASSWORD", "LOGIN_TWOFACTOR", "API_KEY", "UNIX_SOCKET"])
def test_token_rows_record_the_root_credential(
    root_kind: str, alice: Any, admin: Any, make_user: Any, rpc: Any
) -> None:
    token, root, root_data = _root(root_kind, rpc, make_user, alice)
    expected = {
        "parent": {"credentials": root_kind, "credentials_data": root_data},
        "username": root.username,
    }
    child = rpc()
    assert token_login(child, token) == "SUCCESS"
    child_row = row_of(child)
    check_row(admin, child_row, credentials="TOKEN", credentials_data=expected, origin="127.0.0.1:0")
    # A token of a token session, and one more level: the root is recorded, never TOKEN.
    parent_client = child
    for _ in range(2):
        next_token = parent_client.call("auth.generate_token", 600, {}, False, False)
        grandchild = rpc()
        assert token_login(grandchild, next_token) == "SUCCESS"
        row = row_of(grandchild)
        assert row.parent_id == row_of(parent_client).pk
        check_row(admin, row, credentials="TOKEN", credentials_data=expected, origin="127.0.0.1:0")
        parent_client = grandchild


def test_unix_socket_row_and_reuse(make_user: Any, admin: Any) -> None:
    make_user("daemon", password=PASSWORD)
    # Live processes (this one and init): a peer's session lasts while its process does.
    me = os.getpid()
    peer = Client(peer=(me, 1, 1))
    session = unix_socket_session(peer)
    assert session is not None
    assert unix_socket_session(peer).pk == session.pk  # one session per peer process
    assert unix_socket_session(Client(peer=(1, 1, 1))).pk != session.pk
    check_row(
        admin,
        session,
        credentials="UNIX_SOCKET",
        credentials_data=user_data(session),
        origin=f"UNIX socket (pid={me} uid=1 gid=1)",
    )
    assert session.username == "daemon"
    assert unix_socket_session(Client(peer=(1236, 54321, 54321))) is None  # no account of that uid


def test_unix_socket_session_ends_when_its_process_is_gone(make_user: Any) -> None:
    make_user("daemon", password=PASSWORD)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid that no longer exists
    gone = unix_socket_session(Client(peer=(child.pid, 1, 1)))
    assert gone is not None
    unix_socket_session(Client(peer=(os.getpid(), 1, 1)))  # the same account connects again
    gone.refresh_from_db()
    assert gone.end_reason == "LOGOUT"
    assert gone.ended_at is not None


def test_unix_socket_root_is_internal(make_user: Any, admin: Any, settings: Any) -> None:
    assert conf.get("SESSIONS_ROOT_USERNAME") == "root"
    make_user("root", password=PASSWORD)
    session = unix_socket_session(Client(peer=(99, 0, 0)))
    assert session is not None
    assert session.username == "root"
    check_row(
        admin,
        session,
        credentials="UNIX_SOCKET",
        credentials_data=user_data(session),
        origin="UNIX socket (pid=99 uid=0 gid=0)",
        internal=True,
    )
    settings.SESSIONS_ROOT_USERNAME = "superroot"
    make_user("superroot", password=PASSWORD)
    other = unix_socket_session(Client(peer=(100, 0, 0)))
    assert other is not None
    assert other.username == "superroot"
    assert other.internal


def _node_proof(secret: str, node: str = "peer-b") -> dict[str, Any]:
    from sessions_app.services.node import node_signature

    stamp, nonce = int(time.time()), secrets.token_urlsafe(16)
    signature = node_signature(secret=secret, node=node, timestamp=stamp, nonce=nonce)
    return {"node": node, "timestamp": stamp, "nonce": nonce, "signature": signature}


def test_truenas_node_row(admin: Any, settings: Any) -> None:
    from sessions_app.services.node import node_login

    settings.SESSIONS_NODE_SECRET = "shared node secret"
    new = node_login(client=Client(address="127.0.0.1", port=7000), **_node_proof("shared node secret"))
    assert new is not None
    check_row(
        admin,
        new.session,
        credentials="TRUENAS_NODE",
        credentials_data={},
        origin="127.0.0.1:7000",
        internal=True,
    )


def test_truenas_node_login_through_login_ex(admin: Any, rpc: Any, settings: Any) -> None:
    """The documented carrier (services/node.py): ``auth.login_ex`` with ``mechanism NODE_HMAC``."""
    settings.SESSIONS_NODE_SECRET = "shared node secret"
    client = rpc()
    result = client.call("auth.login_ex", {"mechanism": "NODE_HMAC", **_node_proof("shared node secret")})
    assert result["response_type"] == "SUCCESS"
    session = row_of(client)
    check_row(
        admin, session, credentials="TRUENAS_NODE", credentials_data={}, origin="127.0.0.1:0", internal=True
    )


# --- end reasons ------------------------------------------------------------------------------------


def check_ended(admin: Any, session: UserSession, reason: str, ended_by: str | None) -> None:
    """The history row and the one audit record of ``session`` ending with ``reason``."""
    session.refresh_from_db()
    assert session.ended_at is not None
    assert timezone.now() - session.ended_at < dt.timedelta(seconds=30)
    assert admin.call("auth.sessions", [["id", "=", session.public_id]], {"count": True}) == 0  # not active
    row = listed(admin, session.public_id, history=True)
    assert set(row) == ROW_KEYS | HISTORY_KEYS
    assert (row["ended_at"], row["end_reason"], row["ended_by"]) == (wire(session.ended_at), reason, ended_by)
    records = [
        r
        for r in admin.call("audit.query", [["session", "=", session.public_id]])
        if r["event_data"].get("end_reason") is not None
    ]
    assert len(records) == 1, records
    record = records[0]
    assert record["event"] == (AuditEvent.LOGOUT if reason == EndReason.LOGOUT else AuditEvent.METHOD_CALL)
    assert record["success"] is True
    assert record["username"] == (ended_by or session.username)
    assert record["event_data"]["end_reason"] == reason
    assert record["event_data"]["target"] == session.public_id
    assert record["event_data"]["target_username"] == session.username
    assert record["event_data"]["credentials"] == session.credentials


@pytest.fixture
def alice_client(alice: Any, rpc: Any) -> Any:
    client = rpc()
    assert password_login(client, "alice") == "SUCCESS"
    return client


def test_end_logout(alice_client: Any, admin: Any) -> None:
    session = row_of(alice_client)
    assert alice_client.call("auth.logout") is True
    check_ended(admin, session, EndReason.LOGOUT, "alice")


def test_end_terminated(alice_client: Any, admin: Any) -> None:
    session = row_of(alice_client)
    assert admin.call("auth.terminate_session", session.public_id) is True
    assert not authed(alice_client)
    check_ended(admin, session, EndReason.TERMINATED, "admin")


def test_end_terminated_by_the_owner(alice: Any, alice_client: Any, admin: Any, rpc: Any) -> None:
    other = rpc()
    password_login(other, "alice")
    session = row_of(other)
    assert alice_client.call("auth.terminate_my_session", session.public_id) is True
    check_ended(admin, session, EndReason.TERMINATED, "alice")


def test_end_expired(alice: Any, admin: Any, rpc: Any, settings: Any) -> None:
    settings.SESSIONS_MAX_AGE = 600
    client = rpc()
    password_login(client, "alice")
    session = row_of(client)
    UserSession.objects.filter(pk=session.pk).update(
        created_at=session.created_at - dt.timedelta(seconds=601),
        expires_at=session.expires_at - dt.timedelta(seconds=601),
    )
    assert not authed(client)
    check_ended(admin, session, EndReason.EXPIRED, None)


def test_end_expired_api_key(alice: Any, admin: Any, rpc: Any) -> None:
    key, plaintext = api_key_create(user=alice, name="expiring")
    client = rpc()
    api_key_login(client, "alice", plaintext)
    session = row_of(client)
    key.expires_at = timezone.now() - dt.timedelta(seconds=1)
    key.save(update_fields=["expires_at"])
    assert not authed(client)
    check_ended(admin, session, EndReason.EXPIRED, None)


def test_end_idle(alice: Any, admin: Any, rpc: Any, settings: Any) -> None:
    settings.SESSIONS_IDLE_TIMEOUT = 60
    client = rpc()
    password_login(client, "alice")
    session = row_of(client)
    UserSession.objects.filter(pk=session.pk).update(
        last_seen_at=session.last_seen_at - dt.timedelta(seconds=61)
    )
    assert not authed(client)
    check_ended(admin, session, EndReason.IDLE, None)


def test_end_credential_revoked_by_key_deletion(alice: Any, alice_client: Any, admin: Any, rpc: Any) -> None:
    created = alice_client.call("api_key.create", {"name": "to delete"})
    client = rpc()
    api_key_login(client, "alice", created["key"])
    session = row_of(client)
    assert alice_client.call("api_key.delete", created["id"]) is True
    assert not authed(client)
    check_ended(admin, session, EndReason.CREDENTIAL_REVOKED, "alice")


def test_end_credential_revoked_over_insecure_transport(alice: Any, admin: Any, rpc: Any) -> None:
    key, plaintext = api_key_create(user=alice, name="leaky")
    client = rpc()
    api_key_login(client, "alice", plaintext)
    session = row_of(client)
    assert api_key_login(rpc(remote_addr="192.0.2.9"), "alice", plaintext) == "EXPIRED"
    key.refresh_from_db()
    assert key.revoked
    assert key.revoked_reason == "Attempt to use over an insecure transport"
    assert not authed(client)
    check_ended(admin, session, EndReason.CREDENTIAL_REVOKED, None)


def test_end_credential_revoked_by_totp_device_removal(make_user: Any, admin: Any, rpc: Any) -> None:
    client = rpc()
    session = _totp_login(client, make_user)
    TOTPDevice.objects.get(user=session.user).delete()
    assert not authed(client)
    check_ended(admin, session, EndReason.CREDENTIAL_REVOKED, None)


def test_end_user_disabled(alice: Any, alice_client: Any, admin: Any) -> None:
    session = row_of(alice_client)
    alice.is_active = False
    alice.save()
    assert not authed(alice_client)
    check_ended(admin, session, EndReason.USER_DISABLED, None)


def test_end_user_deleted(alice: Any, alice_client: Any, admin: Any) -> None:
    session = row_of(alice_client)
    alice.delete()
    assert not authed(alice_client)
    check_ended(admin, session, EndReason.USER_DISABLED, None)


def test_end_password_changed(alice: Any, alice_client: Any, admin: Any) -> None:
    session = row_of(alice_client)
    user_set_password(user=alice, password="another long password 7")
    assert not authed(alice_client)
    check_ended(admin, session, EndReason.PASSWORD_CHANGED, None)


def test_end_parent_ended(alice_client: Any, admin: Any, rpc: Any) -> None:
    token = alice_client.call("auth.generate_token", 600, {}, False, False)
    child = rpc()
    assert token_login(child, token) == "SUCCESS"
    session = row_of(child)
    alice_client.call("auth.logout")
    assert not authed(child)
    check_ended(admin, session, EndReason.PARENT_ENDED, None)


def test_end_evicted(alice: Any, admin: Any, rpc: Any, settings: Any) -> None:
    settings.SESSIONS_MAX_PER_USER = 2
    clients = [rpc() for _ in range(3)]
    for client in clients:
        password_login(client, "alice")
    session = row_of(clients[0])
    assert not authed(clients[0])
    check_ended(admin, session, EndReason.EVICTED, None)
    assert UserSession.objects.filter(pk=session.pk, end_reason=EndReason.EVICTED).exists()


def test_every_end_reason_and_credential_type_is_covered() -> None:
    """Adding a reason or a type to the models must add its test here."""
    end_tests = {
        EndReason.LOGOUT: test_end_logout,
        EndReason.TERMINATED: test_end_terminated,
        EndReason.EXPIRED: test_end_expired,
        EndReason.IDLE: test_end_idle,
        EndReason.CREDENTIAL_REVOKED: test_end_credential_revoked_by_key_deletion,
        EndReason.USER_DISABLED: test_end_user_disabled,
        EndReason.PASSWORD_CHANGED: test_end_password_changed,
        EndReason.PARENT_ENDED: test_end_parent_ended,
        EndReason.EVICTED: test_end_evicted,
    }
    row_tests = {
        Credentials.UNIX_SOCKET: test_unix_socket_row_and_reuse,
        Credentials.LOGIN_PASSWORD: test_login_password_row,
        Credentials.LOGIN_TWOFACTOR: test_login_twofactor_row,
        Credentials.LOGIN_ONETIME_PASSWORD: test_login_onetime_password_row,
        Credentials.API_KEY: test_api_key_row,
        Credentials.TOKEN: test_token_rows_record_the_root_credential,
        Credentials.TRUENAS_NODE: test_truenas_node_row,
    }
    assert set(end_tests) == set(EndReason)
    assert set(row_tests) == set(Credentials)
