#!/usr/bin/env python
"""Benchmark of authentication: what a session cookie or an API key adds to a request, and how many
password logins per second the configured hasher allows.

    .venv/bin/python bench/auth_bench.py                       # SQLite and PostgreSQL
    .venv/bin/python bench/auth_bench.py --engines sqlite --quick

Every database is reseeded at each run (SQLite ``bench/data/auth_bench.sqlite3``, PostgreSQL
``bench_auth`` on 127.0.0.1) with a few users (Argon2id passwords), one API key and one session.

1. **Per-request cost** of JSON-RPC ``core.ping`` -- which accepts anonymous, session and Bearer
   callers alike, so the only difference between the three cases is the middleware's authentication
   work -- sent (a) in-process to Django's WSGI handler (the full middleware stack, no network),
   median per-request time of ``--batches`` batches, cases interleaved within every batch; and
   (b) over loopback HTTP to gunicorn (1 sync worker) from a bounded load generator (a thread pool of
   ``--concurrency`` http.client clients, a fixed number of requests per case and round, cases
   interleaved), p50/p99 latency and req/s. Ratios are to the anonymous case of the same run.
2. **Password logins/s**: ``check_password`` with the first hasher of PASSWORD_HASHERS in 1 and 2
   processes, and full ``auth.login_ex`` round trips through gunicorn with 1 and 2 workers.

The section between ``<!-- auth_bench:start -->`` and ``<!-- auth_bench:end -->`` of
bench/RESULTS.md is replaced. Each database runs its Django parts in its own process.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, PING, Gunicorn, environment, fresh_database, machine, write_section  # noqa: E402
from common import setup_django as common_setup_django  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
PG_NAME = "bench_auth"
PASSWORD = "bench correct horse battery staple"
USERS = [f"bench{i}" for i in range(8)]
COOKIE = "__Host-sid"
ME = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "auth.me", "params": []}).encode()
CASES = ("anonymous", "session cookie", "API key (Bearer)")
LOOKUP = "lookup alone"
STEPUP = "step-up check"
KEYCLOAK_PER_VCPU = 15  # password logins/s per vCPU (security.md §4)


def login_body(username: str) -> bytes:
    params = {"mechanism": "PASSWORD_PLAIN", "username": username, "password": PASSWORD}
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": "auth.login_ex", "params": [params]}).encode()


def base_env(database_url: str, pool: bool = True) -> dict[str, str]:
    """The server's environment (`common.environment`). ``pool=False`` for one request at a time per
    process (in-process, sync workers): PostgreSQL then keeps one persistent connection, as the
    README recommends."""
    return environment(database_url, **({} if pool else {"DJANGO_DB_POOL_SIZE": "0"}))


def setup_django(database_url: str, pool: bool = True) -> None:
    common_setup_django(database_url, **({} if pool else {"DJANGO_DB_POOL_SIZE": "0"}))


# --- worker: seed one database ---------------------------------------------------------------------


def worker_seed(database_url: str) -> dict[str, Any]:
    setup_django(database_url)
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from sessions_app.auth.clients import Client
    from sessions_app.models import Credentials
    from sessions_app.services.api_keys import api_key_create
    from sessions_app.services.sessions import session_create

    call_command("migrate", verbosity=0)
    model = get_user_model()
    users = []
    for name in USERS:
        user = model(username=name)
        user.set_password(PASSWORD)
        user.save()
        users.append(user)
    _, key = api_key_create(user=users[0], name="bench")
    secret = session_create(
        credentials=Credentials.LOGIN_PASSWORD, client=Client(address="127.0.0.1", port=50000), user=users[0]
    ).secret
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")
    version = connection.pg_version if connection.vendor == "postgresql" else None
    return {"session": secret, "api_key": key, "vendor": connection.vendor, "server": version}


def case_headers(seed: dict[str, Any]) -> dict[str, dict[str, str]]:
    """HTTP headers of each case."""
    return {
        "anonymous": {},
        "session cookie": {"Cookie": f"{COOKIE}={seed['session']}"},
        "API key (Bearer)": {"Authorization": f"Bearer {seed['api_key']}"},
    }


# --- worker: in-process through the WSGI handler ----------------------------------------------------


def worker_inprocess(database_url: str, seed: dict[str, Any], batches: int, per_batch: int) -> dict[str, Any]:
    setup_django(database_url, pool=False)
    from django.core.wsgi import get_wsgi_application
    from django.db import connection, connections
    from django.test.utils import CaptureQueriesContext

    app = get_wsgi_application()

    def environ(headers: dict[str, str], body: bytes) -> dict[str, Any]:
        env = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/api/current",
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "127.0.0.1",
            "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_PORT": "50000",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.version": (1, 0),
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        for name, value in headers.items():
            env["HTTP_" + name.upper().replace("-", "_")] = value
        return env

    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        statuses.append(status)
        return lambda data: None

    def call(headers: dict[str, str], body: bytes = PING) -> bytes:
        result = app(environ(headers, body), start_response)
        try:
            return b"".join(result)
        finally:
            result.close()  # type: ignore[attr-defined]

    cases = case_headers(seed)
    # The credentials must really authenticate, or the benchmark would time the anonymous path thrice.
    for name, headers in cases.items():
        reply = json.loads(call(headers, ME))
        expected = "result" if name != "anonymous" else "error"
        assert expected in reply, (name, reply)
        assert json.loads(call(headers)) == {"jsonrpc": "2.0", "id": 1, "result": "pong"}
    queries = {}
    for name, headers in cases.items():
        for _ in range(200):  # warm-up: imports, connection, caches
            call(headers)
        with CaptureQueriesContext(connection) as captured:
            call(headers)
        queries[name] = len(captured.captured_queries)
    # The floor of any database-checked request: the session lookup's SQL alone, run by the driver
    # (no Django, no model building) -- what one indexed lookup costs on this machine.
    from sessions_app.auth import keys
    from sessions_app.auth.prepared import RowLoader
    from sessions_app.models import UserSession

    wrapper = connections["default"]  # not the thread-local proxy `connection`, as RowLoader.load does
    loader = RowLoader(UserSession, "secret_hash", related="user")
    plan = loader._plan("default")
    digest = keys.hash_secret(seed["session"])
    assert RowLoader._fetch(wrapper, plan, digest) is not None

    def lookup_alone() -> None:
        RowLoader._fetch(wrapper, plan, digest)

    # The step-up check of a guarded page (security.md F2): a decision on the session row already
    # loaded by the middleware, no query. Its password re-entry is a password check plus two writes.
    from sessions_app.auth.clients import Client
    from sessions_app.services import stepup

    row = UserSession.objects.select_related("user").get(secret_hash=digest)
    reentries = max(4, per_batch // 50)
    started = time.perf_counter()
    for _ in range(reentries):
        assert stepup.stepup_verify(
            user=row.user, session=row, client=Client(address="127.0.0.1"), password=PASSWORD, purpose="bench"
        )
    stepup_per_s = reentries / (time.perf_counter() - started)

    runners = {name: (lambda headers=headers: call(headers)) for name, headers in cases.items()}
    runners[LOOKUP] = lookup_alone
    runners[STEPUP] = lambda: stepup.stepup_recent(session=row)
    per_request: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for batch in range(batches):
        order = names[batch % len(names) :] + names[: batch % len(names)]
        for name in order:
            run = runners[name]
            started = time.perf_counter()
            for _ in range(per_batch):
                run()
            per_request[name].append((time.perf_counter() - started) / per_batch * 1e6)
    assert all(status.startswith("200") for status in statuses), set(statuses)
    return {"per_request_us": per_request, "queries": queries, "stepup_per_s": stepup_per_s}


# --- worker: password hashing ------------------------------------------------------------------------


def worker_hash(count: int, start_at: float) -> dict[str, Any]:
    setup_django(f"sqlite:///{DATA / 'unused.sqlite3'}")
    from django.contrib.auth.hashers import check_password, get_hasher, make_password

    hasher = get_hasher()
    encoded = make_password(PASSWORD)
    assert check_password(PASSWORD, encoded)
    time.sleep(max(0.0, start_at - time.time()))
    started = time.time()
    for _ in range(count):
        check_password(PASSWORD, encoded)
    params = {
        k: getattr(hasher, k) for k in ("time_cost", "memory_cost", "parallelism") if hasattr(hasher, k)
    }
    return {"started": started, "ended": time.time(), "algorithm": hasher.algorithm, "params": params}


# --- gunicorn and the load generator --------------------------------------------------------------------


def gunicorn(database_url: str, workers: int, asgi: bool = False) -> Gunicorn:
    """Sync workers serve one request at a time: no PostgreSQL pool (README); uvicorn workers keep it."""
    return Gunicorn(base_env(database_url, pool=asgi), workers=workers, asgi=asgi, name="auth-bench")


def post(
    port: int, body: bytes, headers: dict[str, str], conn: http.client.HTTPConnection | None = None
) -> tuple[int, bytes]:
    connection = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/api/current", body, {"Content-Type": "application/json", **headers})
    response = connection.getresponse()
    data = response.read()
    if conn is None:
        connection.close()
    return response.status, data


def load(
    port: int, bodies: list[bytes], headers: dict[str, str], concurrency: int, check: bytes
) -> tuple[list[float], float]:
    """Send every body once from ``concurrency`` threads; (latencies in ms, wall seconds).

    Each thread keeps one http.client connection object; gunicorn's sync worker closes the
    connection after every reply, so each request opens a new TCP connection (as real clients of a
    sync worker do)."""
    chunks = [bodies[i::concurrency] for i in range(concurrency)]
    failures: list[bytes] = []
    lock = threading.Lock()

    def run(chunk: list[bytes]) -> list[float]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        out = []
        for body in chunk:
            started = time.perf_counter()
            status, data = post(port, body, headers, connection)
            out.append((time.perf_counter() - started) * 1000)
            if status != 200 or check not in data:
                with lock:
                    failures.append(data[:300])
        connection.close()
        return out

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = [ms for part in pool.map(run, chunks) for ms in part]
    wall = time.perf_counter() - started
    if failures:
        sys.exit(f"{len(failures)} bad replies, e.g. {failures[0]!r}")
    return latencies, wall


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def bench_http(
    database_url: str, seed: dict[str, Any], rounds: int, per_round: int, concurrency: int, asgi: bool = False
) -> Any:
    cases = case_headers(seed)
    latencies: dict[str, list[float]] = {name: [] for name in cases}
    rates: dict[str, list[float]] = {name: [] for name in cases}
    with gunicorn(database_url, workers=1, asgi=asgi) as server:
        for name, headers in cases.items():
            status, data = post(server.port, ME, headers)
            assert (b'"result"' in data) == (name != "anonymous"), (name, status, data)
            load(server.port, [PING] * 200, headers, concurrency, b'"pong"')  # warm-up
        names = list(cases)
        for round_ in range(rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                ms, wall = load(server.port, [PING] * per_round, cases[name], concurrency, b'"pong"')
                latencies[name] += ms
                rates[name].append(per_round / wall)
    return {
        name: {
            "p50_ms": statistics.median(latencies[name]),
            "p99_ms": percentile(latencies[name], 0.99),
            "rps": statistics.median(rates[name]),
        }
        for name in cases
    }


def bench_logins(database_url: str, count: int) -> dict[int, dict[str, float]]:
    out = {}
    for workers in (1, 2):
        with gunicorn(database_url, workers=workers) as server:
            warm = [login_body(USERS[i % len(USERS)]) for i in range(2 * workers)]
            load(server.port, warm, {}, 2 * workers, b'"SUCCESS"')
            bodies = [login_body(USERS[i % len(USERS)]) for i in range(count)]
            ms, wall = load(server.port, bodies, {}, 2 * workers, b'"SUCCESS"')
        out[workers] = {"per_s": count / wall, "p50_ms": statistics.median(ms)}
    return out


def bench_hash(count: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for processes in (1, 2):
        start_at = time.time() + 3  # after every process has imported Django
        command = [sys.executable, __file__, "--worker-hash", str(count), str(start_at)]
        running = [subprocess.Popen(command, stdout=subprocess.PIPE, cwd=ROOT) for _ in range(processes)]
        results = [json.loads(p.communicate()[0].decode().strip().splitlines()[-1]) for p in running]
        wall = max(r["ended"] for r in results) - min(r["started"] for r in results)
        out[processes] = count * processes / wall
        out["algorithm"], out["params"] = results[0]["algorithm"], results[0]["params"]
    return out


def worker_device(count: int) -> dict[str, Any]:
    """Login-time cost of naming the device and the place (issue 16): what `session_create` adds,
    `describe(clean(user_agent))` + `locate(address)`, with a generated GeoLite2-City database."""
    import tempfile

    os.environ.update({**base_env("sqlite:///:memory:"), "DJANGO_SETTINGS_MODULE": "project.settings"})
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    from sessions_app.devices import agents, places

    path = Path(tempfile.mkdtemp()) / "city.mmdb"
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-City", languages=["en"])
    for octet in range(1, 200):
        record = {
            "country": {"iso_code": "GB", "names": {"en": "United Kingdom"}},
            "city": {"names": {"en": "London"}},
        }
        writer.insert_network(IPSet([f"81.{octet}.0.0/16"]), record)
    writer.to_db_file(str(path))
    template = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{}.0.{}.0 Safari/537.36"

    def timed(user_agents: list[str], addresses: list[str]) -> float:
        values = []
        for user_agent, address in zip(user_agents, addresses, strict=True):
            started = time.perf_counter()
            agents.describe(agents.clean(user_agent))
            places.locate(address)
            values.append((time.perf_counter() - started) * 1e6)
        return statistics.median(values)

    out: dict[str, float] = {}
    for geoip in (False, True):
        settings.SESSIONS_GEOIP_PATH = str(path) if geoip else ""
        agents._describe.cache_clear()
        places._lookup.cache_clear()
        timed([template.format(1, 1)], ["81.1.0.1"])  # compile the rules, open the reader
        # Strings never parsed before in this process (ua-parser keeps a cache of its own too).
        distinct = [template.format(100 + n % 50, n + (count if geoip else 0)) for n in range(count)]
        addresses = [f"81.{1 + n % 199}.{n % 250}.{n % 200}" for n in range(count)]
        suffix = "GeoIP on" if geoip else "GeoIP off"
        out[f"distinct User-Agents and addresses, {suffix}"] = timed(distinct, addresses)
        out[f"one User-Agent and address again and again (cached), {suffix}"] = timed(
            [distinct[0]] * count, [addresses[0]] * count
        )
    return out


# --- orchestration --------------------------------------------------------------------------------------


def database_url(engine: str) -> str:
    return fresh_database(engine, sqlite=DATA / "auth_bench.sqlite3", postgres=PG_NAME)


def run_worker(*args: str) -> Any:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"worker {args[0]} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def render(
    runs: list[dict[str, Any]], hashing: dict[str, Any], args: argparse.Namespace, load_avg: list[float]
) -> str:
    cores = os.cpu_count() or 1
    params = ", ".join(f"{k}={v}" for k, v in hashing["params"].items())
    lines = [
        "<!-- auth_bench:start -->",
        "## Authentication cost (`bench/auth_bench.py`)",
        "",
        f"Machine: {machine()}. Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; every figure "
        "of a table measured side by side in one run, cases interleaved. The load generator runs on the "
        "same machine as the server and shares its cores. 1-minute load average at start / end: "
        f"{load_avg[0]:.2f} / {load_avg[1]:.2f} (other work on the machine inflates the absolute figures; "
        "the ratios come from interleaved cases).",
        "",
        "### Per-request cost of authentication",
        "",
        "The same JSON-RPC call, `core.ping`, anonymous vs with a session cookie vs with "
        "`Authorization: Bearer <api key>`: the only difference is the middleware's work (session: one "
        "indexed lookup by the secret's hash with user/key/parent joined; Bearer: key lookup + keyed hash "
        "compared in constant time; `last_seen_at` / `last_used_at` writes are coalesced to one a minute, "
        "so none happen in steady state).",
        "",
        f"* **in-process** — Django's WSGI handler called directly (full middleware stack, no network): "
        f"median per-request time of {args.batches} batches of {args.per_batch} requests per case.",
        "* **sync worker** — gunicorn, 1 sync WSGI worker on 127.0.0.1 (`project.wsgi`); the worker "
        "closes every connection, so each request includes a TCP connect.",
        "* These two serve one request at a time per process and run as the README recommends for "
        "that: `DJANGO_DB_POOL_SIZE=0`, one persistent PostgreSQL connection per process.",
        "* **served** — the configuration `bin/serve` runs: gunicorn with 1 uvicorn worker serving "
        "`project.asgi` (HTTP and WebSocket), keep-alive connections, the PostgreSQL pool.",
        f"* Both: {args.concurrency} client threads (http.client), {args.rounds} rounds × {args.per_round} "
        "requests per case; p50/p99 over all requests, req/s the median of the rounds; client and server "
        "share the 2 cores, which dilutes the ratios.",
        "",
        "| database | case | DB queries | in-process µs | × anon | sync worker p50 ms | × anon | "
        "served p50 ms | p99 ms | req/s | × anon (p50) | req/s vs anon |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        base_in = statistics.median(run["inprocess"]["per_request_us"]["anonymous"])
        base_http = run["http"]["anonymous"]
        base_served = run["served"]["anonymous"]
        for name in CASES:
            inproc = statistics.median(run["inprocess"]["per_request_us"][name])
            http_ = run["http"][name]
            served = run["served"][name]
            lines.append(
                f"| {run['label']} | {name} | {run['inprocess']['queries'][name]} | {inproc:.0f} | "
                f"{inproc / base_in:.2f}× | {http_['p50_ms']:.2f} | {http_['p50_ms'] / base_http['p50_ms']:.2f}× | "
                f"{served['p50_ms']:.2f} | {served['p99_ms']:.2f} | {served['rps']:.0f} | "
                f"{served['p50_ms'] / base_served['p50_ms']:.2f}× | {served['rps'] / base_served['rps']:.2f} |"
            )
        alone = statistics.median(run["inprocess"]["per_request_us"][LOOKUP])
        cookie = statistics.median(run["inprocess"]["per_request_us"]["session cookie"])
        lines.append(
            f"| {run['label']} | *floor: anonymous + the lookup alone ({alone:.0f} µs)* | 1 | "
            f"{base_in + alone:.0f} | {(base_in + alone) / base_in:.2f}× | | | | | | | |"
        )
        check = statistics.median(run["inprocess"]["per_request_us"][STEPUP])
        lines.append(
            f"| {run['label']} | *session cookie + a step-up check ({check:.2f} µs, no query)* | "
            f"{run['inprocess']['queries']['session cookie']} | {cookie + check:.0f} | "
            f"{(cookie + check) / base_in:.2f}× | | | | | | | |"
        )
    lines += [
        "",
        "Target: authenticated / anonymous < 1.5×. The *floor* row is the least any request checked "
        "against the database can cost in-process: the anonymous request plus the session lookup's SQL "
        "run by the driver alone (no Django, no model building), measured in the same batches. DB "
        "queries are Django's count: the lookup runs on the driver's connection (SQLite's `sqlite3`, "
        "PostgreSQL's prepared statement on the psycopg connection), which that count does not see; "
        "it is one query either way, and a pooled PostgreSQL connection is handed out without a "
        "round trip (`project/postgresql/base.py`).",
        "",
        "Reading the table: in the served configuration (what `bin/serve` runs) the authenticated "
        "requests stay within the target on both databases; behind a sync worker they are within it "
        "on SQLite and around it on PostgreSQL (its HTTP overhead is smaller). In-process, "
        "where the anonymous request is only the Django middleware stack, SQLite lands near the "
        "target and PostgreSQL well above it: the one indexed lookup every request must make is a "
        "loopback round trip to another process, and the floor row shows that the round trip alone "
        "takes a third to a half of an anonymous request here. What the authenticated path adds beyond "
        "the floor is that the same lookup costs more inside a request than in a tight loop (up to "
        "twice as much on PostgreSQL, measured with timers around it), the model instances, and the "
        "validation; none of it is a "
        "write (`last_seen_at` / `last_used_at` are written at most once a minute, and a Bearer "
        "request within that minute opens no transaction).",
        "",
        "### Password logins per second",
        "",
        f"Hasher: `{hashing['algorithm']}` ({params}), the first of PASSWORD_HASHERS. `check_password`: "
        f"{args.hash_count} checks per process, processes started together. `auth.login_ex`: "
        f"{args.logins} successful `PASSWORD_PLAIN` logins through gunicorn (sync workers, 2 client threads "
        "per worker; each login also looks up the user, checks the lockout, creates the session and its "
        "audit record). An Argon2 check already spreads its lanes (parallelism) over the cores, so a "
        "second process adds little on a 2-core machine.",
        "",
        "| measure | 1 process | 2 processes |",
        "|---|---:|---:|",
        f"| `check_password`/s | {hashing[1]:.1f} | {hashing[2]:.1f} |",
    ]
    for run in runs:
        one, two = run["logins"][1], run["logins"][2]
        lines.append(
            f"| `auth.login_ex`/s, {run['label']} (p50 ms) | {one['per_s']:.1f} ({one['p50_ms']:.0f}) | "
            f"{two['per_s']:.1f} ({two['p50_ms']:.0f}) |"
        )
    for run in runs:
        lines.append(
            f"| step-up password re-entry (`stepup_verify`)/s in-process, {run['label']} | "
            f"{run['inprocess']['stepup_per_s']:.1f} | |"
        )
    lines += [
        f"| Keycloak reference: {KEYCLOAK_PER_VCPU}/s per vCPU (security.md §4) | {KEYCLOAK_PER_VCPU} | "
        f"{KEYCLOAK_PER_VCPU * min(2, cores)} |",
        "",
        "**Device and place at login** (issue 16: `describe(clean(User-Agent))` + `locate(address)`, what "
        "a login adds to its session row; parsed once, at login -- requests never parse). Target: p50 "
        "<= 1 ms.",
        "",
        "| case | p50 µs |",
        "|---|---:|",
    ]
    for name, micros in hashing["device"].items():
        lines.append(f"| {name} | {micros:.0f} |")
    lines += [
        "",
        "<!-- auth_bench:end -->",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--batches", type=int, default=7)
    parser.add_argument("--per-batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--logins", type=int, default=60)
    parser.add_argument("--hash-count", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    parser.add_argument("--worker-seed", metavar="DATABASE_URL", help=argparse.SUPPRESS)
    parser.add_argument("--worker-inprocess", nargs=2, metavar=("URL", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-hash", nargs=2, metavar=("COUNT", "START"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-device", metavar="COUNT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_seed:
        print(json.dumps(worker_seed(args.worker_seed)))
        return
    if args.worker_inprocess:
        url, seed = args.worker_inprocess
        print(json.dumps(worker_inprocess(url, json.loads(seed), args.batches, args.per_batch)))
        return
    if args.worker_hash:
        print(json.dumps(worker_hash(int(args.worker_hash[0]), float(args.worker_hash[1]))))
        return
    if args.worker_device:
        print(json.dumps(worker_device(int(args.worker_device))))
        return
    if args.quick:
        args.batches, args.per_batch, args.rounds, args.per_round = 5, 100, 3, 100
        args.logins, args.hash_count = 8, 4
    load_avg = [os.getloadavg()[0]]
    sizing = ["--batches", str(args.batches), "--per-batch", str(args.per_batch)]
    runs = []
    for engine in args.engines.split(","):
        print(f"{engine}: seeding ...", file=sys.stderr, flush=True)
        url = database_url(engine)
        seed = run_worker("--worker-seed", url)
        label = "SQLite" if seed["vendor"] == "sqlite" else f"PostgreSQL {seed['server'] // 10000}"
        print(f"{engine}: in-process ...", file=sys.stderr, flush=True)
        inprocess = run_worker("--worker-inprocess", url, json.dumps(seed), *sizing)
        print(f"{engine}: gunicorn ...", file=sys.stderr, flush=True)
        http_ = bench_http(url, seed, args.rounds, args.per_round, args.concurrency)
        print(f"{engine}: served configuration (uvicorn workers) ...", file=sys.stderr, flush=True)
        served = bench_http(url, seed, args.rounds, args.per_round, args.concurrency, asgi=True)
        print(f"{engine}: logins ...", file=sys.stderr, flush=True)
        logins = bench_logins(url, args.logins)
        runs.append(
            {"label": label, "inprocess": inprocess, "http": http_, "served": served, "logins": logins}
        )
    print("check_password ...", file=sys.stderr, flush=True)
    hashing = bench_hash(args.hash_count)
    print("device and place ...", file=sys.stderr, flush=True)
    hashing["device"] = run_worker("--worker-device", "300" if args.quick else "2000")
    load_avg.append(os.getloadavg()[0])
    text = render(runs, hashing, args, load_avg)
    if args.no_write:
        print(text)
    else:
        write_section("auth_bench", text)
        print(f"wrote {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
