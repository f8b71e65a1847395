"""gunicorn bound to a unix socket: the peer's kernel credentials (``SO_PEERCRED``) are its
``UNIX_SOCKET`` session, one per peer process, with no credentials sent (spec §2).

The client is this test process (or a child of it), so the expected pid/uid/gid are known exactly.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sessions_app import conf
from tests.integration.servers import Server, free_port, running_servers

pytestmark = pytest.mark.django_db(transaction=True)

NOT_AUTHENTICATED = 207


def account_name(uid: int) -> str:
    """The user a peer with ``uid`` maps to: the configured root account, or the local account name."""
    return str(conf.get("SESSIONS_ROOT_USERNAME")) if uid == 0 else pwd.getpwuid(uid).pw_name


ME = account_name(os.getuid())
ORIGIN = f"UNIX socket (pid={os.getpid()} uid={os.getuid()} gid={os.getgid()})"


@pytest.fixture(scope="module")
def socket_dir() -> Iterator[Path]:
    # Not under pytest's 0700 tmp tree: a child running as another user must be able to reach the
    # socket (who can connect = who can reach the file). Short path: AF_UNIX paths are <= 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="sessions-it-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def server(django_db_setup: Any, server_tmp: Path, socket_dir: Path) -> Iterator[Server]:
    binds = [f"unix:{socket_dir / 'sessions.sock'}", f"127.0.0.1:{free_port()}"]
    with running_servers([binds], server_tmp) as (started,):
        yield started


@pytest.fixture
def me(create_user: Callable[..., Any]) -> Any:
    """The Django user this process's uid maps to (a superuser: it may list every session)."""
    return create_user(ME, superuser=True)


def run_child(
    server: Server, *methods: str, as_user: pwd.struct_passwd | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """Call ``methods`` over the socket from a forked child (optionally switched to another user
    before it connects); (the child's pid, its JSON-RPC replies)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: reports through the pipe and never returns into pytest
        status = 1
        try:
            os.close(read)
            if as_user is not None:
                os.setgroups([])
                os.setgid(as_user.pw_gid)
                os.setuid(as_user.pw_uid)
            replies = [server.call(method).payload for method in methods]
            with os.fdopen(write, "w") as pipe:
                pipe.write(json.dumps(replies))
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read) as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the client process failed"
    return pid, json.loads(data)


def current(rows: list[dict[str, Any]]) -> dict[str, Any]:
    mine = [row for row in rows if row["current"]]
    assert len(mine) == 1, rows
    return mine[0]


def test_request_without_credentials_gets_a_unix_socket_session(server: Server, me: Any) -> None:
    assert server.call("auth.me").result["pw_name"] == ME

    row = current(server.call("auth.sessions").result)
    assert row["origin"] == ORIGIN
    assert row["credentials"] == "UNIX_SOCKET"
    assert row["credentials_data"]["username"] == ME
    assert set(row["credentials_data"]) == {"username", "login_at"}
    assert row["internal"] is (os.getuid() == 0)
    assert row["secure_transport"] is True


def test_requests_of_the_same_process_reuse_its_session(server: Server, me: Any) -> None:
    first = current(server.call("auth.sessions").result)
    again = current(server.call("auth.sessions").result)  # a new connection, same process
    assert again["id"] == first["id"]
    assert server.call("auth.me").result["pw_name"] == ME
    ours = server.call("auth.sessions", [["origin", "=", ORIGIN]]).result
    assert [row["id"] for row in ours] == [first["id"]]


def test_another_process_gets_its_own_session(server: Server, me: Any) -> None:
    mine = current(server.call("auth.sessions").result)
    pid, (reply,) = run_child(server, "auth.me")
    assert reply["result"]["pw_name"] == ME
    child_origin = f"UNIX socket (pid={pid} uid={os.getuid()} gid={os.getgid()})"
    # The child has exited: its own session ended with it (spec: ended when the process is gone),
    # and stays in the history; this process's session is untouched.
    rows = server.call(
        "auth.sessions", [["credentials", "=", "UNIX_SOCKET"]], {"extra": {"history": True}}
    ).result
    by_origin = {row["origin"]: row for row in rows}
    assert set(by_origin) == {ORIGIN, child_origin}
    assert by_origin[ORIGIN]["id"] == mine["id"]
    assert by_origin[ORIGIN]["end_reason"] is None
    assert by_origin[child_origin]["current"] is False
    assert by_origin[child_origin]["end_reason"] == "LOGOUT"


def test_same_server_over_tcp_without_credentials_is_not_authenticated(server: Server, me: Any) -> None:
    error = server.call("auth.me", via=server.binds[1]).error
    assert error["code"] == -32001
    assert error["data"]["error"] == NOT_AUTHENTICATED


def test_bearer_api_key_over_the_socket_authenticates_one_request(
    server: Server, me: Any, create_user: Callable[..., Any]
) -> None:
    create_user("alice")
    created = server.call("api_key.create", {"name": "socket-key", "username": "alice"}).result
    mine = current(server.call("auth.sessions").result)

    bearer = {"Authorization": f"Bearer {created['key']}"}
    assert server.call("auth.me", headers=bearer).result["pw_name"] == "alice"
    assert server.call("auth.me", headers=bearer).result["pw_name"] == "alice"

    # Per-request: no session for alice, and the next bare request is this process's session again.
    assert server.call("auth.sessions", [["credentials_data.username", "=", "alice"]]).result == []
    assert current(server.call("auth.sessions").result)["id"] == mine["id"]
    assert server.call("auth.me").result["pw_name"] == ME


def test_bad_bearer_over_the_socket_does_not_fall_back_to_the_peer(server: Server, me: Any) -> None:
    error = server.call("auth.me", headers={"Authorization": "Bearer 1-" + "x" * 64}).error
    assert error["data"]["error"] == NOT_AUTHENTICATED


@pytest.mark.skipif(os.getuid() != 0, reason="switching a client to another uid needs root")
def test_other_uid_maps_to_the_user_of_its_account_name(
    server: Server, me: Any, create_user: Callable[..., Any]
) -> None:
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' account on this machine")
    _, (reply,) = run_child(server, "auth.me", as_user=nobody)
    assert reply["error"]["data"]["error"] == NOT_AUTHENTICATED  # no user of that name: no session

    create_user("nobody")
    pid, (reply,) = run_child(server, "auth.me", as_user=nobody)
    assert reply["result"]["pw_name"] == "nobody"
    rows = server.call("auth.sessions", [["credentials_data.username", "=", "nobody"]]).result
    assert [(row["origin"], row["internal"]) for row in rows] == [
        (f"UNIX socket (pid={pid} uid={nobody.pw_uid} gid={nobody.pw_gid})", False)
    ]
