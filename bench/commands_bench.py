#!/usr/bin/env python
"""Benchmark of the operations commands at a million rows.

    .venv/bin/python bench/commands_bench.py                       # 1M rows, SQLite and PostgreSQL
    .venv/bin/python bench/commands_bench.py --quick --no-write    # a smoke run

1. **audit_export** of ``--records`` audit records (default 1,000,000) on SQLite
   (``bench/data/commands.sqlite3``) and PostgreSQL (database ``bench_commands`` on 127.0.0.1),
   both recreated and seeded with one ``INSERT … SELECT`` each: ``manage.py audit_export`` runs as a
   child process writing JSON Lines and CSV to a file; its wall time gives the throughput and
   ``os.wait4`` its peak RSS (``ru_maxrss``). The same export of a tenth of the records and of none
   (Django's own footprint) shows that memory does not grow with the number of records. Target:
   peak RSS < 200 MB.
2. **sessions purge** on SQLite of ``--sessions`` ended sessions (default 1,000,000, ended 100-200
   days ago, so all past the default 90-day retention), added to the same database, while another
   process keeps logging in: a loop of real ``auth.login_ex`` password logins through the service
   (each one a session, an audit record and, past the per-user cap, an eviction -- write
   transactions competing with the purge for SQLite's one write lock), bounded in count and time.
   Recorded: the purge's duration and peak RSS, the logins before and during it with their
   latencies, and the logins that failed -- with "database is locked" in particular, which must be
   0. Passwords use Django's MD5 hasher in this bench only, so that logins come fast enough to
   contend for the lock rather than wait on Argon2.

The section between ``<!-- commands_bench:start -->`` and ``<!-- commands_bench:end -->`` of
bench/RESULTS.md is replaced.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, fresh_database, login_loop, machine, write_section  # noqa: E402
from common import setup_django as common_setup_django  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
DATA = ROOT / "bench" / "data"
PG_NAME = "bench_commands"
SQLITE_PATH = DATA / "commands.sqlite3"
PASSWORD = "bench correct horse battery staple"
USERS = [f"login{i}" for i in range(8)]
RSS_LIMIT_MB = 200


def base_env(database_url: str) -> dict[str, str]:
    return environment(database_url)


def setup_django(database_url: str) -> None:
    common_setup_django(database_url, fast_hasher=True)


# --- workers (each in its own process: Django settings are per process) ----------------------------------


def worker_seed_audit(database_url: str, records: int) -> dict[str, Any]:
    """Migrate, then insert ``records`` audit records spread over the last 29 days in one statement."""
    setup_django(database_url)
    from django.core.management import call_command
    from django.db import connection, transaction

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(
                """
                WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < %s)
                INSERT INTO sessions_app_auditrecord
                    (audit_id, timestamp, event, username, session, address, success, event_data)
                SELECT printf('%%08x-%%04x-4000-8000-%%012x', i, i %% 65536, i * 7919),
                       strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', '-' || ((%s - i) * 2.5) || ' seconds'),
                       CASE WHEN i %% 10 < 6 THEN 'AUTHENTICATION' WHEN i %% 10 < 9 THEN 'METHOD_CALL'
                            ELSE 'LOGOUT' END,
                       'user' || (i %% 500),
                       lower(hex(randomblob(24))),
                       '10.' || (i %% 250) || '.' || (i / 250 %% 250) || '.7:' || (40000 + i %% 20000),
                       i %% 17 != 0,
                       json_object('mechanism', 'PASSWORD_PLAIN', 'credentials', 'LOGIN_PASSWORD',
                                   'method', 'auth.login_ex', 'n', i)
                FROM seq
                """,
                [records, records],
            )
        else:
            cursor.execute(
                """
                INSERT INTO sessions_app_auditrecord
                    (audit_id, timestamp, event, username, session, address, success, event_data)
                SELECT md5(i::text)::uuid::text,
                       now() - (%s - i) * interval '2.5 seconds',
                       CASE WHEN i %% 10 < 6 THEN 'AUTHENTICATION' WHEN i %% 10 < 9 THEN 'METHOD_CALL'
                            ELSE 'LOGOUT' END,
                       'user' || (i %% 500),
                       substr(md5(random()::text), 1, 32) || substr(md5(random()::text), 1, 16),
                       '10.' || (i %% 250) || '.' || (i / 250 %% 250) || '.7:' || (40000 + i %% 20000),
                       i %% 17 != 0,
                       jsonb_build_object('mechanism', 'PASSWORD_PLAIN', 'credentials', 'LOGIN_PASSWORD',
                                          'method', 'auth.login_ex', 'n', i)
                FROM generate_series(1, %s) AS i
                """,
                [records, records],
            )
    seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")
    version = connection.pg_version if connection.vendor == "postgresql" else None
    return {"vendor": connection.vendor, "server": version, "seconds": seconds}


def worker_seed_sessions(database_url: str, sessions: int) -> dict[str, Any]:
    """``sessions`` ended sessions (100-200 days ago) and the login users, on SQLite."""
    setup_django(database_url)
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    model = get_user_model()
    for name in USERS:
        user = model(username=name)
        user.set_password(PASSWORD)
        user.save()
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """
            WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < %s)
            INSERT INTO sessions_app_usersession
                (public_id, secret_hash, credentials, username, username_folded, login_at, origin,
                 internal, secure_transport, created_at, last_seen_at, expires_at, ended_at, end_reason,
                 ended_by, password_change_required, user_auth_hash)
            SELECT hex(randomblob(32)),
                   CASE WHEN i %% 5 < 3 THEN lower(hex(randomblob(32))) END,
                   CASE WHEN i %% 5 < 3 THEN 'LOGIN_PASSWORD' WHEN i %% 5 = 3 THEN 'API_KEY'
                        ELSE 'TOKEN' END,
                   'user' || (i %% 500), 'user' || (i %% 500),
                   strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', '-' || (100 + i %% 100) || ' days',
                            '-2 hours'),
                   '10.' || (i %% 250) || '.' || (i / 250 %% 250) || '.9:' || (40000 + i %% 20000),
                   0, 1,
                   strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', '-' || (100 + i %% 100) || ' days',
                            '-2 hours'),
                   strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', '-' || (100 + i %% 100) || ' days',
                            '-1 hours'),
                   strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', '-' || (70 + i %% 100) || ' days'),
                   strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', '-' || (100 + i %% 100) || ' days',
                            '-' || (i %% 3600) || ' seconds'),
                   'LOGOUT', 'user' || (i %% 500), 0, ''
            FROM seq
            """,
            [sessions],
        )
    seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cursor.execute("SELECT count(*) FROM sessions_app_usersession WHERE ended_at IS NOT NULL")
        ended = cursor.fetchone()[0]
    return {"seconds": seconds, "ended": ended}


def worker_logins(database_url: str, stop_file: str, max_logins: int, max_seconds: float) -> dict[str, Any]:
    """Log in (``auth.login_ex``, password) in a loop until ``stop_file`` exists or a bound is hit
    (`common.login_loop`)."""
    setup_django(database_url)
    return login_loop(
        users=USERS,
        password=PASSWORD,
        stop_file=stop_file,
        max_seconds=max_seconds,
        max_logins=max_logins,
        check_every=20,
        ready_after=50,
    )


# --- running children -------------------------------------------------------------------------------------


def run_worker(*args: str) -> Any:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"worker {args[0]} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measured(command: list[str], env: dict[str, str], stdout: Any = subprocess.DEVNULL) -> dict[str, Any]:
    """Run ``command``; its wall time, exit status, stderr and peak RSS (MB, from ``wait4``)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=stdout, stderr=subprocess.PIPE)
    assert process.stderr is not None
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return {
        "seconds": time.perf_counter() - started,
        "status": process.returncode,
        "stderr": stderr.decode(errors="replace"),
        "rss_mb": usage.ru_maxrss / 1024,
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }


def manage(*args: str) -> list[str]:
    return [sys.executable, "manage.py", *args]


def database_url(engine: str) -> str:
    return fresh_database(engine, sqlite=SQLITE_PATH, postgres=PG_NAME)


def bench_export(url: str, records: int) -> list[dict[str, Any]]:
    """Exports of all, a tenth and none of the records: throughput and peak RSS."""
    env = base_env(url)
    out: list[dict[str, Any]] = []
    days = 29 * records // 1_000_000 + 1  # the seeded records span records * 2.5 s
    tenth_seconds = int(records / 10 * 2.5)
    runs = [
        ("jsonl", f"{days + 1}d", records),
        ("csv", f"{days + 1}d", records),
        ("jsonl", f"{tenth_seconds}s", records // 10),
        ("jsonl", "1s", 0),
    ]
    for fmt, since, expected in runs:
        target = DATA / f"export.{fmt}"
        result = measured(
            manage(
                "audit_export", "--since", since, "--format", fmt, "--output", str(target), "--no-progress"
            ),
            env,
        )
        if result["status"] != 0:
            sys.exit(f"audit_export failed: {result['stderr'][-2000:]}")
        with target.open("rb") as handle:
            lines = sum(1 for _ in handle) - (1 if fmt == "csv" else 0)
        size = target.stat().st_size
        target.unlink()
        # The tenth is approximate (the window is counted back from a later "now").
        if expected in (records, 0):
            assert lines == expected, (fmt, since, lines, expected)
        out.append({**result, "format": fmt, "records": lines, "bytes": size})
        print(
            f"  {fmt} {lines:,} records: {result['seconds']:.1f} s, {result['rss_mb']:.0f} MB",
            file=sys.stderr,
            flush=True,
        )
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def bench_purge(
    url: str, sessions: int, max_logins: int, max_seconds: float, warmup: float
) -> dict[str, Any]:
    seed = run_worker("--worker-seed-sessions", url, str(sessions))
    print(
        f"  seeded {seed['ended']:,} ended sessions in {seed['seconds']:.0f} s", file=sys.stderr, flush=True
    )
    stop = DATA / "commands-bench.stop"
    for path in (stop, Path(f"{stop}.ready")):
        path.unlink(missing_ok=True)
    env = base_env(url)
    login_cmd = [
        sys.executable,
        __file__,
        "--worker-logins",
        url,
        str(stop),
        str(max_logins),
        str(max_seconds),
    ]
    logins = subprocess.Popen(login_cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not Path(f"{stop}.ready").exists():
        if logins.poll() is not None or time.monotonic() > deadline:
            sys.exit(
                f"login worker did not start: {logins.stderr.read().decode()[-2000:] if logins.stderr else ''}"
            )
        time.sleep(0.1)
    time.sleep(warmup)  # logins alone: the baseline
    purge_start = time.time()
    purge = measured(manage("sessions", "purge", "--no-progress"), env, stdout=subprocess.PIPE)
    purge_end = time.time()
    time.sleep(min(warmup, 5))
    stop.touch()
    out, err = logins.communicate(timeout=300)
    for path in (stop, Path(f"{stop}.ready")):
        path.unlink(missing_ok=True)
    if logins.returncode != 0:
        sys.exit(f"login worker failed: {err.decode()[-3000:]}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    if purge["status"] != 0:
        sys.exit(f"purge failed: {purge['stderr'][-2000:]}")
    after = run_worker("--worker-count", url)
    during = [ms for at, ms in result["logins"] if purge_start <= at <= purge_end]
    before = [ms for at, ms in result["logins"] if at < purge_start]
    first = min((at for at, _ in result["logins"]), default=purge_start)
    failures = result["failures"]
    locked = [f for f in failures if "database is locked" in f[1]]
    return {
        "seed": seed,
        "purge": purge,
        "after": after,
        "before": {
            "count": len(before),
            "per_s": len(before) / max(purge_start - first, 1e-9),
            "p50": statistics.median(before) if before else float("nan"),
            "p99": percentile(before, 0.99),
            "max": max(before, default=float("nan")),
        },
        "during": {
            "count": len(during),
            "per_s": len(during) / max(purge_end - purge_start, 1e-9),
            "p50": statistics.median(during) if during else float("nan"),
            "p99": percentile(during, 0.99),
            "max": max(during, default=float("nan")),
        },
        "failures": len(failures),
        "locked": len(locked),
        "failure_examples": sorted({f[1] for f in failures})[:3],
        "bounded": result["bounded"],
    }


def worker_count(database_url: str) -> dict[str, Any]:
    setup_django(database_url)
    from sessions_app.models import AuditRecord, UserSession

    summary = AuditRecord.objects.filter(event_data__method="sessions.purge").order_by("-pk").first()
    return {
        "ended_left": UserSession.objects.filter(ended_at__isnull=False).count(),
        "active": UserSession.objects.filter(ended_at__isnull=True).count(),
        "summary": summary.event_data if summary else None,
    }


# --- report ---------------------------------------------------------------------------------------------


def render(exports: list[dict[str, Any]], purge: dict[str, Any] | None, args: Any, load: list[float]) -> str:
    lines = [
        "<!-- commands_bench:start -->",
        "## Operations commands (`bench/commands_bench.py`)",
        "",
        f"Machine: {machine()}. Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. 1-minute load "
        f"average at start / end: {load[0]:.2f} / {load[1]:.2f} (other work on the machine slows the "
        "absolute figures).",
        "",
        f"### `audit_export` of {args.records:,} audit records",
        "",
        "`manage.py audit_export --since … --format F --output FILE` as a child process (Django start-up "
        "included); peak RSS is the child's `ru_maxrss` (`os.wait4`). Records were seeded with one "
        "`INSERT … SELECT` (realistic sizes: ~90-byte `event_data`, IPv4 address, 48-char session id). "
        "Rows are read in chunks of 2,000 (a server-side cursor inside a read-only transaction on "
        "PostgreSQL; a stepped statement on SQLite) and written as they come. The 0-record run is Django's "
        f"own footprint; the {args.records // 10:,}-record run shows that memory does not grow with the "
        f"export. Target: peak RSS < {RSS_LIMIT_MB} MB.",
        "",
        "| database | format | records | seconds | records/s | MB written | peak RSS MB | < 200 MB |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for run in exports:
        rate = run["records"] / run["seconds"] if run["records"] else 0
        ok = "yes" if run["rss_mb"] < RSS_LIMIT_MB else "**no**"
        lines.append(
            f"| {run['label']} | {run['format']} | {run['records']:,} | {run['seconds']:.1f} | "
            f"{rate:,.0f} | {run['bytes'] / 1e6:,.0f} | {run['rss_mb']:.0f} | {ok} |"
        )
    if purge is not None:
        p, before, during = purge["purge"], purge["before"], purge["during"]
        summary = purge["after"]["summary"] or {}
        lines += [
            "",
            f"### `sessions purge` of {purge['seed']['ended']:,} ended sessions on SQLite, logins running",
            "",
            f"The sessions (ended 100-200 days ago) were added to the same SQLite database (WAL, busy "
            f"timeout 20 s), which also holds the {args.records:,} audit records (all inside the 90-day "
            "retention, so kept). `manage.py sessions purge` (default window, adaptive batches of about "
            "0.1 s each, 50 ms pause between batches) ran while one process looped real `auth.login_ex` "
            "password logins through the service (8 users; each login writes a session and an audit "
            "record, and past 100 sessions a user's login also evicts the oldest one; MD5 hasher in this "
            f"bench so that logins contend for the write lock; bounded at {args.max_logins:,} logins / "
            f"{args.max_seconds:.0f} s). Baseline: the {args.warmup:.0f} s of logins before the purge.",
            "",
            "| measure | value |",
            "|---|---:|",
            f"| purge wall time (incl. Django start-up) | {p['seconds']:.1f} s |",
            f"| sessions deleted | {summary.get('sessions', 0):,} |",
            f"| deleted sessions/s | {summary.get('sessions', 0) / p['seconds']:,.0f} |",
            f"| purge peak RSS | {p['rss_mb']:.0f} MB |",
            f"| ended sessions left (the logins' evictions, inside retention) | {purge['after']['ended_left']:,} |",
            f"| logins before the purge (logins/s, p50 / p99 / max ms) | {before['count']:,} "
            f"({before['per_s']:.0f}/s, {before['p50']:.1f} / {before['p99']:.1f} / {before['max']:.0f}) |",
            f"| logins during the purge (logins/s, p50 / p99 / max ms) | {during['count']:,} "
            f"({during['per_s']:.0f}/s, {during['p50']:.1f} / {during['p99']:.1f} / {during['max']:.0f}) |",
            f"| logins failed (any reason) | {purge['failures']} |",
            f'| **logins failed with "database is locked"** | **{purge["locked"]}** |',
        ]
        if purge["failure_examples"]:
            lines.append(f"\nFailures seen: {', '.join(purge['failure_examples'])}.")
    lines += ["", "<!-- commands_bench:end -->"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--max-logins", type=int, default=200_000)
    parser.add_argument("--max-seconds", type=float, default=1800)
    parser.add_argument("--warmup", type=float, default=10)
    parser.add_argument("--no-purge", action="store_true")
    parser.add_argument("--quick", action="store_true", help="20,000 rows (a smoke run)")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    parser.add_argument("--worker-seed-audit", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--worker-seed-sessions", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--worker-logins", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--worker-count", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_seed_audit:
        print(json.dumps(worker_seed_audit(args.worker_seed_audit[0], int(args.worker_seed_audit[1]))))
        return
    if args.worker_seed_sessions:
        url, n = args.worker_seed_sessions
        print(json.dumps(worker_seed_sessions(url, int(n))))
        return
    if args.worker_logins:
        url, stop, count, seconds = args.worker_logins
        print(json.dumps(worker_logins(url, stop, int(count), float(seconds))))
        return
    if args.worker_count:
        print(json.dumps(worker_count(args.worker_count)))
        return
    if args.quick:
        args.records, args.sessions, args.warmup = 20_000, 20_000, 3
    load = [os.getloadavg()[0]]
    exports: list[dict[str, Any]] = []
    purge = None
    for engine in args.engines.split(","):
        print(f"{engine}: seeding {args.records:,} audit records ...", file=sys.stderr, flush=True)
        url = database_url(engine)
        seed = run_worker("--worker-seed-audit", url, str(args.records))
        label = "SQLite" if seed["vendor"] == "sqlite" else f"PostgreSQL {seed['server'] // 10000}"
        print(f"{engine}: seeded in {seed['seconds']:.0f} s; exporting ...", file=sys.stderr, flush=True)
        exports += [{**run, "label": label} for run in bench_export(url, args.records)]
        if engine == "sqlite" and not args.no_purge:
            print(f"sqlite: purge of {args.sessions:,} sessions with logins ...", file=sys.stderr, flush=True)
            purge = bench_purge(url, args.sessions, args.max_logins, args.max_seconds, args.warmup)
            print(
                f"  purge {purge['purge']['seconds']:.1f} s; logins during: {purge['during']['count']}; "
                f"failed: {purge['failures']} (locked: {purge['locked']})",
                file=sys.stderr,
                flush=True,
            )
    load.append(os.getloadavg()[0])
    text = render(exports, purge, args, load)
    failed_rss = [r for r in exports if r["rss_mb"] >= RSS_LIMIT_MB]
    if args.no_write:
        print(text)
    else:
        write_section("commands_bench", text)
        print(f"wrote {RESULTS}", file=sys.stderr)
    if failed_rss or (purge is not None and purge["locked"]):
        sys.exit("FAILED: peak RSS over the limit or logins failed with 'database is locked'")


if __name__ == "__main__":
    main()
