#!/usr/bin/env python
"""Benchmark of the query engine: ORM pushdown vs the same SQL run raw vs the in-memory engine.

    .venv/bin/python bench/query_bench.py                      # 10k, 100k, 1M on SQLite and PostgreSQL
    .venv/bin/python bench/query_bench.py --sizes 10000 --engines sqlite --repeat 5

For every database and size it (re)seeds a dedicated database with ``manage.py seed_demo`` (kept
between runs: SQLite files under ``bench/data/``, PostgreSQL databases ``bench_<size>`` on
127.0.0.1), then times each query of `QUERIES` (median of ``--repeat`` runs after one warm-up):

* **orm**: ``selectors.session_query`` -- parse, schema check, compile, execute, build rows;
* **raw**: the SQL that the ORM sent, captured and run again through a plain cursor (fetchall);
* **memory**: ``compiler.run_in_memory`` on the same active rows loaded as dicts;

and records the ``EXPLAIN`` plan. The table replaces the query-bench section of bench/RESULTS.md.
Each database/size runs in its own process (Django settings are per process).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
DATA = ROOT / "bench" / "data"
PG_BASE = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")


def queries(username: str, size: int) -> list[tuple[str, list[Any], dict[str, Any], bool]]:
    """(name, filters, options, expected to use an index)."""
    return [
        (
            "50 newest non-internal",
            [["internal", "=", False]],
            {"order_by": ["-created_at"], "limit": 50},
            True,
        ),
        ("sessions of one user (username)", [["credentials_data.username", "=", username]], {}, True),
        ("count by credential type", [["credentials", "=", "API_KEY"]], {"count": True}, True),
        ('origin ^ "10.12."', [["origin", "^", "10.12."]], {}, True),
        (
            "OR of two conditions",
            [["OR", [["credentials_data.username", "=", username], ["origin", "^", "10.12.1"]]]],
            {},
            True,
        ),
        (f"offset {size // 2} limit 50", [], {"offset": size // 2, "limit": 50}, False),
    ]


# --- worker: one database, one size ----------------------------------------------------------------


def worker(database_url: str, size: int, repeat: int, memory: bool) -> dict[str, Any]:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "benchmark-only")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.db.models import Count
    from django.test.utils import CaptureQueriesContext

    from sessions_app.models import UserSession
    from sessions_app.query.compiler import run_in_memory
    from sessions_app.selectors import session_query, session_rows
    from sessions_app.specs import SESSION_SPEC

    call_command("migrate", verbosity=0)
    seeded_at = None
    if UserSession.objects.count() != size:
        started = time.perf_counter()
        call_command("seed_demo", sessions=size, clear=True, seed=1, verbosity=0)
        seeded_at = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")

    # A busy user: the active user whose session count is closest to size / 1000.
    counts = (
        UserSession.objects.active()
        .exclude(username=None)
        .values("username")
        .annotate(n=Count("id"))
        .order_by("-n")
    )
    target = max(10, size // 1000)
    username, user_rows = min(
        ((c["username"], c["n"]) for c in counts[:2000]), key=lambda u: abs(u[1] - target)
    )

    def median_ms(call: Any) -> float:
        call()
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            call()
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)

    rows = session_rows() if memory else None
    out = []
    for name, filters, options, wants_index in queries(username, size):
        with CaptureQueriesContext(connection) as captured:
            result = session_query(filters=filters, options=options)
        sql = next(q["sql"] for q in reversed(captured.captured_queries) if "SELECT" in q["sql"])
        # A streamed result runs in a server-side cursor on PostgreSQL: time the SELECT itself.
        declared = re.match(r"DECLARE .*? CURSOR .*?FOR (SELECT .*)", sql, re.S)
        if declared:
            sql = declared.group(1)
        orm = median_ms(lambda f=filters, o=options: session_query(filters=f, options=o))

        def raw(sql: str = sql) -> None:
            with connection.cursor() as cursor:
                cursor.execute(sql)
                cursor.fetchall()

        raw_ms = median_ms(raw)
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("EXPLAIN " + sql)
                plan = "\n".join(r[0] for r in cursor.fetchall())
            else:
                cursor.execute("EXPLAIN QUERY PLAN " + sql)
                plan = "\n".join(r[-1] for r in cursor.fetchall())
        mem_ms = None
        if rows is not None:
            mem_ms = median_ms(lambda f=filters, o=options: run_in_memory(SESSION_SPEC, rows, f, o))
            assert run_in_memory(SESSION_SPEC, rows, filters, options) == result, name
        out.append(
            {
                "query": name,
                "filters": filters,
                "options": options,
                "rows": result if isinstance(result, int) else len(result),
                "orm_ms": orm,
                "raw_ms": raw_ms,
                "memory_ms": mem_ms,
                "plan": plan,
                "index": bool(re.search(r"Index|USING (COVERING )?INDEX", plan)),
                "wants_index": wants_index,
                "sql": sql,
            }
        )
    return {
        "vendor": connection.vendor,
        "server": connection.pg_version if connection.vendor == "postgresql" else None,
        "size": size,
        "active": UserSession.objects.active().count(),
        "user": username,
        "user_rows": user_rows,
        "seed_seconds": seeded_at,
        "results": out,
    }


# --- orchestration -------------------------------------------------------------------------------


def database_url(engine: str, size: int) -> str:
    if engine == "sqlite":
        DATA.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{DATA / f'bench-{size}.sqlite3'}"
    name = f"bench_{size}"
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", name], capture_output=True, check=False)
    return f"{PG_BASE}/{name}"


def render(runs: list[dict[str, Any]], repeat: int) -> str:
    lines = [
        "<!-- query_bench:start -->",
        "## Query engine (`bench/query_bench.py`)",
        "",
        f"Machine: {machine()}. Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"medians of {repeat} runs after a warm-up, all measured side by side in one run.",
        "",
        "* **ORM** — `session_query`: parse + schema check + compile + execute + build the rows.",
        "* **raw** — the same SQL, captured from the ORM run, through a plain cursor with `fetchall()`.",
        "* **memory** — the in-memory engine (`run_in_memory`) on the same active rows already loaded as dicts.",
        "* **index** — whether `EXPLAIN` shows an index scan (the plans at 1M are below).",
        "",
    ]
    for run in runs:
        server = f" {run['server'] // 10000}" if run["server"] else ""
        seeded = f", seeded in {run['seed_seconds']:.0f} s" if run["seed_seconds"] else ""
        lines += [
            f"### {run['vendor']}{server}, {run['size']:,} sessions ({run['active']:,} active{seeded})",
            "",
            f"User for the per-user queries: `{run['user']}` ({run['user_rows']} active sessions).",
            "",
            "| query | rows | ORM ms | raw SQL ms | ORM / raw | memory ms | index |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in run["results"]:
            mem = f"{r['memory_ms']:.1f}" if r["memory_ms"] is not None else "—"
            index = (
                "yes" if r["index"] else ("no (full scan by design)" if not r["wants_index"] else "**no**")
            )
            lines.append(
                f"| {r['query']} | {r['rows']:,} | {r['orm_ms']:.2f} | {r['raw_ms']:.2f} | "
                f"{r['orm_ms'] / r['raw_ms']:.2f}× | {mem} | {index} |"
            )
        lines.append("")
    biggest = [run for run in runs if run["size"] == max(r["size"] for r in runs)]
    for run in biggest:
        lines += [f"<details><summary>EXPLAIN plans, {run['vendor']} at {run['size']:,}</summary>", ""]
        for r in run["results"]:
            lines += [
                f"**{r['query']}** — `{json.dumps(r['filters'])}` `{json.dumps(r['options'])}`",
                "",
                "```",
            ]
            lines += [r["plan"], "```", ""]
        lines += ["</details>", ""]
    lines.append("<!-- query_bench:end -->")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--no-memory", action="store_true", help="skip the in-memory engine")
    parser.add_argument("--worker", nargs=2, metavar=("DATABASE_URL", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(
            json.dumps(
                worker(args.worker[0], int(args.worker[1]), args.repeat, not args.no_memory), default=str
            )
        )
        return
    runs = []
    for engine in args.engines.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            print(f"{engine} {size:,} ...", file=sys.stderr, flush=True)
            command = [
                sys.executable,
                __file__,
                "--repeat",
                str(args.repeat),
                "--worker",
                database_url(engine, size),
                str(size),
            ]
            if args.no_memory:
                command.append("--no-memory")
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
            if done.returncode != 0:
                sys.exit(f"worker failed for {engine} {size}:\n{done.stderr[-4000:]}")
            run = json.loads(done.stdout.strip().splitlines()[-1])
            # Each database/size keeps its latest figures, so one can be re-measured alone.
            (DATA / f"query_bench-{engine}-{size}.json").write_text(json.dumps(run))
    runs = [json.loads(path.read_text()) for path in sorted(DATA.glob("query_bench-*.json"))]
    runs.sort(key=lambda r: (r["vendor"], r["size"]))
    write_section("query_bench", render(runs, args.repeat))
    print(f"wrote {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
