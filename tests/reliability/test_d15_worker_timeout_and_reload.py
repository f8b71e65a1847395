"""D15: a request stuck on the database past gunicorn's ``--timeout`` -- the other workers keep serving
and nothing is left half-done; ``kill -HUP`` of the master replaces every worker and every session
stays valid; a terminated session never comes back from a process of its own (security.md group D;
gunicorn settings; ASVS 4.0.3 V2.8.6 "regardless of location").

Both ways of serving are tested. Sync workers (``project.wsgi``): the stuck worker is killed by the
master after ``--timeout`` and its transaction never commits. uvicorn workers (``bin/serve``'s
``project.asgi``): Django runs each request's synchronous code in a thread of its own, the worker's
event loop keeps heartbeating, so the worker is not killed and keeps answering other requests itself;
the stuck request completes once the database frees (or, past the database's own timeout, gets the
documented 503).

A login is made to hang on a lock held by the test, outside Django: SQLite's write lock (``BEGIN
IMMEDIATE``; the servers' busy timeout is raised above the worker timeout), or on PostgreSQL a
``SHARE`` lock on the session table, which blocks the login's insert and nothing that only reads.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
from typing import Any

import pytest
from django.db import connection

from sessions_app.models import AuditEvent, AuditRecord, UserSession
from tests.conftest import PASSWORD
from tests.reliability.helpers_late import (
    Instance,
    create_user,
    gunicorn,
    leak_guard,  # noqa: F401 - fixture
    log_problems,
    login,
    me,
    record_figures,
    refused,
    reload_workers,
    spread,
    wait_for_workers,
    wait_until,
)

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("leak_guard"),
]

#: gunicorn --timeout (seconds): short, yet longer than a worker takes to boot on a busy two-core machine.
TIMEOUT = 5
#: What gunicorn logs when it kills a stuck worker (SIGABRT, then SIGKILL if that does not end it).
KILL_LINES = [r"WORKER TIMEOUT", r"was sent SIGKILL", r"Traceback", r"SystemExit", r"Error handling request"]


def hold_database(db_locks: Any) -> contextlib.AbstractContextManager[None]:
    if connection.vendor == "sqlite":
        return db_locks.sqlite_write_lock()
    return db_locks.pg_table_lock(UserSession._meta.db_table, "SHARE")


def hanging_login(server: Instance, outcome: dict[str, Any], accepted: threading.Event) -> None:
    """A login that waits on the lock: its worker killed (sync), it gets no answer or gunicorn's; with
    uvicorn workers it is answered once the lock is released. ``accepted`` is set, with
    ``outcome["worker"]``, once a worker holds the connection and the request is on its way."""
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "auth.login_ex",
            "params": [{"mechanism": "PASSWORD_PLAIN", "username": "hang", "password": PASSWORD}],
        }
    )
    started = time.monotonic()
    connection_ = server.connect()
    connection_.timeout = 60
    try:
        connection_.connect()
        outcome["worker"] = server.owner(connection_.sock.getsockname()[1], wait=30)
        connection_.request("POST", "/api/current", body, {"Content-Type": "application/json"})
        accepted.set()
        response = connection_.getresponse()
        outcome["answer"] = (response.status, response.read()[:300])
    except (http.client.RemoteDisconnected, ConnectionResetError, http.client.BadStatusLine) as exc:
        outcome["dropped"] = type(exc).__name__
    except OSError as exc:
        outcome["error"] = repr(exc)
    finally:
        accepted.set()  # also on failure: the caller then finds no worker and says so
        connection_.close()
        outcome["seconds"] = time.monotonic() - started


def start_stuck_login(server: Instance, db_locks: Any, outcome: dict[str, Any]) -> threading.Thread:
    """Start `hanging_login` and return once it is stuck: a worker has accepted it (found through
    /proc), and on PostgreSQL its backend waits on the held lock. On SQLite the wait in the busy
    handler cannot be observed from outside; once accepted, nothing the login does can finish while
    the write lock is held, so the worker is busy with it from then on."""
    accepted = threading.Event()
    stuck = threading.Thread(target=hanging_login, args=(server, outcome, accepted))
    stuck.start()
    assert accepted.wait(30), "the login was not sent"
    assert "worker" in outcome, outcome
    if connection.vendor == "postgresql":
        wait_until(
            lambda: bool(db_locks.pg_backends(None, waiting_on_lock=True)),
            timeout=30,
            what="the login's backend to wait on the session table's lock",
        )
    return stuck


def start_server(tmp_path: Any, served: str) -> contextlib.AbstractContextManager[list[Instance]]:
    # The stuck request's database wait outlasts the worker timeout; the database gives up much later.
    return gunicorn(
        tmp_path,
        name=f"d15-{served}",
        workers=2,
        timeout=TIMEOUT,
        asgi=served == "asgi",
        SQLITE_BUSY_TIMEOUT="60",
        PG_STATEMENT_TIMEOUT_MS="60000",
    )


def stuck_phase_sync(server: Instance, db_locks: Any, alice: str, bob: str) -> dict[str, Any]:
    """Sync workers: the stuck worker stops heartbeating and the master kills it after --timeout; the
    other worker, the only one accepting, answers everything meanwhile."""
    workers = server.worker_pids()
    outcome: dict[str, Any] = {"served": []}
    with hold_database(db_locks):
        stuck = start_stuck_login(server, db_locks, outcome)
        deadline = time.monotonic() + 45  # a hang ceiling: the master kills the worker after TIMEOUT
        while stuck.is_alive() and time.monotonic() < deadline:
            pid, reply = server.via_worker("auth.me", cookie=alice)
            outcome["served"].append((pid, reply.result["pw_name"]))
            assert refused(server.via_worker("auth.me", cookie=bob)[1])
            time.sleep(0.2)  # pacing, not synchronisation: a few requests per second while it hangs
        stuck.join(10)
    assert not stuck.is_alive()
    # The killed request gets no answer (SQLite: the abort signal cannot interrupt SQLite's busy wait,
    # so the master's SIGKILL ends the worker) or gunicorn's own 500 page (PostgreSQL: the abort
    # interrupts the wait and gunicorn answers a timed-out request with 500 -- see docs/operations.md:
    # keep --timeout above the database's timeouts so that a slow database gets the JSON 503 first).
    answer = outcome.get("answer")
    assert "dropped" in outcome or (answer is not None and answer[0] == 500), outcome
    outcome["gunicorn_500"] = int(answer is not None)
    assert "WORKER TIMEOUT" in server.log.read_text(errors="replace")
    served = outcome["served"]
    assert len(served) >= 3
    assert {name for _, name in served} == {"alice"}
    # All answered by the worker that was not stuck, one of the original two.
    assert outcome["worker"] in workers
    assert {pid for pid, _ in served} == workers - {outcome["worker"]}
    # Nothing of the killed login was committed; the stuck worker was replaced. On PostgreSQL the dead
    # worker's backend runs on once the lock is free, finds its client gone and rolls back: wait for
    # that, so that what is checked is the end state, not a moment before it.
    if connection.vendor == "postgresql":
        wait_until(
            lambda: not db_locks.pg_backends(None, in_transaction=True),
            timeout=30,
            what="the killed worker's transaction to end",
        )
    assert not UserSession.objects.filter(username="hang").exists()
    assert not AuditRecord.objects.filter(username="hang", event=AuditEvent.AUTHENTICATION).exists()
    outcome["workers"] = wait_for_workers(server, replacing=workers - {pid for pid, _ in served})
    return outcome


def stuck_phase_asgi(server: Instance, db_locks: Any, alice: str, bob: str) -> dict[str, Any]:
    """uvicorn workers: a request waiting on the database runs in a thread of its own; the event loop
    keeps heartbeating, so --timeout does not kill the worker, and every worker -- the one holding the
    stuck request included -- answers other requests at once. Once the lock is released the stuck
    login completes, with its audit record."""
    workers = server.worker_pids()
    outcome: dict[str, Any] = {"served": []}
    with hold_database(db_locks):
        stuck = start_stuck_login(server, db_locks, outcome)
        held_until = time.monotonic() + TIMEOUT + 1.5  # past --timeout
        while time.monotonic() < held_until:
            started = time.monotonic()
            answers = spread(server, lambda s: s.via_worker("auth.me", cookie=alice), pids=workers)
            outcome["served"] += [(pid, reply.result["pw_name"]) for pid, reply in answers]
            outcome.setdefault("slowest", 0.0)
            outcome["slowest"] = max(outcome["slowest"], time.monotonic() - started)
            assert refused(server.via_worker("auth.me", cookie=bob)[1])
            assert stuck.is_alive()
            time.sleep(0.2)  # pacing, not synchronisation
        assert server.worker_pids() == workers  # nobody was killed
    stuck.join(30)
    assert not stuck.is_alive()
    assert outcome.get("answer", (0,))[0] == 200, outcome
    assert {name for _, name in outcome["served"]} == {"alice"}
    assert {pid for pid, _ in outcome["served"]} == workers
    assert outcome["slowest"] < 5.0  # a hang ceiling: answers take ~0.05-0.3 s; the stuck one takes 60 s
    session = UserSession.objects.get(username="hang")
    assert AuditRecord.objects.filter(session=session.public_id, event=AuditEvent.AUTHENTICATION).count() == 1
    outcome["workers"] = workers
    return outcome


@pytest.mark.parametrize("served", ["sync", "asgi"])
def test_D15_worker_timeout_and_hup_reload(tmp_path: Any, db_locks: Any, served: str) -> None:
    with start_server(tmp_path, served) as (server,):
        for name in ("alice", "bob", "hang"):
            create_user(name)
        create_user("admin", superuser=True)
        alice, bob, admin = login(server, "alice"), login(server, "bob"), login(server, "admin")
        bob_id = UserSession.objects.get(username="bob").public_id
        assert server.call("auth.terminate_session", bob_id, cookie=admin).result is True
        assert refused(me(server, bob))

        # 1. One request stuck on the database past --timeout.
        phase = stuck_phase_sync if served == "sync" else stuck_phase_asgi
        outcome = phase(server, db_locks, alice, bob)
        workers = outcome["workers"]
        answers = spread(server, lambda s: s.via_worker("auth.me", cookie=alice), pids=workers)
        assert {reply.result["pw_name"] for _, reply in answers} == {"alice"}
        answers = spread(server, lambda s: s.via_worker("auth.me", cookie=bob), pids=workers)
        assert all(refused(reply) for _, reply in answers)

        # 2. kill -HUP: every worker replaced; sessions stay valid, the terminated one stays ended.
        started = time.monotonic()
        reloaded = reload_workers(server)
        reload_seconds = time.monotonic() - started
        assert not reloaded & workers
        answers = spread(server, lambda s: s.via_worker("auth.me", cookie=alice), pids=reloaded)
        assert {reply.result["pw_name"] for _, reply in answers} == {"alice"}
        answers = spread(server, lambda s: s.via_worker("auth.me", cookie=bob), pids=reloaded)
        assert all(refused(reply) for _, reply in answers)
        assert me(server, admin).result["pw_name"] == "admin"

        # 3. Terminated after the reload: refused by every worker from the next request on.
        alice_id = UserSession.objects.get(username="alice", ended_at__isnull=True).public_id
        assert server.call("auth.terminate_session", alice_id, cookie=admin).result is True
        answers = spread(server, lambda s: s.via_worker("auth.me", cookie=alice), pids=reloaded)
        assert all(refused(reply) for _, reply in answers)
        problems = log_problems(
            [server],
            allow=KILL_LINES if served == "sync" else (),
            expected_500s=outcome.get("gunicorn_500", 0),
        )

    record_figures(
        f"D15-{served}",
        stuck_request_seconds=round(outcome["seconds"], 2),
        requests_served_meanwhile=len(outcome["served"]),
        hup_reload_seconds=round(reload_seconds, 2),
        worker_timeout=TIMEOUT,
        killed_request_answer=("gunicorn 500" if outcome.get("gunicorn_500") else "dropped")
        if served == "sync"
        else "completed",
    )
    assert problems == []
