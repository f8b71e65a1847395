#!/usr/bin/env python
"""Benchmark of the WebSocket transport: calls/s over one WebSocket vs over one HTTP keep-alive
connection, against the served configuration.

    .venv/bin/python bench/ws_bench.py                     # SQLite
    .venv/bin/python bench/ws_bench.py --database-url postgres://postgres@127.0.0.1:5432/x   # + PostgreSQL

The server is started by the script as ``bin/serve`` runs it: gunicorn with
``sessions_app.server.asgi_worker.PeerCredUvicornWorker``, **1 worker**, ``project.asgi:application`` on
127.0.0.1. Each database is a scratch one, recreated at every run and seeded with 60 non-internal
sessions: SQLite ``bench/data/ws_bench.sqlite3``; with ``--database-url`` (or ``DATABASE_URL``)
also PostgreSQL, in a database ``bench_ws`` created on that server (the database the URL names is
not touched).

Calls, each authenticated by its session (one indexed session lookup per call on both transports:
the WebSocket re-checks its session before every call as the HTTP middleware checks the cookie):

* ``auth.sessions`` ``[[["internal","=",false]], {"order_by":["-created_at"],"limit":50}]`` (50 rows);
* ``auth.me`` (trivial), to show what the transport itself costs.

Transports, one client each, in this process (its JSON encoding and decoding is counted in every case):

* **WebSocket** (the ``websockets`` sync client), one call at a time: send, wait for the reply;
* **WebSocket, pipelined**: ``--depth`` calls in flight on the same socket (replies matched by id),
  which HTTP/1.1 keep-alive cannot do;
* **HTTP keep-alive**: one persistent ``http.client`` connection, ``POST /api/current`` with the
  session cookie, one call at a time (the script checks that the connection is never closed
  within a case; it is opened afresh, untimed, before each, as gunicorn closes idle ones after 2 s);
* for reference, **HTTP, WSGI sync worker**: the same calls to ``project.wsgi`` on gunicorn's sync
  worker (1 worker, started alongside), which closes the connection after every reply.

``--rounds`` rounds of ``--calls`` calls per case, cases rotated within every round; calls/s is the
median over the rounds, p50 the median latency of all sequential calls. The section between
``<!-- ws-bench:start -->`` and ``<!-- ws-bench:end -->`` of bench/RESULTS.md is replaced.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from auth_bench import base_env, setup_django  # noqa: E402
from common import ASGI_WORKER, DATA, Gunicorn, machine, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PG_NAME = "bench_ws"
PASSWORD = "bench correct horse battery staple"
ADMIN = "bench_admin"
COOKIE = "__Host-sid"
FILTERS = [["internal", "=", False]]
OPTIONS = {"order_by": ["-created_at"], "limit": 50}
ROWS = 50
SEEDED_SESSIONS = 60
CALLS = {
    "auth.sessions, 50 rows": ("auth.sessions", [FILTERS, OPTIONS]),
    "auth.me (trivial)": ("auth.me", []),
}
REFERENCE = "HTTP, WSGI sync worker"
TRANSPORTS = ("WebSocket", "WebSocket, pipelined", "HTTP keep-alive", REFERENCE)


# --- worker: seed one database ---------------------------------------------------------------------


def worker_seed(database_url: str) -> dict[str, Any]:
    setup_django(database_url)
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from sessions_app.auth.clients import Client
    from sessions_app.models import Credentials
    from sessions_app.services.sessions import session_create

    call_command("migrate", verbosity=0)
    model = get_user_model()
    admin = model(username=ADMIN, is_superuser=True, is_staff=True)
    admin.set_password(PASSWORD)
    admin.save()
    users = [model.objects.create(username=f"bench{i}") for i in range(6)]
    for n in range(SEEDED_SESSIONS):
        session_create(
            credentials=Credentials.LOGIN_PASSWORD,
            client=Client(address=f"10.0.{n // 250}.{n % 250 + 1}", port=40000 + n),
            user=users[n % len(users)],
        )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")
    version = connection.pg_version if connection.vendor == "postgresql" else None
    return {"vendor": connection.vendor, "server": version}


# --- the server ----------------------------------------------------------------------------------------


class Server(Gunicorn):
    """gunicorn with 1 worker on 127.0.0.1: the served configuration (the uvicorn worker class and
    the ASGI app), or (``asgi=False``) the WSGI app on a sync worker, for reference."""

    def __init__(self, database_url: str, *, asgi: bool = True) -> None:
        super().__init__(base_env(database_url), asgi=asgi, name="ws-bench")

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, list[str]]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("POST", "/api/current", body, {"Content-Type": "application/json", **headers})
            response = connection.getresponse()
            return response.status, response.read(), response.msg.get_all("Set-Cookie") or []
        finally:
            connection.close()


# --- the clients ----------------------------------------------------------------------------------------


def rpc_body(request_id: int, method: str, params: list[Any]) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}).encode()


def check(reply: dict[str, Any], method: str) -> None:
    result = reply.get("result")
    if method == "auth.sessions":
        assert isinstance(result, list), reply
        assert len(result) == ROWS, len(result)
    else:
        assert isinstance(result, dict), reply
        assert result["pw_name"] == ADMIN, reply


class WebSocketClient:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        reply = self._call("auth.login", [ADMIN, PASSWORD])
        assert reply.get("result") is True, reply

    def _call(self, method: str, params: list[Any]) -> dict[str, Any]:
        request_id = next(self.ids)
        self.ws.send(rpc_body(request_id, method, params).decode())
        reply = json.loads(self.ws.recv(30))
        assert reply.get("id") == request_id, reply
        return reply  # type: ignore[no-any-return]

    def sequential(self, method: str, params: list[Any], count: int, latencies: list[float]) -> None:
        for _ in range(count):
            started = time.perf_counter()
            check(self._call(method, params), method)
            latencies.append((time.perf_counter() - started) * 1000)

    def pipelined(self, method: str, params: list[Any], count: int, depth: int) -> None:
        pending: set[int] = set()
        sent = 0
        while sent < count or pending:
            while sent < count and len(pending) < depth:
                request_id = next(self.ids)
                self.ws.send(rpc_body(request_id, method, params).decode())
                pending.add(request_id)
                sent += 1
            reply = json.loads(self.ws.recv(30))
            pending.remove(reply["id"])
            check(reply, method)


class HTTPClient:
    """One persistent connection; every call must keep it open (HTTP/1.1 keep-alive). With
    ``keep_alive=False`` (gunicorn's sync worker closes after every reply) each call reconnects."""

    def __init__(self, server: Server, *, keep_alive: bool = True) -> None:
        self.keep_alive = keep_alive
        status, data, cookies = server.post(
            rpc_body(
                1, "auth.login_ex", [{"mechanism": "PASSWORD_PLAIN", "username": ADMIN, "password": PASSWORD}]
            ),
            {},
        )
        assert status == 200, data
        assert json.loads(data)["result"]["response_type"] == "SUCCESS", data
        secret = next(c.split(";")[0].split("=", 1)[1] for c in cookies if c.startswith(f"{COOKIE}="))
        self.headers = {"Content-Type": "application/json", "Cookie": f"{COOKIE}={secret}"}
        self.port = server.port
        self.connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        self.socket: Any = None
        self.ids = itertools.count(1)

    def reconnect(self) -> None:
        """A fresh connection: gunicorn's keep-alive timeout (2 s) closes it while other cases run."""
        self.connection.close()
        self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self.connection.connect()
        self.socket = self.connection.sock

    def sequential(self, method: str, params: list[Any], count: int, latencies: list[float]) -> None:
        for _ in range(count):
            started = time.perf_counter()
            request_id = next(self.ids)
            self.connection.request(
                "POST", "/api/current", rpc_body(request_id, method, params), self.headers
            )
            response = self.connection.getresponse()
            reply = json.loads(response.read())
            assert response.status == 200, reply
            assert response.will_close is not self.keep_alive, "unexpected connection handling"
            assert reply.get("id") == request_id, reply
            check(reply, method)
            latencies.append((time.perf_counter() - started) * 1000)
        if self.keep_alive:
            assert self.connection.sock is self.socket, "the connection was re-opened"

    def close(self) -> None:
        self.connection.close()


def bench_server(database_url: str, rounds: int, calls: int, depth: int) -> dict[str, dict[str, Any]]:
    """{call: {transport: {"rps": median calls/s, "p50": ms or None}}}."""
    from websockets.sync.client import connect

    with (
        Server(database_url) as server,
        Server(database_url, asgi=False) as wsgi_server,
        connect(f"ws://127.0.0.1:{server.port}/api/current", max_size=2**24, compression=None) as socket_,
    ):
        ws, web = WebSocketClient(socket_), HTTPClient(server)
        wsgi = HTTPClient(wsgi_server, keep_alive=False)
        try:
            runners: dict[str, Callable[[str, list[Any], int, list[float]], None]] = {
                "WebSocket": ws.sequential,
                "WebSocket, pipelined": lambda m, p, n, _lat: ws.pipelined(m, p, n, depth),
                "HTTP keep-alive": web.sequential,
                REFERENCE: wsgi.sequential,
            }
            cases = [(call, transport) for call in CALLS for transport in TRANSPORTS]
            for call, transport in cases:  # warm-up: imports, connections, prepared statements
                web.reconnect()
                runners[transport](*CALLS[call], 30, [])
            rps: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
            latencies: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
            for round_ in range(rounds):
                shift = round_ % len(cases)
                for case in cases[shift:] + cases[:shift]:
                    call, transport = case
                    web.reconnect()  # untimed; the keep-alive case then runs on one connection
                    started = time.perf_counter()
                    runners[transport](*CALLS[call], calls, latencies[case])
                    rps[case].append(calls / (time.perf_counter() - started))
        finally:
            web.close()
            wsgi.close()
    return {
        call: {
            transport: {
                "rps": statistics.median(rps[call, transport]),
                "p50": statistics.median(latencies[call, transport]) if latencies[call, transport] else None,
            }
            for transport in TRANSPORTS
        }
        for call in CALLS
    }


# --- orchestration --------------------------------------------------------------------------------------


def scratch_database(engine: str, postgres_url: str | None) -> str:
    """A freshly created, empty database."""
    DATA.mkdir(parents=True, exist_ok=True)
    if engine == "sqlite":
        path = DATA / "ws_bench.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{path}"
    assert postgres_url is not None
    parts = urlsplit(postgres_url)
    pg = [
        "-h",
        parts.hostname or "127.0.0.1",
        "-p",
        str(parts.port or 5432),
        "-U",
        parts.username or "postgres",
    ]
    env = {**os.environ, **({"PGPASSWORD": parts.password} if parts.password else {})}
    subprocess.run(["dropdb", *pg, "--if-exists", PG_NAME], check=True, capture_output=True, env=env)
    subprocess.run(["createdb", *pg, PG_NAME], check=True, capture_output=True, env=env)
    return urlunsplit(parts._replace(path=f"/{PG_NAME}", query=""))


def run_worker(*args: str) -> Any:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"worker {args[0]} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def render(runs: list[dict[str, Any]], args: argparse.Namespace, load_avg: list[float]) -> str:
    lines = [
        "<!-- ws-bench:start -->",
        "## WebSocket vs HTTP keep-alive (`bench/ws_bench.py`)",
        "",
        f"Machine: {machine()}. Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; 1-minute load "
        f"average at start / end: {load_avg[0]:.2f} / {load_avg[1]:.2f}. Server: the served configuration, "
        f"gunicorn + `{ASGI_WORKER}`, **1 worker**, on 127.0.0.1; the client runs in one thread on the same "
        "2 cores.",
        "",
        f"Calls authenticated by a password session (one session lookup per call on both transports): "
        f"`auth.sessions` `{json.dumps([FILTERS, OPTIONS])}` ({ROWS} of {SEEDED_SESSIONS + 2} sessions) and "
        f"the trivial `auth.me`. **WebSocket**: one socket, one call at a time. **pipelined**: "
        f"{args.depth} calls in flight on that socket. **HTTP keep-alive**: one persistent `http.client` "
        f"connection with the session cookie, one call at a time. **WSGI sync** (reference): the same calls "
        "to `project.wsgi` on 1 gunicorn sync worker, a new connection per call (that worker closes after "
        f"every reply). {args.rounds} rounds × {args.calls} calls "
        "per case, cases rotated within each round; calls/s is the median of the rounds, p50 the median "
        "latency of all calls (one at a time only).",
        "",
        "| database | call | WebSocket calls/s | p50 ms | pipelined calls/s | HTTP keep-alive calls/s | "
        "p50 ms | WebSocket / HTTP keep-alive | reference: WSGI sync calls/s | p50 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        for call, figures in run["figures"].items():
            ws, pipe, web, wsgi = (figures[t] for t in TRANSPORTS)
            lines.append(
                f"| {run['label']} | {call} | {ws['rps']:.0f} | {ws['p50']:.2f} | {pipe['rps']:.0f} | "
                f"{web['rps']:.0f} | {web['p50']:.2f} | {ws['rps'] / web['rps']:.2f}× | "
                f"{wsgi['rps']:.0f} | {wsgi['p50']:.2f} |"
            )
    lines += [
        "",
        "Both transports run the same method code (`sessions_app.api.jsonrpc.execute`). Per call, HTTP "
        "adds request parsing, Django's middleware stack and response headers; the WebSocket adds a hop "
        "to its call thread pool and back to the event loop. Pipelining overlaps the client's and the "
        "server's work (and the server's calls, up to `MAX_IN_FLIGHT`), but one worker's calls still "
        "share one process.",
        "",
        "HTTP through the served worker runs Django's WSGI handler in a pooled thread "
        "(`sessions_app.server.asgi_http`: one hop per request, connections kept per thread on SQLite and "
        "pooled on PostgreSQL); what remains of its gap to the WSGI sync worker, which even pays a TCP "
        "connect per call, is uvicorn's pure-Python HTTP parser (h11) and that hop. The WebSocket skips "
        "HTTP parsing and the middleware stack altogether.",
        "<!-- ws-bench:end -->",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="a PostgreSQL URL: also run on PostgreSQL, in a scratch database bench_ws on that server",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--depth", type=int, default=8, help="calls in flight in the pipelined case")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    parser.add_argument("--worker-seed", metavar="DATABASE_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_seed:
        print(json.dumps(worker_seed(args.worker_seed)))
        return
    engines = ["sqlite"]
    if args.database_url:
        if not args.database_url.startswith(("postgres://", "postgresql://")):
            sys.exit(f"--database-url: a PostgreSQL URL is required, not {args.database_url!r}")
        engines.append("postgresql")
    load_avg = [os.getloadavg()[0]]
    runs = []
    for engine in engines:
        print(f"{engine}: seeding ...", file=sys.stderr, flush=True)
        url = scratch_database(engine, args.database_url)
        seed = run_worker("--worker-seed", url)
        label = "SQLite" if seed["vendor"] == "sqlite" else f"PostgreSQL {seed['server'] // 10000}"
        print(f"{engine}: measuring ...", file=sys.stderr, flush=True)
        runs.append({"label": label, "figures": bench_server(url, args.rounds, args.calls, args.depth)})
    load_avg.append(os.getloadavg()[0])
    text = render(runs, args, load_avg)
    if args.no_write:
        print(text)
    else:
        write_section("ws-bench", text)
        print(text)
        print("wrote bench/RESULTS.md", file=sys.stderr)


if __name__ == "__main__":
    main()
