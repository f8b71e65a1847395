"""``auth.sessions`` events: written to an outbox table with the change, read back by every process.

Why an outbox polled by each server process, not a channel layer (docs/architecture.md "The outbox and the per-process hub"): the event
row commits in the same transaction as the session change, so an event exists exactly when its change
does (no event for a rolled-back login, none lost when a process dies between commit and publish);
it needs no service beyond the database, so it works the same on the SQLite default (several workers
on one host) and on PostgreSQL (several hosts); and `manage.py` commands, which run no event loop,
publish simply by writing. The price is a poll: one indexed ``id > n`` query per process every
``SESSIONS_EVENT_POLL_INTERVAL`` seconds (0.25 by default), which bounds the delivery delay.

PostgreSQL hands out ids before commit, so a row with a smaller id can become visible after a larger
one: `EventCursor` re-reads unseen ids below its high-water mark for ``GAP_GRACE`` seconds before
giving up on them (a rolled-back transaction leaves such a gap for ever).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sessions_app.models import SessionEvent, UserSession
from sessions_app.specs import SESSION_ROW_FIELDS, build_session_row

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: The fields of an ADDED notification, as TrueNAS sends them.
ADDED_FIELDS = ("id", "origin", "credentials", "credentials_data", "created_at", "secure_transport")
#: How long a gap in the id sequence is waited for (a transaction still committing) before skipping it.
GAP_GRACE = 10.0
COLLECTION = "auth.sessions"
#: A larger jump in ids (a sequence reset, a restore) is not waited for.
MAX_GAP = 1000


def _ejson(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"$date": (value - EPOCH) // dt.timedelta(milliseconds=1)}
    if isinstance(value, dict):
        return {k: _ejson(v) for k, v in value.items()}
    return value


def added_fields(row: UserSession) -> dict[str, Any]:
    """The ``fields`` of the ADDED notification for ``row`` (dates as ``{"$date": ms}``)."""
    full = build_session_row(tuple(getattr(row, name) for name in SESSION_ROW_FIELDS), {})
    return {name: _ejson(full[name]) for name in ADDED_FIELDS}


def session_added(row: UserSession) -> None:
    """Record that ``row`` began; call inside the transaction that saved it."""
    SessionEvent.objects.create(
        kind=SessionEvent.Kind.ADDED,
        session=row.pk,
        public_id=row.public_id,
        internal=row.internal,
        fields=added_fields(row),
    )


def session_removed(row: UserSession, *, public_id: str | None = None, ended: bool = True) -> None:
    """Record that ``row`` ended (or, with ``ended=False``, that its old ``public_id`` went away)."""
    SessionEvent.objects.create(
        kind=SessionEvent.Kind.REMOVED,
        session=row.pk,
        public_id=public_id or row.public_id,
        internal=row.internal,
        ended=ended,
    )


def roles_changed(*, users: Iterable[int] | None) -> None:
    """Record that the roles of ``users`` (``None``: of anyone) may have changed; call inside the
    transaction of the change. Every process re-checks the streams of those users before it
    delivers any later event (`sessions_app.server.live`); nothing is sent to clients."""
    SessionEvent.objects.create(
        kind=SessionEvent.Kind.ROLES,
        session=0,
        public_id="",
        internal=True,
        fields={"users": None if users is None else sorted(set(users))},
    )


def notices_changed(*, user_pk: int) -> None:
    """Record that a new-sign-in notice of user ``user_pk`` was created or answered; call inside the
    transaction of the change. Only that user's notice streams hear of it (`sessions_app.server.live`):
    ``internal`` and without a session, it is never an ``auth.sessions`` notification (a process
    that predates the kind skips it as internal)."""
    SessionEvent.objects.create(
        kind=SessionEvent.Kind.NOTICE,
        session=0,
        public_id="",
        internal=True,
        fields={"user": user_pk},
    )


def notification(event: SessionEvent) -> dict[str, Any]:
    """The JSON-RPC ``collection_update`` notification of ``event``, byte-compatible with TrueNAS.

    REMOVED carries the id in ``extra.fields`` only (TrueNAS adds a top-level ``id`` only when the
    sender passes one); pytruenas, which reads ``params["id"]``, therefore sees ``None`` there.
    """
    if event.kind == SessionEvent.Kind.ADDED:
        params: dict[str, Any] = {"msg": "added", "collection": COLLECTION, "fields": event.fields}
    else:
        params = {"msg": "removed", "collection": COLLECTION, "extra": {"fields": {"id": event.public_id}}}
    return {"jsonrpc": "2.0", "method": "collection_update", "params": params}


@dataclass
class EventCursor:
    """Reads the outbox in id order, once per row, tolerating ids that commit out of order."""

    high: int = 0
    #: Ids below ``high`` not seen yet, with the monotonic time they were first missed.
    gaps: dict[int, float] = field(default_factory=dict)

    @classmethod
    def at_end(cls) -> EventCursor:
        """A cursor that will return only events committed from now on."""
        last = SessionEvent.objects.order_by("-id").values_list("id", flat=True).first()
        return cls(high=last or 0)

    def fetch(self, limit: int = 1000) -> list[SessionEvent]:
        now = time.monotonic()
        self.gaps = {i: t for i, t in self.gaps.items() if now - t < GAP_GRACE}
        query = SessionEvent.objects.filter(id__gt=self.high)
        rows = list(query.order_by("id")[:limit])
        if self.gaps:
            late = list(SessionEvent.objects.filter(id__in=list(self.gaps)).order_by("id"))
            for row in late:
                del self.gaps[row.id]
            rows = late + rows
        for row in rows:
            if row.id > self.high:
                if row.id - self.high <= MAX_GAP:
                    self.gaps.update((missing, now) for missing in range(self.high + 1, row.id))
                self.high = row.id
        return rows
