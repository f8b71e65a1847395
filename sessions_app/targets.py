"""Reads behind bulk terminations: which sessions a termination would end, and what ending them
would do (the token sessions that end with them).

- ``manage.py sessions terminate``: the sessions matching filters, a user's, or listed by public
  id, and short summaries of them for the confirmation.
- The browser's bulk terminations (dashboard, My sessions, the admin action): a `SessionSelection`
  fixed at confirmation (the newest id at page time), walked by primary key in batches
  (`selection_pks`), counted (`selection_count`) and planned with its cascades (`selection_plan`).

Like `sessions_app.selectors`, nothing here writes; the services end what these return. Sessions
are walked by primary key in chunks of `CHUNK`, so a million targets hold neither a long
transaction nor every row in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from sessions_app.models import UserSession
from sessions_app.query import make_predicate, parse_filters, parse_options
from sessions_app.query.ast import Node
from sessions_app.query.compiler import FALSE, TRUE, Compiler
from sessions_app.query.engine import Predicate
from sessions_app.query.schema import check
from sessions_app.specs import SESSION_SPEC

#: Rows per statement when sessions are walked by primary key.
CHUNK = 5000


# --- targets of `sessions terminate` ------------------------------------------------------------------


def session_pks_matching(*, filters: object, chunk_size: int = CHUNK) -> list[int]:
    """Primary keys of the active sessions (the ``auth.sessions`` scope) matching query-filters.

    The filters are validated and compiled exactly as ``auth.sessions`` compiles them (raises
    `QueryError`); leaves the database cannot evaluate exactly are checked in Python on streamed
    rows. The table is walked by primary key in chunks, one short read each, and the result is the
    set as of the call: sessions created afterwards are not included.
    """
    tree: Node = parse_filters(filters)
    options = parse_options({})
    schema = SESSION_SPEC.schema_for(options)
    tree, options = check(tree, options, schema)
    context = {"current_pk": None, "history": False}
    cond, exact = Compiler(SESSION_SPEC, schema, context).compile(tree)
    if cond is FALSE:
        return []
    queryset = UserSession.objects.active()
    if cond is not TRUE:
        queryset = queryset.filter(cond)
    predicate = None if exact else make_predicate(tree)
    found: list[int] = []
    last = 0
    while True:
        chunk = queryset.filter(pk__gt=last).order_by("pk")
        if predicate is None:
            pks = list(chunk.values_list("pk", flat=True)[:chunk_size])
            found += pks
        else:
            values = list(chunk.values_list(*SESSION_SPEC.row_fields)[:chunk_size])
            pks = [v[0] for v in values]
            found += [v[0] for v in values if predicate(SESSION_SPEC.build_row(v, context))]
        if len(pks) < chunk_size:
            return found
        last = pks[-1]


def session_pks_for_user(*, user: Any) -> list[int]:
    """Primary keys of ``user``'s active sessions, oldest first."""
    return list(
        UserSession.objects.active()
        .filter(user=user)
        .order_by("created_at", "pk")
        .values_list("pk", flat=True)
    )


@dataclass(frozen=True, slots=True)
class SessionLookup:
    """Public ids resolved: the active sessions' primary keys, and the ids that are not active."""

    pks: list[int]
    ended: list[str]
    unknown: list[str]


def session_pks_by_public_ids(*, public_ids: Sequence[str]) -> SessionLookup:
    """Resolve ``auth.sessions`` ids to primary keys of active sessions (ended / unknown ids listed)."""
    rows = {
        public_id: (pk, ended_at)
        for pk, public_id, ended_at in UserSession.objects.filter(public_id__in=set(public_ids)).values_list(
            "pk", "public_id", "ended_at"
        )
    }
    active = set(
        UserSession.objects.active().filter(public_id__in=set(public_ids)).values_list("pk", flat=True)
    )
    pks: list[int] = []
    ended: list[str] = []
    unknown: list[str] = []
    for public_id in dict.fromkeys(public_ids):
        if public_id not in rows:
            unknown.append(public_id)
        elif rows[public_id][0] in active:
            pks.append(rows[public_id][0])
        else:
            ended.append(public_id)
    return SessionLookup(pks, ended, unknown)


def session_summaries(*, pks: Sequence[int], limit: int) -> list[dict[str, Any]]:
    """``id``, ``credentials``, ``username``, ``origin``, ``created_at`` of the first ``limit`` of ``pks``."""
    rows = UserSession.objects.filter(pk__in=list(pks[:limit])).order_by("created_at", "pk")
    return [
        {
            "id": public_id,
            "credentials": credentials,
            "username": username,
            "origin": origin,
            "created_at": created_at,
        }
        for public_id, credentials, username, origin, created_at in rows.values_list(
            "public_id", "credentials", "username", "origin", "created_at"
        )
    ]


# --- bulk terminations from the browser (dashboard, My sessions, admin) -----------------------------


@dataclass(frozen=True, slots=True)
class SessionSelection:
    """The sessions a bulk termination ends, fixed when it is confirmed.

    Exactly one kind: ``filters`` -- the dashboard's scope (active sessions, device fields allowed)
    matching these query-filters; ``others`` -- every session not yet ended but internal ones
    (``auth.terminate_other_sessions``), only ``user_id``'s when given (My sessions); ``pks`` --
    these sessions (the admin's selected rows). ``keep`` (the caller's session) is never included
    and ``upto`` bounds the primary keys: a session created after the confirmation page was shown
    has a larger key, so the set can only shrink between confirming and ending.
    """

    upto: int | None = None
    keep: int | None = None
    filters: list[Any] | None = None
    others: bool = False
    user_id: int | None = None
    pks: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        kinds = (self.filters is not None, self.others, self.pks is not None)
        if sum(kinds) != 1:
            raise ValueError("a selection is one of: filters, others, pks")


def session_newest_pk() -> int:
    """The largest session primary key now (0: none): a selection's ``upto``."""
    return UserSession.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


class _Compiled:
    """A selection as a queryset plus, when the filters cannot all run in SQL, a row predicate."""

    def __init__(self, selection: SessionSelection) -> None:
        self.selection = selection
        self.predicate: Predicate | None = None
        self.fields: tuple[str, ...] = ("pk",)
        self.context: dict[str, Any] = {}
        self.empty = False
        queryset: QuerySet[UserSession]
        if selection.pks is not None:
            queryset = UserSession.objects.filter(ended_at__isnull=True)
        elif selection.others:
            queryset = UserSession.objects.filter(ended_at__isnull=True, internal=False)
        else:
            queryset = self._filtered(selection.filters or [])
        if selection.user_id is not None:
            queryset = queryset.filter(user_id=selection.user_id)
        if selection.keep is not None:
            queryset = queryset.exclude(pk=selection.keep)
        if selection.upto is not None:
            queryset = queryset.filter(pk__lte=selection.upto)
        self.queryset = queryset

    def _filtered(self, filters: list[Any]) -> QuerySet[UserSession]:
        # As the dashboard compiles them (`tables.session_page`): same schema, same errors.
        tree: Node = parse_filters(filters)
        options = parse_options({"extra": {"device": True}})
        schema = SESSION_SPEC.schema_for(options)
        tree, options = check(tree, options, schema)
        self.context = {"current_pk": self.selection.keep, "history": False, "device": True}
        cond, exact = Compiler(SESSION_SPEC, schema, self.context).compile(tree)
        queryset = UserSession.objects.active()
        if cond is FALSE:
            self.empty = True
        elif cond is not TRUE:
            queryset = queryset.filter(cond)
        if not exact:
            self.predicate = make_predicate(tree)
            self.fields = SESSION_SPEC.row_fields_for(options)
        return queryset

    def after(self, after: int, limit: int) -> tuple[list[int], bool]:
        """Up to ``limit`` primary keys above ``after``, in order, and whether the walk reached the end."""
        if self.empty:
            return [], True
        if self.selection.pks is not None:
            return self._listed(after, limit)
        found: list[int] = []
        last = after
        while True:
            want = limit - len(found) if self.predicate is None else CHUNK
            values = list(self.queryset.filter(pk__gt=last).order_by("pk").values_list(*self.fields)[:want])
            if self.predicate is None:
                found += [v[0] for v in values]
            else:
                for v in values:
                    if self.predicate(SESSION_SPEC.build_row(v, self.context)):
                        found.append(v[0])
                        if len(found) == limit:
                            return found, False
            if len(values) < want:
                return found, True
            if len(found) >= limit:
                return found, False
            last = values[-1][0]

    def _listed(self, after: int, limit: int) -> tuple[list[int], bool]:
        # "Not the end" may be said when the rest of the list has ended meanwhile: the next call
        # then finds nothing and says so.
        listed = sorted(pk for pk in set(self.selection.pks or ()) if pk > after)
        found: list[int] = []
        for start in range(0, len(listed), CHUNK):
            chunk = listed[start : start + CHUNK]
            found += sorted(self.queryset.filter(pk__in=chunk).values_list("pk", flat=True))
            if len(found) >= limit:
                return found[:limit], found[limit - 1] == listed[-1]
        return found, True

    def all(self) -> list[int]:
        found, _ = self.after(0, 2**62)
        return found

    def count(self, after: int = 0) -> int:
        if self.empty:
            return 0
        if self.predicate is None and self.selection.pks is None:
            return self.queryset.filter(pk__gt=after).count()
        found, _ = self.after(after, 2**62)
        return len(found)


def selection_pks(*, selection: SessionSelection, after: int = 0, limit: int) -> tuple[list[int], bool]:
    """Up to ``limit`` primary keys of ``selection`` above ``after`` (a read: run it outside the write
    transaction), in order, and True when no more follow. Raises `QueryError` for bad filters."""
    return _Compiled(selection).after(after, limit)


def selection_count(*, selection: SessionSelection, after: int = 0) -> int:
    """How many sessions of ``selection`` (above ``after``) are still active."""
    return _Compiled(selection).count(after)


@dataclass(frozen=True, slots=True)
class SelectionPlan:
    """What ending a selection will do, as of now.

    ``count`` sessions are selected. Of those, ``terminated`` end with the termination's reason;
    ``cascaded`` TOKEN sessions derived from them end with them (``PARENT_ENDED``): the selected
    ones whose parent ends too (`services.session_ending.sessions_end_batch`), and ``extra`` that are not
    selected themselves. ``keep_ends``: the kept session (the caller's) is derived from one of them,
    so it ends too.
    """

    count: int
    terminated: int
    cascaded: int
    extra: int
    keep_ends: bool

    @property
    def total(self) -> int:
        return self.terminated + self.cascaded


def selection_plan(*, selection: SessionSelection) -> SelectionPlan:
    """Count ``selection`` and the sessions that would end with it (the confirmation page's numbers).

    The token tree is read once: every active session that has a parent (only TOKEN sessions do),
    as (pk, parent) pairs; the rest is set arithmetic in memory.
    """
    selected = set(_Compiled(selection).all())
    children: dict[int, list[int]] = {}
    parent_of: dict[int, int] = {}
    edges = UserSession.objects.filter(ended_at__isnull=True, parent_id__isnull=False).values_list(
        "pk", "parent_id"
    )
    for pk, parent in edges.iterator(chunk_size=CHUNK):
        children.setdefault(parent, []).append(pk)
        parent_of[pk] = parent
    ending = set(selected)
    level = list(selected)
    while level:
        level = [child for pk in level for child in children.get(pk, ()) if child not in ending]
        ending.update(level)
    terminated = sum(1 for pk in selected if parent_of.get(pk) not in ending)
    return SelectionPlan(
        count=len(selected),
        terminated=terminated,
        cascaded=len(ending) - terminated,
        extra=len(ending) - len(selected),
        keep_ends=selection.keep is not None and selection.keep in ending,
    )


def session_get_any(*, public_id: str, user: Any = None) -> UserSession | None:
    """The session with this public id, active or ended (only among ``user``'s when given), or None."""
    queryset = UserSession.objects.filter(public_id=public_id)
    if user is not None:
        queryset = queryset.filter(user=user)
    return queryset.first()
