"""SCRAM-SHA-512 logins by a client written in the test from RFC 5802 (tests/scram/client.py, with the
TrueNAS nonce rule), over every transport the official client uses: ``POST /api/current`` (in
process, and over real HTTPS with the pending-login cookie), a real WebSocket over ``ws://``
(unbound), over ``wss://`` with a self-signed certificate (bound: the binding is computed from the
certificate received in the handshake, as the official client does) and over the unix socket
(unbound). After the login the socket works as an ``API_KEY`` session, like one opened by
``API_KEY_PLAIN``; ending the session (terminated, key revoked or deleted) closes the socket.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
from collections.abc import Callable, Iterator
from http.cookies import SimpleCookie
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes

from sessions_app.auth.channel_binding import certificate_binding
from sessions_app.middleware import pending_cookie_name
from sessions_app.models import ApiKey, AuditRecord
from sessions_app.services.api_keys import api_key_create, api_key_revoke
from tests.conftest import RPC
from tests.integration.servers import COOKIE, PENDING, Server
from tests.scram.client import (
    AUTH_ERR,
    GS2_BOUND,
    ScramClient,
    end_point_binding,
    final_params,
    first_params,
)
from tests.scram.conftest import TLSServer
from tests.ws.helpers import (
    TIMEOUT,
    RPCSocket,
    open_socket,
    open_unix_socket,
    session_ended,
    settled,
    wss_connect,
)

#: Hang ceiling for a socket the server must close (it checks open sockets' sessions every second).
CLOSE_CEILING = 30.0
CURRENT = ([["current", "=", True]], {"get": True})
NOT_IN_PROGRESS = "SCRAM authentication is not in progress"

real_servers = pytest.mark.django_db(transaction=True)


def ws_login(ws: RPCSocket, client: ScramClient) -> dict[str, Any]:
    return client.login(lambda params: ws.call("auth.login_ex", params))


def new_key(user: Any, name: str = "ci") -> tuple[ApiKey, str]:
    return api_key_create(user=user, name=name)


def secret_of(text: str) -> str:
    return text.split("-", 1)[1]


@contextlib.contextmanager
def open_wss(server: TLSServer) -> Iterator[tuple[RPCSocket, bytes]]:
    """A ``wss://`` socket to ``server`` and the DER of the certificate its handshake presented."""
    ws = wss_connect(server.wss_url, ssl=server.context(), open_timeout=TIMEOUT, close_timeout=2)
    der = ws.socket.getpeercert(binary_form=True)
    assert der
    with settled(ws) as rpc:
        yield rpc, der


def https_call(
    server: TLSServer, method: str, *params: Any, cookies: dict[str, str] | None = None
) -> tuple[dict[str, Any], SimpleCookie, bytes]:
    """One JSON-RPC call over HTTPS: the reply, the cookies it sets, the server certificate's DER."""
    host, _, port = server.tcp.rpartition(":")
    connection = http.client.HTTPSConnection(host, int(port), context=server.context(), timeout=TIMEOUT)
    headers = {"Content-Type": "application/json"}
    if cookies:
        headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in cookies.items())
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    try:
        connection.request("POST", "/api/current", body, headers)
        der = connection.sock.getpeercert(binary_form=True)
        response = connection.getresponse()
        payload = json.loads(response.read())
    finally:
        connection.close()
    jar: SimpleCookie = SimpleCookie()
    for header in response.msg.get_all("Set-Cookie") or []:
        jar.load(header)
    return payload, jar, der


def scram_audit(*, success: bool) -> list[AuditRecord]:
    return [
        record
        for record in AuditRecord.objects.filter(event="AUTHENTICATION", success=success).order_by("id")
        if record.event_data.get("mechanism") == "SCRAM"
    ]


@pytest.fixture
def leak_check(plain_server: Server, tls_server: TLSServer) -> Iterator[set[str]]:
    """The test adds its secrets to the set; afterwards neither server's log (at DEBUG) holds one of
    them, nor a traceback."""
    found: set[str] = set()
    yield found
    for log in (plain_server.log, tls_server.log):
        text = log.read_text(errors="replace")
        assert not [s for s in found if s in text], f"a secret in {log}"
        assert "Traceback" not in text, text[-3000:]


# --- in process: POST /api/current ------------------------------------------------------------------


def test_scram_over_http_keeps_the_exchange_in_the_pending_cookie(
    rpc: Callable[..., RPC], make_user: Callable[..., Any]
) -> None:
    _, text = new_key(make_user("alice"))
    client = rpc()
    scram = ScramClient("alice", text)
    server_first = scram.first(lambda params: client.call("auth.login_ex", params))
    pending = pending_cookie_name()  # otp_pending, or __Host-otp_pending with Secure cookies
    assert client.http.cookies[pending].value
    final = client.call("auth.login_ex", final_params(scram.client_final(server_first)))
    scram.check_server_final(final)
    assert client.http.cookies[pending].value == ""  # used up: the cookie is dropped
    me = client.call("auth.me")
    assert me == final["user_info"]
    assert me["pw_name"] == "alice"
    assert {"API_KEY", "SCRAM"} <= set(me["account_attributes"])
    # An API_KEY_PLAIN session says API_KEY only; a password session neither.
    plain = rpc()
    plain.call("auth.login_ex", {"mechanism": "API_KEY_PLAIN", "username": "alice", "api_key": text})
    attributes = plain.call("auth.me")["account_attributes"]
    assert "API_KEY" in attributes
    assert "SCRAM" not in attributes
    password = rpc()
    password.login("alice")
    assert {"API_KEY", "SCRAM"}.isdisjoint(password.call("auth.me")["account_attributes"])


# --- real servers -------------------------------------------------------------------------------------


@real_servers
def test_scram_over_ws_unbound_is_an_api_key_session_like_a_plain_one(
    plain_server: Server, create_user: Callable[..., Any], leak_check: set[str]
) -> None:
    alice = create_user("alice", superuser=True)  # may list auth.sessions
    key, text = new_key(alice)
    leak_check.add(secret_of(text))
    with open_socket(plain_server) as ws, open_socket(plain_server) as other:
        final = ws_login(ws, ScramClient("alice", text))
        assert ws.call("core.ping") == "pong"
        me = ws.call("auth.me")
        assert me == final["user_info"]
        assert me["pw_name"] == "alice"
        assert {"API_KEY", "SCRAM"} <= set(me["account_attributes"])
        row = ws.call("auth.sessions", *CURRENT)
        assert row["credentials"] == "API_KEY"
        assert row["credentials_data"]["api_key"] == {"id": key.pk, "name": "ci"}
        # The session API_KEY_PLAIN opens with the same key has the same shape.
        plain = {"mechanism": "API_KEY_PLAIN", "username": "alice", "api_key": text}
        assert other.call("auth.login_ex", plain)["response_type"] == "SUCCESS"
        plain_row = other.call("auth.sessions", *CURRENT)
        assert plain_row["id"] != row["id"]
        assert plain_row.keys() == row.keys()
        assert plain_row["credentials_data"].keys() == row["credentials_data"].keys()
        for name in ("credentials", "secure_transport", "internal"):
            assert plain_row[name] == row[name], name
        assert plain_row["credentials_data"]["api_key"] == row["credentials_data"]["api_key"]
    [record] = scram_audit(success=True)
    assert record.username == "alice"
    assert record.event_data["api_key_ref"] == f"{key.pk}:ci"
    assert record.event_data["channel_binding"] is False


@real_servers
def test_scram_over_wss_is_bound_to_the_certificate_of_the_handshake(
    tls_server: TLSServer, create_user: Callable[..., Any], leak_check: set[str]
) -> None:
    key, text = new_key(create_user("alice", superuser=True))
    leak_check.add(secret_of(text))
    with open_wss(tls_server) as (ws, der):
        # What a client computes from what it received: SHA-256 of the DER, for an ECDSA-SHA256 cert.
        binding = hashlib.sha256(der).digest()
        assert der == tls_server.der
        assert binding == end_point_binding(der, hashes.SHA256()) == certificate_binding(der)
        final = ws_login(ws, ScramClient("alice", text, binding=binding))
        assert ws.call("core.ping") == "pong"
        assert ws.call("auth.me") == final["user_info"]
        row = ws.call("auth.sessions", *CURRENT)
        assert (row["credentials"], row["secure_transport"]) == ("API_KEY", True)
        assert row["credentials_data"]["api_key"] == {"id": key.pk, "name": "ci"}
    # n,, is always accepted, over TLS too (the official client with channel_binding=False).
    with open_wss(tls_server) as (ws, _):
        ws_login(ws, ScramClient("alice", text))
        assert "SCRAM" in ws.call("auth.me")["account_attributes"]
    assert [r.event_data["channel_binding"] for r in scram_audit(success=True)] == [True, False]


@real_servers
def test_scram_over_https_is_bound_and_keeps_the_exchange_in_the_host_cookie(
    tls_server: TLSServer, create_user: Callable[..., Any], leak_check: set[str]
) -> None:
    _, text = new_key(create_user("alice"))
    leak_check.add(secret_of(text))
    scram = ScramClient("alice", text, gs2=GS2_BOUND)
    answer, jar, der = https_call(tls_server, "auth.login_ex", first_params(scram.client_first()))
    scram.binding = hashlib.sha256(der).digest()
    server_first = answer["result"]["rfc_str"]
    pending = jar[PENDING]
    assert pending.value
    assert (pending["secure"], pending["httponly"], pending["path"]) == (True, True, "/")
    final = final_params(scram.client_final(server_first))
    # Without the cookie there is no exchange (and the one in progress is not used up) ...
    error = https_call(tls_server, "auth.login_ex", final)[0]["error"]
    assert error["code"] == -32001
    assert NOT_IN_PROGRESS in error["data"]["reason"]
    # ... with it, the login.
    answer, jar, _ = https_call(tls_server, "auth.login_ex", final, cookies={PENDING: pending.value})
    scram.check_server_final(answer["result"])
    assert jar[PENDING].value == ""
    session = jar[COOKIE].value
    me = https_call(tls_server, "auth.me", cookies={COOKIE: session})[0]["result"]
    assert me["pw_name"] == "alice"
    assert {"API_KEY", "SCRAM"} <= set(me["account_attributes"])


@real_servers
def test_scram_over_the_unix_socket_unbound(
    tls_server: TLSServer, create_user: Callable[..., Any], leak_check: set[str]
) -> None:
    """The unix socket stays plain beside the TLS port: ``n,,`` logs in, ``p=`` is refused even
    though the server knows its binding (a unix-socket peer has no certificate to bind to)."""
    key, text = new_key(create_user("alice", superuser=True))
    leak_check.add(secret_of(text))
    with open_unix_socket(tls_server.unix) as ws:
        assert ws.error("auth.me")["data"]["errname"] == "ENOTAUTHENTICATED"  # no account for this uid
        final = ws_login(ws, ScramClient("alice", text))
        assert ws.call("auth.me") == final["user_info"]
        assert {"API_KEY", "SCRAM"} <= set(final["user_info"]["account_attributes"])
        row = ws.call("auth.sessions", *CURRENT)
        assert row["credentials"] == "API_KEY"
        assert row["credentials_data"]["api_key"] == {"id": key.pk, "name": "ci"}
        assert row["origin"].startswith("UNIX socket")
    with open_unix_socket(tls_server.unix) as ws:
        bound = ScramClient("alice", text, binding=tls_server.der)
        assert ws.call("auth.login_ex", first_params(bound.client_first())) == AUTH_ERR


@real_servers
def test_the_exchange_belongs_to_its_connection(
    plain_server: Server, create_user: Callable[..., Any]
) -> None:
    _, text = new_key(create_user("alice"))
    with open_socket(plain_server) as mine, open_socket(plain_server) as other:
        scram = ScramClient("alice", text)
        server_first = scram.first(lambda params: mine.call("auth.login_ex", params))
        final = final_params(scram.client_final(server_first))
        error = other.error("auth.login_ex", final)
        assert (error["code"], error["data"]["errname"]) == (-32001, "EINVAL")
        assert NOT_IN_PROGRESS in error["data"]["reason"]
        scram.check_server_final(mine.call("auth.login_ex", final))
        assert other.error("auth.me")["data"]["errname"] == "ENOTAUTHENTICATED"
        assert mine.call("auth.me")["pw_name"] == "alice"


@real_servers
@pytest.mark.parametrize("how", ["terminate", "revoke", "delete"])
def test_ending_the_session_closes_the_scram_socket(
    plain_server: Server, create_user: Callable[..., Any], how: str
) -> None:
    key, text = new_key(create_user("alice"))
    create_user("admin", superuser=True)
    with open_socket(plain_server) as ws:
        ws_login(ws, ScramClient("alice", text))
        session_id = ws.session()["id"]
        if how == "terminate":
            admin = plain_server.login("admin")
            assert plain_server.call("auth.terminate_session", session_id, cookie=admin).result is True
        elif how == "revoke":
            api_key_revoke(key=key, reason="compromised", actor=None)
        else:
            admin = plain_server.login("admin")
            assert plain_server.call("api_key.delete", key.pk, cookie=admin).result is True
        ws.closed(CLOSE_CEILING)  # a hang ceiling, not a latency bound: TimeoutError if never closed
    assert session_ended(session_id)
    with open_socket(plain_server) as ws:
        scram = ScramClient("alice", text)
        server_first = scram.first(lambda params: ws.call("auth.login_ex", params))
        answer = ws.call("auth.login_ex", final_params(scram.client_final(server_first)))
        if how == "terminate":
            scram.check_server_final(answer)  # the key itself is fine
        else:
            assert answer == AUTH_ERR
