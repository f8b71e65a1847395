"""Only the application decides the client address: uvicorn must not rewrite it from
``X-Forwarded-For`` (the served worker sets ``proxy_headers: False``), or any local process could
choose its address and escape the per-address rate limit."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.conftest import PASSWORD
from tests.integration.servers import Server
from tests.ws.conftest import ws_url

SPOOF = {"X-Forwarded-For": "10.9.8.7", "X-Forwarded-Proto": "https", "Forwarded": "for=10.9.8.7"}


@pytest.mark.django_db(transaction=True)
def test_forwarded_headers_from_an_untrusted_peer_are_ignored(
    ws_server: Server, create_user: Callable[..., Any]
) -> None:
    create_user("alice")
    login = {"mechanism": "PASSWORD_PLAIN", "username": "alice", "password": PASSWORD}
    reply = ws_server.call("auth.login_ex", login, headers=SPOOF)
    cookie = reply.cookies["__Host-sid"]
    mine = ws_server.call("auth.my_sessions", [["current", "=", True]], {"get": True}, cookie=cookie)
    assert mine.result["origin"].startswith("127.0.0.1:")
    assert ws_server.call("auth.logout", cookie=cookie).result is True

    with connect(ws_url(ws_server), additional_headers=SPOOF) as ws:
        ws.send(
            json.dumps({"jsonrpc": "2.0", "id": 1, "method": "auth.login", "params": ["alice", PASSWORD]})
        )
        assert json.loads(ws.recv(5))["result"] is True
        ws.send(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "auth.my_sessions",
                    "params": [[["current", "=", True]], {"get": True}],
                }
            )
        )
        assert json.loads(ws.recv(5))["result"]["origin"].startswith("127.0.0.1:")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("peer", "proto", "expected"),
    [
        ("203.0.113.5", "https", False),  # a client talking to the service directly claims TLS
        ("10.0.0.2", "https", True),  # the trusted proxy received the request over TLS
        ("10.0.0.2", "http", False),
    ],
)
def test_x_forwarded_proto_is_believed_from_a_trusted_proxy_only(
    rpc: Any, make_user: Any, settings: Any, peer: str, proto: str, expected: bool
) -> None:
    """Over HTTP as over the WebSocket: ``SECURE_PROXY_SSL_HEADER`` counts only when the direct peer
    is in ``SESSIONS_TRUSTED_PROXIES`` (it decides ``secure_transport``, whether a plain-text API key
    is revoked, and whether SCRAM may bind to the TLS certificate)."""
    from sessions_app.models import UserSession

    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SESSIONS_TRUSTED_PROXIES = ["10.0.0.0/24"]
    make_user("alice")
    client = rpc(remote_addr=peer)
    headers = {"HTTP_X_FORWARDED_PROTO": proto, "HTTP_X_FORWARDED_FOR": "198.51.100.7"}
    login = {"mechanism": "PASSWORD_PLAIN", "username": "alice", "password": PASSWORD}
    assert client.call("auth.login_ex", login, **headers)["response_type"] == "SUCCESS"
    assert UserSession.objects.get(username="alice").secure_transport is expected
