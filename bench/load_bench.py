#!/usr/bin/env python
"""Bounded load test on loopback (security.md D18): the served configuration at 1, 2 and 4 workers.

    .venv/bin/python bench/load_bench.py                          # SQLite, 100k sessions
    .venv/bin/python bench/load_bench.py --engines sqlite,postgresql --duration 8
    .venv/bin/python bench/load_bench.py --quick --no-write       # a smoke run

Each database is seeded once (``seed_demo`` with ``--sessions`` sessions, plus bench users with
Argon2id passwords, their API keys and multi-use tokens); then for each worker count a gunicorn
with the uvicorn worker class (``bin/serve``'s command) is started on 127.0.0.1 and each scenario
runs for ``--duration`` seconds from ``--clients`` client processes (keep-alive ``http.client``
connections, every request checked), stopping by itself:

* password logins/s (``auth.login_ex`` PASSWORD_PLAIN), API-key logins/s, token logins/s;
* ``auth.sessions`` queries/s (50 newest non-internal sessions out of the seeded ones, as an admin);
* terminate -> rejection across workers: a victim session is terminated through one connection,
  then the victim's cookie is sent on fresh connections (landing on any worker): the time from the
  terminate reply to the first rejection, and how many requests succeeded after the terminate
  returned (must be 0).

The load generator shares the machine's cores with the server, so the figures are a floor. The
table goes to the ``load_bench`` section of bench/RESULTS.md, beside Keycloak's published figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, Gunicorn, fresh_database, machine, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
SECRET_KEY = "benchmark-only-secret-key-not-for-production-use-load-0123456789"
PASSWORD = "bench correct horse battery staple"
COOKIE = "__Host-sid"
KEYCLOAK = "Keycloak: 15 password logins/s per vCPU; 1 vCPU per ~200 refresh/s (security.md §4)"

SEED = """
import json
from django.contrib.auth import get_user_model
from sessions_app.auth.clients import Client
from sessions_app.models import Credentials
from sessions_app.services.api_keys import api_key_create
from sessions_app.services.sessions import session_create
from sessions_app.services.tokens import token_generate
User = get_user_model()
local = Client(address="127.0.0.1", port=1)
out = {"users": [], "keys": [], "tokens": []}
for i in range(8):
    user = User(username=f"load{i}")
    user.set_password(%(password)r)
    user.save()
    out["users"].append(user.username)
    out["keys"].append(api_key_create(user=user, name=f"load{i}")[1])
    parent = session_create(credentials=Credentials.LOGIN_PASSWORD, client=local, user=user)
    out["tokens"].append(token_generate(session=parent.session, client=local, ttl=86400, match_origin=False))
admin = User.objects.create_superuser("loadadmin", password=%(password)r)
out["admin"] = session_create(credentials=Credentials.LOGIN_PASSWORD, client=local, user=admin).secret
from django.db import connection
with connection.cursor() as cursor:  # planner statistics, as autovacuum / a deployment would have them
    cursor.execute("ANALYZE")
print("SEED " + json.dumps(out))
"""


def env_for(database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DJANGO_SECRET_KEY": SECRET_KEY,
        "DJANGO_DEBUG": "false",
        "DATABASE_URL": database_url,
        "SESSIONS_FAIL_DELAY": "0",
        "SESSIONS_LOGIN_RATE": "0",  # the per-address limit would cap a single-address load test
        "SESSIONS_MAX_PER_USER": "1000000",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
    }


def database_url(engine: str) -> str:
    return fresh_database(engine, sqlite=DATA / "load_bench.sqlite3", postgres="bench_load")


def seed(url: str, sessions: int) -> dict[str, Any]:
    env = env_for(url)
    manage = [PYTHON, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run(
        [*manage, "seed_demo", "--sessions", str(sessions), "--seed", "1", "--no-progress"],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    done = subprocess.run(
        [*manage, "shell", "-c", SEED % {"password": PASSWORD}],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    line = next(line for line in done.stdout.splitlines() if line.startswith("SEED "))
    return json.loads(line.removeprefix("SEED "))


def server(url: str, workers: int) -> Gunicorn:
    """The served configuration (uvicorn workers, the PostgreSQL pool) with ``workers`` workers."""
    return Gunicorn(env_for(url), workers=workers, name="load-bench")


def body(method: str, *params: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()


def post(port: int, method: str, *params: Any, cookie: str | None = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        return _send(connection, body(method, *params), cookie)
    finally:
        connection.close()


def _send(connection: http.client.HTTPConnection, data: bytes, cookie: str | None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if cookie:
        headers["Cookie"] = f"{COOKIE}={cookie}"
    connection.request("POST", "/api/current", data, headers)
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def scenario_requests(name: str, seed_data: dict[str, Any], client: int) -> tuple[list[bytes], str | None]:
    """The request bodies a client cycles through, and the cookie it sends."""
    users, keys, tokens = seed_data["users"], seed_data["keys"], seed_data["tokens"]
    if name == "password logins":
        return [
            body("auth.login_ex", {"mechanism": "PASSWORD_PLAIN", "username": u, "password": PASSWORD})
            for u in users
        ], None
    if name == "API-key logins":
        return [
            body("auth.login_ex", {"mechanism": "API_KEY_PLAIN", "username": u, "api_key": k})
            for u, k in zip(users, keys, strict=True)
        ], None
    if name == "token logins":
        return [body("auth.login_ex", {"mechanism": "TOKEN_PLAIN", "token": t}) for t in tokens], None
    query = body("auth.sessions", [["internal", "=", False]], {"order_by": ["-created_at"], "limit": 50})
    return [query], seed_data["admin"]


def _ok(name: str, status: int, payload: Any) -> bool:
    if status != 200 or "result" not in payload:
        return False
    result = payload["result"]
    if name.endswith("logins"):
        return isinstance(result, dict) and result.get("response_type") == "SUCCESS"
    return isinstance(result, list) and len(result) == 50


def client_loop(args: tuple[int, str, dict[str, Any], int, float, float]) -> dict[str, Any]:
    port, name, seed_data, client, start_at, duration = args
    bodies, cookie = scenario_requests(name, seed_data, client)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    latencies: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}
    time.sleep(max(0.0, start_at - time.time()))
    end = time.monotonic() + duration
    i = client
    while time.monotonic() < end:
        started = time.perf_counter()
        try:
            status, payload = _send(connection, bodies[i % len(bodies)], cookie)
        except (OSError, http.client.HTTPException):
            errors += 1
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            continue
        latencies.append(time.perf_counter() - started)
        statuses[status] = statuses.get(status, 0) + 1
        if not _ok(name, status, payload):
            errors += 1
        i += 1
    connection.close()
    return {"latencies": latencies, "errors": errors, "statuses": statuses}


def run_scenario(
    pool: Any, port: int, name: str, seed_data: dict[str, Any], clients: int, duration: float
) -> Any:
    start_at = time.time() + 0.5
    parts = pool.map(client_loop, [(port, name, seed_data, c, start_at, duration) for c in range(clients)])
    latencies = sorted(x for p in parts for x in p["latencies"])
    statuses: dict[int, int] = {}
    for p in parts:
        for status, n in p["statuses"].items():
            statuses[status] = statuses.get(status, 0) + n
    return {
        "per_second": len(latencies) / duration,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else float("nan"),
        "errors": sum(p["errors"] for p in parts),
        "server_errors": sum(n for s, n in statuses.items() if s >= 500),
    }


def terminate_latency(port: int, seed_data: dict[str, Any], trials: int) -> dict[str, Any]:
    """Terminate a fresh victim session, then knock with its cookie on fresh connections."""
    delays, after = [], 0
    login = {"mechanism": "PASSWORD_PLAIN", "username": seed_data["users"][0], "password": PASSWORD}
    for _ in range(trials):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request(
            "POST", "/api/current", body("auth.login_ex", login), {"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        response.read()
        cookie = response.getheader("Set-Cookie").split(";", 1)[0].split("=", 1)[1]
        connection.close()
        status, me = post(port, "auth.my_sessions", [["current", "=", True]], {"get": True}, cookie=cookie)
        victim = me["result"]["id"]
        status, reply = post(port, "auth.terminate_session", victim, cookie=seed_data["admin"])
        returned = time.perf_counter()
        assert reply.get("result") is True, reply
        for _attempt in range(20):  # fresh connections land on any worker
            status, payload = post(port, "auth.me", cookie=cookie)
            if "result" in payload:
                after += 1
            else:
                delays.append((time.perf_counter() - returned) * 1000)
                break
    return {
        "median_ms": statistics.median(delays) if delays else float("nan"),
        "after": after,
        "trials": trials,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default="sqlite")
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--password-duration", type=float, default=8.0, help="Argon2 logins are slow")
    parser.add_argument("--trials", type=int, default=20, help="terminate -> rejection trials")
    parser.add_argument("--quick", action="store_true", help="1k sessions, 1 s per scenario")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.sessions, args.duration, args.password_duration, args.trials = 1000, 1.0, 2.0, 5
    workers = [int(w) for w in args.workers.split(",")]
    scenarios = ["password logins", "API-key logins", "token logins", "auth.sessions (50 rows)"]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_start = os.getloadavg()[0]
    rows = []
    with multiprocessing.get_context("spawn").Pool(args.clients) as pool:
        for engine in args.engines.split(","):
            url = database_url(engine)
            print(f"seeding {engine} with {args.sessions} sessions…", flush=True)
            seed_data = seed(url, args.sessions)
            for count in workers:
                with server(url, count) as running:
                    for name in scenarios:
                        duration = args.password_duration if name == "password logins" else args.duration
                        result = run_scenario(pool, running.port, name, seed_data, args.clients, duration)
                        rows.append((engine, count, name, result))
                        print(engine, count, name, {k: round(v, 2) for k, v in result.items()}, flush=True)
                    term = terminate_latency(running.port, seed_data, args.trials)
                    rows.append((engine, count, "terminate → rejected", term))
                    print(engine, count, "terminate", term, flush=True)
    text = render(rows, args, started, load_start, os.getloadavg()[0])
    print(text)
    if not args.no_write:
        write_section("load_bench", text)


def render(rows: list[Any], args: Any, started: str, load_start: float, load_end: float) -> str:
    lines = [
        "<!-- load_bench:start -->",
        "## Load test on loopback, 1/2/4 workers (`bench/load_bench.py`, security.md D18)",
        "",
        f"Machine: {machine()}. Run {started}; `--sessions {args.sessions}` seeded sessions, "
        f"{args.clients} client processes (keep-alive), {args.duration:g} s per scenario "
        f"({args.password_duration:g} s for password logins). Served configuration: gunicorn + uvicorn "
        f"workers (`bin/serve`). The load generator shares the 2 cores with the server and the "
        f"database, so every figure is a floor. 1-minute load average at start / end: "
        f"{load_start:.2f} / {load_end:.2f}.",
        "",
        "| database | workers | scenario | per s | p50 ms | p99 ms | failed | 5xx |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for engine, count, name, r in rows:
        label = "SQLite" if engine == "sqlite" else "PostgreSQL"
        if name.startswith("terminate"):
            lines.append(
                f"| {label} | {count} | terminate → first rejection on any worker | – | {r['median_ms']:.1f} | – | "
                f"{r['after']} of {r['trials']} succeeded after terminate | – |"
            )
        else:
            lines.append(
                f"| {label} | {count} | {name} | {r['per_second']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
                f"| {r['errors']} | {r['server_errors']} |"
            )
    lines += [
        "",
        f"Reference: {KEYCLOAK}. Password logins here are bound by Argon2id (time_cost 2, 100 MiB, "
        "parallelism 8: one check already uses both cores), so more workers do not add logins/s on 2 cores.",
        "<!-- load_bench:end -->",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
