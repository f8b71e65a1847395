"""The entry points: `demo_seed` fills the database with demo data, `demo_clear` removes it.

Both run in batches, one transaction each, with SQLite tuned for bulk loading (`_bulk_load`);
`demo_seed` refreshes the planner statistics of the tables it changed when it is done.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Model, Q
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app.db.planner_stats import refresh_after_bulk_change
from sessions_app.management.demo.history import _AuditHistory
from sessions_app.management.demo.population import CRED, DEMO_PREFIX, EPOCH, NODE_NETWORK
from sessions_app.management.demo.seeder import _Seeder
from sessions_app.models import ApiKey, AuditRecord, UserSession

_SQLITE_SEED_CACHE_KIB = -512 * 1024  # negative: KiB, i.e. up to 512 MiB of page cache while seeding


class DemoDataExists(Exception):
    """Demo data is already present and ``clear`` was not requested."""


@dataclass(frozen=True, slots=True)
class DemoSeedResult:
    """What `demo_seed` wrote (and, with ``clear``, what it removed first)."""

    users: int
    api_keys: int
    sessions: int
    ended: int
    by_credentials: dict[str, int]
    seconds: float  # spent creating (clearing excluded)
    cleared: dict[str, int] = field(default_factory=dict)
    audit_records: int = 0
    #: Tables whose planner statistics were refreshed (`planner_stats.refresh_after_bulk_change`).
    statistics: tuple[str, ...] = ()


def demo_clear(*, batch_size: int = 5000) -> dict[str, int]:
    """Delete every demo user, their API keys and TOTP devices, and every demo session.

    Sessions go first, in batches of ``batch_size`` (one transaction each), so that a million rows
    are removed without loading them all into memory; a session is demo data when it belongs to a
    demo user or demo API key, has a demo username, or is a TEST-NET-1 node peer. Audit records go
    the same way; one is demo data when its ``event_data`` says ``"demo": true`` (only this module
    writes that key at the top level) and its username is a demo one or none. Returns the number of
    rows removed per kind.
    """
    demo_users = get_user_model().objects.filter(username__startswith=DEMO_PREFIX)
    demo_sessions = UserSession.objects.filter(
        Q(user__in=demo_users.values("pk"))
        | Q(username__startswith=DEMO_PREFIX)
        | Q(api_key_name__startswith=DEMO_PREFIX)
        | Q(credentials=CRED.TRUENAS_NODE, origin__startswith=NODE_NETWORK)
    )
    removed = {"sessions": 0, "api_keys": 0, "users": 0, "audit_records": 0}
    demo_audit = AuditRecord.objects.filter(
        Q(username__startswith=DEMO_PREFIX) | Q(username__isnull=True), event_data__demo=True
    )
    last = 0
    with _bulk_load():
        while pks := list(
            demo_audit.filter(pk__gt=last).order_by("pk").values_list("pk", flat=True)[:batch_size]
        ):
            last = pks[-1]
            with transaction.atomic():
                removed["audit_records"] += AuditRecord.objects.filter(pk__in=pks).delete()[0]
        last = 0
        # Walk the primary key so that each batch resumes where the last one stopped (no rescans).
        while pks := list(
            demo_sessions.filter(pk__gt=last).order_by("pk").values_list("pk", flat=True)[:batch_size]
        ):
            last = pks[-1]
            with transaction.atomic():
                # Through the ORM, so that the sessions' tokens go too; only the pk is loaded.
                deleted = UserSession.objects.filter(pk__in=pks).only("pk").delete()[1]
                removed["sessions"] += deleted.get(UserSession._meta.label, 0)
        with transaction.atomic():
            keys = ApiKey.objects.filter(
                Q(user__in=demo_users.values("pk")) | Q(name__startswith=DEMO_PREFIX)
            )
            removed["api_keys"] = keys.delete()[1].get(ApiKey._meta.label, 0)
            # The account signals end each user's sessions (none are left): ~2 ms a user.
            removed["users"] = demo_users.delete()[1].get(get_user_model()._meta.label, 0)
    return removed


def demo_seed(
    *,
    sessions: int,
    users: int | None = None,
    api_keys: int | None = None,
    ended_fraction: float = 0.3,
    seed: int | None = None,
    batch_size: int = 5000,
    clear: bool = False,
    now: dt.datetime | None = None,
    progress: Callable[[int], object] | None = None,
) -> DemoSeedResult:
    """Fill the database with demo users, API keys and ``sessions`` sessions.

    ``users`` defaults to one per 20 sessions (at least 10; none without sessions) and ``api_keys``
    to one per 10 users (at least 3). About ``ended_fraction`` of the sessions are history
    (``ended_at`` / ``end_reason`` / ``ended_by`` set); the rest are active and within their LEVEL_1
    lifetime at ``now`` (default: the current time), at most ``SESSIONS_MAX_PER_USER`` per user
    (logins beyond the cap end as ``EVICTED``, as the login service would end them). The same
    ``seed`` and ``now`` give the same rows, public ids included; without a seed, public ids come
    from `secrets`. ``progress`` is called with the number of sessions written after each batch.

    Raises `DemoDataExists` when demo users exist and ``clear`` is false (re-seeding would collide
    with them); with ``clear``, `demo_clear` runs first. Raises `ValueError` for counts or fractions
    out of range.
    """
    if sessions < 0 or batch_size < 1 or not 0.0 <= ended_fraction <= 1.0:
        raise ValueError("sessions must be >= 0, batch_size >= 1 and ended_fraction within [0, 1]")
    if users is None:
        users = max(10, sessions // 20) if sessions or api_keys else 0
    if api_keys is None:
        api_keys = max(3, users // 10) if users else 0
    if users < (1 if sessions or api_keys else 0) or api_keys < 0:
        raise ValueError("sessions and API keys need users >= 1; api_keys must be >= 0")

    cleared = demo_clear(batch_size=batch_size) if clear else {}
    existing = get_user_model().objects.filter(username__startswith=DEMO_PREFIX).count() if users else 0
    if existing:
        raise DemoDataExists(f"{existing} demo users ({DEMO_PREFIX}*) already exist; clear them first")

    started = time.perf_counter()
    now = now or timezone.now()
    now_ms = (now - EPOCH) // dt.timedelta(milliseconds=1)
    rng = random.Random(seed)
    seeder = _Seeder(rng=rng, now_ms=now_ms, ended_fraction=ended_fraction, deterministic=seed is not None)
    # The audit history draws from a generator of its own, so that it changes no session.
    seeder.audit = _AuditHistory(
        rng=random.Random(None if seed is None else f"{seed}:audit"),
        now_ms=now_ms,
        deterministic=seed is not None,
    )
    written = 0
    with _bulk_load():
        if users:
            with transaction.atomic():
                seeder.create_users(users)
                seeder.create_api_keys(api_keys)
        first = True
        while written < sessions:
            n = min(batch_size, sessions - written)
            with transaction.atomic():
                written += seeder.create_sessions(n, every_type=first)
            first = False
            if progress is not None:
                progress(n)
        audit_records = seeder.audit.write(batch_size=batch_size)
    # Planner statistics of every table filled or emptied (issue 18), so that a demo or benchmark
    # database is fast from its first query, with autovacuum off and on SQLite alike.
    user_rows = users + cleared.get("users", 0)
    changed: dict[type[Model], int] = {
        UserSession: written + cleared.get("sessions", 0),
        AuditRecord: audit_records + cleared.get("audit_records", 0),
        ApiKey: api_keys + cleared.get("api_keys", 0),
        get_user_model(): user_rows,
        TOTPDevice: user_rows,  # at most one device per user
    }
    statistics = tuple(
        model._meta.db_table for model, rows in changed.items() if refresh_after_bulk_change(model, rows)
    )
    return DemoSeedResult(
        users=users,
        api_keys=api_keys,
        sessions=written,
        ended=seeder.ended,
        by_credentials=dict(seeder.by_credentials),
        seconds=time.perf_counter() - started,
        cleared=cleared,
        audit_records=audit_records,
        statistics=statistics,
    )


@contextlib.contextmanager
def _bulk_load() -> Iterator[None]:
    """On SQLite, relax durability and widen the page cache of this connection while seeding or clearing.

    Random public ids and secret digests land all over their unique indexes; once the database
    outgrows SQLite's default 2 MB cache, every batch re-reads and checkpoints index pages (a third
    of the run was system time at 1M rows). A crash mid-seed may lose demo data, nothing else: the
    settings are this connection's only and are restored afterwards.
    """
    if connection.vendor != "sqlite" or connection.in_atomic_block:  # SQLite refuses it in a transaction
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA synchronous")
        synchronous = int(cursor.fetchone()[0])
        cursor.execute("PRAGMA cache_size")
        cache_size = int(cursor.fetchone()[0])
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.execute(f"PRAGMA cache_size={_SQLITE_SEED_CACHE_KIB}")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute(f"PRAGMA cache_size={cache_size}")
