#!/usr/bin/env python
"""The timing figures of security.md that the tests check by counting work, not by the clock.

    .venv/bin/python bench/security_bench.py                   # SQLite and PostgreSQL
    .venv/bin/python bench/security_bench.py --engines sqlite --rounds 10

In-process (Django set up on a fresh database per engine, the configured Argon2id hasher, no
failure delay: the delay is random 1-2 s by policy and would hide the work):

* **A2** -- ``auth.login_ex`` ``PASSWORD_PLAIN`` refused for (a) a wrong password of an existing
  user, (b) an unknown user, (c) an inactive user, (d) a locked account, (e) an account without a
  usable password: ``--rounds`` logins of each, interleaved; medians and their ratio to (a)
  (target: within 10 %).
* **C8** -- ``auth.sessions`` with the ReDoS patterns of the spec against a stored username built
  to make them backtrack: time per query (the regex budget bounds it: 0.1 s per match, 0.5 s of CPU
  per query) next to a plain query of the same page.
* **C20** -- a query made slow on purpose under ``SESSIONS_QUERY_TIMEOUT`` = 0.2 s: the time until
  it is cancelled (`QueryTimeout`).

The section between ``<!-- security_bench:start -->`` and ``<!-- security_bench:end -->`` of
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
from common import DATA, fresh_database, machine, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench correct horse battery staple"
EVIL = "a" * 30 + "!"
LABELS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
PATTERNS = ["^(a+)+$", "(a|aa)+$", "(\\w+\\s?)+$", "^(a|a?)+$"]


def worker(url: str, rounds: int) -> dict[str, Any]:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "DJANGO_SECRET_KEY": "benchmark-only-secret-key-security",
            "DATABASE_URL": url,
            "SESSIONS_FAIL_DELAY": "0",
            "SESSIONS_LOGIN_RATE": "0",
            "DJANGO_DB_POOL_SIZE": "0",
        }
    )
    os.environ.pop("DJANGO_SECRET_KEY_FILE", None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from sessions_app import selectors, throttle
    from sessions_app.clients import Client
    from sessions_app.exceptions import QueryTimeout
    from sessions_app.models import Credentials
    from sessions_app.query import QueryError
    from sessions_app.services.login import login_ex
    from sessions_app.services.sessions import session_create

    call_command("migrate", verbosity=0)
    model = get_user_model()
    model.objects.create_user("existing", password=PASSWORD)
    model.objects.create_user("inactive", password=PASSWORD, is_active=False)
    model.objects.create_user("locked", password=PASSWORD)
    model.objects.create_user("unusable", password=None)
    client = Client(address="127.0.0.1", port=50000)
    for _ in range(10):  # lock the account "locked"
        throttle.record_failure(username="locked", address=client.origin, mechanism="PASSWORD_PLAIN")
    evil_user = model.objects.create_user(EVIL, password=None)
    for _ in range(200):
        session_create(credentials=Credentials.LOGIN_PASSWORD, client=client, user=evil_user)

    cases = {
        "(a) wrong password": ("existing", "wrong password"),
        "(b) unknown user": ("nobody-at-all", "wrong password"),
        "(c) inactive user": ("inactive", PASSWORD),
        "(d) locked account": ("locked", PASSWORD),
        "(e) unusable password": ("unusable", "wrong password"),
    }
    timings: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (username, password) in cases.items():
            params = {"mechanism": "PASSWORD_PLAIN", "username": username, "password": password}
            started = time.perf_counter()
            result = login_ex(params=params, client=client)
            timings[name].append((time.perf_counter() - started) * 1000)
            assert result.response == {"response_type": "AUTH_ERR"}, (name, result.response)

    def query_ms(filters: list[Any]) -> tuple[float, str]:
        started = time.perf_counter()
        try:
            rows = selectors.session_query(filters=filters, options={"limit": 50})
            outcome = f"{len(rows)} rows"
        except QueryError:
            outcome = "refused (regex budget)"
        return (time.perf_counter() - started) * 1000, outcome

    redos = {"plain `credentials_data.username = …`": query_ms([["credentials_data.username", "=", EVIL]])}
    for pattern in PATTERNS:
        redos[f"`~ {pattern}`"] = query_ms([["credentials_data.username", "~", pattern]])

    settings.SESSIONS_QUERY_TIMEOUT = 0.2
    real_scope = selectors.session_scope
    slow = (
        "pg_sleep(5) IS NOT NULL"
        if connection.vendor == "postgresql"
        else "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000000) "
        "SELECT count(*) FROM n) > 0"
    )
    selectors.session_scope = lambda **kw: (real_scope(**kw)[0].extra(where=[slow]), real_scope(**kw)[1])
    cancelled: list[float] = []
    for _ in range(5):
        started = time.perf_counter()
        try:
            selectors.session_query(filters=[], options={"count": True})
        except QueryTimeout:
            cancelled.append((time.perf_counter() - started) * 1000)
    selectors.session_scope = real_scope
    return {"vendor": connection.vendor, "logins": timings, "redos": redos, "cancelled": cancelled}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]))))
        return
    runs = []
    for engine in args.engines.split(","):
        url = fresh_database(engine, sqlite=DATA / "security_bench.sqlite3", postgres="bench_security")
        done = subprocess.run(
            [sys.executable, __file__, "--worker", url, str(args.rounds)],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if done.returncode != 0:
            sys.exit(f"{engine} failed:\n{done.stderr[-3000:]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{engine}: done", file=sys.stderr)
    lines = [
        "<!-- security_bench:start -->",
        "## Security timings (`bench/security_bench.py`)",
        "",
        f"Machine: {machine()}. Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; in-process, "
        f"the configured hasher (Argon2id), no failure delay (policy: a random 1-2 s on top of every "
        f"figure below), {args.rounds} logins per case, cases interleaved.",
        "",
        "**A2: refused logins do the same work** (target: medians within 10 % of (a)).",
        "",
        "| database | case | median ms | × (a) |",
        "|---|---|---:|---:|",
    ]
    for run in runs:
        label = LABELS[run["vendor"]]
        base = statistics.median(run["logins"]["(a) wrong password"])
        for name, values in run["logins"].items():
            median = statistics.median(values)
            lines.append(f"| {label} | {name} | {median:.1f} | {median / base:.3f} |")
    lines += [
        "",
        f"**C8: ReDoS patterns** against 200 sessions of the user `{EVIL[:8]}…!` ({len(EVIL)} characters): "
        "one query each, next to a plain equality query of the same rows.",
        "",
        "| database | filter | ms | outcome |",
        "|---|---|---:|---|",
    ]
    for run in runs:
        label = LABELS[run["vendor"]]
        for name, (ms, outcome) in run["redos"].items():
            cell = name.replace("|", "\\|")  # a pattern's alternation is not a table column
            lines.append(f"| {label} | {cell} | {ms:.1f} | {outcome} |")
    lines += [
        "",
        "**C20: a query past its budget** (`SESSIONS_QUERY_TIMEOUT` = 0.2 s, a statement made slow on "
        "purpose): time until the database cancelled it.",
        "",
        "| database | cancelled | median ms | max ms |",
        "|---|---:|---:|---:|",
    ]
    for run in runs:
        label = LABELS[run["vendor"]]
        c = run["cancelled"]
        lines.append(f"| {label} | {len(c)} of 5 | {statistics.median(c):.0f} | {max(c):.0f} |")
    lines.append("<!-- security_bench:end -->")
    text = "\n".join(lines)
    if args.no_write:
        print(text)
    else:
        write_section("security_bench", text)


if __name__ == "__main__":
    main()
