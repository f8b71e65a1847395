#!/usr/bin/env python
"""Benchmark of the query engine: ORM pushdown vs the same SQL run raw vs the in-memory engine.

    .venv/bin/python bench/query_bench.py                      # 10k, 100k, 1M on SQLite and PostgreSQL
    .venv/bin/python bench/query_bench.py --sizes 10000 --engines sqlite --repeat 5
    .venv/bin/python bench/query_bench.py --sizes 1000000 --stats none,analyze --no-memory \\
        --prefix plans --label after --results bench/RESULTS-plans.md

For every database and size it seeds a dedicated database with ``manage.py seed_demo`` (kept
between runs: SQLite files ``bench/data/<prefix>-<size>.sqlite3``, PostgreSQL databases
``<prefix>_<size>`` on 127.0.0.1), then times each query of `queries` and of `pages` (median of
``--repeat`` runs after one warm-up):

* **orm**: ``selectors.session_query`` -- parse, schema check, compile, execute, build rows (the
  dashboard rows: ``tables.session_page``, one keyset page of 50 rows);
* **raw**: the SQL that the ORM sent, captured and run again through a plain cursor (fetchall);
* **memory**: ``execution.run_in_memory`` on the same active rows loaded as dicts;

and records the plan (``EXPLAIN`` on PostgreSQL, ``EXPLAIN QUERY PLAN`` on SQLite).

``--stats`` says under which statistics the queries run, in order: ``analyze`` (the default) runs
``VACUUM ANALYZE`` / ``ANALYZE`` first, as an operator would; ``seeded`` measures the database
exactly as ``seed_demo`` left it -- with whatever statistics the product gathered by itself
(``seed_demo`` refreshes them after its bulk load, `planner_stats`), the bench running no
``ANALYZE`` (issue 18's acceptance, with this machine's PostgreSQL autovacuum off); ``none``
measures a database on which nothing ever gathered statistics (a restore nobody analysed): its
statistics are removed first (``sqlite_stat1`` / ``sqlite_stat4``; PostgreSQL's ``pg_statistic``
rows and ``pg_class`` estimates of the table and its indexes). With ``seeded`` or ``none`` the run
works on a copy of the seeded database (``<prefix>_<size>_run``, a template copy on PostgreSQL, a
backup on SQLite; dropped afterwards unless ``--keep``), so the source is never analysed by the
bench and every run starts from the state ``seed_demo`` left; ``analyze`` then follows on the same
copy. For ``seeded`` use a new ``--prefix`` (or a source only ever measured through copies): a
source measured with ``--stats analyze`` alone was analysed in place.

The tables replace the ``<!-- <section>:start -->`` section of ``--results`` (bench/RESULTS.md,
section ``query_bench``, by default); the figures stay in ``bench/data/<section>@<engine>-<size>.json``
and ``--render-only`` writes the section again from them. Each database/size runs in its own process
(Django settings are per process); no statement budget applies (``SESSIONS_QUERY_TIMEOUT=0``), so a
slow plan is measured to its end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
DATA = ROOT / "bench" / "data"
PG_BASE = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
PG = ["-h", "127.0.0.1", "-U", "postgres"]
#: The API page of bench/api_bench.py.
API_FILTERS = [["internal", "=", False], ["credentials", "in", ["LOGIN_PASSWORD", "API_KEY"]]]
NEWEST = {"order_by": ["-created_at"], "limit": 50}


def queries(username: str, size: int) -> list[tuple[str, list[Any], dict[str, Any], bool]]:
    """(name, filters, options, expected to use an index) of ``auth.sessions``."""
    origin_or = [["credentials_data.username", "=", username], ["origin", "^", "10.12.1"]]
    return [
        ("50 newest non-internal", [["internal", "=", False]], NEWEST, True),
        ("API page (api_bench)", API_FILTERS, NEWEST, True),
        ("credential type, newest first", [["credentials", "=", "TOKEN"]], NEWEST, True),
        ("sessions of one user (username)", [["credentials_data.username", "=", username]], {}, True),
        # The user's name without its last characters, in another case: a handful of accounts.
        (
            "user prefix C^",
            [["credentials_data.username", "C^", username[:-2].upper()]],
            {},
            True,
        ),
        ("count by credential type", [["credentials", "=", "API_KEY"]], {"count": True}, True),
        ('origin ^ "10.12."', [["origin", "^", "10.12."]], {}, True),
        ("OR of two conditions", [["OR", origin_or]], {}, True),
        ("OR of two conditions, newest 50", [["OR", origin_or]], NEWEST, True),
        ("count of an OR", [["OR", origin_or]], {"count": True}, True),
        (f"offset {size // 2} limit 50", [], {"offset": size // 2, "limit": 50}, True),
    ]


#: Dashboard tables: (name, ``session_page`` keyword arguments); first page, 50 rows.
PAGES: list[tuple[str, dict[str, Any]]] = [
    ("dashboard sorted by created", {"sort": "created"}),
    ("dashboard sorted by last seen", {"sort": "last_seen"}),
    ("dashboard sorted by user, ascending", {"sort": "user", "descending": False}),
    ("dashboard sorted by user", {"sort": "user"}),
    ("dashboard sorted by type", {"sort": "type"}),
    ("dashboard sorted by origin", {"sort": "origin"}),
    ("history sorted by ended", {"sort": "ended", "history": True}),
    ("history sorted by created", {"sort": "created", "history": True}),
    ("history sorted by user", {"sort": "user", "history": True}),
    ("history sorted by type", {"sort": "type", "history": True}),
    ("history sorted by origin", {"sort": "origin", "history": True}),
]


# --- worker: one database, one size ----------------------------------------------------------------


def clear_statistics(connection: Any) -> None:
    """Forget every planner statistic of the sessions table, as on a freshly loaded database."""
    from sessions_app.models import UserSession

    table = UserSession._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            relations = (
                "SELECT c.oid FROM pg_class c WHERE c.oid = %s::regclass OR c.oid IN "
                "(SELECT indexrelid FROM pg_index WHERE indrelid = %s::regclass)"
            )
            cursor.execute(f"DELETE FROM pg_statistic WHERE starelid IN ({relations})", [table, table])
            cursor.execute(
                f"UPDATE pg_class SET reltuples = -1, relpages = 0, relallvisible = 0 WHERE oid IN ({relations})",
                [table, table],
            )
        else:
            for stat in ("sqlite_stat1", "sqlite_stat4"):
                cursor.execute(f"DROP TABLE IF EXISTS {stat}")
    connection.close()  # SQLite loads statistics when it opens the database


def warm(connection: Any) -> None:
    """Read the sessions table and its indexes once: the first mode measured must not pay alone for
    a cold cache (into the OS cache: PostgreSQL's ``pg_prewarm(…, 'read')``; SQLite's file read)."""
    from sessions_app.models import UserSession

    table = UserSession._meta.db_table
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            cursor.execute(
                "SELECT pg_prewarm(indexrelid, 'read') FROM pg_index WHERE indrelid = %s::regclass "
                "UNION ALL SELECT pg_prewarm(%s::regclass, 'read')",
                [table, table],
            )
        return
    with open(connection.settings_dict["NAME"], "rb") as database:
        while database.read(1 << 20):
            pass


def count_statistics(connection: Any) -> int:
    """Rows of planner statistics about the sessions table (``sqlite_stat1`` / ``pg_statistic``)."""
    from sessions_app.models import UserSession

    table = UserSession._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT count(*) FROM pg_statistic WHERE starelid = %s::regclass", [table])
        else:
            cursor.execute("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")
            if not cursor.fetchone()[0]:
                return 0
            cursor.execute("SELECT count(*) FROM sqlite_stat1 WHERE tbl = %s", [table])
        return int(cursor.fetchone()[0])


def gather_statistics(connection: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")
    connection.close()


class LastSelect:
    """The SQL text and parameters of the last SELECT a block sent (a connection execute wrapper:
    the statement as the driver got it, so it runs again exactly, placeholders and all)."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.sql = ""
        self.params: Any = ()

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.lstrip().upper().startswith("SELECT"):
            self.sql, self.params = sql, params
        return execute(sql, params, many, context)

    def __enter__(self) -> LastSelect:
        self._wrapped = self.connection.execute_wrapper(self)
        self._wrapped.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._wrapped.__exit__(*exc)


def explain(connection: Any, sql: str, params: Any) -> str:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("EXPLAIN " + sql, params)
            return "\n".join(r[0] for r in cursor.fetchall())
        cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        depth: dict[int, int] = {0: -1}
        lines = []
        for node, parent, _, detail in cursor.fetchall():
            depth[node] = depth.get(parent, -1) + 1
            lines.append("  " * depth[node] + detail)
        return "\n".join(lines)


def plan_flags(plan: str, vendor: str) -> dict[str, bool]:
    """What the plan does: an index at all, a scan of every row of the sessions table, a sort of a
    whole result. The outer sort of a ``pk IN (…)`` statement (the query compiler's split and
    deferred-join forms) is not counted: it sorts only the keys a bounded subquery selected."""
    lines = plan.splitlines()
    if vendor == "postgresql":
        sorts = [i for i, line in enumerate(lines) if re.match(r"\s*(->\s*)?Sort\s+\(", line)]
        if sorts and sorts[0] <= 1 and "_pkey" in plan:
            sorts = sorts[1:]
        return {
            "index": "Index" in plan,
            "full_scan": bool(re.search(r"Seq Scan on sessions_app_usersession", plan)),
            "sort": bool(sorts),
        }
    by_key = any("USING INTEGER PRIMARY KEY" in line and not line.startswith(" ") for line in lines)
    return {
        "index": bool(re.search(r"USING (COVERING )?INDEX|USING INTEGER PRIMARY KEY", plan)),
        "full_scan": any(re.fullmatch(r"\s*SCAN (sessions_app_usersession|U\d+)", line) for line in lines),
        "sort": any(
            line.strip() == "USE TEMP B-TREE FOR ORDER BY" and (line.startswith(" ") or not by_key)
            for line in lines
        ),
    }


def worker(database_url: str, size: int, repeat: int, memory: bool, modes: list[str]) -> dict[str, Any]:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "benchmark-only")
    # Measure every query to its end, however slow: no statement budget (SESSIONS_QUERY_TIMEOUT).
    os.environ["SESSIONS_QUERY_TIMEOUT"] = "0"
    os.environ["PG_STATEMENT_TIMEOUT_MS"] = "600000"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.db.models import Count

    from sessions_app.models import UserSession
    from sessions_app.query import execution
    from sessions_app.selectors import session_query, session_rows
    from sessions_app.specs import SESSION_SPEC
    from sessions_app.tables import session_page

    call_command("migrate", verbosity=0)
    seeded_at = None
    if UserSession.objects.count() != size:
        started = time.perf_counter()
        call_command("seed_demo", sessions=size, clear=True, seed=1, verbosity=0, no_progress=True)
        seeded_at = time.perf_counter() - started

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

    def raw_ms(sql: str, params: Any) -> float:
        def raw() -> None:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                cursor.fetchall()

        return median_ms(raw)

    def measured(name: str, call: str, result: Any, orm: float, sent: LastSelect) -> dict[str, Any]:
        plan = explain(connection, sent.sql, sent.params)
        return {
            "query": name,
            "call": call,
            "rows": result if isinstance(result, int) else len(result),
            "orm_ms": orm,
            "raw_ms": raw_ms(sent.sql, sent.params),
            "plan": plan,
            **plan_flags(plan, connection.vendor),
            "sql": sent.sql,
            "params": repr(sent.params),
        }

    if modes:
        warm(connection)
    runs = {}
    #: Rows of planner statistics on the sessions table when each mode ended (the connection's own
    #: ``PRAGMA optimize`` could have gathered some during a "none" run: this shows it did not).
    statistics_rows: dict[str, int] = {}
    for mode in modes:
        if mode == "none":
            clear_statistics(connection)
        elif mode == "analyze":
            gather_statistics(connection)
        # "seeded": the statistics as seed_demo left them, untouched.
        execution._STATEMENTS.clear()  # plans are made per statement: no statement from another mode
        rows = session_rows() if memory else None
        out = []
        for name, filters, options, wants_index in queries(username, size):
            with LastSelect(connection) as sent:
                result = session_query(filters=filters, options=options)
            orm = median_ms(lambda f=filters, o=options: session_query(filters=f, options=o))
            mem_ms = None
            if rows is not None:
                mem_ms = median_ms(
                    lambda f=filters, o=options, r=rows: execution.run_in_memory(SESSION_SPEC, r, f, o)
                )
                assert execution.run_in_memory(SESSION_SPEC, rows, filters, options) == result, name
            call = f"`{json.dumps(filters)}` `{json.dumps(options)}`"
            out.append(
                measured(name, call, result, orm, sent) | {"memory_ms": mem_ms, "wants_index": wants_index}
            )
        for name, kwargs in PAGES:
            with LastSelect(connection) as sent:
                page = session_page(**kwargs)
            orm = median_ms(lambda kw=kwargs: session_page(**kw))
            call = "`session_page(" + ", ".join(f"{k}={json.dumps(v)}" for k, v in kwargs.items()) + ")`"
            out.append(measured(name, call, page.rows, orm, sent) | {"memory_ms": None, "wants_index": True})
        runs[mode] = out
        statistics_rows[mode] = count_statistics(connection)
    return {
        "vendor": connection.vendor,
        "server": connection.pg_version if connection.vendor == "postgresql" else None,
        "size": size,
        "active": UserSession.objects.active().count(),
        "user": username,
        "user_rows": user_rows,
        "seed_seconds": seeded_at,
        "modes": runs,
        "statistics_rows": statistics_rows,
        "measured_at": time.time(),
    }


# --- orchestration -------------------------------------------------------------------------------


def database_url(engine: str, name: str) -> str:
    """The URL of database ``name`` (created empty on PostgreSQL if missing)."""
    if engine == "sqlite":
        DATA.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{DATA / f'{name}.sqlite3'}"
    subprocess.run(["createdb", *PG, name], capture_output=True, check=False)
    return f"{PG_BASE}/{name}"


def copy_database(engine: str, source: str, target: str) -> str:
    """A fresh copy of database ``source`` named ``target``; its URL."""
    if engine == "sqlite":
        path = DATA / f"{target}.sqlite3"
        drop_database(engine, target)
        with sqlite3.connect(DATA / f"{source}.sqlite3") as src, sqlite3.connect(path) as dst:
            src.backup(dst)
        return f"sqlite:///{path}"
    drop_database(engine, target)
    subprocess.run(["createdb", *PG, "--template", source, target], check=True, capture_output=True)
    return f"{PG_BASE}/{target}"


def drop_database(engine: str, name: str) -> None:
    if engine == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{DATA / name}.sqlite3{suffix}").unlink(missing_ok=True)
    else:
        subprocess.run(["dropdb", *PG, "--if-exists", name], check=True, capture_output=True)


def run_worker(args: argparse.Namespace, url: str, size: int, modes: list[str]) -> dict[str, Any]:
    command = [sys.executable, __file__, "--repeat", str(args.repeat), "--stats", ",".join(modes)]
    command += ["--worker", url, str(size)]
    if args.no_memory or not modes:
        command.append("--no-memory")
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"worker failed for {url}:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


MODE_TITLE = {
    "none": "no statistics (never analysed)",
    "seeded": "as seed_demo left it (no ANALYZE by the bench)",
    "analyze": "after ANALYZE",
}
MODE_SHORT = {"none": "no statistics", "seeded": "as seeded, no manual ANALYZE"}


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def render(runs: list[dict[str, Any]], repeat: int, section: str, label: str) -> str:
    measured = sorted(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(run["measured_at"])) for run in runs)
    when = measured[0] if measured[0] == measured[-1] else f"{measured[0]} to {measured[-1]}"
    lines = [
        f"<!-- {section}:start -->",
        f"## Query engine (`bench/query_bench.py`){f' — {label}' if label else ''}",
        "",
        f"Machine: {machine()}. Measured {when}; medians of {repeat} runs after a warm-up, the queries "
        "of a database measured side by side in one run.",
        "",
        "* **ORM** — `session_query`: parse + schema check + compile + execute + build the rows "
        "(dashboard rows: `session_page`, one keyset page).",
        "* **raw** — the same SQL, captured from the ORM run, through a plain cursor with `fetchall()`.",
        "* **memory** — the in-memory engine (`run_in_memory`) on the same active rows already loaded as dicts.",
        "* **index** — the plan uses an index; **full scan** — it reads every row of the table "
        "(`SCAN <table>` / `Seq Scan`); **sort** — it sorts the whole result "
        "(`USE TEMP B-TREE FOR ORDER BY` / a `Sort` node). The plans at the largest size are below.",
        "",
    ]
    for run in runs:
        server = f" {run['server'] // 10000}" if run["server"] else ""
        seeded = f", seeded in {run['seed_seconds']:.0f} s" if run["seed_seconds"] else ""
        for mode, results in run["modes"].items():
            stats = run.get("statistics_rows", {}).get(mode)
            stats_note = (
                f" Rows of planner statistics on the table at the end: {stats}." if stats is not None else ""
            )
            lines += [
                f"### {run['vendor']}{server}, {run['size']:,} sessions ({run['active']:,} active{seeded}), "
                f"{MODE_TITLE[mode]}",
                "",
                f"User for the per-user queries: `{run['user']}` ({run['user_rows']} active sessions).{stats_note}",
                "",
                "| query | rows | ORM ms | raw SQL ms | ORM / raw | memory ms | index | full scan | sort |",
                "|---|---:|---:|---:|---:|---:|---|---|---|",
            ]
            for r in results:
                flags = plan_flags(r["plan"], run["vendor"])  # from the plan: this version's reading
                mem = f"{r['memory_ms']:.1f}" if r["memory_ms"] is not None else "—"
                index = _yes(flags["index"]) if flags["index"] or not r["wants_index"] else "**no**"
                lines.append(
                    f"| {r['query']} | {r['rows']:,} | {r['orm_ms']:.2f} | {r['raw_ms']:.2f} | "
                    f"{r['orm_ms'] / r['raw_ms']:.2f}× | {mem} | {index} | {_yes(flags['full_scan'])} | "
                    f"{_yes(flags['sort'])} |"
                )
            lines.append("")
        for before in ("seeded", "none"):
            if not {before, "analyze"} <= set(run["modes"]):
                continue
            short = MODE_SHORT[before]
            lines += [
                f"{short.capitalize()} vs after ANALYZE, {run['vendor']} {run['size']:,} (ORM ms; "
                "**bold**: over 1.5×):",
                "",
                f"| query | {short} | after ANALYZE | ratio |",
                "|---|---:|---:|---:|",
            ]
            after = {r["query"]: r for r in run["modes"]["analyze"]}
            for r in run["modes"][before]:
                a = after[r["query"]]["orm_ms"]
                ratio = f"{r['orm_ms'] / a:.2f}×"
                ratio = f"**{ratio}**" if r["orm_ms"] / a > 1.5 else ratio
                lines.append(f"| {r['query']} | {r['orm_ms']:.2f} | {a:.2f} | {ratio} |")
            lines.append("")
    biggest = [run for run in runs if run["size"] == max(r["size"] for r in runs)]
    for run in biggest:
        for mode, results in run["modes"].items():
            lines += [
                f"<details><summary>Plans, {run['vendor']} at {run['size']:,}, {MODE_TITLE[mode]}</summary>",
                "",
            ]
            for r in results:
                lines += [f"**{r['query']}** — {r['call']}", "", "```", r["plan"], "```", ""]
            lines += ["</details>", ""]
    lines.append(f"<!-- {section}:end -->")
    return "\n".join(lines)


def write_section(results: Path, name: str, text: str) -> None:
    """Replace the ``<!-- name:start -->`` … ``<!-- name:end -->`` section of ``results`` (or append it)."""
    current = results.read_text() if results.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->", re.S)
    if pattern.search(current):
        current = pattern.sub(lambda _: text, current)
    else:
        current = current.rstrip() + "\n\n" + text
    results.write_text(current.rstrip() + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--stats", default="analyze", help="comma-separated: seeded, none, analyze (in order)"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the in-memory engine")
    parser.add_argument("--prefix", default="bench", help="database names: <prefix>_<size> / <prefix>-<size>")
    parser.add_argument("--keep", action="store_true", help="keep the copy a --stats none run works on")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the Markdown file to write")
    parser.add_argument("--section", default="query_bench", help="its section name")
    parser.add_argument("--label", default="", help="words after the section title (e.g. before/after)")
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite the section from the figures kept in bench/data"
    )
    parser.add_argument("--worker", nargs=2, metavar=("DATABASE_URL", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    modes = [m for m in args.stats.split(",") if m]
    if any(m not in MODE_TITLE for m in modes):
        parser.error(f"--stats: one or more of {', '.join(MODE_TITLE)}")
    if args.worker:
        result = worker(args.worker[0], int(args.worker[1]), args.repeat, not args.no_memory, modes)
        print(json.dumps(result, default=str))
        return
    runs = []
    for engine in [] if args.render_only else args.engines.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            print(f"{engine} {size:,} ...", file=sys.stderr, flush=True)
            sep = "-" if engine == "sqlite" else "_"
            name = f"{args.prefix}{sep}{size}"
            url = database_url(engine, name)
            if {"none", "seeded"} & set(modes):
                run_worker(args, url, size, [])  # migrate and seed the source only
                copy = f"{name}{sep}run"
                run = run_worker(args, copy_database(engine, name, copy), size, modes)
                if not args.keep:
                    drop_database(engine, copy)
            else:
                run = run_worker(args, url, size, modes)
            # Each database/size keeps its latest figures, so one can be re-measured alone.
            tag = f"{args.section}@{engine}-{size}"
            (DATA / f"{tag}.json").write_text(json.dumps(run))
    runs = []
    for path in sorted(DATA.glob(f"{args.section}@*.json")):
        run = json.loads(path.read_text())
        run.setdefault("measured_at", path.stat().st_mtime)  # figures kept before it was recorded
        runs.append(run)
    runs.sort(key=lambda r: (r["vendor"], r["size"]))
    write_section(args.results, args.section, render(runs, args.repeat, args.section, args.label))
    print(f"wrote {args.results}", file=sys.stderr)


if __name__ == "__main__":
    main()
