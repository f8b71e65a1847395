"""Declared field schemas and the typed checks of service methods (pure Python).

The schema-less engine (`engine.filter_list`) accepts any path and reports type mistakes only when a
row makes it evaluate one. Service methods (``auth.sessions``, ``api_key.query``, ``audit.query``)
declare their fields instead, and `check` validates a parsed query against the declaration *before*
anything runs:

* a path that names no declared field -- in a filter, ``order_by`` or ``select`` -- is a
  `QueryError`. Secret columns are never declared, so naming one gives exactly the error an unknown
  field gives (same attribute, same message);
* operators that cannot apply to the field's type (``^`` on a boolean, ``>`` between an integer field
  and a string, a ``C`` operator on a non-string field, ``.$date`` on a non-datetime) are errors;
* strings containing NUL or unpaired surrogates are rejected (no database can store or compare them);
* ``in`` / ``nin`` with a value that is not an array, string or object is an error (schema-less,
  it raises only on rows that have the path);
* the few leaves whose schema-less evaluation would *raise* on a null value (``x in "substring"``)
  get an explicit ``!= null`` guard, so that typed evaluation is total and never depends on data.

After `check`, the in-memory engine and the SQL compiler see the same tree and return the same rows.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field

from sessions_app.query.ast import AllOf, AnyOf, Leaf, Node, OrderKey, Path, QueryOptions
from sessions_app.query.errors import QueryError
from sessions_app.query.operators import json_type


class FieldType(enum.Enum):
    STRING = "string"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    DATETIME = "datetime"
    OBJECT = "object"
    #: Anything below an open object (free-form JSON such as audit ``event_data``): no type checks,
    #: schema-less semantics, always evaluated in Python.
    ANY = "any"


@dataclass(frozen=True, slots=True)
class Field:
    """A declared field: its type, whether it can be null, and what the method allows with it."""

    type: FieldType
    nullable: bool = False
    orderable: bool = True
    #: For OBJECT fields: any path below it is allowed (as an ANY field).
    open: bool = False


@dataclass(frozen=True)
class Schema:
    """The declared fields of one query method, keyed by path segments."""

    fields: Mapping[tuple[str, ...], Field]
    #: ``options.extra`` keys the method accepts, with their Python type.
    extra: Mapping[str, type] = dc_field(default_factory=dict)

    @classmethod
    def build(cls, fields: Mapping[str, Field], extra: Mapping[str, type] | None = None) -> Schema:
        """Build from dotted names; every prefix of a declared path becomes an OBJECT field."""
        out: dict[tuple[str, ...], Field] = {}
        for name, spec in fields.items():
            segments = tuple(name.split("."))
            for i in range(1, len(segments)):
                out.setdefault(segments[:i], Field(FieldType.OBJECT, orderable=False))
            out[segments] = spec
        return cls(out, dict(extra or {}))

    def with_fields(self, fields: Mapping[str, Field]) -> Schema:
        merged = {".".join(k): v for k, v in self.fields.items()}
        merged.update(fields)
        return Schema.build(merged, self.extra)

    def lookup(self, path: Path, where: str) -> Field:
        field = self.get(path.segments)
        if field is None:
            raise QueryError(where, f"{path.raw!r}: unknown field")
        return field

    def get(self, segments: tuple[str, ...]) -> Field | None:
        field = self.fields.get(segments)
        if field is None:
            for end in range(len(segments) - 1, 0, -1):
                parent = self.fields.get(segments[:end])
                if parent is not None:
                    return _ANY if parent.open else None
        return field


_NUMBER = (int, float)


def _is_number(value: object) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool)


def _check_text(value: object, where: str) -> None:
    """Reject strings that neither SQLite nor PostgreSQL can store or compare."""
    if isinstance(value, str):
        if "\x00" in value:
            raise QueryError(where, "strings must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise QueryError(where, "strings must not contain unpaired surrogates") from None
    elif isinstance(value, list):
        for item in value:
            _check_text(item, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, where)
            _check_text(item, where)


def _orderable_value(field: Field, value: object) -> bool:
    """Whether an ordering comparison between the field's type and ``value`` is meaningful."""
    if value is None:
        return True  # never matches, but is not a mistake
    if field.type is FieldType.STRING:
        return isinstance(value, str)
    if field.type is FieldType.INTEGER:
        return _is_number(value) and not (isinstance(value, float) and math.isnan(value))
    if field.type is FieldType.BOOLEAN:
        return isinstance(value, bool)
    if field.type is FieldType.DATETIME:
        return isinstance(value, dt.datetime)
    return False


def _type_name(field: Field) -> str:
    return field.type.value


_ANY = Field(FieldType.ANY, nullable=True, orderable=True)


def _check_leaf(leaf: Leaf, schema: Schema) -> Node:
    field = schema.lookup(leaf.path, leaf.where)
    where, op = leaf.where, leaf.op
    _check_text(leaf.value, where)
    if field.type is FieldType.ANY:
        return leaf
    if op in ("in", "nin") and not isinstance(leaf.value, list | str | dict):
        # Schema-less, TrueNAS raises this only on rows that have the path (query-language.md §5);
        # with a declared type it is a mistake whatever the rows hold, reported up front (§5).
        raise QueryError(
            f"{where}[2]", f"{leaf.operator!r} needs an array, string or object, got {json_type(leaf.value)}"
        )
    wrong = QueryError(
        where, f"operator {leaf.operator!r} cannot be used with {leaf.path.raw!r} ({_type_name(field)})"
    )
    if leaf.path.date and field.type is not FieldType.DATETIME:
        raise QueryError(where, f"{leaf.path.raw!r}: .$date needs a datetime field")
    if leaf.casefold and field.type is not FieldType.STRING:
        raise wrong
    if field.type is FieldType.OBJECT and op not in ("=", "!=", "in", "nin", "rin", "rnin"):
        raise wrong
    if op in (">", ">=", "<", "<="):
        if not _orderable_value(field, leaf.value):
            raise QueryError(
                where, f"{leaf.path.raw!r} ({_type_name(field)}) cannot be ordered against {leaf.value!r}"
            )
    elif op == "~" or op in ("^", "!^", "$", "!$"):
        if field.type is not FieldType.STRING:
            raise wrong
    elif op in ("rin", "rnin"):
        if field.type is FieldType.STRING:
            if not isinstance(leaf.value, str):
                raise QueryError(
                    where, f"{leaf.path.raw!r} is a string: {leaf.operator!r} needs a string value"
                )
        elif field.type is not FieldType.OBJECT:
            raise wrong
    elif op in ("in", "nin") and isinstance(leaf.value, str):
        if field.type is not FieldType.STRING:
            raise QueryError(
                where, f"{leaf.path.raw!r} ({_type_name(field)}): a string value means substring"
            )
        if field.nullable and op == "in":
            # Schema-less evaluation raises on `None in "..."`; typed evaluation does not match.
            guard = Leaf(leaf.path, "!=", False, None, where)
            return AllOf((guard, leaf), where)
    return leaf


def check_filters(node: Node, schema: Schema) -> Node:
    """Validate a parsed filter tree against ``schema``; return the (possibly guarded) tree."""
    if isinstance(node, Leaf):
        return _check_leaf(node, schema)
    if isinstance(node, AnyOf):
        return AnyOf(tuple(check_filters(b, schema) for b in node.branches), node.where)
    return AllOf(tuple(check_filters(c, schema) for c in node.children), node.where)


@dataclass(frozen=True, slots=True)
class ResolvedOrder:
    """An ``order_by`` key mapped through ``select`` onto a declared field (None: always null)."""

    key: OrderKey
    source: tuple[str, ...] | None


def resolve_order(options: QueryOptions, schema: Schema) -> tuple[ResolvedOrder, ...]:
    """Map every order key onto the declared field it sorts by.

    ``order_by`` sees the rows after ``select``: an alias sorts by its source field, a selected path
    (or a path below one) by itself, and anything the selection dropped is null for every row, which
    leaves the order unchanged (a stable sort of equal keys). A path *above* a selected one
    (``order_by: ["device"]`` with ``select: ["device.os"]``) names the object the selection
    rebuilt: an object cannot be ordered, as without ``select``.
    """
    resolved = []
    for i, key in enumerate(options.order_by):
        where = f"options.order_by[{i}]"
        segments = key.path.segments
        source: tuple[str, ...] | None = segments
        if options.select:
            source = None
            for item in options.select:
                if item.alias is not None:
                    if segments == (item.alias,):
                        source = item.path.segments
                elif segments[: len(item.path.segments)] == item.path.segments:
                    source = segments
            if source is None and any(
                item.alias is None
                and len(item.path.segments) > len(segments)
                and item.path.segments[: len(segments)] == segments
                for item in options.select
            ):
                raise QueryError(where, f"{key.path.raw!r} cannot be ordered (object)")
            if source is None:
                # Still reject names that exist nowhere, so typos are reported.
                if schema.get(segments) is None and not any(
                    item.alias is not None and segments[0] == item.alias for item in options.select
                ):
                    schema.lookup(key.path, where)
                resolved.append(ResolvedOrder(key, None))
                continue
        assert source is not None  # a key without a source was resolved above
        field = schema.get(source)
        if field is None:
            schema.lookup(Path(source, key.path.raw), where)
            raise AssertionError("unreachable")
        if field.type is FieldType.OBJECT or not field.orderable or field.type is FieldType.ANY:
            raise QueryError(where, f"{key.path.raw!r} cannot be ordered ({_type_name(field)})")
        resolved.append(ResolvedOrder(key, source))
    return tuple(resolved)


def check_options(options: QueryOptions, schema: Schema) -> QueryOptions:
    """Validate options against the method: select paths, order keys, ``extra`` and ``extend``."""
    for i, item in enumerate(options.select):
        where = f"options.select[{i}]"
        schema.lookup(item.path, where)
        if item.path.date:
            raise QueryError(where, "select paths cannot end in .$date")
    for key, value in options.extra.items():
        if key not in schema.extra:
            raise QueryError(f"options.extra.{key}", "unknown option")
        if schema.extra[key] is bool and not isinstance(value, bool):
            raise QueryError(f"options.extra.{key}", "must be a boolean")
    if options.extend is not None:
        raise QueryError("options.extend", f"{options.extend!r}: unknown extend method")
    if options.extend_context is not None:
        raise QueryError("options.extend_context", "requires a valid options.extend")
    resolve_order(options, schema)
    return options


def check(filters: Node, options: QueryOptions, schema: Schema) -> tuple[Node, QueryOptions]:
    """Validate filters, then options, against ``schema`` (filters first, like the parser)."""
    return check_filters(filters, schema), check_options(options, schema)


def iter_leaves(node: Node) -> Iterable[Leaf]:
    if isinstance(node, Leaf):
        yield node
    elif isinstance(node, AnyOf):
        for branch in node.branches:
            yield from iter_leaves(branch)
    else:
        for child in node.children:
            yield from iter_leaves(child)


__all__ = [
    "Field",
    "FieldType",
    "ResolvedOrder",
    "Schema",
    "check",
    "check_filters",
    "check_options",
    "iter_leaves",
    "resolve_order",
]
