"""Ending sessions: one (`session_end`), many set-wise (`sessions_end_batch`), and the calls that end
them (logout, terminate, terminate the others).

Ending is one conditional ``UPDATE ... WHERE ended_at IS NULL`` so that concurrent terminations of
the same session are idempotent and audited exactly once, and it cascades in the same transaction:
the tokens the session created are deleted, a multi-use token it logged in with is deleted, and the
TOKEN sessions derived from it end with ``PARENT_ENDED``. Many sessions end set-wise
(`sessions_end_batch`): the same rows, records, events and cascades in a few statements per batch
instead of several per session.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import connection, transaction
from django.db.models import Field, Model, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from sessions_app import events
from sessions_app.audit import audit_record, fault_point, masked
from sessions_app.auth.clients import Client
from sessions_app.models import (
    AuditEvent,
    AuditRecord,
    EndReason,
    SessionEvent,
    Token,
    UserSession,
    new_audit_id,
)


def _end_record(
    *,
    public_id: str,
    username: str | None,
    credentials: str,
    reason: str,
    actor: str | None,
    address: str,
    note: str | None,
) -> dict[str, Any]:
    """The audit record of one ended session (`audit_record`'s arguments): one definition for
    `session_end` and the set-based `sessions_end_batch`, so that both write the same record."""
    logout = reason == EndReason.LOGOUT
    return {
        "event": AuditEvent.LOGOUT if logout else AuditEvent.METHOD_CALL,
        "success": True,
        "username": actor or username,
        "session": public_id,
        "address": address,
        "event_data": {
            "method": "auth.logout" if logout else "session.end",
            "end_reason": reason,
            "target": public_id,
            "target_username": username,
            "credentials": credentials,
            **({"note": note} if note else {}),
        },
    }


def session_end(
    *,
    session: UserSession,
    reason: str,
    actor: str | None = None,
    address: str = "",
    now: dt.datetime | None = None,
    note: str | None = None,
) -> bool:
    """End ``session`` (idempotent) and everything derived from it; audited once.

    ``note`` is added to the audit record (e.g. "credential changed" when a new login replaces it).
    Returns True when this call ended it, False when it had already ended. Many sessions at once:
    `sessions_end_batch` (the same rows, records and events, in a few statements).
    """
    now = now or timezone.now()
    with transaction.atomic():
        ended = UserSession.objects.filter(pk=session.pk, ended_at__isnull=True).update(
            ended_at=now, end_reason=reason, ended_by=actor
        )
        if not ended:
            return False
        session.ended_at, session.end_reason, session.ended_by = now, reason, actor
        events.session_removed(session)
        audit_record(
            **_end_record(
                public_id=session.public_id,
                username=session.username,
                credentials=session.credentials,
                reason=reason,
                actor=actor,
                address=address,
                note=note,
            )
        )
        # Children first, then tokens: every transaction locks a session row before the tokens it
        # deletes, so a token session ending at the same moment as its parent (both sockets closing)
        # cannot deadlock with it on PostgreSQL.
        for child in UserSession.objects.filter(parent_id=session.pk, ended_at__isnull=True):
            session_end(session=child, reason=EndReason.PARENT_ENDED, now=now)
        # The tokens this session created die with it; so does a multi-use token it logged in with.
        Token.objects.filter(session_id=session.pk).delete()
        if session.token_id is not None:
            Token.objects.filter(pk=session.token_id).delete()
    return True


#: Primary keys per ``IN (...)`` list: well below SQLite's 32,766 bound parameters per statement.
IN_CHUNK = 5000
#: The columns a set-based end reads of each session it ends (see `_EndRow`).
_END_COLUMNS = ("pk", "public_id", "username", "credentials", "internal", "token_id", "parent_id")
#: ``(pk, public_id, username, credentials, internal, token_id, parent_id)``
_EndRow = tuple[int, str, str | None, str, bool, int | None, int | None]


@dataclass(frozen=True, slots=True)
class EndCounts:
    """What a set-based end did: ``ended`` sessions with the reason asked (the ones chosen), and
    ``cascaded`` sessions derived from them that ended with them (``PARENT_ENDED``)."""

    ended: int = 0
    cascaded: int = 0

    def __add__(self, other: EndCounts) -> EndCounts:
        return EndCounts(self.ended + other.ended, self.cascaded + other.cascaded)


def _chunks(items: Sequence[int], size: int = IN_CHUNK) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _keys(values: Sequence[int]) -> RawSQL:
    """Primary keys as one parameter, for an ``__in`` over thousands of them: an array the database
    unpacks (SQLite ``json_each``, PostgreSQL ``unnest``). With one placeholder per key the ORM spent
    longer preparing the statement than the database spent running it."""
    keys = [int(value) for value in values]
    if connection.vendor == "postgresql":
        return RawSQL("SELECT unnest(%s::bigint[])", [keys])
    return RawSQL("SELECT value FROM json_each(%s)", [json.dumps(keys)])


def _lock_active(field: str, values: Sequence[int]) -> list[_EndRow]:
    """The still-active sessions whose ``field`` is one of ``values``, locked, in primary-key order.

    PostgreSQL locks the rows (``FOR UPDATE``, in primary-key order, so that two bulk ends cannot
    deadlock on each other); SQLite has one write lock, which the transaction took at ``BEGIN
    IMMEDIATE`` (Django ignores ``select_for_update`` there).
    """
    rows: list[_EndRow] = []
    for chunk in _chunks(sorted(set(values))):
        rows += (
            UserSession.objects.select_for_update()
            .filter(**{f"{field}__in": _keys(chunk)}, ended_at__isnull=True)
            .order_by("pk")
            .values_list(*_END_COLUMNS)
        )
    rows.sort()
    return rows


def _end_rows(
    rows: Sequence[_EndRow],
    *,
    reason: str,
    actor: str | None,
    address: str,
    now: dt.datetime,
    note: str | None,
) -> None:
    """Mark ``rows`` (locked, active) ended and write, for each, `session_end`'s event and record."""
    if not rows:
        return
    for chunk in _chunks([row[0] for row in rows]):
        UserSession.objects.filter(pk__in=_keys(chunk), ended_at__isnull=True).update(
            ended_at=now, end_reason=reason, ended_by=actor
        )
    ops = connection.ops
    written = ops.adapt_datetimefield_value(timezone.now())
    removed = str(SessionEvent.Kind.REMOVED.value)
    _insert_many(
        SessionEvent,
        ("created_at", "kind", "session", "public_id", "internal", "ended"),
        [(written, removed, pk, public_id, internal, True) for pk, public_id, _, _, internal, _, _ in rows],
    )
    fault_point("before_audit")
    records = []
    scrub: bool | None = None
    for _, public_id, username, credentials, _, _, _ in rows:
        fields = _end_record(
            public_id=public_id,
            username=username,
            credentials=credentials,
            reason=reason,
            actor=actor,
            address=address,
            note=note,
        )
        if scrub is None:
            # `audit_record` masks by key; these records all have the same keys: ask once.
            probe = dict.fromkeys(fields["event_data"], "")
            scrub = masked(probe) != probe
        records.append(
            (
                new_audit_id(),
                written,
                str(fields["event"]),
                fields["username"],
                fields["session"],
                fields["address"],
                fields["success"],
                ops.adapt_json_value(masked(fields["event_data"]) if scrub else fields["event_data"], None),
            )
        )
    _insert_many(
        AuditRecord,
        ("audit_id", "timestamp", "event", "username", "session", "address", "success", "event_data"),
        records,
    )
    fault_point("after_audit")


def _column(model: type[Model], name: str) -> str:
    field = model._meta.get_field(name)
    if not isinstance(field, Field) or field.column is None:  # a reverse relation, a non-concrete field
        raise FieldDoesNotExist(f"{model.__name__}.{name} has no column")
    return field.column


def _insert_many(model: type[Model], fields: Sequence[str], values: list[tuple[Any, ...]]) -> None:
    """``INSERT`` many rows whose values are already adapted (`connection.ops`).

    What ``bulk_create`` writes, without building a model instance and preparing each value through
    its field: ending 100,000 sessions writes 200,000 rows, and the ORM's per-value work was most of
    the time (and of the write lock held on SQLite). SQLite runs one prepared statement per row in
    process (``executemany``); PostgreSQL takes the rows in one ``COPY … FROM STDIN`` (a multi-row
    ``INSERT`` spends more time having its thousands of placeholders parsed, client-side, than
    PostgreSQL spends storing the rows).
    """
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    columns = ", ".join(quote(_column(model, name)) for name in fields)
    with connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            marks = ", ".join(["%s"] * len(fields))
            cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", values)
            return
        with (
            connection.wrap_database_errors,
            cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
        ):
            for row in values:
                copy.write_row(row)


def sessions_end_batch(
    *,
    pks: Iterable[int],
    reason: str,
    actor: str | None = None,
    address: str = "",
    now: dt.datetime | None = None,
    note: str | None = None,
) -> EndCounts:
    """End the still-active sessions among ``pks``, and everything derived from them, set-wise.

    One transaction and a few statements whatever the number of sessions: a locking read of the
    chosen rows and, level by level, of the TOKEN sessions derived from them; an ``UPDATE`` of each
    group, a bulk insert of their events and one of their audit records; one ``DELETE`` of the
    tokens they created or logged in with. The result is exactly that of `session_end` called for
    each of ``pks`` in primary-key order (a derived session's key is always larger than its
    parent's): the same rows, events and audit records (`_end_record`); a derived session -- chosen
    or not -- ends with its parent, as ``PARENT_ENDED``, the project's rule that a derived session
    records that its parent ended. Sessions already ended are skipped. Returns how many ended with
    ``reason`` and how many with their parent. Callers keep ``pks`` to a few thousand per call (on
    SQLite the transaction holds the database's write lock throughout).
    """
    now = now or timezone.now()
    with transaction.atomic():
        rows = _lock_active("pk", list(pks))
        chosen = {row[0] for row in rows}
        # Every active session derived from a chosen one, level by level: these end with their
        # parents (PARENT_ENDED), chosen or not; the chosen ones reached by none are the targets.
        derived: list[_EndRow] = []
        reached: set[int] = set()
        level = list(chosen)
        while level:
            following = []
            for row in _lock_active("parent_id", level):
                if row[0] not in reached:
                    reached.add(row[0])
                    derived.append(row)
                    if row[0] not in chosen:  # the chosen ones' children are in this level already
                        following.append(row[0])
            level = following
        targets = [row for row in rows if row[0] not in reached]
        _end_rows(targets, reason=reason, actor=actor, address=address, now=now, note=note)
        # Derived sessions before tokens, as `session_end` does (row locks, then tokens: no deadlock).
        _end_rows(derived, reason=EndReason.PARENT_ENDED, actor=None, address="", now=now, note=None)
        ended = [row[0] for row in (*targets, *derived)]
        tokens = [row[5] for row in (*targets, *derived) if row[5] is not None]
        for chunk in _chunks(ended):
            Token.objects.filter(session_id__in=_keys(chunk)).delete()
        for chunk in _chunks(tokens):
            Token.objects.filter(pk__in=_keys(chunk)).delete()
    return EndCounts(len(targets), len(derived))


def sessions_end(
    *,
    sessions: Iterable[UserSession],
    reason: str,
    actor: str | None = None,
    address: str = "",
    now: dt.datetime | None = None,
) -> int:
    """End several sessions in one transaction (`sessions_end_batch`); returns how many this call
    ended with ``reason`` (those derived from another of them end with it, as ``PARENT_ENDED``)."""
    if isinstance(sessions, QuerySet):
        pks = list(sessions.values_list("pk", flat=True))
    else:
        pks = [s.pk for s in sessions]
    return sessions_end_batch(pks=pks, reason=reason, actor=actor, address=address, now=now).ended


def sessions_end_for_user(
    *,
    user: Any,
    reason: str,
    keep: UserSession | None = None,
    actor: str | None = None,
    now: dt.datetime | None = None,
) -> int:
    """End every active session of ``user`` (except ``keep``): password change, disable, delete."""
    qs = UserSession.objects.filter(user=user, ended_at__isnull=True)
    if keep is not None:
        qs = qs.exclude(pk=keep.pk)
    return sessions_end(sessions=qs, reason=reason, actor=actor, now=now)


def session_terminate(*, public_id: str, actor: UserSession | None, client: Client) -> bool:
    """``auth.terminate_session``: True if a session with that id was active and is now ended."""
    target = UserSession.objects.filter(public_id=public_id, ended_at__isnull=True).first()
    if target is None:
        return False
    return session_end(
        session=target,
        reason=EndReason.TERMINATED,
        actor=actor.username if actor is not None else None,
        address=client.origin,
    )


#: Up to this many, `session_terminate_others` ends them in one transaction (~0.1 s on SQLite).
OTHERS_AT_ONCE = 1000


def session_terminate_others(*, current: UserSession, client: Client, own_only: bool = False) -> int:
    """``auth.terminate_other_sessions``: every active non-internal session but the caller's.

    ``own_only`` restricts it to the caller's user (``terminate other sessions`` of "My sessions").
    """
    qs = UserSession.objects.filter(ended_at__isnull=True, internal=False).exclude(pk=current.pk)
    if own_only:
        # Django reads ``user_id=None`` as ``IS NULL``; spelled out, since the lookup takes no None.
        qs = (
            qs.filter(user_id__isnull=True) if current.user_id is None else qs.filter(user_id=current.user_id)
        )
    pks = list(qs.order_by("pk").values_list("pk", flat=True))
    if len(pks) <= OTHERS_AT_ONCE:
        return sessions_end_batch(
            pks=pks, reason=EndReason.TERMINATED, actor=current.username, address=client.origin
        ).ended
    # Many: in short transactions, so that logins meanwhile get the (SQLite) write lock.
    from sessions_app.services.maintenance import sessions_end_in_batches  # it builds on this module

    return sessions_end_in_batches(
        pks=pks, reason=EndReason.TERMINATED, actor=current.username, address=client.origin
    )


def session_logout(*, session: UserSession, client: Client) -> bool:
    return session_end(
        session=session, reason=EndReason.LOGOUT, actor=session.username, address=client.origin
    )
