"""Compile parsed, schema-checked queries into Django ORM queries (the only Django-aware part).

A `QuerySpec` tells the compiler how the declared fields of a method (`schema.Schema`) map onto the
columns of a model: each declared path has a `Column` with the ORM expression that holds the value,
an optional *presence* condition (a row whose key is missing never matches, so the presence
condition is AND-ed into every leaf), and optionally a column holding the value's ``casefold()``.

Every leaf is compiled to a ``Q`` with *identical* semantics to the in-memory engine, on SQLite and
PostgreSQL alike:

* string columns compare by code point on both databases (`fields.BinaryCharField`);
* ``^`` is a half-open range ``[prefix, successor(prefix))`` -- exact and index-friendly -- instead of
  ``LIKE``, which SQLite evaluates case-insensitively; ``$`` compares ``RIGHT(col, len)``;
* null, missing keys, Python equality across types (``true == 1``, ``1 == 1.0``) and out-of-range
  integers are resolved at compile time, so no parameter the database cannot represent is sent;
* boolean columns and columns with a closed set of values (``credentials``) are compiled by
  evaluating the leaf with the engine itself on every possible value, then selecting those values --
  exact for every operator, regexes and ``C`` variants included;
* ``C`` operators use the casefolded column where the model keeps one.

Leaves that cannot be expressed exactly (``~`` on free text, ``C`` operators without a casefolded
column, comparisons of whole objects) are evaluated in Python after a SQL *prefilter* that is a
superset of the answer (for ``~``, the pattern's literal prefix as a range). With
``force_sql_filters`` such a leaf is a `QueryError` instead.

Plans that do not depend on luck
--------------------------------

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

import datetime as dt
import json
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import EmptyResultSet, FieldDoesNotExist, FullResultSet
from django.db import connections, router
from django.db.models import BooleanField, Case, F, IntegerField, Q, QuerySet, Value, When
from django.db.models.expressions import Expression, OrderBy, RawSQL
from django.db.models.functions import Cast, Length, Right, StrIndex
from django.db.models.sql import Query

from sessions_app.db.connections import query_budget
from sessions_app.query import engine
from sessions_app.query.ast import AnyOf, Leaf, Node, Path, QueryOptions
from sessions_app.query.errors import MatchNotFound, QueryError
from sessions_app.query.schema import Field, FieldType, Schema, check, resolve_order

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_CODE_POINT = 0x10FFFF


class _Const:
    """TRUE / FALSE of the compiled tree. ``Q()`` cannot stand for TRUE: ``Q() | q`` is ``q``."""

    def __init__(self, value: bool) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "TRUE" if self.value else "FALSE"


TRUE = _Const(True)
FALSE = _Const(False)
Cond = Q | _Const


def _and(*parts: Cond) -> Cond:
    out: Cond = TRUE
    for part in parts:
        if part is FALSE:
            return FALSE
        if part is TRUE:
            continue
        out = part if out is TRUE else out & part  # type: ignore[operator]
    return out


def _or(*parts: Cond) -> Cond:
    out: Cond = FALSE
    for part in parts:
        if part is TRUE:
            return TRUE
        if part is FALSE:
            continue
        out = part if out is FALSE else out | part  # type: ignore[operator]
    return out


def _not(part: Cond) -> Cond:
    if isinstance(part, _Const):
        return FALSE if part.value else TRUE
    return ~part


@dataclass(frozen=True)
class Column:
    """Where a declared field lives in the model.

    ``name``: ORM field name (or annotation name) holding the value. ``present``: condition under
    which the row has the key at all (None: always). ``folded``: ORM field holding ``casefold()`` of
    the value. ``domain``: the closed set of values the column can hold (booleans implicitly).
    ``condition``: for a computed boolean, the ``Q`` that makes it true (``current``), or `TRUE` /
    `FALSE` when it holds for every row or for none (``current`` of a caller without a session):
    never a ``Q`` that is always false, such as ``Q(pk__in=[])``, which Django refuses to compile.
    ``constant``: the value every row has (no column at all).
    """

    name: str | None = None
    present: Q | None = None
    folded: str | None = None
    domain: tuple[Any, ...] | None = None
    condition: Callable[[Mapping[str, Any]], Cond] | None = None
    constant: Any = None


@dataclass(frozen=True)
class QuerySpec:
    """A query method's schema, its column map, its default order and its row builder."""

    schema: Schema
    columns: Mapping[tuple[str, ...], Column]
    default_order: tuple[str, ...]
    #: ORM field names fetched per row, and the function that turns them into a result row.
    row_fields: tuple[str, ...]
    build_row: Callable[[tuple[Any, ...], Mapping[str, Any]], dict[str, Any]]
    #: The model queried (for the database router and the statement cache).
    model: Any = None
    extra_schema: Callable[[QueryOptions], Schema] | None = None
    #: ORM fields fetched after `row_fields` only when an ``options.extra`` switch is true
    #: (``{"device": (...)}``): a default row costs no column it does not show. ``build_row`` finds
    #: them after the `row_fields` values; the scope's context says which switches are on.
    extra_row_fields: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    chunk_size: int = 2000

    def schema_for(self, options: QueryOptions) -> Schema:
        return self.extra_schema(options) if self.extra_schema else self.schema

    def row_fields_for(self, options: QueryOptions) -> tuple[str, ...]:
        """`row_fields`, then the `extra_row_fields` of every ``options.extra`` switch that is on."""
        fields = self.row_fields
        for key, more in self.extra_row_fields.items():
            if options.extra.get(key) is True:
                fields += more
        return fields


class Compiler:
    """Compiles one query for one caller (``context`` carries e.g. the caller's session pk)."""

    def __init__(self, spec: QuerySpec, schema: Schema, context: Mapping[str, Any]) -> None:
        self.spec = spec
        self.schema = schema
        self.context = context
        self.first_inexact: Leaf | None = None
        #: Shared by every regex this query evaluates in Python (F11: bounded per query, not per row).
        self.budget = engine.RegexBudget()

    # --- filters -----------------------------------------------------------------------------

    def compile(self, node: Node) -> tuple[Cond, bool]:
        if isinstance(node, Leaf):
            cond, exact = self.leaf(node)
            if not exact and self.first_inexact is None:
                self.first_inexact = node
            return cond, exact
        if isinstance(node, AnyOf):
            parts = [self.compile(b) for b in node.branches]
            return _or(*(c for c, _ in parts)), all(e for _, e in parts)
        parts = [self.compile(c) for c in node.children]
        return _and(*(c for c, _ in parts)), all(e for _, e in parts)

    def leaf(self, leaf: Leaf) -> tuple[Cond, bool]:
        fld = self.schema.get(leaf.path.segments)
        assert fld is not None  # schema.check rejected undeclared paths
        col = self.spec.columns.get(leaf.path.segments, _ALWAYS)
        present: Cond = col.present if col.present is not None else TRUE
        computed = col.condition is not None or col.constant is not None
        if fld.type in (FieldType.OBJECT, FieldType.ANY) or (col.name is None and not computed):
            return present, False  # whole objects and free-form JSON are compared in Python
        if col.condition is not None or fld.type is FieldType.BOOLEAN or col.domain is not None:
            return _and(present, self._by_domain(leaf, fld, col)), True
        if leaf.casefold:
            if col.folded is None or leaf.op == "~":
                return present, False
            return _and(present, self._op(leaf, fld, col.folded, _casefold(leaf.value))), True
        if leaf.op == "~":
            prefix = regex_literal_prefix(leaf.value)
            if not prefix:
                return present, False
            return _and(present, self._startswith(col.name, prefix)), False
        return _and(present, self._op(leaf, fld, col.name, leaf.value)), True

    def _by_domain(self, leaf: Leaf, fld: Field, col: Column) -> Cond:
        """Evaluate the leaf with the engine on every value the column can hold."""
        domain: list[Any] = list(col.domain) if col.domain is not None else [False, True]
        if fld.nullable:
            domain.append(None)
        probe = Leaf(_PROBE_PATH, leaf.op, leaf.casefold, leaf.value, leaf.where)
        predicate = engine.make_predicate(probe, self.budget)
        matching = [v for v in domain if self._probe(predicate, v)]
        if col.constant is not None:
            return TRUE if col.constant in matching else FALSE
        if col.condition is not None:
            cond = col.condition(self.context)
            return _or(*([cond] if True in matching else []), *([_not(cond)] if False in matching else []))
        values = [v for v in matching if v is not None]
        parts: list[Cond] = []
        if values:
            parts.append(Q(**{f"{col.name}__in": values}))
        if None in matching:
            parts.append(Q(**{f"{col.name}__isnull": True}))
        return _or(*parts)

    @staticmethod
    def _probe(predicate: Callable[[Any], bool], value: Any) -> bool:
        try:
            return predicate({"v": value})
        except QueryError:
            if value is None:
                # A null cannot be tested (``null in "abc"``): `schema.check` guards such leaves with
                # ``!= null``, so a null row does not match -- never an error naming the probe.
                return False
            raise

    def _op(self, leaf: Leaf, fld: Field, name: str, value: Any) -> Cond:
        op = leaf.op
        nullable = fld.nullable
        not_null: Cond = Q(**{f"{name}__isnull": False}) if nullable else TRUE
        if op in ("=", "!="):
            if value is None:
                cond: Cond = Q(**{f"{name}__isnull": True}) if nullable else FALSE
            else:
                coerced = _equal_value(fld, value)
                cond = FALSE if coerced is _NO_MATCH else Q(**{name: coerced})
            if op == "=":
                return cond
            # Python: x != y for present x, null included.
            return _not(cond) if cond is not FALSE else TRUE
        if op in (">", ">=", "<", "<="):
            return _and(not_null, _ordering(fld, name, op, value))
        if op in ("in", "nin"):
            if isinstance(value, str):
                contained: Cond = Q(_strindex_gt0(Value(value), F(name)))
            elif isinstance(value, dict):
                keys = list(value) if fld.type is FieldType.STRING else []
                contained = Q(**{f"{name}__in": keys}) if keys else FALSE
            else:
                coerced = [
                    c for c in (_equal_value(fld, v) for v in value if v is not None) if c is not _NO_MATCH
                ]
                contained = Q(**{f"{name}__in": _dedupe(coerced)}) if coerced else FALSE
                if op == "in" and nullable and any(v is None for v in value):
                    contained = _or(contained, Q(**{f"{name}__isnull": True}))
            if op == "in":
                return contained if not isinstance(value, str) or not nullable else _and(not_null, contained)
            return _and(not_null, _not(contained))
        if op in ("rin", "rnin"):
            contained = Q(_strindex_gt0(F(name), Value(value)))
            return _and(not_null, contained if op == "rin" else _not(contained))
        if op in ("^", "!^"):
            cond = self._startswith(name, value)
            return _and(not_null, cond if op == "^" else _not(cond))
        if op in ("$", "!$"):
            cond = TRUE if value == "" else Q(_right_equals(name, value))
            return _and(not_null, cond if op == "$" else _not(cond))
        raise AssertionError(f"operator {op!r} reached the SQL compiler")

    @staticmethod
    def _startswith(name: str, prefix: str) -> Cond:
        if prefix == "":
            return Q(**{f"{name}__isnull": False})
        upper = prefix_successor(prefix)
        cond = Q(**{f"{name}__gte": prefix})
        return cond & Q(**{f"{name}__lt": upper}) if upper is not None else cond

    # --- ordering ----------------------------------------------------------------------------

    def order_by(self, options: QueryOptions) -> list[OrderBy]:
        exprs: list[OrderBy] = []
        #: Columns already ordered by: a later key on one of them cannot change the order, and
        #: leaving it out lets an index serve ``-created_at`` without a sort on its default tie-break.
        ordered: set[str] = set()
        for resolved in resolve_order(options, self.schema):
            col = self.spec.columns[resolved.source] if resolved.source is not None else _ALWAYS
            if resolved.source is None or col.constant is not None:
                continue  # the same value for every row: the order is unchanged
            fld = self.schema.fields[resolved.source]
            condition = col.condition(self.context) if col.condition is not None else None
            if isinstance(condition, _Const):
                continue  # holds for every row or for none: the order is unchanged
            if condition is not None:
                # Cast: should Django still find the condition constant, it renders the Case as the
                # bare literal ``false``, which PostgreSQL refuses in ORDER BY ("non-integer
                # constant"); a cast expression is accepted.
                expr: Expression = Cast(
                    Case(
                        When(condition, then=Value(True)),
                        default=Value(False),
                        output_field=BooleanField(),
                    ),
                    IntegerField(),
                )
                maybe_null = False
            else:
                expr = F(col.name)
                maybe_null = fld.nullable
                if col.present is not None:
                    expr = Case(When(col.present, then=F(col.name)), default=Value(None))
                    maybe_null = True
                else:
                    ordered.add(col.name)
            key = resolved.key
            if maybe_null:
                nulls = {"nulls_first": True} if key.nulls_first else {"nulls_last": True}
                exprs.append(expr.desc(**nulls) if key.descending else expr.asc(**nulls))
            else:
                exprs.append(expr.desc() if key.descending else expr.asc())
        exprs.extend(F(name).asc() for name in self.spec.default_order if name not in ordered)
        return exprs


_NO_MATCH = object()
#: Where `Compiler._by_domain` puts each candidate value for the engine to evaluate the leaf on.
_PROBE_PATH = Path(("v",), "v")
_ALWAYS = Column()


def _dedupe(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def _casefold(value: Any) -> Any:
    if isinstance(value, str):
        return value.casefold()
    if isinstance(value, list):
        return [v.casefold() if isinstance(v, str) else v for v in value]
    return value


def _equal_value(fld: Field, value: Any) -> Any:
    """The column value equal to ``value`` under Python equality, or `_NO_MATCH`."""
    if fld.type is FieldType.STRING:
        return value if isinstance(value, str) else _NO_MATCH
    if fld.type is FieldType.INTEGER:
        if isinstance(value, bool):
            value = int(value)
        elif isinstance(value, float):
            if not math.isfinite(value) or not value.is_integer():
                return _NO_MATCH
            value = int(value)
        if not isinstance(value, int) or not INT64_MIN <= value <= INT64_MAX:
            return _NO_MATCH
        return value
    if fld.type is FieldType.DATETIME:
        return value if isinstance(value, dt.datetime) and value.tzinfo is not None else _NO_MATCH
    return _NO_MATCH


def _ordering(fld: Field, name: str, op: str, value: Any) -> Cond:
    if value is None:
        return FALSE
    if fld.type is FieldType.INTEGER:
        if isinstance(value, float):
            if math.isnan(value):
                return FALSE
            if math.isinf(value):
                return TRUE if (value > 0) == (op in ("<", "<=")) else FALSE
            if not value.is_integer():
                # x > 1.5 <=> x > 1; x >= 1.5 <=> x >= 2; x < 1.5 <=> x < 2; x <= 1.5 <=> x <= 1
                value = math.floor(value) if op in (">", "<=") else math.ceil(value)
            else:
                value = int(value)
        if value > INT64_MAX:
            return TRUE if op in ("<", "<=") else FALSE
        if value < INT64_MIN:
            return TRUE if op in (">", ">=") else FALSE
    lookup = {">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}[op]
    return Q(**{f"{name}__{lookup}": value})


def _strindex_gt0(haystack: Any, needle: Any) -> Any:
    from django.db.models.lookups import GreaterThan

    return GreaterThan(StrIndex(haystack, needle), 0)


def _right_equals(name: str, suffix: str) -> Any:
    # RIGHT(col, n) = suffix AND LENGTH(col) >= n (RIGHT of a shorter string is the whole string).
    from django.db.models import CharField
    from django.db.models.lookups import Exact, GreaterThanOrEqual

    return Q(Exact(Right(F(name), len(suffix), output_field=CharField()), Value(suffix))) & Q(
        GreaterThanOrEqual(Length(F(name)), len(suffix))
    )


def prefix_successor(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with ``prefix`` (None: none).

    Code points compare like UTF-8 bytes, so ``prefix <= s < successor`` is exactly "s starts with
    prefix" on every database that compares strings by code point. Surrogates are skipped: no
    database stores them.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < MAX_CODE_POINT:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:
                nxt = 0xE000
            return "".join(chars) + chr(nxt)
    return None


_REGEX_SPECIAL = set(".^$*+?{}[]\\|()")


def regex_literal_prefix(pattern: str) -> str:
    """The literal text every match of ``pattern`` (anchored at the start) must begin with."""
    if "|" in pattern or pattern.startswith("(?"):
        return ""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        step = 1
        if ch == "\\":
            if i + 1 >= len(pattern) or pattern[i + 1].isalnum() or pattern[i + 1] == "_":
                break  # \d, \w, \A, \1 ...: not a literal
            ch = pattern[i + 1]
            step = 2
        elif ch in _REGEX_SPECIAL:
            if ch == "^" and i == 0:
                i += 1
                continue
            break
        nxt = pattern[i + step] if i + step < len(pattern) else ""
        if nxt in ("*", "?", "{"):
            break  # this character is optional or repeated
        out.append(ch)
        i += step
    return "".join(out)


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


# --- plan shaping (see the module docstring) ----------------------------------------------------------

#: Longest ``in`` list split into one ordered subquery per value.
SPLIT_MAX_VALUES = 8
#: Largest ``offset + limit`` for which each branch of a split is ordered and limited by itself;
#: past it the branches return every match and only the outer statement sorts and slices.
SPLIT_MAX_ROWS = 10_000
#: Lookups an index can seek on (``exact`` with a null value is ``isnull``, excluded below).
_SEEKABLE = frozenset({"exact", "in", "gt", "gte", "lt", "lte", "range"})

Term = Q | tuple[str, Any]


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


def _first_order_column(model: Any, order: Sequence[OrderBy]) -> str | None:
    if not order or not isinstance(order[0].expression, F):
        return None
    return _column(model, order[0].expression.name)


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
        i
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
    for i in ors:
        branches = terms[i].children  # type: ignore[union-attr]
        if all(_indexable(model, b, indexes) for b in branches):
            return _Split(
                terms[:i] + terms[i + 1 :],
                [b if isinstance(b, Q) else Q(b) for b in branches],
                bounded,
            )
    first = _first_order_column(model, order)
    for i in ins:
        name, values = terms[i]  # type: ignore[misc]
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


#: Compiled statements of exact queries, keyed by the caller's query text and scope. Building a
#: query with the ORM costs far more than running an indexed one (~0.5-1 ms against ~0.1 ms), and
#: dashboards and scripts repeat the same queries: a repeated query skips parsing, checking and
#: compiling. Only queries whose SQL depends on nothing but the key are cached (no clock in the
#: parameters: "not expired" is ``expires_at > CURRENT_TIMESTAMP``).
_STATEMENTS: OrderedDict[
    tuple[Any, ...], tuple[_Statement | None, _Statement | None, QueryOptions, Mapping[str, Any]]
]
_STATEMENTS = OrderedDict()
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
    statement: tuple[_Statement | None, _Statement | None, QueryOptions, Mapping[str, Any]],
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
    tree = parse_filters(filters)
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

    tree = parse_filters(filters)
    opts = parse_options(options)
    schema = spec.schema_for(opts)
    tree, opts = check(tree, opts, schema)
    result = engine.execute(list(rows), tree, opts)
    if opts.prefix and not isinstance(result, int):
        if isinstance(result, dict):
            return _strip_prefix(result, opts.prefix)
        return [_strip_prefix(r, opts.prefix) for r in result]
    return result
