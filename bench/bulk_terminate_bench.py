#!/usr/bin/env python
"""Benchmark of a bulk termination from the dashboard (issue 17, "Speed").

    .venv/bin/python bench/bulk_terminate_bench.py                 # 100,000 sessions, SQLite and PostgreSQL
    .venv/bin/python bench/bulk_terminate_bench.py --quick --no-write
    .venv/bin/python bench/bulk_terminate_bench.py --engines sqlite --modes page

For each database (SQLite ``bench/data/bulk.sqlite3``; PostgreSQL database ``bench_bulk`` on
``BENCH_PG_URL``, both recreated) and each way the page can run it:

1. Seed ``--sessions`` active sessions matching the filter ``origin ^ "10."`` (one ``INSERT …
   SELECT``), plus ``--children`` TOKEN sessions derived from the first of them (origin
   ``172.16.…``: they do not match, so they end as the cascade) with the tokens they logged in with.
2. Start a process that logs in (``auth.login_ex``, password, through the service) in a loop, like
   `commands_bench.py`'s purge bench: each login is a write transaction competing for SQLite's write
   lock. Its first ``--warmup`` seconds alone are the baseline.
3. In this process, as an operator in Django's test client, through the real pages: GET
   ``/sessions/terminate-matching/?origin=10.`` (the confirmation page: exact count and cascade),
   then end them -- ``page``: the form's one POST (no JavaScript: every batch in that request);
   ``script``: the POSTs bulk.js makes, batch by batch (``batch=1``, 5,000 sessions or ~1 s each).
   Every write transaction of the termination (`sessions_end_batch`, from ``BEGIN IMMEDIATE`` to
   ``COMMIT`` on SQLite) is timed: the longest is the longest write-lock hold.
4. Check the outcome: every seeded session ended (``TERMINATED`` by the operator, the children
   ``PARENT_ENDED``), exactly one ``session.end`` audit record and one ``removed`` event each.

Targets: the termination (GET + POSTs) of 100,000 sessions in ≤ 10 s on PostgreSQL and ≤ 20 s on
SQLite; no SQLite write transaction over 0.5 s; logins keep working (none fails, none with "database
is locked"). Results go to bench/RESULTS.md (its section between ``<!-- bulk_terminate:start
-->`` and ``<!-- bulk_terminate:end -->`` is replaced).
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
from common import environment, fresh_database, login_loop, machine  # noqa: E402
from common import setup_django as common_setup_django  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
DATA = ROOT / "bench" / "data"
PG_NAME = "bench_bulk"
SQLITE_PATH = DATA / "bulk.sqlite3"
PASSWORD = "bench correct horse battery staple"
USERS = [f"login{i}" for i in range(8)]
OPERATOR = "operator"
LOCK_LIMIT = 0.5
TARGETS = {"sqlite": 20.0, "postgresql": 10.0}


def base_env(database_url: str) -> dict[str, str]:
    return environment(database_url, SESSIONS_MAX_PER_USER="100")


def setup_django(database_url: str) -> None:
    common_setup_django(database_url, fast_hasher=True, SESSIONS_MAX_PER_USER="100")


# --- workers (each in its own process: Django settings are per process) ----------------------------------


SQLITE_SEED = [
    """
    WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < %(n)s)
    INSERT INTO sessions_app_usersession
        (public_id, secret_hash, credentials, username, username_folded, login_at, origin, internal,
         secure_transport, created_at, last_seen_at, expires_at, password_change_required, user_auth_hash,
         api_key_name)
    SELECT lower(hex(randomblob(32))), lower(hex(randomblob(32))),
           CASE WHEN i %% 4 = 0 THEN 'API_KEY' ELSE 'LOGIN_PASSWORD' END,
           'user' || (i %% 500), 'user' || (i %% 500),
           strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', '-1 hours'),
           '10.' || (i %% 250) || '.' || (i / 250 %% 250) || '.9:' || (40000 + i %% 20000), 0, 1,
           strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', '-1 hours'),
           strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', '-10 minutes'),
           strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', '+20 days'), 0, '',
           CASE WHEN i %% 4 = 0 THEN 'key' || (i %% 500) END
    FROM seq
    """,
    """
    INSERT INTO sessions_app_token
        (token_hash, session_id, created_at, expires_at, ttl, match_origin, single_use, attrs)
    SELECT lower(hex(randomblob(32))), id, created_at, expires_at, 600, 0, 0, '{}'
    FROM sessions_app_usersession ORDER BY id LIMIT %(children)s
    """,
    """
    INSERT INTO sessions_app_usersession
        (public_id, credentials, username, username_folded, origin, internal, secure_transport,
         created_at, last_seen_at, expires_at, password_change_required, user_auth_hash, parent_id,
         token_id, root_credentials, root_username)
    SELECT lower(hex(randomblob(32))), 'TOKEN', s.username, s.username_folded,
           '172.16.' || (t.id %% 250) || '.1:' || (30000 + t.id %% 20000), 0, 1,
           s.created_at, s.last_seen_at, s.expires_at, 0, '', s.id, t.id, s.credentials, s.username
    FROM sessions_app_token AS t JOIN sessions_app_usersession AS s ON s.id = t.session_id
    """,
]

POSTGRES_SEED = [
    """
    INSERT INTO sessions_app_usersession
        (public_id, secret_hash, credentials, username, username_folded, login_at, origin, internal,
         secure_transport, created_at, last_seen_at, expires_at, password_change_required, user_auth_hash,
         api_key_name)
    SELECT md5(random()::text) || md5(random()::text), md5(random()::text) || md5(random()::text),
           CASE WHEN i %% 4 = 0 THEN 'API_KEY' ELSE 'LOGIN_PASSWORD' END,
           'user' || (i %% 500), 'user' || (i %% 500), now() - interval '1 hour',
           '10.' || (i %% 250) || '.' || (i / 250 %% 250) || '.9:' || (40000 + i %% 20000), false, true,
           now() - interval '1 hour', now() - interval '10 minutes', now() + interval '20 days', false, '',
           CASE WHEN i %% 4 = 0 THEN 'key' || (i %% 500) END
    FROM generate_series(1, %(n)s) AS i
    """,
    """
    INSERT INTO sessions_app_token
        (token_hash, session_id, created_at, expires_at, ttl, match_origin, single_use, attrs)
    SELECT md5(random()::text) || md5(random()::text), id, created_at, expires_at, 600, false, false,
           '{}'::jsonb
    FROM sessions_app_usersession ORDER BY id LIMIT %(children)s
    """,
    """
    INSERT INTO sessions_app_usersession
        (public_id, credentials, username, username_folded, origin, internal, secure_transport,
         created_at, last_seen_at, expires_at, password_change_required, user_auth_hash, parent_id,
         token_id, root_credentials, root_username)
    SELECT md5(random()::text) || md5(random()::text), 'TOKEN', s.username, s.username_folded,
           '172.16.' || (t.id %% 250) || '.1:' || (30000 + t.id %% 20000), false, true,
           s.created_at, s.last_seen_at, s.expires_at, false, '', s.id, t.id, s.credentials, s.username
    FROM sessions_app_token AS t JOIN sessions_app_usersession AS s ON s.id = t.session_id
    """,
]


def worker_seed(database_url: str, sessions: int, children: int) -> dict[str, Any]:
    """Migrate; the login users and the operator; the sessions, their tokens and derived sessions."""
    setup_django(database_url)
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection, transaction

    from sessions_app.auth.roles import Role, grant

    call_command("migrate", verbosity=0)
    model = get_user_model()
    for name in [*USERS, OPERATOR]:
        user = model(username=name)
        user.set_password(PASSWORD)
        user.save()
    grant(model.objects.get(username=OPERATOR), Role.AUTH_SESSIONS_WRITE)
    started = time.perf_counter()
    statements = SQLITE_SEED if connection.vendor == "sqlite" else POSTGRES_SEED
    with transaction.atomic(), connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql, {"n": sessions, "children": children})
    seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    version = connection.pg_version if connection.vendor == "postgresql" else None
    from sessions_app.models import UserSession

    return {
        "vendor": connection.vendor,
        "server": version,
        "seconds": seconds,
        "active": UserSession.objects.filter(ended_at__isnull=True).count(),
    }


def worker_logins(database_url: str, stop_file: str, max_seconds: float) -> dict[str, Any]:
    """Log in (``auth.login_ex``, password) in a loop until ``stop_file`` exists (`common.login_loop`)."""
    setup_django(database_url)
    found = login_loop(users=USERS, password=PASSWORD, stop_file=stop_file, max_seconds=max_seconds)
    return {"logins": found["logins"], "failures": found["failures"]}


def worker_terminate(database_url: str, mode: str) -> dict[str, Any]:
    """As the operator, through the pages: the confirmation page, then the POST(s) of ``mode``."""
    setup_django(database_url)
    from django.contrib.messages import get_messages
    from django.db import connection
    from django.test import Client

    from sessions_app.services import maintenance

    # (rows, held, with the wait for the lock): held runs from the moment SQLite granted the write
    # lock (``BEGIN IMMEDIATE`` returned) to ``COMMIT`` returned -- an upper bound, as SQLite's WAL
    # checkpoint runs after the commit released the lock; on PostgreSQL the whole transaction.
    transactions: list[tuple[int, float, float]] = []
    began_at: dict[str, float] = {}
    timed = maintenance.sessions_end_batch

    def mark_begin(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        result = execute(sql, params, many, context)
        if sql.startswith("BEGIN"):
            began_at["lock"] = time.perf_counter()
        return result

    def timing(**kwargs: Any) -> Any:
        began_at.clear()
        began = time.perf_counter()
        try:
            return timed(**kwargs)
        finally:
            end = time.perf_counter()
            transactions.append((len(kwargs["pks"]), end - began_at.get("lock", began), end - began))

    maintenance.sessions_end_batch = timing  # type: ignore[assignment]
    connection.execute_wrappers.append(mark_begin)
    browser = Client(REMOTE_ADDR="127.0.0.1")
    signed = browser.post("/sign-in/", {"username": OPERATOR, "password": PASSWORD, "next": "/sessions/"})
    assert signed.status_code == 302, signed.content[:300]
    started = time.time()
    t0 = time.perf_counter()
    page = browser.get("/sessions/terminate-matching/", {"origin": "10."})
    get_seconds = time.perf_counter() - t0
    body = page.content.decode()
    assert page.status_code == 200, body[:500]

    def hidden(name: str) -> str:
        match = re.search(rf'name="{name}" value="([^"]*)"', body)
        assert match is not None, name
        return match.group(1)

    expected = int(hidden("expected"))
    cascade = int(re.search(r'id="bulk-cascade">([\d,]+)<', body).group(1).replace(",", ""))  # type: ignore[union-attr]
    form = {"confirm": "1", "upto": hidden("upto"), "expected": str(expected), "typed": f"{expected:,}"}
    form["origin"] = "10."
    requests = 0
    t1 = time.perf_counter()
    if mode == "page":
        response = browser.post("/sessions/terminate-matching/", form)
        requests = 1
        assert response.status_code == 302, response.content[:500]
    else:
        state = ""
        while True:
            step = {**form, "batch": "1", "size": "5000", **({"state": state} if state else {})}
            response = browser.post("/sessions/terminate-matching/", step)
            requests += 1
            assert response.status_code == 200, response.content[:500]
            answer = response.json()
            if answer["done"]:
                break
            state = answer["state"]
    post_seconds = time.perf_counter() - t1
    finished = time.time()
    message = [str(m) for m in get_messages(response.wsgi_request)][-1]
    return {
        "mode": mode,
        "started": started,
        "finished": finished,
        "get_seconds": get_seconds,
        "post_seconds": post_seconds,
        "requests": requests,
        "expected": expected,
        "cascade_shown": cascade,
        "transactions": len(transactions),
        "longest": max((held for _, held, _ in transactions), default=0.0),
        "longest_with_wait": max((whole for _, _, whole in transactions), default=0.0),
        "held_total": sum(held for _, held, _ in transactions),
        "largest": max((n for n, _, _ in transactions), default=0),
        "message": message,
    }


def worker_check(database_url: str, sessions: int, children: int) -> dict[str, Any]:
    """What the termination left: reasons, records and events of the seeded sessions."""
    setup_django(database_url)
    from django.db.models import Count

    from sessions_app.models import AuditRecord, SessionEvent, Token, UserSession

    seeded = UserSession.objects.filter(pk__lte=sessions + children)
    reasons = dict(seeded.values_list("end_reason").annotate(n=Count("pk")).order_by())
    by = dict(seeded.values_list("ended_by").annotate(n=Count("pk")).order_by())
    records = AuditRecord.objects.filter(
        event_data__method="session.end", event_data__end_reason__in=["TERMINATED", "PARENT_ENDED"]
    )
    per_target = records.values("session").annotate(n=Count("pk")).filter(n__gt=1).count()
    events = SessionEvent.objects.filter(kind="removed", session__lte=sessions + children)
    summary = AuditRecord.objects.filter(event_data__method="sessions.terminate").get()
    return {
        "reasons": {str(k): v for k, v in reasons.items()},
        "ended_by_operator": by.get(OPERATOR, 0),
        "records": records.count(),
        "targets_with_two_records": per_target,
        "events": events.count(),
        "events_distinct": events.values("session").distinct().count(),
        "tokens_left": Token.objects.filter(session_id__lte=sessions + children).count(),
        "summary": summary.event_data,
    }


# --- running children -------------------------------------------------------------------------------------


def run_worker(*args: str) -> Any:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"worker {args[0]} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def window(logins: list[tuple[float, float]], start: float, end: float) -> dict[str, float]:
    inside = [ms for at, ms in logins if start <= at <= end]
    return {
        "count": len(inside),
        "per_s": len(inside) / max(end - start, 1e-9),
        "p50": statistics.median(inside) if inside else float("nan"),
        "p99": percentile(inside, 0.99),
        "max": max(inside, default=float("nan")),
    }


def bench_one(engine: str, mode: str, args: Any, *, logins: bool) -> dict[str, Any]:
    url = fresh_database(engine, sqlite=SQLITE_PATH, postgres=PG_NAME)
    seed = run_worker("--worker-seed", url, str(args.sessions), str(args.children))
    label = "SQLite" if seed["vendor"] == "sqlite" else f"PostgreSQL {seed['server'] // 10000}"
    print(f"  {label}: seeded {seed['active']:,} active sessions in {seed['seconds']:.1f} s", file=sys.stderr)
    if not logins:
        run = run_worker("--worker-terminate", url, mode)
        check = run_worker("--worker-check", url, str(args.sessions), str(args.children))
        print(
            f"  {label} {mode}, alone: {run['get_seconds'] + run['post_seconds']:.1f} s "
            f"({run['requests']} request(s), {run['transactions']} transactions, "
            f"longest {run['longest'] * 1000:.0f} ms)",
            file=sys.stderr,
            flush=True,
        )
        return {"engine": engine, "label": label, "mode": mode, "seed": seed, "run": run, "check": check}
    stop = DATA / "bulk-bench.stop"
    for path in (stop, Path(f"{stop}.ready")):
        path.unlink(missing_ok=True)
    env = base_env(url)
    logins = subprocess.Popen(
        [sys.executable, __file__, "--worker-logins", url, str(stop), "600"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not Path(f"{stop}.ready").exists():
        if logins.poll() is not None or time.monotonic() > deadline:
            sys.exit(
                f"login worker did not start: {logins.stderr.read().decode()[-2000:] if logins.stderr else ''}"
            )
        time.sleep(0.1)
    time.sleep(args.warmup)  # logins alone: the baseline
    run = run_worker("--worker-terminate", url, mode)
    time.sleep(min(args.warmup, 3))
    stop.touch()
    out, err = logins.communicate(timeout=300)
    for path in (stop, Path(f"{stop}.ready")):
        path.unlink(missing_ok=True)
    if logins.returncode != 0:
        sys.exit(f"login worker failed: {err.decode()[-3000:]}")
    loop = json.loads(out.decode().strip().splitlines()[-1])
    check = run_worker("--worker-check", url, str(args.sessions), str(args.children))
    first = min((at for at, _ in loop["logins"]), default=run["started"])
    failures = loop["failures"]
    result = {
        "engine": engine,
        "label": label,
        "mode": mode,
        "seed": seed,
        "run": run,
        "check": check,
        "idle": window(loop["logins"], first, run["started"]),
        "during": window(loop["logins"], run["started"], run["finished"]),
        "failures": len(failures),
        "locked": sum("database is locked" in f[1] for f in failures),
        "failure_examples": sorted({f[1] for f in failures})[:3],
    }
    total = run["get_seconds"] + run["post_seconds"]
    print(
        f"  {label} {mode}, with logins: {total:.1f} s ({run['requests']} request(s), "
        f"{run['transactions']} transactions, "
        f"longest {run['longest'] * 1000:.0f} ms); logins {result['idle']['per_s']:.0f}/s idle, "
        f"{result['during']['per_s']:.0f}/s during; failed {result['failures']}",
        file=sys.stderr,
        flush=True,
    )
    return result


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _action_cells(r: dict[str, Any]) -> str:
    run = r["run"]
    total = run["get_seconds"] + run["post_seconds"]
    lock_ok = run["longest"] <= LOCK_LIMIT or r["engine"] != "sqlite"
    return (
        f"{run['get_seconds']:.2f} s | {run['post_seconds']:.2f} s "
        f"({run['requests']} request{'s' if run['requests'] != 1 else ''}) | **{total:.1f} s** | "
        f"{run['transactions']} ({run['largest']:,}) | "
        f"{run['longest'] * 1000:.0f} ms{'' if lock_ok else ' **over 0.5 s**'} |"
    )


def render(results: list[dict[str, Any]], args: Any, load: list[float]) -> str:
    lines = [
        "<!-- bulk_terminate:start -->",
        "## Bulk termination from the dashboard (`bench/bulk_terminate_bench.py`, issue 17)",
        "",
        f"Machine: {machine()}. Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. 1-minute load "
        f"average at start / end: {load[0]:.2f} / {load[1]:.2f} (other work on the machine slows the "
        "absolute figures).",
        "",
        f'{args.sessions:,} active sessions match the dashboard filter `origin ^ "10."`; '
        f"{args.children:,} TOKEN sessions derived from them (each with the multi-use token it logged "
        "in with) do not match and end as the cascade. One operator action through the real pages "
        "(Django test client in one process, production settings): GET the confirmation page (exact "
        "count and cascade), then **page** = the form's one POST (no JavaScript: every batch in that "
        "request) or **script** = bulk.js's batch-by-batch POSTs (`batch=1`, ≤ 5,000 sessions or ~1 s "
        "each). Each transaction of the termination (`sessions_end_batch`) is timed from the moment "
        "it holds SQLite's write lock (`BEGIN IMMEDIATE` returned) to `COMMIT` returned -- an upper "
        "bound of the lock hold, since SQLite checkpoints the WAL after the commit released the "
        "lock; on PostgreSQL the whole transaction (row locks only). Targets: the action ≤ 20 s on "
        "SQLite and ≤ 10 s on PostgreSQL, no SQLite write transaction over 0.5 s, logins keep working.",
        "",
        "### The action alone",
        "",
        "| database | mode | confirmation page | termination POST(s) | total | target | transactions "
        "(largest) | longest transaction |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in results:
        if "idle" in r:
            continue
        total = r["run"]["get_seconds"] + r["run"]["post_seconds"]
        target = TARGETS[r["engine"]]
        cells = _action_cells(r).split(" | ")
        lines.append(
            f"| {r['label']} | {r['mode']} | {' | '.join(cells[:3])} | ≤ {target:.0f} s: "
            f"{verdict(total <= target)} | {' | '.join(cells[3:])}"
        )
    lines += [
        "",
        "### While logins run",
        "",
        "Meanwhile another process logs in with passwords in a loop through the service "
        "(`auth.login_ex`, 8 users; each login writes its session and audit record, and past 100 "
        "sessions a user's login also evicts the oldest; MD5 hasher so that logins are fast and "
        "contend for the write lock, not wait on Argon2), as fast as it can, on the same 2 cores; its "
        f"{args.warmup:.0f} s before the action are the idle baseline.",
        "",
        "| database | mode | confirmation page | termination POST(s) | total | transactions (largest) | "
        "longest transaction | logins/s idle → during | login p99 / max ms during | failed logins (locked) |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in results:
        if "idle" not in r:
            continue
        idle, during = r["idle"], r["during"]
        lines.append(
            f"| {r['label']} | {r['mode']} | {_action_cells(r)} {idle['per_s']:.0f} → {during['per_s']:.0f} | "
            f"{during['p99']:.0f} / {during['max']:.0f} | {r['failures']} ({r['locked']}) |"
        )
    lines += ["", "Outcome checked after each run:", ""]
    lines += [
        "| database | mode | logins | message | ended (reason: count) | by operator | `session.end` "
        "records (targets with two) | `removed` events (distinct) | tokens left |",
        "|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        c = r["check"]
        reasons = ", ".join(f"{k}: {v:,}" for k, v in sorted(c["reasons"].items()))
        lines.append(
            f"| {r['label']} | {r['mode']} | {'yes' if 'idle' in r else 'no'} | {r['run']['message']} | "
            f"{reasons} | {c['ended_by_operator']:,} | {c['records']:,} ({c['targets_with_two_records']}) | "
            f"{c['events']:,} ({c['events_distinct']:,}) | {c['tokens_left']} |"
        )
    examples = sorted({e for r in results for e in r.get("failure_examples", ())})
    if examples:
        lines += ["", f"Login failures seen: {', '.join(examples)}."]
    lines += ["", "<!-- bulk_terminate:end -->"]
    return "\n".join(lines)


def write_results(text: str) -> None:
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(r"<!-- bulk_terminate:start -->.*?<!-- bulk_terminate:end -->", re.S)
    current = (
        pattern.sub(lambda _: text, current) if pattern.search(current) else current.rstrip() + "\n\n" + text
    )
    RESULTS.write_text(current.rstrip() + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--modes", default="page,script")
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--children", type=int, default=10_000)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--quick", action="store_true", help="10,000 sessions (a smoke run)")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    parser.add_argument("--worker-seed", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--worker-logins", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--worker-terminate", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--worker-check", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_seed:
        url, n, children = args.worker_seed
        print(json.dumps(worker_seed(url, int(n), int(children))))
        return
    if args.worker_logins:
        url, stop, seconds = args.worker_logins
        print(json.dumps(worker_logins(url, stop, float(seconds))))
        return
    if args.worker_terminate:
        print(json.dumps(worker_terminate(*args.worker_terminate)))
        return
    if args.worker_check:
        url, n, children = args.worker_check
        print(json.dumps(worker_check(url, int(n), int(children))))
        return
    if args.quick:
        args.sessions, args.children, args.warmup = 10_000, 1_000, 2
    load = [os.getloadavg()[0]]
    results = []
    for engine in args.engines.split(","):
        for mode in args.modes.split(","):
            for logins in (False, True):
                print(f"{engine} / {mode}: {args.sessions:,} sessions ...", file=sys.stderr, flush=True)
                results.append(bench_one(engine, mode, args, logins=logins))
    load.append(os.getloadavg()[0])
    text = render(results, args, load)
    if args.no_write:
        print(text)
    else:
        write_results(text)
        print(f"wrote {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
