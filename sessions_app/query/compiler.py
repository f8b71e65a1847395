"""Compile parsed, schema-checked queries into Django ORM conditions and orders (``Q``, ``OrderBy``).

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

The statement of an exact query is shaped by `plans` (index-bounded forms of three shapes that
plan badly); `execution` runs queries: validation, compilation, the statement cache and rows.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from django.db.models import BooleanField, Case, F, IntegerField, Q, Value, When
from django.db.models.expressions import Expression, OrderBy
from django.db.models.functions import Cast, Length, Right, StrIndex

from sessions_app.query import engine
from sessions_app.query.ast import AnyOf, Leaf, Node, Path, QueryOptions
from sessions_app.query.errors import QueryError
from sessions_app.query.schema import Field, FieldType, Schema, resolve_order

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_CODE_POINT = 0x10FFFF


class _Const(enum.Enum):
    """TRUE / FALSE of the compiled tree. ``Q()`` cannot stand for TRUE: ``Q() | q`` is ``q``.

    An enum, so that ``cond is TRUE`` / ``cond is FALSE`` narrow a `Cond` to ``Q`` for the type checker.
    """

    FALSE = False
    TRUE = True

    def __repr__(self) -> str:
        return self.name


TRUE: Final = _Const.TRUE
FALSE: Final = _Const.FALSE
Cond = Q | _Const


def _and(*parts: Cond) -> Cond:
    out: Cond = TRUE
    for part in parts:
        if part is FALSE:
            return FALSE
        if part is TRUE:
            continue
        out = part if isinstance(out, _Const) else out & part  # (``out`` is never FALSE here)
    return out


def _or(*parts: Cond) -> Cond:
    out: Cond = FALSE
    for part in parts:
        if part is TRUE:
            return TRUE
        if part is FALSE:
            continue
        out = part if isinstance(out, _Const) else out | part  # (``out`` is never TRUE here)
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
        name = col.name
        assert name is not None  # a column without a name is computed, answered by its domain above
        if leaf.op == "~":
            prefix = regex_literal_prefix(leaf.value)
            if not prefix:
                return present, False
            return _and(present, self._startswith(name, prefix)), False
        return _and(present, self._op(leaf, fld, name, leaf.value)), True

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
                expr: Expression | F = Cast(
                    Case(
                        When(condition, then=Value(True)),
                        default=Value(False),
                        output_field=BooleanField(),
                    ),
                    IntegerField(),
                )
                maybe_null = False
            else:
                name = col.name
                assert name is not None  # an orderable field is a column, a condition or a constant
                expr = F(name)
                maybe_null = fld.nullable
                if col.present is not None:
                    expr = Case(When(col.present, then=F(name)), default=Value(None))
                    maybe_null = True
                else:
                    ordered.add(name)
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
