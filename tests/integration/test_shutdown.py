"""SIGTERM stops a worker promptly (issue 17): event streams and background loops end at once.

An open dashboard event stream (``/sessions/events/``) is a response that never completes, so
uvicorn's shutdown waited for gunicorn's graceful timeout (``Waiting for connections to close``)
before the worker was killed. The server here runs with bin/serve's 30 s graceful timeout; the
stream must end (without an ``end`` event: the session lives on, the browser reconnects) and the
server exit cleanly long before that. How long it takes is measured, not asserted
(docs/operations.md, "The service unit"): about a second on this machine.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.servers import COOKIE, free_port, running_servers

pytestmark = pytest.mark.django_db(transaction=True)

GRACEFUL = 30  # bin/serve's (gunicorn's default)


def test_sigterm_ends_open_event_streams_and_the_server_exits(
    django_db_setup: Any, server_tmp: Path, create_user: Callable[..., Any]
) -> None:
    create_user("op", superuser=True)
    with running_servers(
        [[f"127.0.0.1:{free_port()}"]], server_tmp, asgi=True, graceful_timeout=GRACEFUL
    ) as (server,):
        cookie = server.login("op")
        stream = server.connect()
        stream.timeout = GRACEFUL - 5  # a read still blocked at the graceful timeout fails the test
        stream.request("GET", "/sessions/events/", headers={"Cookie": f"{COOKIE}={cookie}"})
        response = stream.getresponse()
        assert response.status == 200
        assert response.readline()  # the first line: the stream is open and registered
        server.process.send_signal(signal.SIGTERM)
        rest = response.read()  # returns when the server ends the response (EOF)
        assert b"event: end" not in rest  # ended by the shutdown, not because the session ended
        try:
            code = server.process.wait(timeout=GRACEFUL - 5)
        except subprocess.TimeoutExpired:
            pytest.fail("the server was still running near its graceful timeout after SIGTERM")
        stream.close()
        assert code == 0
    assert "SIGKILL" not in server.log.read_text(errors="replace")
