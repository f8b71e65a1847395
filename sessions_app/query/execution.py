"""Run a query on the database: `run_query` validates it, compiles it (`compiler`), shapes its
statement (`plans`), fetches the rows and applies the options the database did not; it keeps the
compiled statements of exact queries (`_STATEMENTS`). `run_in_memory` runs the same query through
the in-memory engine, for tests and benchmarks.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connections, router
from django.db.models import QuerySet

from sessions_app.db.connections import query_budget
from sessions_app.query import engine
from sessions_app.query.ast import Node, QueryOptions
from sessions_app.query.compiler import FALSE, TRUE, Compiler, QuerySpec
from sessions_app.query.errors import MatchNotFound, QueryError
from sessions_app.query.plans import plan_query
from sessions_app.query.schema import check


def iter_rows(
    qs: QuerySet[Any],
    spec: QuerySpec,
    context: Mapping[str, Any],
    *,
    stream: bool = True,
    fields: tuple[str, ...] | None = None,
) -> Iterator[dict[str, Any]]:
    """Result rows of ``qs``. ``stream`` fetches in chunks (a server-side cursor on PostgreSQL) for
    unbounded results; a bounded page is fetched in one round trip. ``fields``: the ORM fields to
    fetch (`QuerySpec.row_fields_for` the query's options; default `QuerySpec.row_fields`)."""
    values_qs = qs.values_list(*(fields or spec.row_fields))
    for values in values_qs.iterator(chunk_size=spec.chunk_size) if stream else values_qs:
        yield spec.build_row(values, context)


Scope = Callable[[QueryOptions], tuple[QuerySet[Any], Mapping[str, Any]]]


def _is_sqlite_datetime(converter: Any) -> bool:
    return getattr(converter, "__name__", "") == "convert_datetimefield_value" and "sqlite3" in getattr(
        converter, "__module__", ""
    )


def _fast_datetime(value: Any, expression: Any, connection: Any) -> Any:
    """SQLite's stored ``YYYY-MM-DD HH:MM:SS[.ffffff]`` (UTC) as an aware datetime.

    Same result as Django's converter (``parse_datetime`` + ``make_aware``) for the values Django
    writes, at a tenth of the cost, which matters when a page has many rows.
    """
    if value is None or isinstance(value, dt.datetime):
        return (
            value.replace(tzinfo=dt.UTC) if isinstance(value, dt.datetime) and value.tzinfo is None else value
        )
    parsed = dt.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


class _Statement:
    """A compiled SELECT: SQL text, parameters and the converters of each output column."""

    __slots__ = ("converters", "params", "sql")

    sql: str | None

    def __init__(self, qs: QuerySet[Any], alias: str) -> None:
        compiler = qs.query.get_compiler(alias)
        try:
            self.sql, params = compiler.as_sql()
        except EmptyResultSet:
            # Django proved the WHERE clause false for every row (an empty ``__in``): nothing to
            # run, no row, whatever the database. Without this, the cached path answered a 500.
            self.sql, params = None, ()
        self.params = tuple(params)
        converters = compiler.get_converters([col for col, _, _ in compiler.select])
        self.converters = tuple(
            (pos, ([_fast_datetime if _is_sqlite_datetime(c) else c for c in convs], expression))
            for pos, (convs, expression) in converters.items()
        )

    def rows(self, alias: str) -> list[tuple[Any, ...]]:
        if self.sql is None:
            return []
        connection = connections[alias]
        with connection.cursor() as cursor:
            cursor.execute(self.sql, self.params)
            fetched = cursor.fetchall()
        if not self.converters:
            return [tuple(r) for r in fetched]
        out = []
        for raw in fetched:
            row = list(raw)
            for pos, (convs, expression) in self.converters:
                value = row[pos]
                for converter in convs:
                    value = converter(value, expression, connection)
                row[pos] = value
            out.append(tuple(row))
        return out


#: A cached query: the statement of its rows or of its count, its options and its row context.
_Cached = tuple[_Statement | None, _Statement | None, QueryOptions, Mapping[str, Any]]

#: Compiled statements of exact queries, keyed by the caller's query text and scope. Building a
#: query with the ORM costs far more than running an indexed one (~0.5-1 ms against ~0.1 ms), and
#: dashboards and scripts repeat the same queries: a repeated query skips parsing, checking and
#: compiling. Only queries whose SQL depends on nothing but the key are cached (no clock in the
#: parameters: "not expired" is ``expires_at > CURRENT_TIMESTAMP``).
_STATEMENTS: OrderedDict[tuple[Any, ...], _Cached] = OrderedDict()
STATEMENT_CACHE_SIZE = 512


def _cache_key(
    spec: QuerySpec, cache_key: tuple[Any, ...], filters: object, options: object
) -> tuple[Any, ...] | None:
    try:
        text = json.dumps([filters, options], sort_keys=True, allow_nan=True, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return None
    alias = router.db_for_read(spec.model)
    return (id(spec), alias, connections[alias].vendor, cache_key, text)


def _from_statement(
    spec: QuerySpec,
    statement: _Cached,
    alias: str,
) -> list[dict[str, Any]] | dict[str, Any] | int:
    select, count, opts, context = statement
    if opts.count:
        assert count is not None
        counted = count.rows(alias)
        value = counted[0][0] if counted else 0  # no row: a statement proved empty, see `_Statement`
        return min(int(value), 1) if opts.get else int(value)
    assert select is not None
    rows = [spec.build_row(values, context) for values in select.rows(alias)]
    return _finish(rows, opts)


def _finish(rows: list[dict[str, Any]], opts: QueryOptions) -> list[dict[str, Any]] | dict[str, Any]:
    if opts.select:
        rows = [engine.project(row, opts.select) for row in rows]
    if opts.prefix:
        rows = [_strip_prefix(row, opts.prefix) for row in rows]
    if opts.get:
        if not rows:
            raise MatchNotFound()
        return rows[0]
    return rows


def run_query(
    spec: QuerySpec,
    scope: Scope,
    filters: object,
    options: object,
    *,
    cache_key: tuple[Any, ...] | None = None,
) -> list[dict[str, Any]] | dict[str, Any] | int:
    """Run ``filters`` / ``options`` with ``spec``; the database filters, orders, counts and pages.

    ``scope`` maps the validated options to the caller's queryset (already restricted to what the
    caller may see; the filters are AND-ed inside it and cannot widen it) and the row-building
    context (e.g. the caller's session pk for ``current``). Returns what the in-memory engine returns
    for the same rows -- a list, a single row for ``get``, an int for ``count`` -- or raises
    `QueryError`.

    ``cache_key`` identifies the scope (e.g. the caller's user and session): with it, the compiled
    statement of an exact, bounded query is kept and a repeated identical query runs it directly.
    """
    from sessions_app.query.parser import parse_filters, parse_options

    key = _cache_key(spec, cache_key, filters, options) if cache_key is not None else None
    if key is not None:
        hit = _STATEMENTS.get(key)
        if hit is not None:
            _STATEMENTS.move_to_end(key)
            with query_budget():
                return _from_statement(spec, hit, key[1])
    tree: Node = parse_filters(filters)
    opts = parse_options(options)
    schema = spec.schema_for(opts)
    tree, opts = check(tree, opts, schema)
    fields = spec.row_fields_for(opts)
    with query_budget():  # the database work, after validation: a refused query runs no SQL
        queryset, context = scope(opts)
        compiler = Compiler(spec, schema, context)
        cond, exact = compiler.compile(tree)
        if opts.force_sql_filters and not exact:
            leaf = compiler.first_inexact
            raise QueryError(
                leaf.where if leaf else "filters",
                f"{leaf.operator if leaf else 'filter'!r} on {leaf.path.raw if leaf else ''!r} cannot be "
                "evaluated by the database (options.force_sql_filters)",
            )
        order = compiler.order_by(opts)

        if exact:
            stop = opts.offset + opts.limit if opts.limit else None
            if opts.get:
                stop = opts.offset + 1
            # The order does not change a count: no sort in its statement.
            planned = plan_query(queryset, cond, order, offset=opts.offset, stop=stop, count=opts.count)
            if key is not None and cond is not FALSE:
                alias = key[1]
                statement: _Cached
                if opts.count:
                    inner = planned[:1] if opts.get else planned
                    counted = _Statement(inner.values_list("pk"), alias)
                    if counted.sql is not None:
                        counted.sql = f"SELECT COUNT(*) FROM ({counted.sql}) counted"
                    counted.converters = ()
                    statement = (None, counted, opts, context)
                else:
                    statement = (_Statement(planned.values_list(*fields), alias), None, opts, context)
                _STATEMENTS[key] = statement
                if len(_STATEMENTS) > STATEMENT_CACHE_SIZE:
                    _STATEMENTS.popitem(last=False)
                return _from_statement(spec, statement, alias)
            if opts.count:
                if opts.get:
                    return 1 if planned.exists() else 0
                return planned.count()
            rows = list(iter_rows(planned, spec, context, stream=stop is None, fields=fields))
        else:
            if cond is FALSE:
                qs = queryset.none()
            elif cond is TRUE:
                qs = queryset
            else:
                qs = queryset.filter(cond)
            qs = qs.order_by(*order)
            predicate = engine.make_predicate(tree, compiler.budget)
            matched = (row for row in iter_rows(qs, spec, context, fields=fields) if predicate(row))
            if opts.count:
                if opts.get:
                    return 1 if next(matched, None) is not None else 0
                return sum(1 for _ in matched)
            rows = []
            skipped = 0
            want = 1 if opts.get else opts.limit
            for row in matched:
                if skipped < opts.offset:
                    skipped += 1
                    continue
                rows.append(row)
                if want and len(rows) >= want:
                    break
        return _finish(rows, opts)


def _strip_prefix(row: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in row.items()}


def run_in_memory(
    spec: QuerySpec, rows: Sequence[dict[str, Any]], filters: object, options: object
) -> list[dict[str, Any]] | dict[str, Any] | int:
    """The same query through the in-memory engine, with the same schema checks (for tests/benchmarks)."""
    from sessions_app.query.parser import parse_filters, parse_options

    tree: Node = parse_filters(filters)
    opts = parse_options(options)
    schema = spec.schema_for(opts)
    tree, opts = check(tree, opts, schema)
    result = engine.execute(list(rows), tree, opts)
    if opts.prefix and not isinstance(result, int):
        if isinstance(result, dict):
            return _strip_prefix(result, opts.prefix)
        return [_strip_prefix(r, opts.prefix) for r in result]
    return result
