"""Case-insensitive prefixes (``C^``) as index range scans, for columns without a casefolded copy.

``s.casefold().startswith(p.casefold())`` holds exactly when ``s`` starts with one of the raw
prefixes `casefold_prefixes` lists, so a ``C^`` leaf on the audit user or the origin can run as a
few ``>= / <`` ranges on the column's index instead of in Python on every row; a whole name (too
many spellings) is narrowed by its longest prefix that fits and becomes ``IN (the matching values
present)`` (`_push_down_folded_prefixes`). The browser's tables apply it before compiling their
filters (`sessions_app.tables`). Django-aware, like `compiler`: not part of the pure core.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from django.db.models import Q, QuerySet

from sessions_app.query.ast import AllOf, Leaf, Node
from sessions_app.query.compiler import QuerySpec, prefix_successor
from sessions_app.query.schema import FieldType, Schema

#: Raw prefixes a case-insensitive prefix may expand to in SQL (`casefold_prefixes`); a longer
#: expansion is replaced by that of a shorter prefix (a superset, checked again in Python).
FOLDED_PREFIX_RANGES = 64
#: Distinct values of a column listed to turn a longer case-insensitive prefix into ``IN (...)``
#: (64 ranges and 5,000 values measured best at a million sessions: `bench/match_count_bench.py`).
FOLDED_PREFIX_VALUES = 5000


@functools.cache
def _unfolded() -> Mapping[str, tuple[str, ...]]:
    """For each character ``x``: the characters, other than ``x`` itself, whose ``casefold()``
    starts with ``x`` (``"s"`` -> ``S ß ſ ẞ ﬅ ﬆ``). Built once per process, a block of 256 code
    points at a time (most blocks have no case at all); every case mapping of Unicode (15.1 and
    before) is in planes 0 and 1."""
    table: dict[str, list[str]] = {}
    for start in range(0, 0x20000, 256):
        block = "".join(chr(c) for c in range(start, start + 256) if not 0xD800 <= c <= 0xDFFF)
        if block.casefold() == block:
            continue
        for char in block:
            folded = char.casefold()
            if folded != char:
                table.setdefault(folded[0], []).append(char)
    return MappingProxyType({head: tuple(chars) for head, chars in table.items()})


def casefold_prefixes(prefix: str, *, limit: int | None = None) -> list[str] | None:
    """The raw prefixes of the strings whose ``casefold()`` starts with ``prefix.casefold()``.

    ``s.casefold().startswith(prefix.casefold())`` holds exactly when ``s`` starts with one of
    them (``casefold`` folds each character on its own, so the strings can be walked character by
    character; a character may fold to several, ``ß`` -> ``ss``). They are what the ``C^`` operator
    becomes in SQL where the model keeps no casefolded copy of a column: index range scans instead
    of reading every row. None when there are more than ``limit`` (default
    `FOLDED_PREFIX_RANGES`; about 2 per letter).
    """
    limit = FOLDED_PREFIX_RANGES if limit is None else limit
    target = prefix.casefold()
    if not target:
        return [""]
    table = _unfolded()
    found: list[str] = []
    pending = [("", target)]
    while pending:
        raw, rest = pending.pop()
        head = rest[0]
        for char in (*table.get(head, ()), *((head,) if head.casefold() == head else ())):
            folded = char.casefold()
            if folded.startswith(rest):
                found.append(raw + char)
            elif rest.startswith(folded):
                pending.append((raw + char, rest[len(folded) :]))
            if len(found) + len(pending) > limit:
                return None
    return sorted(found)


def _prefix_ranges(column: str, prefixes: list[str]) -> Q:
    """``column`` starts with one of ``prefixes`` (code-point ranges, as the compiler's ``^``)."""
    parts = Q()
    for prefix in prefixes:
        if not prefix:
            return Q(**{f"{column}__isnull": False})
        upper = prefix_successor(prefix)
        cond = Q(**{f"{column}__gte": prefix})
        parts |= cond & Q(**{f"{column}__lt": upper}) if upper is not None else cond
    return parts


def _push_down_folded_prefixes(
    spec: QuerySpec, schema: Schema, queryset: QuerySet[Any], tree: Node
) -> tuple[QuerySet[Any], Node, bool]:
    """Run the top-level ``C^`` filters on columns without a casefolded copy (the audit user, the
    origin) as index range scans (`casefold_prefixes`) instead of in Python on every row.

    A leaf whose expansion fits `FOLDED_PREFIX_RANGES` leaves the tree (the SQL is exact). A longer
    one (a whole name: about 2 spellings per letter) is narrowed by its longest prefix that fits;
    the distinct values in that range (an index-only read, at most `FOLDED_PREFIX_VALUES`) are then
    checked here and the leaf becomes ``column IN (the matching values)`` -- exact again. Only past
    that many values does the leaf stay in the tree, checked in Python on the narrowed rows.

    The third value says whether the statement now depends on the data (the values read): such a
    statement is never kept for reuse (`_PAGES`).
    """
    if not isinstance(tree, AllOf):
        return queryset, tree, False
    kept: list[Node] = []
    read_values = False
    for child in tree.children:
        column = spec.columns.get(child.path.segments) if isinstance(child, Leaf) else None
        field = schema.get(child.path.segments) if isinstance(child, Leaf) else None
        if (
            not isinstance(child, Leaf)
            or not (child.casefold and child.op == "^" and isinstance(child.value, str))
            or child.path.date
            or column is None
            or column.name is None
            or column.folded is not None
            or column.domain is not None
            or column.condition is not None
            or field is None
            or field.type is not FieldType.STRING
        ):
            kept.append(child)
            continue
        target = child.value.casefold()
        prefixes = casefold_prefixes(target)
        exact = prefixes is not None
        length = 0
        while not exact and length < len(target):  # the longest prefix of the prefix that fits
            shorter = casefold_prefixes(target[: length + 1])
            if shorter is None:
                break
            prefixes, length = shorter, length + 1
        if prefixes is None:  # not even one character fits (never with a limit >= 7)
            kept.append(child)
            continue
        present = column.present if column.present is not None else Q()
        narrowed = queryset.filter(present & _prefix_ranges(column.name, prefixes))
        if not exact:
            # One UNION branch per range: each an index range scan. A single DISTINCT over the OR of
            # the ranges reads the whole index in order on PostgreSQL (0.6 s at 150,000 records).
            branches = [
                queryset.filter(present & _prefix_ranges(column.name, [prefix]))
                .order_by()
                .values_list(column.name, flat=True)
                for prefix in prefixes
            ]
            values = list(branches[0].union(*branches[1:])[: FOLDED_PREFIX_VALUES + 1])
            read_values = True
            if len(values) > FOLDED_PREFIX_VALUES:
                kept.append(child)  # too many to list: checked in Python on the narrowed rows
            else:
                found = [v for v in values if isinstance(v, str) and v.casefold().startswith(target)]
                listed = queryset.filter(present & Q(**{f"{column.name}__in": found}))
                narrowed = listed if found else queryset.none()
        queryset = narrowed
    return queryset, AllOf(tuple(kept), tree.where), read_values
