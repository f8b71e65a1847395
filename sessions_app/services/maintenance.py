"""Bulk writes: terminate many sessions (commands, dashboard, admin), sweep overdue ones, purge history.

Everything here works in batches, each batch its own short transaction, and never holds a write
lock for long: on SQLite a transaction holds the one database-wide write lock from ``BEGIN
IMMEDIATE`` to ``COMMIT``, so a batch that ran for seconds would make concurrent logins wait (and,
past the 20 s busy timeout, fail with "database is locked"). Batches therefore adapt their size to
take about `BATCH_SECONDS` each, and on SQLite the loop pauses `SQLITE_PAUSE` between them so that
writers waiting in SQLite's busy handler (which polls, it does not queue) get their turn.

Rows are chosen outside the write transaction (a read, never blocking on WAL) and deleted by primary
key (``pk__in`` of a limited slice), walking an index so that each batch reads only what it deletes.
Sessions end set-wise, a batch at a time (`sessions_end_batch`: a few statements per batch instead
of several per session), with exactly the rows, audit records, events and cascades (tokens, derived
TOKEN sessions) of `session_end`, the one-session path of the APIs.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import Model, QuerySet
from django.utils import timezone

from sessions_app import conf
from sessions_app.audit import audit_record
from sessions_app.auth import throttle
from sessions_app.db import planner_stats
from sessions_app.models import (
    AuditEvent,
    AuditRecord,
    EndReason,
    KnownDevice,
    NodeNonce,
    OneTimePassword,
    PendingLogin,
    ScramExchange,
    SessionEvent,
    SignInNotice,
    Token,
    UserSession,
)
from sessions_app.reports import sessions_past_absolute_limit, sessions_past_idle_limit
from sessions_app.services.session_ending import sessions_end_batch
from sessions_app.targets import SessionSelection, selection_pks

Progress = Callable[[int], object]

#: Target duration of one write transaction (seconds); batch sizes adapt to it.
BATCH_SECONDS = 0.1
#: Pause between two write transactions on SQLite (seconds): longer than the 100 ms a waiting
#: writer's busy handler may sleep between two attempts would be wasteful, much shorter risks
#: starving it; 50 ms leaves half of each poll interval free.
SQLITE_PAUSE = 0.05
#: Target duration of one transaction of a browser's bulk termination (`sessions_terminate_selection`):
#: longer than `BATCH_SECONDS`, so that the `SQLITE_PAUSE` after each is a fifth of the time rather
#: than a third -- someone is waiting for the page -- and still well inside the 0.5 s a login may
#: wait (a busy machine stretches some transactions to twice their target).
BULK_BATCH_SECONDS = 0.2
#: Throttle counters idle this long are stale (a deleted lockout row forgets its lock level).
COUNTER_RETENTION = dt.timedelta(days=1)
DEFAULT_BATCH_SIZE = 5000


class _Batches:
    """Batch sizes that keep each transaction near ``target`` seconds (`BATCH_SECONDS`; at most
    ``limit`` rows)."""

    def __init__(self, limit: int, start: int = 100, target: float | None = None) -> None:
        self.limit = max(1, limit)
        self.size = min(self.limit, start)
        self.target = target if target is not None else BATCH_SECONDS
        self.pause = SQLITE_PAUSE if connection.vendor == "sqlite" else 0.0

    def done(self, rows: int, seconds: float) -> None:
        """Record a batch of ``rows`` that took ``seconds``; size the next one and yield the lock."""
        if rows >= self.size and seconds > 0:
            # Grow at most 2x per batch (costs vary along a table), shrink at once.
            wanted = int(self.size * self.target / seconds)
            self.size = min(self.limit, max(10, min(wanted, self.size * 2)))
        if self.pause:
            time.sleep(self.pause)


def _past_absolute_limit(row: UserSession, now: dt.datetime) -> bool:
    return row.expires_at <= now


def _past_idle_limit(row: UserSession, now: dt.datetime) -> bool:
    idle = row.idle_timeout
    return row.expires_at > now and idle is not None and row.last_seen_at + dt.timedelta(seconds=idle) <= now


def _end_sessions(
    pks: Sequence[int],
    *,
    reason: str,
    actor: str | None,
    note: str | None,
    batches: _Batches,
    progress: Progress | None,
    still: Callable[[UserSession, dt.datetime], bool] | None = None,
    address: str = "",
) -> int:
    """End those of ``pks`` still active (`sessions_end_batch`), one transaction per batch; returns
    how many ended with ``reason`` (not counting the derived sessions that ended with them).

    ``still`` re-checks each row in its batch's transaction (the sweep: a session used since it was
    listed is no longer idle), a cheap test of the loaded row rather than a query.
    """
    ended = 0
    position = 0
    while position < len(pks):
        chunk = pks[position : position + batches.size]
        position += len(chunk)
        started = time.perf_counter()
        with transaction.atomic():
            now = timezone.now()
            chosen: Sequence[int] = chunk
            if still is not None:
                rows = UserSession.objects.filter(pk__in=chunk, ended_at__isnull=True).order_by("pk")
                chosen = [row.pk for row in rows if still(row, now)]
            counts = sessions_end_batch(
                pks=chosen, reason=reason, actor=actor, address=address, now=now, note=note
            )
            ended += counts.ended
        batches.done(len(chunk), time.perf_counter() - started)
        if progress is not None:
            progress(len(chunk))
    return ended


def sessions_end_in_batches(
    *, pks: Sequence[int], reason: str, actor: str | None, address: str = "", batch_size: int = 1000
) -> int:
    """End those of ``pks`` still active in short transactions (no summary record); returns how many
    ended with ``reason``. The many-session path of ``auth.terminate_other_sessions``."""
    return _end_sessions(
        pks,
        reason=reason,
        actor=actor,
        note=None,
        batches=_Batches(batch_size, start=50),
        progress=None,
        address=address,
    )


@dataclass(slots=True)
class BulkState:
    """How far a bulk termination has come: what it ended, the last primary key it reached, and the
    size of its next transaction (learned, `_Batches`). The dashboard carries it, signed, from one
    request to the next when it ends a selection batch by batch (`sessions_app.views.sessions`)."""

    ended: int = 0
    cascaded: int = 0
    after: int = 0
    size: int = 50
    done: bool = False
    #: This call only: its transactions and the longest of them (seconds), for the benchmark.
    batches: int = 0
    longest: float = 0.0

    def carried(self) -> dict[str, int]:
        """What the next call needs (``ended``, ``cascaded``, ``after``, ``size``)."""
        return {"ended": self.ended, "cascaded": self.cascaded, "after": self.after, "size": self.size}


def sessions_terminate_selection(
    *,
    selection: SessionSelection,
    actor: str,
    address: str = "",
    describe: Mapping[str, Any],
    selected: int,
    state: BulkState | None = None,
    max_rows: int | None = None,
    max_seconds: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> BulkState:
    """End the sessions of ``selection`` with ``TERMINATED``, by ``actor``, in short transactions.

    The browser's bulk terminations (the dashboard's "matching these filters" and "other
    sessions", My sessions' "other sessions", the admin's action). The selection is walked in
    primary-key order from ``state.after``: each batch's keys are read outside the write
    transaction, then ended set-wise (`sessions_end_batch`: one audit record and one event per
    session, the derived TOKEN sessions and the tokens with them) in one transaction of about
    `BATCH_SECONDS`, with `SQLITE_PAUSE` between two on SQLite, so that logins keep getting the write
    lock. Without ``max_rows`` / ``max_seconds`` it runs to the end; with them it stops after about
    that much work and returns where it stopped, to be called again with the returned state.

    When the walk ends -- or a batch fails -- one ``METHOD_CALL`` record (``sessions.terminate``)
    says who ended what (``describe``: e.g. the filters), how many were ``selected`` when confirmed,
    and how many ended and cascaded in all; after a completed run the planner's statistics are
    refreshed (`planner_stats.refresh_after_bulk_change`). Raises `QueryError` for bad filters.
    """
    state = state or BulkState()
    batches = _Batches(batch_size, start=state.size, target=BULK_BATCH_SECONDS)
    started = time.perf_counter()
    examined = 0
    failed = True
    try:
        while not state.done:
            want = batches.size if max_rows is None else min(batches.size, max_rows - examined)
            if want <= 0 or (max_seconds is not None and time.perf_counter() - started >= max_seconds):
                break
            pks, last = selection_pks(selection=selection, after=state.after, limit=want)
            state.done = last or not pks
            if not pks:
                break
            began = time.perf_counter()
            counts = sessions_end_batch(pks=pks, reason=EndReason.TERMINATED, actor=actor, address=address)
            seconds = time.perf_counter() - began
            state.ended += counts.ended
            state.cascaded += counts.cascaded
            state.after = pks[-1]
            examined += len(pks)
            state.batches += 1
            state.longest = max(state.longest, seconds)
            if not state.done:  # no pause after the last one
                batches.done(len(pks), seconds)
            state.size = batches.size
        failed = False
    finally:
        if state.done or failed:
            with transaction.atomic():
                audit_record(
                    event=AuditEvent.METHOD_CALL,
                    success=not failed,
                    username=actor,
                    address=address,
                    event_data={
                        "method": "sessions.terminate",
                        "reason": None,
                        "selection": dict(describe),
                        "selected": selected,
                        "ended": state.ended,
                        "cascaded": state.cascaded,
                        "completed": not failed,
                    },
                )
    if state.done:
        planner_stats.refresh_after_bulk_change(UserSession, state.ended + state.cascaded)
    return state


def sessions_terminate(
    *,
    pks: Sequence[int],
    actor: str,
    reason: str | None = None,
    selection: Mapping[str, Any] | None = None,
    batch_size: int = 1000,
    progress: Progress | None = None,
) -> int:
    """End the sessions ``pks`` with ``TERMINATED``, in short batches; returns how many this call ended.

    Sessions end as through `session_end`, a batch at a time (`sessions_end_batch`: tokens and
    derived TOKEN sessions go with them; one audit record each, with ``actor`` as ``ended_by`` and
    ``reason`` as the record's ``note``). Sessions that ended meanwhile -- or with a selected parent
    (``PARENT_ENDED``) -- are not counted. Then one ``METHOD_CALL`` record (``sessions.terminate``)
    records who, why, what was selected (``selection``, e.g. the filters) and how many ended --
    also when a batch failed part-way, with ``completed: false``.
    """
    ended = 0
    completed = False
    try:
        ended = _end_sessions(
            pks,
            reason=EndReason.TERMINATED,
            actor=actor,
            note=reason,
            batches=_Batches(batch_size, start=50),
            progress=progress,
        )
        completed = True
    finally:
        with transaction.atomic():
            audit_record(
                event=AuditEvent.METHOD_CALL,
                success=completed,
                username=actor,
                event_data={
                    "method": "sessions.terminate",
                    "reason": reason,
                    "selection": dict(selection or {}),
                    "selected": len(pks),
                    "ended": ended,
                    "completed": completed,
                },
            )
    planner_stats.refresh_after_bulk_change(UserSession, ended)
    return ended


@dataclass(slots=True)
class PurgeResult:
    """What `history_purge` did (or, with ``dry_run``, would do): rows per kind, in the order run."""

    cutoff: dt.datetime
    dry_run: bool
    ended_expired: int = 0
    ended_idle: int = 0
    tokens: int = 0
    pending_logins: int = 0
    scram_exchanges: int = 0
    onetime_passwords: int = 0
    node_nonces: int = 0
    sessions: int = 0
    throttle_counters: int = 0
    audit_records: int = 0
    session_events: int = 0
    sign_in_notices: int = 0
    known_devices: int = 0
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        """Every count by name (no cutoff, flag or duration)."""
        return {k: v for k, v in asdict(self).items() if k not in ("cutoff", "dry_run", "seconds")}


def _purge_targets(now: dt.datetime, cutoff: dt.datetime) -> dict[str, tuple[QuerySet[Any], tuple[str, ...]]]:
    """Each kind of row to delete: its queryset and the order its batches walk.

    Ended sessions and audit records are taken from the front of an index (``sess_ended`` on
    ``(ended_at, id)``, partial on ``ended_at IS NOT NULL``, which ``ended_at < cutoff`` implies for
    both planners; ``audit_ts``), so each batch reads only the rows it deletes; the small tables are
    walked by pk.
    """
    skew = dt.timedelta(seconds=int(conf.get("SESSIONS_NODE_MAX_SKEW")))
    event_retention = dt.timedelta(seconds=float(conf.get("SESSIONS_EVENT_RETENTION")))
    return {
        "tokens": (Token.objects.filter(expires_at__lte=now), ("pk",)),
        "pending_logins": (PendingLogin.objects.filter(expires_at__lte=now), ("pk",)),
        "scram_exchanges": (ScramExchange.objects.filter(expires_at__lte=now), ("pk",)),
        "onetime_passwords": (
            OneTimePassword.objects.filter(used_at__isnull=False)
            | OneTimePassword.objects.filter(expires_at__lte=now),
            ("pk",),
        ),
        # The login path forgets nonces after twice the replay window; keep exactly that.
        "node_nonces": (NodeNonce.objects.filter(seen_at__lt=now - 2 * skew), ("pk",)),
        # After the tokens, so that a dry run counts what a real run deletes.
        "sessions": (UserSession.objects.filter(ended_at__lt=cutoff), ("ended_at", "pk")),
        "audit_records": (AuditRecord.objects.filter(timestamp__lt=cutoff), ("timestamp", "pk")),
        # The live-event outbox: every process has read an event within seconds of its commit.
        "session_events": (SessionEvent.objects.filter(created_at__lt=now - event_retention), ("pk",)),
        # New-sign-in notices are history like the sessions they name; a device unused since the
        # cutoff would be "new" again anyway (SESSIONS_NOTICE_DAYS <= the retention by default).
        "sign_in_notices": (SignInNotice.objects.filter(created_at__lt=cutoff), ("pk",)),
        "known_devices": (KnownDevice.objects.filter(last_seen_at__lt=cutoff), ("pk",)),
    }


def _delete_batches(
    queryset: QuerySet[Any], order: tuple[str, ...], *, batches: _Batches, progress: Progress | None
) -> int:
    model: type[Model] = queryset.model
    deleted = 0
    last = 0
    while True:
        selection = queryset if order != ("pk",) else queryset.filter(pk__gt=last)
        pks = list(selection.order_by(*order).values_list("pk", flat=True)[: batches.size])
        if not pks:
            return deleted
        last = max(pks)
        started = time.perf_counter()
        with transaction.atomic():
            # ``only("pk")``: the collector loads no columns to cascade (a session's tokens).
            _, per_model = queryset.filter(pk__in=pks).only("pk").delete()
        deleted += per_model.get(model._meta.label, 0)
        batches.done(len(pks), time.perf_counter() - started)
        if progress is not None:
            progress(len(pks))


def purge_plan(*, older_than: dt.timedelta, now: dt.datetime | None = None) -> PurgeResult:
    """What `history_purge` would do now: the counts, without any write."""
    now = now or timezone.now()
    cutoff = now - older_than
    result = PurgeResult(cutoff=cutoff, dry_run=True)
    result.ended_expired = sessions_past_absolute_limit(now=now).count()
    result.ended_idle = sessions_past_idle_limit(now=now).count()
    for name, (queryset, _) in _purge_targets(now, cutoff).items():
        setattr(result, name, queryset.count())
    # The counters' staleness rules live in `throttle`: run them and roll back.
    with transaction.atomic():
        result.throttle_counters = throttle.purge_counters(older_than=COUNTER_RETENTION, now=now)
        transaction.set_rollback(True)
    return result


def history_purge(
    *,
    older_than: dt.timedelta,
    actor: str,
    now: dt.datetime | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
) -> PurgeResult:
    """Sweep overdue sessions, then delete history older than ``older_than`` and expired leftovers.

    1. End (not delete) the sessions still marked active past their absolute limit (``EXPIRED``) or
       their idle limit (``IDLE``), through `session_end`: the expiry sweeper.
    2. Delete, in batches: sessions ended before the cutoff, expired tokens, expired pending second
       factors, used or expired one-time passwords, node nonces past the replay window, and audit
       records older than the cutoff (``SESSIONS_HISTORY_DAYS`` is the retention of both); then
       the stale throttle counters (`throttle.purge_counters`) and the live-event outbox rows older
       than ``SESSIONS_EVENT_RETENTION``.
    3. Write one ``METHOD_CALL`` audit record (``sessions.purge``) with ``actor`` and the counts.

    Each batch is one transaction of about `BATCH_SECONDS` (``batch_size`` rows at most).
    ``progress`` is called with the rows of each batch (ended or deleted).
    """
    started = time.perf_counter()
    now = now or timezone.now()
    cutoff = now - older_than
    result = PurgeResult(cutoff=cutoff, dry_run=False)
    batches = _Batches(batch_size)
    sweeps: list[tuple[str, QuerySet[UserSession], Callable[[UserSession, dt.datetime], bool]]] = [
        (EndReason.EXPIRED, sessions_past_absolute_limit(now=now), _past_absolute_limit),
        (EndReason.IDLE, sessions_past_idle_limit(now=now), _past_idle_limit),
    ]
    for reason, overdue, still in sweeps:
        pks = list(overdue.order_by("pk").values_list("pk", flat=True))
        n = _end_sessions(
            pks,
            reason=reason,
            actor=None,
            note="ended by sessions purge",
            batches=_Batches(batch_size, start=50),
            progress=progress,
            still=still,
        )
        setattr(result, "ended_expired" if reason == EndReason.EXPIRED else "ended_idle", n)
    for name, (queryset, order) in _purge_targets(now, cutoff).items():
        setattr(result, name, _delete_batches(queryset, order, batches=batches, progress=progress))
    result.throttle_counters = throttle.purge_counters(older_than=COUNTER_RETENTION, now=now)
    result.seconds = time.perf_counter() - started
    with transaction.atomic():
        audit_record(
            event=AuditEvent.METHOD_CALL,
            success=True,
            username=actor,
            event_data={
                "method": "sessions.purge",
                "older_than_seconds": int(older_than.total_seconds()),
                "cutoff": cutoff.isoformat(),
                **result.counts(),
            },
        )
    # Planner statistics of every table a large share of which was ended or deleted (issue 18).
    from sessions_app.db.planner_stats import refresh_after_bulk_change

    changed: dict[type[Model], int] = {UserSession: result.ended_expired + result.ended_idle}
    for name, (queryset, _) in _purge_targets(now, cutoff).items():
        changed[queryset.model] = changed.get(queryset.model, 0) + getattr(result, name)
    for model, rows in changed.items():
        refresh_after_bulk_change(model, rows)
    return result
