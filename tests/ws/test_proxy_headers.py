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
