"""Fixtures of the WebSocket tests: the served configuration (gunicorn + uvicorn workers, the ASGI
app) running on the test database, on 127.0.0.1 and on a unix socket.

The server is started once per module and shared by its tests; each test that writes to the
database uses ``@pytest.mark.django_db(transaction=True)`` (its rows are flushed afterwards, which
the server, holding no state of its own, does not mind).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import create_user  # noqa: F401 - the fixture, reused as it is
from tests.integration.servers import Server, free_port, running_servers


@pytest.fixture(scope="module")
def ws_server(
    django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One gunicorn with 2 uvicorn workers; ``binds[0]`` is TCP, ``binds[1]`` the unix socket."""
    tmp = tmp_path_factory.mktemp("ws")
    socket_path = Path("/tmp") / f"ws-{free_port()}.sock"  # short: AF_UNIX paths are limited to 108 bytes
    with (
        django_db_blocker.unblock(),
        running_servers(
            [[f"127.0.0.1:{free_port()}", f"unix:{socket_path}"]], tmp, asgi=True, workers=2
        ) as servers,
    ):
        yield servers[0]


def ws_url(server: Server) -> str:
    """``ws://127.0.0.1:<port>/api/current`` of ``server``'s TCP bind."""
    return f"ws://{server.bind}/api/current"


@pytest.fixture(autouse=True)
def _sessions_settled(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a database test, wait until the server has finished ending the sessions of the sockets
    the test closed (it does so asynchronously, on the socket's close): on PostgreSQL, the flush's
    TRUNCATE would otherwise race that UPDATE + INSERT and could deadlock. Quiet = no new outbox row
    for 0.3 s (at most 5 s)."""
    yield
    if request.node.get_closest_marker("django_db") is None:
        return
    from sessions_app.models import SessionEvent

    deadline = time.monotonic() + 5
    last, quiet_since = None, time.monotonic()
    while time.monotonic() < deadline:
        newest = SessionEvent.objects.order_by("-id").values_list("id", flat=True).first()
        if newest != last:
            last, quiet_since = newest, time.monotonic()
        elif time.monotonic() - quiet_since >= 0.3:
            return
        time.sleep(0.05)
