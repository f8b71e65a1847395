"""Reads behind the operations commands: overdue sessions, the audit export stream and the findings
of ``manage.py audit_sessions``. (The targets of bulk terminations are `sessions_app.targets`.)

Like `sessions_app.selectors`, nothing here writes. Large results are streamed or walked by primary
key in chunks, so a report over a million sessions holds neither a long transaction nor every row in
memory (SQLite readers never block writers in WAL mode; on PostgreSQL the export runs in one
read-only transaction so that its server-side cursor streams instead of being materialised).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, F, Max, Min, Q, QuerySet
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app.models import (
    ApiKey,
    AuditEvent,
    AuditRecord,
    Credentials,
    UserSession,
)
from sessions_app.selectors import session_counts_by_credentials
from sessions_app.specs import AUDIT_SPEC

CHUNK = 5000
UNIX_SOCKET = "unix socket"

# --- overdue sessions ------------------------------------------------------------------------------


def sessions_past_absolute_limit(*, now: dt.datetime) -> QuerySet[UserSession]:
    """Sessions still marked active whose absolute lifetime (``expires_at``) has passed."""
    return UserSession.objects.filter(ended_at__isnull=True, expires_at__lte=now)


def sessions_past_idle_limit(*, now: dt.datetime) -> QuerySet[UserSession]:
    """Sessions still marked active, within their absolute lifetime, idle beyond their idle limit.

    Idle limits come from the policy, so there are only a few distinct values: one indexable range
    condition per value (``last_seen_at <= now - limit``) instead of date arithmetic in SQL, which
    SQLite and PostgreSQL spell differently.
    """
    candidates = UserSession.objects.filter(ended_at__isnull=True, expires_at__gt=now)
    limits = (
        candidates.filter(idle_timeout__isnull=False)
        .order_by()
        .values_list("idle_timeout", flat=True)
        .distinct()
    )
    cond = Q(pk__in=[])
    for seconds in limits:
        assert seconds is not None  # idle_timeout__isnull=False
        cond |= Q(idle_timeout=seconds, last_seen_at__lte=now - dt.timedelta(seconds=seconds))
    return candidates.filter(cond)


# --- audit export ------------------------------------------------------------------------------------


def audit_records_between(*, since: dt.datetime, until: dt.datetime) -> QuerySet[AuditRecord]:
    """Audit records with ``since <= timestamp < until``, oldest first (index ``audit_ts``)."""
    return AuditRecord.objects.filter(timestamp__gte=since, timestamp__lt=until).order_by("timestamp", "id")


def audit_rows_between(
    *, since: dt.datetime, until: dt.datetime, chunk_size: int = 2000
) -> Iterator[dict[str, Any]]:
    """``audit.query`` rows of `audit_records_between`, streamed in constant memory.

    Rows are fetched ``chunk_size`` at a time: a server-side cursor on PostgreSQL, opened inside a
    read-only transaction (outside one, Django declares it ``WITH HOLD`` and PostgreSQL would
    materialise the whole result before the first row); stepwise reads of one statement on SQLite,
    where a transaction would take the write lock and is not needed for a WAL snapshot. SQLite's
    memory map (``mmap_size``, 256 MB in the settings) is switched off for the scan: every page of a
    one-pass read of the table would otherwise stay mapped and count in the process's memory
    (339 MB peak RSS for a million records, against 83 MB without it; it is restored afterwards).
    """
    values = audit_records_between(since=since, until=until).values_list(*AUDIT_SPEC.row_fields)
    build = AUDIT_SPEC.build_row
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION READ ONLY")
            for row in values.iterator(chunk_size=chunk_size):
                yield build(row, {})
        return
    with _sqlite_unmapped():
        for row in values.iterator(chunk_size=chunk_size):
            yield build(row, {})


@contextlib.contextmanager
def _sqlite_unmapped() -> Iterator[None]:
    if connection.vendor != "sqlite":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA mmap_size")
        previous = int(cursor.fetchone()[0])
        cursor.execute("PRAGMA mmap_size=0")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA mmap_size={previous}")


# --- audit_sessions -------------------------------------------------------------------------------------


def origin_network(origin: str) -> str:
    """The network an ``origin`` belongs to: ``/24`` for IPv4, ``/64`` for IPv6, ``unix socket``.

    >>> origin_network("10.1.2.3:5000"), origin_network("[2001:db8::1]:443")
    ('10.1.2.0/24', '2001:db8::/64')
    """
    if origin.startswith("UNIX socket"):
        return UNIX_SOCKET
    host = origin.rpartition(":")[0] if ":" in origin else origin
    host = host.removeprefix("[").removesuffix("]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "other"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def client_of(address: str) -> str:
    """A client address without its port (``10.0.0.5:4000`` → ``10.0.0.5``); unix peers by uid."""
    if address.startswith("UNIX socket"):
        uid = next((part for part in address.replace(")", " ").split() if part.startswith("uid=")), "")
        return f"{UNIX_SOCKET} ({uid})" if uid else UNIX_SOCKET
    if address.startswith("["):
        return address.partition("]")[0] + "]"
    host, sep, port = address.rpartition(":")
    return host if sep and port.isdigit() else address


@dataclass(frozen=True, slots=True)
class ReportSettings:
    """Thresholds of `audit_sessions_report`."""

    since: dt.datetime
    until: dt.datetime
    unused_days: int = 90
    expiring_days: int = 14
    burst_threshold: int = 5
    max_token_depth: int = 3
    top: int = 10
    max_rows: int = 100


@dataclass(slots=True)
class Finding:
    """One list of the report: the total number of entries and the first ``max_rows`` of them."""

    count: int
    rows: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "rows": self.rows}


def _active_by_user(now: dt.datetime, top: int) -> list[dict[str, Any]]:
    rows = (
        UserSession.objects.active(now)
        .values_list("username")
        .annotate(n=Count("pk"))
        .order_by("-n", F("username").asc(nulls_last=True))[:top]
    )
    return [{"username": username, "count": n} for username, n in rows]


def _active_by_network(now: dt.datetime, top: int) -> list[dict[str, Any]]:
    counts: Counter[str] = Counter()
    cache: dict[str, str] = {}
    origins = UserSession.objects.active(now).values_list("origin", flat=True).order_by()
    for origin in origins.iterator(chunk_size=CHUNK):
        # Origins repeat their host with many ports: parse each host once.
        host = origin.rpartition(":")[0] if not origin.startswith("UNIX") else origin
        network = cache.get(host)
        if network is None:
            network = cache[host] = origin_network(origin)
            if len(cache) > 100_000:
                cache.clear()
        counts[network] += 1
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
    return [{"network": network, "count": n} for network, n in ranked]


def _overdue(now: dt.datetime, max_rows: int) -> dict[str, Any]:
    expired = sessions_past_absolute_limit(now=now)
    idle = sessions_past_idle_limit(now=now)
    fields = ("public_id", "credentials", "username", "origin", "last_seen_at", "expires_at")
    rows = []
    for reason, queryset in (("EXPIRED", expired), ("IDLE", idle)):
        for public_id, credentials, username, origin, last_seen, expires in queryset.order_by(
            "pk"
        ).values_list(*fields)[:max_rows]:
            rows.append(
                {
                    "id": public_id,
                    "credentials": credentials,
                    "username": username,
                    "origin": origin,
                    "last_seen_at": last_seen,
                    "expires_at": expires,
                    "reason": reason,
                }
            )
    n_expired, n_idle = expired.count(), idle.count()
    return {"expired": n_expired, "idle": n_idle, "count": n_expired + n_idle, "rows": rows[:max_rows]}


def _api_key_rows(queryset: QuerySet[ApiKey], max_rows: int) -> Finding:
    fields = ("pk", "name", "user__username", "created_at", "last_used_at", "expires_at")
    rows = [
        {
            "id": pk,
            "name": name,
            "username": username,
            "created_at": created,
            "last_used_at": last_used,
            "expires_at": expires,
        }
        for pk, name, username, created, last_used, expires in queryset.values_list(*fields)[:max_rows]
    ]
    return Finding(queryset.count(), rows)


def api_keys_dormant(*, now: dt.datetime, unused_days: int, max_rows: int = 100) -> Finding:
    """Usable keys (not revoked, not expired) without use for ``unused_days``: never used since a
    creation longer ago than that, or last used before it; never-used keys first, then the longest
    unused. A key created recently and not used yet is not dormant."""
    cutoff = now - dt.timedelta(days=unused_days)
    queryset = (
        ApiKey.objects.filter(revoked=False)
        .exclude(expires_at__lte=now)
        .filter(Q(last_used_at__lt=cutoff) | Q(last_used_at__isnull=True, created_at__lt=cutoff))
        .order_by(F("last_used_at").asc(nulls_first=True), "created_at", "pk")
    )
    return _api_key_rows(queryset, max_rows)


def api_keys_expiring(*, now: dt.datetime, expiring_days: int, max_rows: int = 100) -> Finding:
    """Usable keys whose expiry falls within the next ``expiring_days`` days, soonest first."""
    queryset = ApiKey.objects.filter(
        revoked=False, expires_at__gt=now, expires_at__lte=now + dt.timedelta(days=expiring_days)
    ).order_by("expires_at", "pk")
    return _api_key_rows(queryset, max_rows)


def password_logins_without_totp(*, since: dt.datetime, until: dt.datetime, max_rows: int = 100) -> Finding:
    """Users who opened ``LOGIN_PASSWORD`` sessions in ``[since, until)`` and have no confirmed TOTP
    device: password-only logins an assurance review would want moved to two factors."""
    with_totp = TOTPDevice.objects.filter(confirmed=True, user_id__isnull=False).values("user_id")
    queryset = (
        UserSession.objects.filter(
            credentials=Credentials.LOGIN_PASSWORD,
            created_at__gte=since,
            created_at__lt=until,
            user_id__isnull=False,
        )
        .exclude(user_id__in=with_totp)
        .values_list("username")
        .annotate(n=Count("pk"), last=Max("created_at"))
        .order_by("-n", "username")
    )
    rows = [{"username": username, "logins": n, "last_login": last} for username, n, last in queryset]
    return Finding(len(rows), rows[:max_rows])


def failed_login_bursts(
    *, since: dt.datetime, until: dt.datetime, threshold: int, max_rows: int = 100
) -> tuple[Finding, Finding]:
    """Clients and accounts with at least ``threshold`` failed logins in ``[since, until)``.

    Counted from ``AUTHENTICATION`` audit records with ``success = false``; a client is its address
    without the port (unix-socket peers by uid). Returns (by client address, by account), each
    sorted by failures, most first, with how many accounts a client tried / clients an account was
    tried from (many accounts from one client suggests password spraying).
    """
    grouped = (
        AuditRecord.objects.filter(
            event=AuditEvent.AUTHENTICATION, success=False, timestamp__gte=since, timestamp__lt=until
        )
        .values_list("address", "username")
        .annotate(n=Count("pk"), first=Min("timestamp"), last=Max("timestamp"))
        .order_by()
    )
    by_client: dict[str, dict[str, Any]] = {}
    by_account: dict[str, dict[str, Any]] = {}
    for address, username, n, first, last in grouped.iterator(chunk_size=CHUNK):
        client = client_of(address or "")
        _tally(by_client, client, n, first, last, other=username)
        if username is not None:
            _tally(by_account, username, n, first, last, other=client)

    def finding(groups: dict[str, dict[str, Any]], key: str, others: str) -> Finding:
        rows = [
            {
                key: name,
                "failures": g["failures"],
                others: len(g["others"]),
                "first": g["first"],
                "last": g["last"],
            }
            for name, g in groups.items()
            if g["failures"] >= threshold
        ]
        rows.sort(key=lambda row: (-row["failures"], row[key]))
        return Finding(len(rows), rows[:max_rows])

    return finding(by_client, "address", "accounts"), finding(by_account, "username", "addresses")


def _tally(
    groups: dict[str, dict[str, Any]], key: str, n: int, first: dt.datetime, last: dt.datetime, other: Any
) -> None:
    group = groups.setdefault(key, {"failures": 0, "others": set(), "first": first, "last": last})
    group["failures"] += n
    group["others"].add(other)
    group["first"] = min(group["first"], first)
    group["last"] = max(group["last"], last)


def token_chain_depths(*, pks: Iterable[int] | None = None) -> dict[int, int]:
    """Depth of the token chain of each active TOKEN session (1: opened with a token that a non-token
    session generated; each further token-from-a-token session adds one).

    Ancestors are loaded level by level (ended ones included: a chain keeps its depth when a middle
    link has ended); an ancestor that no longer exists counts as the root.
    """
    tokens = UserSession.objects.filter(credentials=Credentials.TOKEN, ended_at__isnull=True)
    if pks is not None:
        tokens = tokens.filter(pk__in=list(pks))
    parent_of: dict[int, int | None] = dict(tokens.values_list("pk", "parent_id").iterator(chunk_size=CHUNK))
    active = list(parent_of)
    roots: set[int] = set()
    pending = {p for p in parent_of.values() if p is not None and p not in parent_of}
    while pending:
        batch = list(pending)
        pending = set()
        for start in range(0, len(batch), CHUNK):
            rows = UserSession.objects.filter(pk__in=batch[start : start + CHUNK]).values_list(
                "pk", "parent_id", "credentials"
            )
            seen = set()
            for pk, parent_id, credentials in rows:
                seen.add(pk)
                if credentials == Credentials.TOKEN and parent_id is not None:
                    parent_of[pk] = parent_id
                    if parent_id not in parent_of and parent_id not in roots:
                        pending.add(parent_id)
                else:
                    roots.add(pk)
            roots.update(set(batch[start : start + CHUNK]) - seen)  # purged ancestors
    depth: dict[int, int] = {}
    for pk in active:
        path: list[int] = []
        node: int | None = pk
        while node is not None and node not in depth and node not in roots and len(path) <= len(parent_of):
            path.append(node)
            node = parent_of.get(node)
        base = depth.get(node, 0) if node is not None else 0
        for offset, link in enumerate(reversed(path), 1):
            depth[link] = base + offset
    return {pk: depth[pk] for pk in active}


def deep_token_chains(*, max_depth: int, max_rows: int = 100) -> Finding:
    """Active TOKEN sessions whose chain is deeper than ``max_depth`` links, deepest first."""
    depths = {pk: d for pk, d in token_chain_depths().items() if d > max_depth}
    ranked = sorted(depths, key=lambda pk: (-depths[pk], pk))[:max_rows]
    rows_by_pk = {
        pk: (public_id, username, root_credentials, created_at)
        for pk, public_id, username, root_credentials, created_at in UserSession.objects.filter(
            pk__in=ranked
        ).values_list("pk", "public_id", "username", "root_credentials", "created_at")
    }
    rows = []
    for pk in ranked:
        public_id, username, root_credentials, created_at = rows_by_pk[pk]
        rows.append(
            {
                "id": public_id,
                "username": username,
                "depth": depths[pk],
                "root_credentials": root_credentials,
                "created_at": created_at,
            }
        )
    return Finding(len(depths), rows)


#: The checks of `audit_sessions_report` whose entries need an operator's attention, in report order.
CHECKS: Mapping[str, str] = {
    "over_limit_sessions": "sessions past their idle or absolute limit still marked active",
    "dormant_api_keys": "API keys unused for the configured number of days",
    "expiring_api_keys": "API keys expiring soon",
    "password_logins_without_totp": "users with password logins and no TOTP device",
    "failed_logins_by_address": "failed-login bursts by client address",
    "failed_logins_by_account": "failed-login bursts by account",
    "deep_token_chains": "token chains deeper than expected",
}


def audit_sessions_report(*, settings: ReportSettings, now: dt.datetime) -> dict[str, Any]:
    """The ``audit_sessions`` report as one JSON-ready dict (datetimes stay datetimes).

    ``findings`` lists every check of `CHECKS` with its count and ``status`` is ``"attention"`` when
    any count is non-zero, ``"clean"`` otherwise. Session ``id`` values are ``auth.sessions`` ids and
    key ``id`` values ``api_key.query`` ids, so any entry can be pasted into a query filter.
    """
    s = settings
    active_total = UserSession.objects.active(now).count()
    by_address, by_account = failed_login_bursts(
        since=s.since, until=s.until, threshold=s.burst_threshold, max_rows=s.max_rows
    )
    overdue = _overdue(now, s.max_rows)
    report: dict[str, Any] = {
        "generated_at": now,
        "since": s.since,
        "until": s.until,
        "settings": {
            "unused_days": s.unused_days,
            "expiring_days": s.expiring_days,
            "burst_threshold": s.burst_threshold,
            "max_token_depth": s.max_token_depth,
            "top": s.top,
            "max_rows": s.max_rows,
        },
        "active_sessions": {
            "total": active_total,
            "by_credentials": [
                {"credentials": c, "count": n} for c, n in session_counts_by_credentials(now=now)
            ],
            "by_user": _active_by_user(now, s.top),
            "by_network": _active_by_network(now, s.top),
        },
        "over_limit_sessions": overdue,
        "dormant_api_keys": api_keys_dormant(
            now=now, unused_days=s.unused_days, max_rows=s.max_rows
        ).as_dict(),
        "expiring_api_keys": api_keys_expiring(
            now=now, expiring_days=s.expiring_days, max_rows=s.max_rows
        ).as_dict(),
        "password_logins_without_totp": password_logins_without_totp(
            since=s.since, until=s.until, max_rows=s.max_rows
        ).as_dict(),
        "failed_logins_by_address": by_address.as_dict(),
        "failed_logins_by_account": by_account.as_dict(),
        "deep_token_chains": deep_token_chains(max_depth=s.max_token_depth, max_rows=s.max_rows).as_dict(),
    }
    findings = [{"check": name, "count": report[name]["count"]} for name in CHECKS]
    report["findings"] = findings
    report["status"] = "attention" if any(f["count"] for f in findings) else "clean"
    return report
