"""The PyPI client aiotruenas, unmodified, against the served WebSocket at ``ws://127.0.0.1:PORT/api/current``.

aiotruenas requires Python >= 3.13. The tests look for ``python3.13`` / ``python3.14`` on PATH and for
pyenv's 3.13, skip with a message when there is none, and otherwise run it from a virtualenv of its
own (``var/aiotruenas-venv``, made and filled from PyPI on first use) through
``aiotruenas_scripts/driver.py``, which takes JSON commands and answers in JSON.

What aiotruenas exposes, and so what these tests can see:

* ``TrueNASClient(host, api_key, use_tls=False, port=)``; ``connect()`` logs in with
  ``auth.login_with_api_key`` (its only login) and needs exactly ``true``; anything else raises
  ``TrueNASAuthenticationError``. The other logins (password, token; ``auth.login_ex`` and the legacy
  bool-returning methods) are made in band with ``call()`` on a connected client.
* Results as sent (no ejson decoding: dates stay ``{"$date": ms}``); an error reply raises
  ``TrueNASCallError`` with ``code``, ``errname`` and ``data``.
* ``connected`` turns false when the server closes the socket; calls then raise
  ``TrueNASConnectionError``.
* ``subscribe()`` needs a string id; notifications are queued raw, so the REMOVED event's id is seen
  in ``params.extra.fields.id``.
"""

from __future__ import annotations

import fcntl
import json
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sessions_app.models import UserSession
from sessions_app.services.api_keys import api_key_create
from tests.conftest import PASSWORD
from tests.integration.servers import ROOT, Server

pytestmark = pytest.mark.django_db(transaction=True)

DRIVER = Path(__file__).with_name("aiotruenas_scripts") / "driver.py"
VENV = ROOT / "var" / "aiotruenas-venv"
REQUIREMENT = "aiotruenas>=1.7,<2"
#: Interpreters that can run aiotruenas, in order of preference.
CANDIDATES = ("python3.13", "python3.14", str(Path.home() / ".pyenv/versions/3.13.0/bin/python"))
#: Bounds one driver command (aiotruenas's own call timeout is 30 s).
ANSWER_WAIT = 40.0
#: How long an expected event or socket close may take (the outbox is polled every 0.25 s).
EVENT_WAIT = 10.0
GET_CURRENT = [[["current", "=", True]], {"get": True}]
SESSION_FIELDS = {"id", "origin", "credentials", "credentials_data", "created_at", "secure_transport"}


# --- the interpreter, the virtualenv and the driver ----------------------------------------------


def _succeeds(command: list[str]) -> bool:
    return subprocess.run(command, capture_output=True, timeout=60, check=False).returncode == 0


def _python_313() -> str | None:
    for candidate in CANDIDATES:
        found = shutil.which(candidate)
        # a pyenv shim for a version that is not selected fails the check
        if found and _succeeds([found, "-c", "import sys; sys.exit(sys.version_info < (3, 13))"]):
            return found
    return None


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        pytest.fail(f"{what} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


@pytest.fixture(scope="session")
def aiotruenas_python() -> str:
    """The virtualenv's python with aiotruenas installed (installed from PyPI only when missing)."""
    interpreter = _python_313()
    if interpreter is None:
        pytest.skip(
            "aiotruenas needs Python >= 3.13: none found (python3.13 or python3.14 on PATH, "
            f"or {CANDIDATES[-1]})"
        )
    python = VENV / "bin" / "python"
    VENV.parent.mkdir(exist_ok=True)
    with (VENV.parent / "aiotruenas-venv.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other test runs on this machine share the virtualenv
        if not (python.exists() and _succeeds([str(python), "-c", "import aiotruenas"])):
            if not (python.exists() and _succeeds([str(python), "-V"])):
                _run([interpreter, "-m", "venv", "--clear", str(VENV)], "creating the aiotruenas virtualenv")
            _run(
                [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", REQUIREMENT],
                f"pip install {REQUIREMENT}",
            )
    return str(python)


class DriverError(AssertionError):
    """A driver command failed: ``error`` is the exception aiotruenas raised."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error)
        self.error = error


class Driver:
    """The driver process: ``request(op, **arguments)`` sends one command and returns its result."""

    def __init__(self, python: str, log: Path, port: int) -> None:
        self.port = port
        self.log = log
        self._log_file = log.open("w")
        self.process = subprocess.Popen(
            [python, str(DRIVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.version = self._answer()["version"]
        #: Notifications read from a subscription but not consumed yet, by subscription id.
        self._events: dict[str, list[dict[str, Any]]] = {}

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put("")

    def _answer(self) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=ANSWER_WAIT)
        except queue.Empty:
            line = ""
        if not line:
            pytest.fail(f"the aiotruenas driver did not answer:\n{self.log.read_text()[-3000:]}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def request(self, op: str, name: str, **arguments: Any) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, "name": name, **arguments}) + "\n")
        self.process.stdin.flush()
        answer = self._answer()
        if not answer["ok"]:
            raise DriverError(answer["error"])
        return answer["result"]

    # the client's API, by client name
    def connect(self, name: str, api_key: str) -> None:
        self.request("connect", name, port=self.port, api_key=api_key)

    def call(self, name: str, method: str, *params: Any) -> Any:
        return self.request("call", name, method=method, params=list(params))

    def error(self, name: str, method: str, *params: Any) -> dict[str, Any]:
        with pytest.raises(DriverError) as failed:
            self.call(name, method, *params)
        return failed.value.error

    def subscribe(self, name: str, event: str = "auth.sessions") -> str:
        subscription = self.request("subscribe", name, event=event)
        self._events[subscription] = []
        return str(subscription)

    def next_event(self, name: str, subscription: str, timeout: float = EVENT_WAIT) -> dict[str, Any]:
        pending = self._events[subscription]
        if not pending:
            pending += self.request("events", name, subscription=subscription, timeout=timeout)
        assert pending, f"no event within {timeout} s"
        return pending.pop(0)

    def no_event(self, name: str, subscription: str, timeout: float = 1.0) -> None:
        pending = self._events[subscription]
        pending += self.request("events", name, subscription=subscription, timeout=timeout)
        assert pending == []

    def skip_earlier_events(self, name: str, subscription: str, own_id: str) -> None:
        """Events committed before ``core.subscribe`` may still be delivered until the next outbox poll.

        So a subscriber can get the ADDED of its own login (TrueNAS sends it none); nothing else here.
        """
        pending = self._events[subscription]
        pending += self.request("events", name, subscription=subscription, timeout=1.0)
        assert all(added_id(message) == own_id for message in pending), pending
        pending.clear()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()  # the driver closes its clients and exits
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log_file.close()


def added_id(message: dict[str, Any]) -> str:
    """The session id of an ADDED notification (asserting its TrueNAS shape)."""
    assert message["jsonrpc"] == "2.0"
    assert message["method"] == "collection_update"
    assert "id" not in message
    params = message["params"]
    assert (params["msg"], params["collection"]) == ("added", "auth.sessions"), message
    assert set(params["fields"]) == SESSION_FIELDS
    return str(params["fields"]["id"])


def removed(session_id: str) -> dict[str, Any]:
    """The REMOVED notification of ``session_id``, exactly as TrueNAS sends it."""
    return {
        "jsonrpc": "2.0",
        "method": "collection_update",
        "params": {"msg": "removed", "collection": "auth.sessions", "extra": {"fields": {"id": session_id}}},
    }


def wait_for_sessions_to_end(timeout: float = EVENT_WAIT) -> None:
    """Wait (at most ``timeout``) until the server has ended the sessions of the sockets just closed.

    It ends them just after each close; the database flush after the test must not run meanwhile (on
    PostgreSQL its TRUNCATE deadlocks with that write). Every test here closes its clients and logs
    out the HTTP sessions it begins, so this waits for no session to be active. It gives up quietly:
    on PostgreSQL the ends of a session and of its TOKEN sessions, run at once, can deadlock, and the
    loser's session then stays active with no socket (a server bug, reported), which no wait ends.
    """
    deadline = time.monotonic() + timeout
    while UserSession.objects.filter(ended_at__isnull=True).exists() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture
def driver(aiotruenas_python: str, ws_server: Server, tmp_path: Path) -> Iterator[Driver]:
    process = Driver(
        aiotruenas_python, tmp_path / "aiotruenas-driver.log", int(ws_server.bind.rpartition(":")[2])
    )
    yield process
    process.close()
    wait_for_sessions_to_end()


@pytest.fixture
def new_key(create_user: Callable[..., Any]) -> Callable[..., tuple[int, str]]:
    """``new_key(username, superuser=False)``: a new user and an API key of theirs (id, plaintext)."""

    def make(username: str, *, superuser: bool = False) -> tuple[int, str]:
        key, plaintext = api_key_create(
            user=create_user(username, superuser=superuser), name=f"{username} key"
        )
        return key.pk, plaintext

    return make


# --- tests -------------------------------------------------------------------------------------------


def test_connect_with_an_api_key(driver: Driver, new_key: Callable[..., tuple[int, str]]) -> None:
    assert driver.version.startswith("1.")
    key_id, key = new_key("root", superuser=True)

    driver.connect("admin", key)  # auth.login_with_api_key(key) -> true

    assert driver.request("connected", "admin") is True
    assert driver.call("admin", "core.ping") == "pong"
    row = driver.call("admin", "auth.sessions", *GET_CURRENT)
    assert row["credentials"] == "API_KEY"
    assert row["credentials_data"]["username"] == "root"
    assert row["credentials_data"]["api_key"] == {"id": key_id, "name": "root key"}
    assert row["secure_transport"] is True  # plain ws:// on loopback: the key is not revoked
    assert row["origin"].startswith("127.0.0.1:")
    assert set(row["created_at"]) == {"$date"}
    assert abs(row["created_at"]["$date"] / 1000 - time.time()) < 60

    with pytest.raises(DriverError) as refused:
        driver.connect("wrong", f"{key_id}-{'x' * 64}")
    assert refused.value.error["type"] == "TrueNASAuthenticationError"
    assert driver.request("connected", "wrong") is False


def test_password_token_and_api_key_logins_in_band(
    driver: Driver, new_key: Callable[..., tuple[int, str]]
) -> None:
    _, root_key = new_key("root", superuser=True)
    alice_key_id, alice_key = new_key("alice", superuser=True)
    driver.connect("admin", root_key)
    driver.connect("other", alice_key)

    def current() -> dict[str, Any]:
        row: dict[str, Any] = driver.call("other", "auth.sessions", *GET_CURRENT)
        return row

    # password: legacy, then login_ex
    assert driver.call("other", "auth.login", "root", PASSWORD) is True
    assert (current()["credentials"], current()["credentials_data"]["username"]) == ("LOGIN_PASSWORD", "root")
    response = driver.call(
        "other", "auth.login_ex", {"mechanism": "PASSWORD_PLAIN", "username": "alice", "password": PASSWORD}
    )
    assert response["response_type"] == "SUCCESS"
    assert response["authenticator"] == "LEVEL_1"
    assert response["user_info"]["pw_name"] == "alice"
    assert current()["credentials_data"]["username"] == "alice"
    assert driver.call("other", "auth.login", "alice", "not the password") is False
    assert driver.call(
        "other", "auth.login_ex", {"mechanism": "PASSWORD_PLAIN", "username": "alice", "password": "nope"}
    ) == {"response_type": "AUTH_ERR"}

    # token (from auth.generate_token): legacy, then login_ex
    tokens = [driver.call("admin", "auth.generate_token", 600, {}, True, False) for _ in range(2)]
    assert all(isinstance(token, str) and len(token) == 64 for token in tokens)
    assert driver.call("other", "auth.login_with_token", tokens[0]) is True
    row = current()
    assert row["credentials"] == "TOKEN"
    assert row["credentials_data"]["parent"]["credentials"] == "API_KEY"
    response = driver.call("other", "auth.login_ex", {"mechanism": "TOKEN_PLAIN", "token": tokens[1]})
    assert response["response_type"] == "SUCCESS"
    assert current()["credentials"] == "TOKEN"
    assert driver.call("other", "auth.login_with_token", "x" * 64) is False
    assert driver.call("other", "auth.login_ex", {"mechanism": "TOKEN_PLAIN", "token": "x" * 64}) == {
        "response_type": "AUTH_ERR"
    }

    # API key: legacy (what connect() sent), then login_ex
    assert driver.call("other", "auth.login_with_api_key", alice_key) is True
    assert current()["credentials_data"]["api_key"]["id"] == alice_key_id
    response = driver.call(
        "other", "auth.login_ex", {"mechanism": "API_KEY_PLAIN", "username": "alice", "api_key": alice_key}
    )
    assert response["response_type"] == "SUCCESS"
    assert current()["credentials"] == "API_KEY"

    # each login replaced the connection's session: only the two connections' sessions are left
    assert driver.call("admin", "auth.sessions", [], {"count": True}) == 2


def test_sessions_filters_and_options(driver: Driver, new_key: Callable[..., tuple[int, str]]) -> None:
    _, root_key = new_key("root", superuser=True)
    _, bob_key = new_key("bob")
    driver.connect("admin", root_key)
    driver.connect("bob", bob_key)
    own = driver.call("admin", "auth.sessions", *GET_CURRENT)

    assert driver.call("admin", "auth.sessions", [], {"count": True}) == 2
    bobs = driver.call("admin", "auth.sessions", [["credentials_data.username", "=", "bob"]], {"get": True})
    assert bobs["current"] is False
    assert bobs["credentials_data"]["api_key"]["name"] == "bob key"
    selected = driver.call(
        "admin",
        "auth.sessions",
        [["internal", "=", False]],
        {"select": ["id", "credentials"], "order_by": ["id"]},
    )
    assert selected == sorted(
        [{"id": own["id"], "credentials": "API_KEY"}, {"id": bobs["id"], "credentials": "API_KEY"}],
        key=lambda row: row["id"],
    )
    newest_first = driver.call(
        "admin", "auth.sessions", [], {"select": ["id", "created_at"], "order_by": ["-created_at"]}
    )
    assert [row["id"] for row in newest_first] == [bobs["id"], own["id"]]

    error = driver.error("admin", "auth.sessions", [["nope", "=", 1]])
    assert error["type"] == "TrueNASCallError"
    assert error["code"] == -32602
    assert error["data"]["extra"] == [["filters[0]", "'nope': unknown field", 22]]
    denied = driver.error("bob", "auth.sessions")
    assert (denied["code"], denied["errname"], denied["data"]["error"]) == (-32001, "EACCES", 13)
    assert driver.error("bob", "core.subscribe", "auth.sessions")["errname"] == "EACCES"


def test_terminate_session_closes_the_socket_and_its_token_cannot_log_in(
    driver: Driver, new_key: Callable[..., tuple[int, str]]
) -> None:
    _, root_key = new_key("root", superuser=True)
    _, alice_key = new_key("alice")
    driver.connect("admin", root_key)
    subscription = driver.subscribe("admin")
    driver.skip_earlier_events(
        "admin", subscription, driver.call("admin", "auth.sessions", *GET_CURRENT)["id"]
    )
    token = driver.call("admin", "auth.generate_token", 600, {}, True, False)

    driver.connect("target", alice_key)
    key_session = added_id(driver.next_event("admin", subscription))
    assert driver.call("target", "auth.login_with_token", token) is True  # replaces the key's session
    replaced = [driver.next_event("admin", subscription) for _ in range(2)]  # in either order
    assert removed(key_session) in replaced
    replaced.remove(removed(key_session))
    token_session = added_id(replaced[0])
    row = driver.call("admin", "auth.sessions", [["id", "=", token_session]], {"get": True})
    assert row["credentials"] == "TOKEN"
    assert driver.call("admin", "auth.terminate_session", "no such session") is False

    assert driver.call("admin", "auth.terminate_session", token_session) is True

    assert driver.request("wait_disconnected", "target", timeout=EVENT_WAIT) is True
    assert driver.error("target", "core.ping")["type"] == "TrueNASConnectionError"
    assert driver.next_event("admin", subscription) == removed(token_session)
    assert driver.call("admin", "auth.sessions", [["id", "=", token_session]]) == []
    driver.connect("retry", alice_key)
    assert driver.call("retry", "auth.login_with_token", token) is False
    assert driver.call("retry", "auth.login_ex", {"mechanism": "TOKEN_PLAIN", "token": token}) == {
        "response_type": "AUTH_ERR"
    }


def test_added_and_removed_events_over_websocket_and_http(
    driver: Driver,
    new_key: Callable[..., tuple[int, str]],
    create_user: Callable[..., Any],
    ws_server: Server,
) -> None:
    _, root_key = new_key("root", superuser=True)
    _, bob_key = new_key("bob")
    create_user("carol")
    driver.connect("admin", root_key)
    subscription = driver.subscribe("admin")
    driver.skip_earlier_events(
        "admin", subscription, driver.call("admin", "auth.sessions", *GET_CURRENT)["id"]
    )

    # A WebSocket login, then its close.
    driver.connect("bob", bob_key)
    event = driver.next_event("admin", subscription)
    bob_session = added_id(event)
    fields = event["params"]["fields"]
    assert fields["credentials"] == "API_KEY"
    assert fields["credentials_data"]["username"] == "bob"
    assert fields["origin"].startswith("127.0.0.1:")
    assert fields["secure_transport"] is True
    assert set(fields["created_at"]) == {"$date"}
    driver.request("close", "bob")
    assert driver.next_event("admin", subscription) == removed(bob_session)

    # A session begun and ended through HTTP.
    cookie = ws_server.login("carol")
    event = driver.next_event("admin", subscription)
    carol_session = added_id(event)
    assert event["params"]["fields"]["credentials_data"]["username"] == "carol"
    assert ws_server.call("auth.logout", cookie=cookie).result is True
    assert driver.next_event("admin", subscription) == removed(carol_session)

    # A WebSocket session terminated through HTTP: its socket closes too.
    driver.connect("target", bob_key)
    target_session = added_id(driver.next_event("admin", subscription))
    admin_cookie = ws_server.login("root")
    admin_http_session = added_id(driver.next_event("admin", subscription))
    assert ws_server.call("auth.terminate_session", target_session, cookie=admin_cookie).result is True
    assert driver.next_event("admin", subscription) == removed(target_session)
    assert driver.request("wait_disconnected", "target", timeout=EVENT_WAIT) is True
    assert ws_server.call("auth.logout", cookie=admin_cookie).result is True
    assert driver.next_event("admin", subscription) == removed(admin_http_session)
    driver.no_event("admin", subscription)

    driver.request("unsubscribe", "admin", subscription=subscription)  # core.unsubscribe -> null
    assert driver.request("is_subscribed", "admin", subscription=subscription) is False
    assert driver.request("connected", "admin") is True
