#!/usr/bin/env python
"""Benchmark of the JSON APIs on 1M sessions: auth.sessions over JSON-RPC and REST vs raw SQL.

    .venv/bin/python bench/api_bench.py                  # PostgreSQL database bench_1000000
    .venv/bin/python bench/api_bench.py --database-url postgres://postgres@127.0.0.1:5432/bench_100000
    .venv/bin/python bench/api_bench.py --database-url sqlite:///$PWD/bench/data/bench-1000000.sqlite3 \\
        --analyze --results bench/RESULTS-plans.md --section api_bench-sqlite --label "SQLite, after"

The database is the one `bench/query_bench.py` seeds (``bench_1000000``; seeded here with
``seed_demo`` when empty). The query is 50 filtered rows, newest first:
``[["internal","=",false],["credentials","in",["LOGIN_PASSWORD","API_KEY"]]]``,
``{"order_by": ["-created_at"], "limit": 50}``.

(a) **in-process**: median time of the query through the full Django stack (middleware with
    authentication, JSON-RPC ``POST /api/current`` and REST ``POST /api/v2.0/auth/sessions/query``,
    both with a Bearer API key) next to the same SQL run raw through a cursor;
(b) **gunicorn** (2 sync workers on 127.0.0.1, a bounded thread-pool load generator): requests/s and
    p50/p99 of that query and of a trivial authenticated call (``auth.me``), in the same run.

The section between ``<!-- api_bench:start -->`` and ``<!-- api_bench:end -->`` of bench/RESULTS.md
is replaced (``--results`` / ``--section``: another file or section). SQLite databases work too
(``sqlite:///…``; the plan is then SQLite's ``EXPLAIN QUERY PLAN``). ``--analyze`` gathers planner
statistics first (``VACUUM ANALYZE`` / ``ANALYZE``); without it the database is measured as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from auth_bench import base_env, gunicorn, load, percentile, setup_django  # noqa: E402
from common import machine  # noqa: E402
from query_bench import RESULTS, LastSelect, explain, gather_statistics, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FILTERS = [["internal", "=", False], ["credentials", "in", ["LOGIN_PASSWORD", "API_KEY"]]]
OPTIONS = {"order_by": ["-created_at"], "limit": 50}


def rpc(method: str, *params: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()


def worker(database_url: str, repeat: int, analyze: bool) -> dict[str, Any]:
    setup_django(database_url)
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from sessions_app.models import ApiKey, UserSession
    from sessions_app.selectors import session_query
    from sessions_app.services.api_keys import api_key_create

    call_command("migrate", verbosity=0)
    if not UserSession.objects.exists():
        call_command("seed_demo", sessions=1_000_000, seed=1, verbosity=0)
    if analyze:
        gather_statistics(connection)
    user_model = get_user_model()
    admin = user_model.objects.filter(username="bench_admin").first()
    if admin is None:
        admin = user_model.objects.create_superuser("bench_admin", password=None)
    ApiKey.objects.filter(name="bench_api").delete()
    _, key = api_key_create(user=admin, name="bench_api")
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    client = Client(REMOTE_ADDR="127.0.0.1", HTTP_HOST="127.0.0.1", **headers)
    jsonrpc_body = rpc("auth.sessions", FILTERS, OPTIONS)
    rest_body = json.dumps({"query-filters": FILTERS, "query-options": OPTIONS})

    def call_jsonrpc() -> None:
        response = client.post("/api/current", jsonrpc_body, content_type="application/json")
        assert len(json.loads(response.content)["result"]) == 50, response.content[:300]

    def call_rest() -> None:
        response = client.post("/api/v2.0/auth/sessions/query", rest_body, content_type="application/json")
        assert response.status_code == 200, response.content[:300]
        assert len(json.loads(response.content)) == 50, response.content[:300]

    with LastSelect(connection) as sent:
        rows = session_query(filters=FILTERS, options=OPTIONS)
    assert len(rows) == 50  # type: ignore[arg-type]

    def raw() -> None:
        with connection.cursor() as cursor:
            cursor.execute(sent.sql, sent.params)
            cursor.fetchall()

    def selector() -> None:
        session_query(filters=FILTERS, options=OPTIONS)

    cases = {"raw SQL": raw, "selector": selector, "JSON-RPC": call_jsonrpc, "REST": call_rest}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for call in cases.values():
        call()
    for _ in range(repeat):
        for name, call in cases.items():  # interleaved: the same machine state for every case
            started = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - started) * 1000)
    plan = explain(connection, sent.sql, sent.params)
    return {
        "vendor": "PostgreSQL" if connection.vendor == "postgresql" else "SQLite",
        "key": key,
        "sessions": UserSession.objects.count(),
        "active": UserSession.objects.active().count(),
        "inprocess": {name: statistics.median(values) for name, values in times.items()},
        "plan": plan,
    }


def http(database_url: str, key: str, requests: int, concurrency: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    bodies = {
        "auth.me (trivial)": rpc("auth.me"),
        "auth.sessions, 50 rows": rpc("auth.sessions", FILTERS, OPTIONS),
    }
    checks = {"auth.me (trivial)": b'"pw_name"', "auth.sessions, 50 rows": b'"credentials"'}
    out: dict[str, Any] = {name: {"ms": [], "rps": []} for name in bodies}
    with gunicorn(database_url, workers=2) as server:
        for name, body in bodies.items():
            load(server.port, [body] * 50, headers, concurrency, checks[name])  # warm-up
        for round_ in range(3):
            for name in list(bodies)[round_ % 2 :] + list(bodies)[: round_ % 2]:
                ms, wall = load(server.port, [bodies[name]] * requests, headers, concurrency, checks[name])
                out[name]["ms"] += ms
                out[name]["rps"].append(requests / wall)
    return {
        name: {
            "rps": statistics.median(v["rps"]),
            "p50": statistics.median(v["ms"]),
            "p99": percentile(v["ms"], 0.99),
        }
        for name, v in out.items()
    }


def render(
    result: dict[str, Any], served: dict[str, Any], args: argparse.Namespace, load_avg: list[float]
) -> str:
    inproc = result["inprocess"]
    raw = inproc["raw SQL"]
    trivial = served["auth.me (trivial)"]["rps"]
    lines = [
        f"<!-- {args.section}:start -->",
        f"## JSON APIs (`bench/api_bench.py`){f' — {args.label}' if args.label else ''}",
        "",
        f"Machine: {machine()}. Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"{result['vendor']} database with {result['sessions']:,} sessions ({result['active']:,} active)"
        f"{', statistics gathered first' if args.analyze else ''}. 1-minute load average at start / "
        f"end: {load_avg[0]:.2f} / {load_avg[1]:.2f}.",
        "",
        f"Query: `auth.sessions` `{json.dumps(FILTERS)}` `{json.dumps(OPTIONS)}` (50 rows), authenticated "
        "with a Bearer API key.",
        "",
        f"### (a) in-process, median of {args.repeat} interleaved runs",
        "",
        "| path | ms | × raw SQL |",
        "|---|---:|---:|",
    ]
    for name, ms in inproc.items():
        lines.append(f"| {name} | {ms:.2f} | {ms / raw:.2f}× |")
    lines += [
        "",
        "Targets: JSON-RPC and REST ≤ 5× raw SQL and ≤ 5 ms. The raw SQL is the statement the ORM sent, "
        "captured and run through a plain cursor; the API paths add the middleware (API-key check), JSON "
        "parsing, validation, row building and JSON rendering.",
        "",
        f"### (b) gunicorn, 2 sync workers, {args.concurrency} client threads, 3 rounds × {args.requests} requests",
        "",
        "| call | req/s | p50 ms | p99 ms | req/s vs trivial |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, figures in served.items():
        lines.append(
            f"| {name} | {figures['rps']:.0f} | {figures['p50']:.2f} | {figures['p99']:.2f} | "
            f"{figures['rps'] / trivial:.0%} |"
        )
    lines += [
        "",
        "Target: the query sustains ≥ 20% of the trivial call's requests/s. Client and server share the 2 cores.",
        "",
        "<details><summary>EXPLAIN</summary>",
        "",
        "```",
        result["plan"],
        "```",
        "",
        "</details>",
        f"<!-- {args.section}:end -->",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/bench_1000000")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--analyze", action="store_true", help="gather planner statistics first")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the Markdown file to write")
    parser.add_argument("--section", default="api_bench", help="its section name")
    parser.add_argument("--label", default="", help="words after the section title")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.database_url, args.repeat, args.analyze)))
        return
    import subprocess

    load_start = os.getloadavg()[0]
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--worker",
            "--database-url",
            args.database_url,
            "--repeat",
            str(args.repeat),
            *(["--analyze"] if args.analyze else []),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=base_env(args.database_url),
    )
    if done.returncode != 0:
        sys.exit(f"worker failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    served = http(args.database_url, result["key"], args.requests, args.concurrency)
    write_section(args.results, args.section, render(result, served, args, [load_start, os.getloadavg()[0]]))
    print(f"wrote {args.results}", file=sys.stderr)


if __name__ == "__main__":
    main()
