"""A WebSocket login names its device from the upgrade request's User-Agent; without one (the official
TrueNAS client and midclt send none) it is a TrueNAS API client."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sessions_app.models import UserSession
from tests.conftest import PASSWORD
from tests.integration.servers import Server
from tests.ws.helpers import open_socket

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("user_agent", "label"),
    [
        (None, "TrueNAS API client"),
        (IPHONE, "Safari on iOS"),
        ("Python/3.11 websockets/15.0.1", "Python websockets 15.0"),
    ],
)
def test_websocket_login_names_its_device(
    ws_server: Server, create_user: Callable[..., Any], user_agent: str | None, label: str
) -> None:
    create_user("alice")
    with open_socket(ws_server, user_agent_header=user_agent) as ws:
        assert ws.call("auth.login", "alice", PASSWORD) is True
        row = UserSession.objects.get(username="alice", ended_at__isnull=True)
        assert (row.device_label, row.user_agent) == (label, user_agent)
        assert row.client_address == "127.0.0.1"
