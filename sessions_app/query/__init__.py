"""The TrueNAS-style query language: query-filters and query-options (pure Python).

`parse_filters` / `parse_options` validate client input into an immutable AST (`ast`), `filter_list`
evaluates it over in-memory rows (`engine`), and `operators` holds the operator table shared with
the Django compiler. Every problem is a `QueryError` (a `ValueError` carrying the offending
element's ``attribute``); ``get`` without a row is `MatchNotFound`. Nothing here imports Django.

The Django side lives beside it and is imported by its users only: `compiler` (the tree as Django
conditions), `plans` (statement shapes that use an index), `prefixes` (``C^`` as index ranges)
and `execution` (running a query, the statement cache). The room imports nothing of the app but `sessions_app.db` (from the Django side).
"""

from __future__ import annotations

from sessions_app.query.ast import (
    AllOf,
    AnyOf,
    Leaf,
    Node,
    OrderKey,
    Path,
    QueryOptions,
    SelectItem,
)
from sessions_app.query.engine import MISSING, apply_options, filter_list, make_predicate, resolve
from sessions_app.query.errors import MatchNotFound, QueryError
from sessions_app.query.parser import parse_filters, parse_options

__all__ = [
    "MISSING",
    "AllOf",
    "AnyOf",
    "Leaf",
    "MatchNotFound",
    "Node",
    "OrderKey",
    "Path",
    "QueryError",
    "QueryOptions",
    "SelectItem",
    "apply_options",
    "filter_list",
    "make_predicate",
    "parse_filters",
    "parse_options",
    "resolve",
]
