"""The parsed form of query-filters and query-options (pure Python, immutable).

`parser.parse_filters` turns the JSON filters into an `AllOf` tree and `parser.parse_options` turns
the options object into `QueryOptions`. Two back ends consume the same tree: the in-memory
evaluator (`engine`) and the Django compiler (`compiler`), which is why the tree carries decoded
values (datetimes already decoded from ``{"$date": ms}``) and the JSON location of every element
for error messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

#: Base operators, without the case-insensitive ``C`` prefix.
BASE_OPERATORS = ("=", "!=", ">", ">=", "<", "<=", "~", "in", "nin", "rin", "rnin", "^", "!^", "$", "!$")
ORDERING_OPERATORS = (">", ">=", "<", "<=")


@dataclass(frozen=True, slots=True)
class Path:
    """A dotted path into a row.

    ``segments`` are the keys after splitting on unescaped dots and unescaping ``\\.``; a trailing
    ``.$date`` is not a segment but sets ``date``. ``raw`` is the path string as the client wrote it.
    """

    segments: tuple[str, ...]
    raw: str
    date: bool = False

    @property
    def dotted(self) -> str:
        """Segments joined by dots (without the ``$date`` suffix); the key of declared schemas."""
        return ".".join(self.segments)


@dataclass(frozen=True, slots=True)
class Leaf:
    """``[path, operator, value]``.

    ``op`` is one of `BASE_OPERATORS`; ``casefold`` is true for the ``C`` variants. ``value`` is the
    filter value with every ``{"$date": ms}`` decoded to an aware UTC datetime, and for ``.$date``
    paths the ISO string already parsed to an aware UTC datetime. ``where`` is the JSON location of
    the leaf, e.g. ``filters[1]`` or ``filters[0][1][2]``.
    """

    path: Path
    op: str
    casefold: bool
    value: Any
    where: str

    @property
    def operator(self) -> str:
        """The operator as written by the client (``C`` prefix included)."""
        return ("C" if self.casefold else "") + self.op


@dataclass(frozen=True, slots=True)
class AnyOf:
    """An ``["OR", [branches...]]`` node: matches when any branch matches (none when empty)."""

    branches: tuple[Node, ...]
    where: str


@dataclass(frozen=True, slots=True)
class AllOf:
    """An AND group (also the top-level filters array): matches when every child matches."""

    children: tuple[Node, ...]
    where: str


Node: TypeAlias = Leaf | AnyOf | AllOf


@dataclass(frozen=True, slots=True)
class OrderKey:
    """One ``order_by`` entry: ``[nulls_first:|nulls_last:][-]path``.

    ``nulls`` is None when no prefix was given: nulls then sort last ascending, first descending.
    """

    path: Path
    descending: bool = False
    nulls: Literal["first", "last"] | None = None

    @property
    def nulls_first(self) -> bool:
        if self.nulls is None:
            return self.descending
        return self.nulls == "first"


@dataclass(frozen=True, slots=True)
class SelectItem:
    """One ``select`` entry: a path (nested in the output) or ``[path, alias]`` (flat key ``alias``)."""

    path: Path
    alias: str | None = None


@dataclass(frozen=True, slots=True)
class QueryOptions:
    """Validated query-options with their defaults."""

    relationships: bool = True
    extend: str | None = None
    extend_context: str | None = None
    prefix: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    order_by: tuple[OrderKey, ...] = ()
    select: tuple[SelectItem, ...] = ()
    count: bool = False
    get: bool = False
    offset: int = 0
    limit: int = 0
    force_sql_filters: bool = False
