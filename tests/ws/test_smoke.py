"""The served configuration answers JSON-RPC over a WebSocket (a smoke test of the fixture)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.conftest import PASSWORD
from tests.integration.servers import Server
from tests.ws.conftest import ws_url


@pytest.mark.django_db(transaction=True)
def test_ping_and_login_over_a_websocket(ws_server: Server, create_user: Callable[..., Any]) -> None:
    create_user("alice")
    with connect(ws_url(ws_server)) as ws:
        ws.send(json.dumps({"jsonrpc": "2.0", "id": "a", "method": "core.ping", "params": []}))
        assert json.loads(ws.recv(5)) == {"jsonrpc": "2.0", "id": "a", "result": "pong"}
        ws.send(
            json.dumps({"jsonrpc": "2.0", "id": 2, "method": "auth.login", "params": ["alice", PASSWORD]})
        )
        assert json.loads(ws.recv(5)) == {"jsonrpc": "2.0", "id": 2, "result": True}
