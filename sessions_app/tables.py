"""The browser's tables: keyset pages of the dashboard, My sessions, history and audit tables.

A page is "the next ``limit`` rows after this (sort value, pk)", never an OFFSET, which an index on
(column, id) answers by reading ``limit`` entries however deep the page is (`Sort`, the sortable
columns `SESSION_SORTS` / `AUDIT_SORTS`, signed cursors). Filters are compiled by the same query
engine as the APIs (same schema, same errors); a case-insensitive user prefix (``C^``) is pushed
down as index range scans (`sessions_app.query.prefixes`). `Page.matches` is "1,234 matching" above a table:
exact up to `MATCH_COUNT_CAP`, counted within `MATCH_COUNT_BUDGET`.

Reads only, like `sessions_app.selectors`, whose scopes (`selectors.session_scope`) they start from.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from django.db import OperationalError, connection, connections, router, transaction
from django.db.models import F, Q, QuerySet

from sessions_app import conf, selectors
from sessions_app.db.connections import query_budget, statement_budget
from sessions_app.exceptions import QueryTimeout
from sessions_app.models import AuditRecord, UserSession
from sessions_app.query import make_predicate, parse_filters, parse_options
from sessions_app.query.ast import Node
from sessions_app.query.compiler import FALSE, TRUE, Compiler, QuerySpec
from sessions_app.query.errors import QueryError
from sessions_app.query.execution import _Statement
from sessions_app.query.prefixes import _push_down_folded_prefixes
from sessions_app.query.schema import check
from sessions_app.specs import AUDIT_SPEC, SESSION_SPEC


@dataclass(frozen=True, slots=True)
class Sort:
    """A sortable column of a browser table: the ORM field, and whether it can be null."""

    column: str
    nullable: bool = False


SESSION_SORTS: Mapping[str, Sort] = MappingProxyType(
    {
        "created": Sort("created_at"),
        "last_seen": Sort("last_seen_at"),
        "user": Sort("username", nullable=True),
        "type": Sort("credentials"),
        "origin": Sort("origin"),
        "ended": Sort("ended_at", nullable=True),
    }
)
AUDIT_SORTS: Mapping[str, Sort] = MappingProxyType(
    {
        "time": Sort("timestamp"),
        "user": Sort("username", nullable=True),
        "event": Sort("event"),
    }
)


#: Matches counted exactly for the tables' "1,234 matching"; beyond it, "10,000+".
MATCH_COUNT_CAP = 10_000
#: Rows a count reads for filters the database cannot evaluate (checked in Python) before it stops
#: and says "at least": the count must not cost more than the page it is shown on.
MATCH_SCAN_LIMIT = 20_000
#: Seconds the database may spend on a table's match count (at most ``SESSIONS_QUERY_TIMEOUT``);
#: past it the page is shown without one.
MATCH_COUNT_BUDGET = 0.25


@dataclass(frozen=True, slots=True)
class MatchCount:
    """How many rows match a table's filters.

    ``count`` rows, or at least that many with ``more`` (the count stopped at its cap, or at
    `MATCH_SCAN_LIMIT` rows read for filters checked in Python). ``count`` is None when the
    database did not finish counting within `MATCH_COUNT_BUDGET`.
    """

    count: int | None
    more: bool = False


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a keyset-paginated table; the cursors are opaque strings (None: no such page).

    ``matches``: how many rows match the filters on all pages (None: not counted), for display
    only -- capped, so it is not the number a bulk action acts on (`session_count` with ``cap=None``).
    """

    rows: list[dict[str, Any]]
    next_cursor: str | None
    prev_cursor: str | None
    matches: MatchCount | None = None

    @property
    def match_count(self) -> int | None:
        """The rows matching on all pages (a lower bound when `match_count_capped`); None: not counted."""
        return self.matches.count if self.matches is not None else None

    @property
    def match_count_capped(self) -> bool:
        """`match_count` is a lower bound ("10,000+")."""
        return self.matches is not None and self.matches.more


def _encode_cursor(value: Any, pk: int) -> str:
    if isinstance(value, dt.datetime):
        item: list[Any] = ["d", value.astimezone(dt.UTC).isoformat(), pk]
    else:
        item = ["s" if value is not None else "n", value, pk]
    raw = json.dumps(item, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(text: str, sort: Sort) -> tuple[Any, int]:
    bad = QueryError("cursor", "this page link is not valid any more; start again from the first page")
    if len(text) > 2048:
        raise bad
    try:
        kind, value, pk = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, TypeError):
        raise bad from None
    if isinstance(pk, bool) or not isinstance(pk, int):
        raise bad
    is_datetime = sort.column in ("created_at", "last_seen_at", "ended_at", "timestamp")
    if kind == "n" and value is None and sort.nullable:
        return None, pk
    if kind == "d" and is_datetime and isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            raise bad from None
        if parsed.tzinfo is None:
            raise bad
        return parsed, pk
    if kind == "s" and not is_datetime and isinstance(value, str) and "\x00" not in value:
        return value, pk
    raise bad


def _after(sort: Sort, descending: bool, value: Any, pk: int) -> Q:
    """Rows strictly after ``(value, pk)`` in the order ``sort`` (nulls sort as the largest value).

    The redundant ``column <= value`` / ``>=`` term is what lets the database seek in the index
    instead of filtering it from the start.
    """
    col = sort.column
    if value is None:  # only nullable columns have null cursors
        if descending:
            return Q(**{f"{col}__isnull": False}) | Q(**{f"{col}__isnull": True, "pk__lt": pk})
        return Q(**{f"{col}__isnull": True, "pk__gt": pk})
    if descending:
        return Q(**{f"{col}__lte": value}) & (Q(**{f"{col}__lt": value}) | Q(pk__lt=pk))
    after = Q(**{f"{col}__gte": value}) & (Q(**{f"{col}__gt": value}) | Q(pk__gt=pk))
    return after | Q(**{f"{col}__isnull": True}) if sort.nullable else after


def _ordering(sort: Sort, descending: bool) -> list[Any]:
    expr = F(sort.column)
    if descending:
        first = expr.desc(nulls_first=True) if sort.nullable else expr.desc()
        return [first, F("pk").desc()]
    return [expr.asc(nulls_last=True) if sort.nullable else expr.asc(), F("pk").asc()]


@dataclass(frozen=True, slots=True)
class _Filtered:
    """A scope with the caller's filters applied: ``queryset`` holds what SQL can check;
    ``predicate`` (None: nothing left) is checked in Python on each row built from ``fields``."""

    queryset: QuerySet[Any] | None  # None: provably no row
    predicate: Callable[[dict[str, Any]], bool] | None
    fields: tuple[str, ...]
    #: The statement lists values read from the data (`_push_down_folded_prefixes`): never reused.
    read_values: bool = False


def _filtered(
    *, spec: QuerySpec, queryset: QuerySet[Any], context: Mapping[str, Any], filters: object, options: object
) -> _Filtered:
    """Validate and compile ``filters`` (raises `QueryError`) into ``queryset``, as the APIs do."""
    tree: Node = parse_filters(filters)
    opts = parse_options(options)
    schema = spec.schema_for(opts)
    tree, opts = check(tree, opts, schema)
    queryset, tree, read_values = _push_down_folded_prefixes(spec, schema, queryset, tree)
    cond, exact = Compiler(spec, schema, context).compile(tree)
    fields = spec.row_fields_for(opts)
    if cond is FALSE:
        return _Filtered(None, None, fields, read_values)
    qs = queryset if cond is TRUE else queryset.filter(cond)
    return _Filtered(qs, None if exact else make_predicate(tree), fields, read_values)


def _match_count(
    filtered: _Filtered,
    spec: QuerySpec,
    context: Mapping[str, Any],
    cap: int | None,
    deadline: float | None = None,
) -> MatchCount:
    """Count the matching rows: up to ``cap`` (None: all) with a ``COUNT(*)`` over a ``LIMIT cap+1``
    subquery, so a million matches cost what ``cap`` do. Filters checked in Python read at most
    `MATCH_SCAN_LIMIT` rows when capped, and stop at ``deadline`` (`time.monotonic`): the database's
    statement budget does not bound the Python side. Stopped early, the count is a lower bound (or
    None when nothing was found yet)."""
    if filtered.queryset is None:
        return MatchCount(0)
    qs = filtered.queryset.order_by()
    predicate = filtered.predicate
    if predicate is None:
        if cap is None:
            return MatchCount(qs.count())
        found = qs.values("pk")[: cap + 1].count()
        return MatchCount(min(found, cap), more=found > cap)
    found = 0
    rows = qs.values_list(*filtered.fields).iterator(chunk_size=spec.chunk_size)
    for read, values in enumerate(rows):
        late = deadline is not None and read % 256 == 0 and time.monotonic() > deadline
        if late or (cap is not None and read >= MATCH_SCAN_LIMIT):
            return MatchCount(found or None, more=True)
        if predicate(spec.build_row(values, context)):
            found += 1
            if cap is not None and found > cap:
                return MatchCount(cap, more=True)
    return MatchCount(found)


def _display_count(count: Callable[[float], MatchCount]) -> MatchCount:
    """``count(deadline)`` within `MATCH_COUNT_BUDGET` (a table's count must not hold its page up);
    past it, a count of None.

    On PostgreSQL the count runs in its own transaction (a savepoint inside the caller's): the
    budget is then ``SET LOCAL`` and ends with it, and a cancelled count rolls back alone -- no
    ``RESET`` statement that a cancellation arriving late could hit instead.
    """
    ceiling = float(conf.get("SESSIONS_QUERY_TIMEOUT") or 0)
    seconds = min(ceiling, MATCH_COUNT_BUDGET) if ceiling > 0 else MATCH_COUNT_BUDGET
    own = connection.vendor == "postgresql" or connection.in_atomic_block
    try:
        with transaction.atomic() if own else contextlib.nullcontext(), statement_budget(seconds):
            return count(time.monotonic() + seconds)
    except QueryTimeout:
        return MatchCount(None)
    except OperationalError as exc:
        # A timeout that fires as the count's last statement ends is delivered to the next one,
        # here the COMMIT, outside `statement_budget` (seen on PostgreSQL 15 under load): the same
        # timeout, and the transaction has been rolled back.
        if connection.vendor == "postgresql":
            from psycopg import errors

            if isinstance(exc.__cause__, errors.QueryCanceled):
                return MatchCount(None)
        raise


#: Compiled statements of exact pages, keyed by the table's scope, the filters and the page's place
#: (sort, direction, cursor, size). The dashboard asks for the same pages again and again (every
#: live update reloads the page on screen), and building a page with the ORM -- parse, check,
#: compile, Django's SQL compiler -- costs ~1 ms where running its indexed statement costs 0.2-1 ms.
#: Only the statement is kept, never rows: each call reads the data afresh. Not kept: a page whose
#: filters are checked in Python, or whose statement lists values read from the data (an audit user
#: name, `_push_down_folded_prefixes`); nothing in a statement depends on the clock ("not expired"
#: is ``expires_at > CURRENT_TIMESTAMP``). The same rule as the APIs' `execution._STATEMENTS`.
_PAGES: OrderedDict[tuple[Any, ...], tuple[_Statement | None, int]] = OrderedDict()
PAGE_CACHE_SIZE = 512


def _page_key(
    spec: QuerySpec, scope: tuple[Any, ...], filters: object, place: tuple[Any, ...]
) -> tuple[Any, ...] | None:
    try:
        text = json.dumps(filters, sort_keys=True, allow_nan=True, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return None
    alias = router.db_for_read(spec.model)
    return (id(spec), alias, connections[alias].vendor, scope, text, place)


def _keyset_page(
    *,
    spec: QuerySpec,
    queryset: Callable[[], QuerySet[Any]],
    context: Mapping[str, Any],
    filters: object,
    options: object,
    sort: Sort,
    descending: bool,
    cursor: str | None,
    backwards: bool,
    limit: int,
    extra_fields: tuple[str, ...] = (),
    count: bool = False,
    scope: tuple[Any, ...] | None = None,
) -> Page:
    """A keyset page; ``scope`` identifies ``queryset``, ``context`` and ``options`` (e.g. the
    caller's user and session) so that the page's statement may be reused (`_PAGES`)."""
    place = (sort, descending, cursor, backwards, limit, extra_fields)
    key = _page_key(spec, scope, filters, place) if scope is not None else None
    cached = _PAGES.get(key) if key is not None else None
    filtered: _Filtered | None = None
    with query_budget():
        if cached is not None and key is not None:
            _PAGES.move_to_end(key)
            statement, n = cached
            rows = iter(statement.rows(key[1])) if statement is not None else iter(())
            page = _page_from(rows, spec, context, None, n, extra_fields, limit, cursor, backwards)
            if count:  # the count is compiled each time (`_match_count` runs its own statement)
                filtered = _filtered(
                    spec=spec, queryset=queryset(), context=context, filters=filters, options=options
                )
        else:
            filtered = _filtered(
                spec=spec, queryset=queryset(), context=context, filters=filters, options=options
            )
            if key is not None and filtered.predicate is None and not filtered.read_values:
                source = _page_source(filtered, sort, descending, cursor, backwards, extra_fields)
                statement = _Statement(source[: limit + 1], key[1]) if source is not None else None
                _PAGES[key] = (statement, len(filtered.fields))
                if len(_PAGES) > PAGE_CACHE_SIZE:
                    _PAGES.popitem(last=False)
                rows = iter(statement.rows(key[1])) if statement is not None else iter(())
                page = _page_from(
                    rows, spec, context, None, len(filtered.fields), extra_fields, limit, cursor, backwards
                )
            else:
                page = _page_of(
                    filtered, spec, context, sort, descending, cursor, backwards, limit, extra_fields
                )
    if not count:
        return page
    assert filtered is not None  # compiled above whenever a count is asked for
    counted = filtered
    matches = _display_count(lambda deadline: _match_count(counted, spec, context, MATCH_COUNT_CAP, deadline))
    return dataclasses.replace(page, matches=matches)


def _page_of(
    filtered: _Filtered,
    spec: QuerySpec,
    context: Mapping[str, Any],
    sort: Sort,
    descending: bool,
    cursor: str | None,
    backwards: bool,
    limit: int,
    extra_fields: tuple[str, ...],
) -> Page:
    source = _page_source(filtered, sort, descending, cursor, backwards, extra_fields)
    if source is None:
        return Page([], None, None)
    predicate = filtered.predicate
    if predicate is None:
        values_iter: Iterator[tuple[Any, ...]] = iter(source[: limit + 1])
    else:
        values_iter = source.iterator(chunk_size=spec.chunk_size)
    return _page_from(
        values_iter, spec, context, predicate, len(filtered.fields), extra_fields, limit, cursor, backwards
    )


def _page_source(
    filtered: _Filtered,
    sort: Sort,
    descending: bool,
    cursor: str | None,
    backwards: bool,
    extra_fields: tuple[str, ...],
) -> QuerySet[Any] | None:
    """The page's rows in walking order as value tuples (row fields, ``extra_fields``, the sort
    value, the pk), from the cursor on; None when no row can match."""
    if filtered.queryset is None:
        return None
    qs = filtered.queryset
    # Backwards ("previous page"): walk the reversed order from the cursor, then flip the rows.
    walk_desc = descending != backwards
    if cursor is not None:
        value, pk = _decode_cursor(cursor, sort)
        qs = qs.filter(_after(sort, walk_desc, value, pk))
    qs = qs.order_by(*_ordering(sort, walk_desc))
    return qs.values_list(*filtered.fields, *extra_fields, sort.column, "pk")


def _page_from(
    values_iter: Iterator[tuple[Any, ...]],
    spec: QuerySpec,
    context: Mapping[str, Any],
    predicate: Callable[[dict[str, Any]], bool] | None,
    n: int,
    extra_fields: tuple[str, ...],
    limit: int,
    cursor: str | None,
    backwards: bool,
) -> Page:
    """The page from the value tuples of `_page_source` (``n`` row fields first), read until one row
    past ``limit`` matched (``predicate``: checked in Python on each built row)."""
    found: list[tuple[dict[str, Any], Any, int]] = []
    for values in values_iter:
        row = spec.build_row(values[:n], context)
        if predicate is not None and not predicate(row):
            continue
        row.update(zip(extra_fields, values[n : n + len(extra_fields)], strict=True))
        found.append((row, values[-2], values[-1]))
        if len(found) > limit:
            break
    more = len(found) > limit
    found = found[:limit]
    if backwards:
        found.reverse()
    rows = [row for row, _, _ in found]
    if not found:
        return Page([], None, None)
    first, last = found[0], found[-1]
    if backwards:
        next_cursor: str | None = _encode_cursor(last[1], last[2])
        prev_cursor = _encode_cursor(first[1], first[2]) if more else None
    else:
        next_cursor = _encode_cursor(last[1], last[2]) if more else None
        prev_cursor = _encode_cursor(first[1], first[2]) if cursor is not None else None
    return Page(rows, next_cursor, prev_cursor)


def session_devices(*, public_ids: set[str]) -> dict[str, dict[str, Any]]:
    """The ``device`` and ``location`` objects (as ``extra.device`` gives them) of the sessions
    ``public_ids``, by public id, in one query; sessions that are gone are missing."""
    if not public_ids:
        return {}
    columns = ("device_label", "device_browser", "device_os", "device_family", "user_agent")
    found = UserSession.objects.filter(public_id__in=public_ids).values_list(
        "public_id", *columns, "location_country", "location_city"
    )
    return {
        public_id: {
            "device": {
                "label": label,
                "browser": browser,
                "os": os_name,
                "device": family,
                "user_agent": agent,
            },
            "location": {"country": country, "city": city},
        }
        for public_id, label, browser, os_name, family, agent, country, city in found
    }


def _session_table(
    *, history: bool, device: bool, user: Any, current_pk: int | None
) -> tuple[Callable[[], QuerySet[UserSession]], dict[str, Any], dict[str, Any]]:
    """The dashboard's scope (active, or ended with ``history``) -- built when called: a page whose
    statement is reused needs no queryset --, row context and query options."""

    def queryset() -> QuerySet[UserSession]:
        # Through the module: the scope is the selectors' one, wherever it is replaced (tests, benches).
        scope, _ = selectors.session_scope(history=history, device=device, user=user, current_pk=current_pk)
        return scope.filter(ended_at__isnull=False) if history else scope

    extra = {name: True for name, on in (("history", history), ("device", device)) if on}
    context = selectors.session_context(history=history, device=device, current_pk=current_pk)
    return queryset, context, {"extra": extra} if extra else {}


def session_page(
    *,
    filters: object = None,
    history: bool = False,
    sort: str = "created",
    descending: bool = True,
    cursor: str | None = None,
    backwards: bool = False,
    limit: int = 50,
    user: Any = None,
    current_pk: int | None = None,
    device: bool = False,
    count: bool = False,
) -> Page:
    """One page of ``auth.sessions`` rows (plus ``last_seen_at``) for the browser dashboard.

    Active sessions, or with ``history`` the ended ones (with ``ended_at`` / ``end_reason`` /
    ``ended_by``); ``device`` adds the ``device`` and ``location`` objects of ``extra.device`` (and
    lets ``filters`` name their fields). ``filters`` are query-filters, checked against the
    ``auth.sessions`` schema; ``user`` restricts the scope first (My sessions). Pages are keyset
    pages ordered by ``sort`` (a `SESSION_SORTS` key) then pk; ``cursor`` comes from a previous
    `Page`. Raises `QueryError` for bad filters, an unknown sort or a malformed cursor, and
    `QueryTimeout` past the query budget.

    ``count`` adds `Page.matches`: the matching rows on all pages, exact up to `MATCH_COUNT_CAP`,
    counted within `MATCH_COUNT_BUDGET` after the page (a slow count leaves the page without one).
    """
    if sort not in SESSION_SORTS or (sort == "ended" and not history):
        raise QueryError("sort", f"{sort!r}: not a sortable column")
    queryset, context, options = _session_table(
        history=history, device=device, user=user, current_pk=current_pk
    )
    return _keyset_page(
        spec=SESSION_SPEC,
        queryset=queryset,
        context=context,
        filters=filters,
        options=options,
        sort=SESSION_SORTS[sort],
        descending=descending,
        cursor=cursor,
        backwards=backwards,
        limit=limit,
        extra_fields=("last_seen_at",),
        count=count,
        scope=("sessions", user.pk if user is not None else None, current_pk, history, device),
    )


def session_count(
    *,
    filters: object = None,
    history: bool = False,
    user: Any = None,
    current_pk: int | None = None,
    device: bool = False,
    cap: int | None = MATCH_COUNT_CAP,
) -> MatchCount:
    """How many sessions `session_page` with the same arguments finds on all its pages.

    With the default ``cap`` it is the tables' display count (exact up to the cap, ``more`` beyond
    it; at most `MATCH_SCAN_LIMIT` rows read for filters checked in Python). ``cap=None`` counts
    every match exactly, however many -- the number a bulk action states before it acts (it can
    change before the action runs: sessions come and go). Runs under the query budget; raises
    `QueryError` and `QueryTimeout` like `session_page`.
    """
    queryset, context, options = _session_table(
        history=history, device=device, user=user, current_pk=current_pk
    )
    with query_budget():
        filtered = _filtered(
            spec=SESSION_SPEC, queryset=queryset(), context=context, filters=filters, options=options
        )
        return _match_count(filtered, SESSION_SPEC, context, cap)


def audit_page(
    *,
    filters: object = None,
    sort: str = "time",
    descending: bool = True,
    cursor: str | None = None,
    backwards: bool = False,
    limit: int = 50,
    count: bool = False,
) -> Page:
    """One keyset page of ``audit.query`` rows, newest first by default (see `session_page`).

    ``["username", "C^", ...]`` (the page's user filter) runs as index range scans on
    ``audit_user_ts`` (`query.prefixes.casefold_prefixes`): the audit table keeps no casefolded copy of the name.
    """
    if sort not in AUDIT_SORTS:
        raise QueryError("sort", f"{sort!r}: not a sortable column")
    return _keyset_page(
        spec=AUDIT_SPEC,
        queryset=AuditRecord.objects.all,
        context={},
        filters=filters,
        options={},
        sort=AUDIT_SORTS[sort],
        descending=descending,
        cursor=cursor,
        backwards=backwards,
        limit=limit,
        count=count,
        scope=("audit",),
    )
