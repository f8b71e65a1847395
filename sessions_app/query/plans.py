"""Statement shapes of exact queries whose plans do not depend on luck (`plan_query`).

An exact query is not always sent as one ``SELECT … WHERE <filters> ORDER BY … LIMIT …``: for three
shapes that plan badly, `plan_query` sends an equivalent statement whose plans read index ranges
bounded by the query itself -- on SQLite with or without statistics (``ANALYZE``), on PostgreSQL
with them. (PostgreSQL without statistics takes ``ended_at IS NULL`` for 0.5 % of the rows and may
still sort what it thinks are a few active rows: no statement shape corrects an estimate off by
200×; gathering statistics does, see bench/RESULTS-plans.md.) The rows, their order (ties and
nulls included: the order always ends with the primary key), counts and errors are those of the
plain statement; only the plan changes.

* **A short ``in`` list with ``order_by`` + ``limit``** (``credentials in [LOGIN_PASSWORD, API_KEY]``,
  newest first, 50 rows): when an index has the ``in`` column followed by the first sort column (a
  partial index the scope satisfies), each value becomes its own ``ORDER BY … LIMIT offset+limit``
  subquery -- an index range walked in order, reading about ``limit`` entries -- and the rows are
  ``pk IN (<value 1> UNION ALL <value 2> …)`` sorted again (at most values × (offset + limit) rows).
  Without it SQLite reads the ``in`` values through that index and sorts every match (~400k rows,
  1.3 s at 1M sessions), with or without statistics. The alternative
  of hiding the column from the planner (SQLite's unary ``+col IN (…)``) walks the sort index and
  filters: fast when the values are common, a scan of every row when they are rare or absent; the
  split is bounded by ``limit`` whatever the values' frequency, so it is the one used.
* **An OR of indexable branches, on SQLite**: SQLite's OR optimisation does not use partial indexes
  (each branch is planned without the scope's ``ended_at IS NULL``), so it scanned every active row
  (3.1 s at 1M). Every branch becomes its own subquery with the scope and the other filters,
  ``pk IN (<branch 1> UNION ALL <branch 2> …)`` (ordered and limited per branch when the query is
  bounded). A branch is indexable when one of its terms is an equality, ``in`` or range on the first
  column of an index the scope can use; otherwise the plain statement is kept (one scan instead of
  one per branch). PostgreSQL plans such ORs as a ``BitmapOr`` of the same indexes by itself.
* **An ``offset``** (``offset 500000 limit 50``): a deferred join -- the filters and the order run on
  the index alone, selecting only primary keys (``SELECT pk … ORDER BY … LIMIT … OFFSET …``, covered by
  the partial indexes that carry ``expires_at``), and only the ``limit`` rows are fetched, instead
  of fetching and discarding ``offset`` whole rows.

The outer statement of these forms has no condition but ``pk IN (…)``: no partial index applies to
it and an index scan over the whole table is never cheaper than the primary-key lookups, so the
planner cannot walk the table instead of the subquery's few keys. The subquery repeats the scope,
so the outer statement needs neither the scope nor the filters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from django.core.exceptions import EmptyResultSet, FieldDoesNotExist, FullResultSet
from django.db import connections
from django.db.models import F, Q, QuerySet
from django.db.models.expressions import OrderBy, RawSQL
from django.db.models.sql import Query

from sessions_app.query.compiler import FALSE, TRUE, Cond, _Const

#: Longest ``in`` list split into one ordered subquery per value.
SPLIT_MAX_VALUES = 8
#: Largest ``offset + limit`` for which each branch of a split is ordered and limited by itself;
#: past it the branches return every match and only the outer statement sorts and slices.
SPLIT_MAX_ROWS = 10_000
#: Lookups an index can seek on (``exact`` with a null value is ``isnull``, excluded below).
_SEEKABLE = frozenset({"exact", "in", "gt", "gte", "lt", "lte", "range"})

#: A term of a condition, as Django keeps the children of a ``Q``: a ``Q``, a ``(lookup, value)`` pair
#: (``Q(name__in=[…])``) or a conditional expression (``Q(GreaterThan(…))``), which no index seeks on.
Term = object


@dataclass(frozen=True)
class UsableIndexes:
    """The indexes a scope's statement can use: partial ones only when the scope implies their
    condition (SQLite and PostgreSQL ignore a partial index otherwise).

    ``leading``: columns that lead an index (primary key, unique and ``db_index`` columns
    included). ``pairs``: (first, second) columns of multi-column indexes, for "equal on the first,
    ordered by the second".
    """

    leading: frozenset[str]
    pairs: frozenset[tuple[str, str]]


def usable_indexes(queryset: QuerySet[Any]) -> UsableIndexes:
    """The `UsableIndexes` of ``queryset``'s model under ``queryset``'s own conditions.

    A partial index applies when each term of its condition is, as SQL, one of the terms AND-ed at
    the top of the scope's WHERE clause (``ended_at IS NULL`` of the active sessions): the test the
    databases make themselves, kept literal so that it never claims an index they would not use.
    """
    compiler = queryset.query.get_compiler(queryset.db)
    scope = _where_terms(compiler, queryset.query.where) or frozenset()
    leading: set[str] = set()
    pairs: set[tuple[str, str]] = set()
    for columns, needed in _model_indexes(queryset.model, queryset.db):
        if needed is None or needed <= scope:
            leading.add(columns[0])
            if len(columns) > 1:
                pairs.add((columns[0], columns[1]))
    return UsableIndexes(frozenset(leading), frozenset(pairs))


SqlTerm = tuple[str, tuple[Any, ...]]


def _where_terms(compiler: Any, where: Any) -> frozenset[SqlTerm] | None:
    """The terms AND-ed at the top of a WHERE node, as (SQL, parameters); None: not a plain AND."""
    if where.negated or (where.connector != "AND" and len(where.children) > 1):
        return None
    out = set()
    for child in where.children:
        try:
            sql, params = compiler.compile(child)
        except (EmptyResultSet, FullResultSet):
            return None
        out.add((sql, tuple(params)))
    return frozenset(out)


#: (model, database alias) -> the model's indexes as (columns, terms of the partial condition or
#: None): the same for every query, so compiled once per process.
_INDEXES: dict[tuple[Any, str], list[tuple[list[str], frozenset[SqlTerm] | None]]] = {}


def _model_indexes(model: Any, alias: str) -> list[tuple[list[str], frozenset[SqlTerm] | None]]:
    key = (model, alias)
    if key not in _INDEXES:
        meta = model._meta
        found: list[tuple[list[str], frozenset[SqlTerm] | None]] = [([meta.pk.column], None)]
        found += [([f.column], None) for f in meta.concrete_fields if f.unique or f.db_index]
        for index in meta.indexes:
            if not index.fields:
                continue
            columns = [meta.get_field(name.lstrip("-")).column for name in index.fields]
            needed: frozenset[SqlTerm] | None = None
            if index.condition is not None:
                query = Query(model)
                needed = _where_terms(query.get_compiler(alias), query.build_where(index.condition))
                if needed is None:
                    continue  # a condition no scope can be seen to imply
            found.append((columns, needed))
        _INDEXES[key] = found
    return _INDEXES[key]


def _conjuncts(cond: Q) -> list[Term]:
    """The terms AND-ed at the top of ``cond`` (``cond`` itself when it is not an AND)."""
    if cond.connector != Q.AND or cond.negated:
        return [cond]
    out: list[Term] = []
    for child in cond.children:
        if isinstance(child, Q) and child.connector == Q.AND and not child.negated:
            out.extend(_conjuncts(child))
        else:
            out.append(child)
    return out


def _column(model: Any, name: str) -> str | None:
    """The column of the ORM field ``name`` of ``model`` (None: a relation path or no such field)."""
    if name == "pk":
        return str(model._meta.pk.column)
    try:
        fld = model._meta.get_field(name)
    except FieldDoesNotExist:
        return None
    return getattr(fld, "column", None)


def _seek(model: Any, term: Term) -> tuple[str, str, Any] | None:
    """(column, lookup, value) of a ``field__lookup=value`` term an index could seek on, else None."""
    if not isinstance(term, tuple):
        return None
    name, value = term
    field_name, _, lookup = str(name).partition("__")
    lookup = lookup or "exact"
    if lookup not in _SEEKABLE or value is None or (lookup == "in" and not value):
        return None
    column = _column(model, field_name)
    return (column, lookup, value) if column is not None else None


def _indexable(model: Any, branch: Term, indexes: UsableIndexes) -> bool:
    """Whether one of the AND-ed terms of ``branch`` seeks on the first column of a usable index."""
    terms = _conjuncts(branch) if isinstance(branch, Q) else [branch]
    for term in terms:
        seek = _seek(model, term)
        if seek is not None and seek[0] in indexes.leading:
            return True
    return False


class _Named(Protocol):
    name: str


def _first_order_column(model: Any, order: Sequence[OrderBy]) -> str | None:
    if not order or not isinstance(order[0].expression, F):
        return None
    # ``F(name)`` keeps ``name`` as an attribute, which django-stubs does not declare.
    return _column(model, cast(_Named, order[0].expression).name)


@dataclass(frozen=True)
class _Split:
    """``rest AND (branch 1 OR branch 2 …)``; ``ordered``: each branch ordered and limited."""

    rest: list[Term]
    branches: list[Q]
    ordered: bool


def _choose_split(
    queryset: QuerySet[Any], terms: list[Term], order: Sequence[OrderBy], stop: int | None, vendor: str
) -> _Split | None:
    model = queryset.model
    bounded = stop is not None and stop <= SPLIT_MAX_ROWS
    ors = [
        (i, t)
        for i, t in enumerate(terms)
        if vendor == "sqlite"
        and isinstance(t, Q)
        and t.connector == Q.OR
        and not t.negated
        and len(t.children) > 1
    ]
    ins = []
    if bounded:
        for i, t in enumerate(terms):
            seek = _seek(model, t)
            if seek is not None and seek[1] == "in" and 1 < len(seek[2]) <= SPLIT_MAX_VALUES:
                ins.append(i)
    if not ors and not ins:
        return None
    indexes = usable_indexes(queryset)
    for i, t in ors:
        branches = t.children
        if all(_indexable(model, b, indexes) for b in branches):
            return _Split(
                terms[:i] + terms[i + 1 :],
                [b if isinstance(b, Q) else Q(b) for b in branches],
                bounded,
            )
    first = _first_order_column(model, order)
    for i in ins:
        term = terms[i]
        assert isinstance(term, tuple)  # `_seek` seeks only on (lookup, value) pairs
        name, values = term
        field_name = str(name).partition("__")[0]
        column = _column(model, field_name)
        if first is not None and (column, first) in indexes.pairs:
            return _Split(terms[:i] + terms[i + 1 :], [Q(**{field_name: v}) for v in values], True)
    return None


def _union(branches: Sequence[QuerySet[Any]], alias: str) -> RawSQL | None:
    """``SELECT * FROM (<branch>) UNION ALL …`` of the branches, each selecting only the primary key
    (None: every branch is empty). ``*``, not a column name: a name the derived table does not have
    would silently resolve to the outer statement's column on SQLite (a correlated subquery)."""
    qn = connections[alias].ops.quote_name
    parts: list[str] = []
    params: list[Any] = []
    for n, branch in enumerate(branches):
        try:
            sql, branch_params = branch.query.get_compiler(alias).as_sql()
        except EmptyResultSet:
            continue
        parts.append(f"SELECT * FROM ({sql}) {qn(f'_branch{n}')}")
        params.extend(branch_params)
    if not parts:
        return None
    return RawSQL(" UNION ALL ".join(parts), params)


def _unscoped(queryset: QuerySet[Any]) -> QuerySet[Any]:
    """``queryset`` without its conditions (its annotations kept), for a statement on ``pk IN (…)``."""
    outer = queryset.all()
    outer.query.clear_where()
    return outer


def plan_query(
    queryset: QuerySet[Any],
    cond: Cond,
    order: Sequence[OrderBy],
    *,
    offset: int = 0,
    stop: int | None = None,
    count: bool = False,
) -> QuerySet[Any]:
    """The statement of an exact query, shaped as the module docstring explains: its rows, ordered by
    ``order`` and sliced ``[offset:stop]``, or with ``count`` its matches (unordered, unsliced: the
    caller counts them). ``queryset`` is the scope, ``cond`` the compiled filters."""
    if cond is FALSE or queryset.query.is_empty():
        return queryset.none()  # (an empty scope must never lose its emptiness with its conditions)
    base = queryset if cond is TRUE else queryset.filter(cond)
    terms = [] if isinstance(cond, _Const) else _conjuncts(cond)
    vendor = connections[queryset.db].vendor
    split = _choose_split(queryset, terms, order, None if count else stop, vendor) if terms else None
    if split is not None:
        rest = queryset.filter(*split.rest) if split.rest else queryset
        if split.ordered:
            branches = [rest.filter(b).order_by(*order).values_list("pk")[:stop] for b in split.branches]
        else:
            branches = [rest.filter(b).order_by().values_list("pk") for b in split.branches]
        union = _union(branches, queryset.db)
        if union is None:
            return queryset.none()
        matched = _unscoped(queryset).filter(pk__in=union)
        return matched.order_by() if count else matched.order_by(*order)[offset:stop]
    if count:
        return base.order_by()
    if stop is not None and offset > 0:
        keys = base.order_by(*order).values_list("pk")[offset:stop]
        return _unscoped(queryset).filter(pk__in=keys).order_by(*order)
    return base.order_by(*order)[offset:stop]
