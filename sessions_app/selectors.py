"""All reads. Selectors scope by owner first, then apply the caller's query in the database."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import CharField, Count, F, Q, QuerySet
from django.db.models.functions import Cast, TruncHour
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app.db import within_query_budget
from sessions_app.models import ApiKey, AuditEvent, AuditRecord, UserSession
from sessions_app.query import make_predicate, parse_filters, parse_options
from sessions_app.query.ast import QueryOptions
from sessions_app.query.compiler import FALSE, TRUE, Compiler, QuerySpec, iter_rows, run_query
from sessions_app.query.errors import QueryError
from sessions_app.query.schema import check
from sessions_app.specs import API_KEY_SPEC, AUDIT_SPEC, SESSION_SPEC


def session_scope(
    *, history: bool = False, device: bool = False, user: Any = None, current_pk: int | None = None
) -> tuple[QuerySet[UserSession], dict[str, Any]]:
    """The sessions a query may see, and the row context (``current``, history and device keys)."""
    qs = UserSession.objects.all() if history else UserSession.objects.active()
    if user is not None:
        qs = qs.filter(user=user)
    return qs, {"current_pk": current_pk, "history": history, "device": device}


def session_query(
    *, filters: object = None, options: object = None, user: Any = None, current_pk: int | None = None
) -> list[dict[str, Any]] | dict[str, Any] | int:
    """``auth.sessions``: active sessions (all with ``extra.history``), filtered in the database.

    ``user`` restricts the scope to one user's sessions (``auth.my_sessions``): the restriction is
    applied before the caller's filters, which cannot widen it. ``current_pk`` is the caller's own
    session. ``extra.device`` adds the ``device`` and ``location`` objects (see `specs`). Raises
    `QueryError` / `MatchNotFound`.
    """

    def scope(opts: QueryOptions) -> tuple[QuerySet[UserSession], Mapping[str, Any]]:
        return session_scope(
            history=opts.extra.get("history") is True,
            device=opts.extra.get("device") is True,
            user=user,
            current_pk=current_pk,
        )

    user_key = user.pk if user is not None else None
    return run_query(SESSION_SPEC, scope, filters, options, cache_key=("sessions", user_key, current_pk))


def session_rows(
    *, history: bool = False, device: bool = False, user: Any = None, current_pk: int | None = None
) -> list[dict[str, Any]]:
    """Every row of the scope as ``auth.sessions`` dicts, oldest first (for the in-memory engine)."""
    qs, context = session_scope(history=history, device=device, user=user, current_pk=current_pk)
    fields = SESSION_SPEC.row_fields_for(QueryOptions(extra={"device": device}))
    return list(iter_rows(qs.order_by("created_at", "id"), SESSION_SPEC, context, fields=fields))


def api_key_query(*, filters: object = None, options: object = None, user: Any = None) -> Any:
    """``api_key.query``: keys (all, or ``user``'s own), filtered in the database."""

    def scope(opts: QueryOptions) -> tuple[QuerySet[ApiKey], Mapping[str, Any]]:
        qs = ApiKey.objects.annotate(user_identifier=Cast("user_id", output_field=CharField()))
        return (qs.filter(user=user) if user is not None else qs), {}

    return run_query(
        API_KEY_SPEC, scope, filters, options, cache_key=("api_keys", user.pk if user is not None else None)
    )


def audit_query(*, filters: object = None, options: object = None) -> Any:
    """``audit.query``: audit records, filtered in the database (``event_data`` paths in Python)."""

    def scope(opts: QueryOptions) -> tuple[QuerySet[AuditRecord], Mapping[str, Any]]:
        return AuditRecord.objects.all(), {}

    return run_query(AUDIT_SPEC, scope, filters, options, cache_key=("audit",))


# --- browser pages: keyset pages, chart aggregates, single objects -----------------------------------
#
# The dashboard pages with a cursor, never OFFSET: a page is "the next `limit` rows after this
# (sort value, pk)", which an index on (column, id) answers by reading `limit` entries however deep
# the page is. Filters are compiled by the same query engine as the APIs (same schema, same errors).


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


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a keyset-paginated table; the cursors are opaque strings (None: no such page)."""

    rows: list[dict[str, Any]]
    next_cursor: str | None
    prev_cursor: str | None


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


def _keyset_page(
    *,
    spec: QuerySpec,
    queryset: QuerySet[Any],
    context: Mapping[str, Any],
    filters: object,
    options: object,
    sort: Sort,
    descending: bool,
    cursor: str | None,
    backwards: bool,
    limit: int,
    extra_fields: tuple[str, ...] = (),
) -> Page:
    tree = parse_filters(filters)
    opts = parse_options(options)
    schema = spec.schema_for(opts)
    tree, opts = check(tree, opts, schema)
    compiler = Compiler(spec, schema, context)
    cond, exact = compiler.compile(tree)
    if cond is FALSE:
        return Page([], None, None)
    qs = queryset if cond is TRUE else queryset.filter(cond)
    # Backwards ("previous page"): walk the reversed order from the cursor, then flip the rows.
    walk_desc = descending != backwards
    if cursor is not None:
        value, pk = _decode_cursor(cursor, sort)
        qs = qs.filter(_after(sort, walk_desc, value, pk))
    qs = qs.order_by(*_ordering(sort, walk_desc))
    row_fields = spec.row_fields_for(opts)
    fields = (*row_fields, *extra_fields, sort.column, "pk")
    n = len(row_fields)
    found: list[tuple[dict[str, Any], Any, int]] = []
    source = qs.values_list(*fields)
    if exact:
        values_iter: Any = iter(source[: limit + 1])
    else:
        values_iter = source.iterator(chunk_size=spec.chunk_size)
        predicate = make_predicate(tree)
    for values in values_iter:
        row = spec.build_row(values[:n], context)
        if not exact and not predicate(row):
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


@within_query_budget
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
) -> Page:
    """One page of ``auth.sessions`` rows (plus ``last_seen_at``) for the browser dashboard.

    Active sessions, or with ``history`` the ended ones (with ``ended_at`` / ``end_reason`` /
    ``ended_by``); ``device`` adds the ``device`` and ``location`` objects of ``extra.device`` (and
    lets ``filters`` name their fields). ``filters`` are query-filters, checked against the
    ``auth.sessions`` schema; ``user`` restricts the scope first (My sessions). Pages are keyset
    pages ordered by ``sort`` (a `SESSION_SORTS` key) then pk; ``cursor`` comes from a previous
    `Page`. Raises `QueryError` for bad filters, an unknown sort or a malformed cursor.
    """
    if sort not in SESSION_SORTS or (sort == "ended" and not history):
        raise QueryError("sort", f"{sort!r}: not a sortable column")
    queryset, context = session_scope(history=history, device=device, user=user, current_pk=current_pk)
    if history:
        queryset = queryset.filter(ended_at__isnull=False)
    extra = {name: True for name, on in (("history", history), ("device", device)) if on}
    return _keyset_page(
        spec=SESSION_SPEC,
        queryset=queryset,
        context=context,
        filters=filters,
        options={"extra": extra} if extra else {},
        sort=SESSION_SORTS[sort],
        descending=descending,
        cursor=cursor,
        backwards=backwards,
        limit=limit,
        extra_fields=("last_seen_at",),
    )


@within_query_budget
def audit_page(
    *,
    filters: object = None,
    sort: str = "time",
    descending: bool = True,
    cursor: str | None = None,
    backwards: bool = False,
    limit: int = 50,
) -> Page:
    """One keyset page of ``audit.query`` rows, newest first by default (see `session_page`)."""
    if sort not in AUDIT_SORTS:
        raise QueryError("sort", f"{sort!r}: not a sortable column")
    return _keyset_page(
        spec=AUDIT_SPEC,
        queryset=AuditRecord.objects.all(),
        context={},
        filters=filters,
        options={},
        sort=AUDIT_SORTS[sort],
        descending=descending,
        cursor=cursor,
        backwards=backwards,
        limit=limit,
    )


def session_get_active(*, public_id: str, user: Any = None) -> UserSession | None:
    """The active session with this public id (only among ``user``'s own when given), or None."""
    qs = UserSession.objects.active(timezone.now()).filter(public_id=public_id)
    if user is not None:
        qs = qs.filter(user=user)
    return qs.first()


def session_counts_by_credentials(*, now: dt.datetime | None = None) -> list[tuple[str, int]]:
    """Active sessions per credential type, most frequent first (the dashboard's bar chart)."""
    counts = (
        UserSession.objects.active(now or timezone.now())
        .values_list("credentials")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return sorted(((str(c), int(n)) for c, n in counts), key=lambda item: (-item[1], item[0]))


def audit_logins_per_hour(
    *, now: dt.datetime | None = None, hours: int = 24
) -> list[tuple[dt.datetime, int, int]]:
    """``(hour, successful, failed)`` AUTHENTICATION audit records for each of the last ``hours``
    hours (oldest first, the current partial hour last, empty hours included)."""
    now = now or timezone.now()
    end = now.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    start = end - dt.timedelta(hours=hours)
    buckets = {start + dt.timedelta(hours=i): [0, 0] for i in range(hours)}
    counts = (
        AuditRecord.objects.filter(event=AuditEvent.AUTHENTICATION, timestamp__gte=start, timestamp__lt=end)
        .annotate(hour=TruncHour("timestamp", tzinfo=dt.UTC))
        .values_list("hour", "success")
        .annotate(n=Count("pk"))
        .order_by()
    )
    for hour, success, n in counts:
        bucket = buckets.get(hour.astimezone(dt.UTC))
        if bucket is not None:
            bucket[0 if success else 1] += int(n)
    return [(hour, ok, failed) for hour, (ok, failed) in buckets.items()]


def api_key_get(*, key_id: int, user: Any = None) -> ApiKey | None:
    """The API key ``key_id`` (only among ``user``'s own when given), or None."""
    qs = ApiKey.objects.select_related("user").filter(pk=key_id)
    if user is not None:
        qs = qs.filter(user=user)
    return qs.first()


def api_key_rows(*, user: Any = None) -> list[dict[str, Any]]:
    """``api_key.query`` rows (all, or ``user``'s own), newest first."""
    rows = api_key_query(user=user, options={"order_by": ["-created_at", "-id"]})
    assert isinstance(rows, list)
    return rows


def totp_device_get(*, user: Any, confirmed: bool | None = True) -> TOTPDevice | None:
    """The user's TOTP device (confirmed, unconfirmed, or either with ``confirmed=None``)."""
    qs = TOTPDevice.objects.filter(user=user)
    if confirmed is not None:
        qs = qs.filter(confirmed=confirmed)
    return qs.order_by("-pk").first()


def user_get_by_username(*, username: object) -> Any:
    """The user with this username, or None (also for anything that cannot be a username)."""
    if not isinstance(username, str) or not 1 <= len(username) <= 150:
        return None
    model = get_user_model()
    return model._default_manager.filter(**{model.USERNAME_FIELD: username}).first()
