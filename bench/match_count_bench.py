"""The tables' match count at a million sessions (issue 17: the dashboard's first page stays
<= 300 ms with "1,234 matching"), on SQLite and PostgreSQL.

For each filter: the whole page as a browser gets it (Django's test client, signed in as a
superuser with a real registry session: middleware, view, selectors, templates, charts from their
30 s cache), then its two parts called directly -- the page of 50 rows without the count, and the
capped count alone (`tables.session_count` / the audit count: ``COUNT(*)`` over a ``LIMIT
10001`` subquery of the same filtered queryset). Median and max of ``--runs`` after 2 warm-ups.

Setup (once; a scratch database, never a real one)::

    DATABASE_URL=sqlite:////tmp/m1.sqlite3 .venv/bin/python manage.py migrate
    DATABASE_URL=sqlite:////tmp/m1.sqlite3 .venv/bin/python manage.py seed_demo --sessions 1000000

then ``.venv/bin/python bench/match_count_bench.py --database-url sqlite:////tmp/m1.sqlite3`` (or a
``postgres://`` URL). The script runs ANALYZE first. ``--write`` replaces its section of
``bench/RESULTS.md`` (one per database engine); by default it only prints.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ADMIN = "bench_count_admin"


def _setup(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "match-count-bench-only")
    os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost")
    os.environ.setdefault("SESSIONS_FAIL_DELAY", "0")
    import django

    django.setup()


def _signed_in_client() -> tuple[Any, Any]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    from sessions_app.auth.clients import Client as Peer
    from sessions_app.middleware import session_cookie_name
    from sessions_app.models import Credentials
    from sessions_app.services.sessions import session_create

    model = get_user_model()
    user = model.objects.filter(username=ADMIN).first() or model.objects.create_superuser(
        ADMIN, password=None
    )
    new = session_create(
        credentials=Credentials.LOGIN_PASSWORD, client=Peer(address="127.0.0.1", port=1), user=user
    )
    client = Client(HTTP_HOST="127.0.0.1", REMOTE_ADDR="127.0.0.1")
    client.cookies[session_cookie_name()] = new.secret
    return client, new.session


def _times(call: Callable[[], Any], runs: int) -> tuple[float, float, Any]:
    for _ in range(2):
        result = call()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        result = call()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), max(samples), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--write", action="store_true", help="replace this engine's section of RESULTS.md")
    args = parser.parse_args()
    _setup(args.database_url)

    import re

    from django.db import connection
    from django.utils import timezone

    from bench.common import machine, write_section
    from sessions_app import tables
    from sessions_app.forms import AuditFilterForm, SessionFilterForm, SessionHistoryFilterForm
    from sessions_app.models import AuditRecord, UserSession
    from sessions_app.specs import AUDIT_SPEC

    total = UserSession.objects.count()
    if total < 100_000:
        sys.exit(f"only {total:,} sessions: seed first (manage.py seed_demo --sessions 1000000)")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    engine = connection.vendor
    active = UserSession.objects.active(timezone.now()).count()
    audits = AuditRecord.objects.count()
    client, own = _signed_in_client()
    since = (timezone.now() - dt.timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
    name = (
        UserSession.objects.active()
        .exclude(username__isnull=True)
        .exclude(username=ADMIN)
        .order_by("pk")
        .values_list("username", flat=True)[1000]
    )

    cases: list[tuple[str, str, str, dict[str, str]]] = [
        ("Active, no filter", "/sessions/", "active", {}),
        ("Active, user starts with `demo_a` (any case)", "/sessions/", "active", {"user": "DEMO_A"}),
        (f"Active, user `{name}` (whole name, any case)", "/sessions/", "active", {"user": name.upper()}),
        ("Active, type TOKEN", "/sessions/", "active", {"type": "TOKEN"}),
        ("Active, origin starts with 10.", "/sessions/", "active", {"origin": "10."}),
        ("Active, created in the last 3 days", "/sessions/", "active", {"since": since}),
        ("Active, internal = yes (no index, few rows)", "/sessions/", "active", {"internal": "yes"}),
        (
            "Active, raw `C~` regex (checked in Python)",
            "/sessions/",
            "active",
            {"query": '[["credentials_data.username", "C~", "DEMO_B"]]'},
        ),
        ("History, no filter", "/sessions/history/", "history", {}),
        ("History, user starts with `demo_a`", "/sessions/history/", "history", {"user": "demo_a"}),
        ("History, end reason EXPIRED", "/sessions/history/", "history", {"reason": "EXPIRED"}),
        ("Audit, no filter", "/audit/", "audit", {}),
        ("Audit, user starts with `demo_a` (any case)", "/audit/", "audit", {"user": "Demo_A"}),
        (f"Audit, user `{name}` (whole name)", "/audit/", "audit", {"user": name}),
        ("Audit, failed only", "/audit/", "audit", {"success": "no"}),
    ]
    forms = {"active": SessionFilterForm, "history": SessionHistoryFilterForm, "audit": AuditFilterForm}
    rows = []
    for label, path, table, data in cases:
        form = forms[table](data)
        assert form.is_valid(), form.errors
        filters = form.filters()
        order = {"sort": form.cleaned_data["sort"], "descending": form.descending(), "limit": 50}
        page_ms, page_max, response = _times(lambda p=path, d=data: client.get(p, d), args.runs)
        assert response.status_code == 200, (label, response.status_code)
        shown = re.search(r'id="match-count"[^>]*>(.*?)</p>', response.content.decode(), re.S)
        text = re.sub(r"<[^>]+>", "", shown.group(1)).strip() if shown else "—"
        if table == "audit":
            plain = lambda f=filters, o=order: tables.audit_page(filters=f, **o)  # noqa: E731
            count = lambda f=filters: tables._match_count(  # noqa: E731
                tables._filtered(
                    spec=AUDIT_SPEC, queryset=AuditRecord.objects.all(), context={}, filters=f, options={}
                ),
                AUDIT_SPEC,
                {},
                tables.MATCH_COUNT_CAP,
            )
        else:
            history = table == "history"
            plain = lambda f=filters, h=history, o=order: tables.session_page(  # noqa: E731
                filters=f, history=h, device=True, **o
            )
            count = lambda f=filters, h=history: tables.session_count(  # noqa: E731
                filters=f, history=h, device=True
            )
        without_ms, _, _ = _times(plain, args.runs)
        count_ms, count_max, _ = _times(count, args.runs)
        rows.append((label, page_ms, page_max, without_ms, count_ms, count_max, text))
        print(
            f"{page_ms:8.1f} ms page ({without_ms:6.1f} without count, count {count_ms:6.1f})  {text:>16}  {label}"
        )
    own.delete()

    first = rows[0][1]
    lines = [
        f"<!-- match_count_bench_{engine}:start -->",
        f"## Match count at a million sessions, {engine} (`bench/match_count_bench.py`)",
        "",
        f"Machine: {machine()}. Run {timezone.now():%Y-%m-%d %H:%M} UTC. Data: {total:,} sessions "
        f"({active:,} active; `seed_demo --sessions 1000000`), {audits:,} audit records; ANALYZE first.",
        f"**Dashboard first page with the count: {first:.0f} ms (target <= 300 ms).** Median and max of "
        f"{args.runs} requests after 2 warm-ups; the page alone (50 rows, no count) and the capped count "
        "alone called directly.",
        "",
        "| filter | page ms (median / max) | page without count ms | count ms (median / max) | shown |",
        "|---|---:|---:|---:|---|",
        *(
            f"| {label} | {p:.1f} / {pm:.1f} | {w:.1f} | {c:.1f} / {cm:.1f} | {text} |"
            for label, p, pm, w, c, cm, text in rows
        ),
        "",
        f"<!-- match_count_bench_{engine}:end -->",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(f"match_count_bench_{engine}", text)


if __name__ == "__main__":
    main()
