"""Validation of query-filters and query-options into the immutable AST (pure Python).

`parse_filters` and `parse_options` check the *whole* input before any row is looked at, so every
mistake that does not depend on data is reported even when there are no rows: the shape of the
filters, unknown operators, the nesting depth, the size caps of the security policy ("Expensive
queries": OR depth <= 3, <= 100 leaves, ``in`` lists <= 1000 values, regex patterns <= 256
characters, ``limit`` <= 10000), regex syntax, ``.$date`` values, ``C`` operators with non-string
values, and the types of every option. (``in`` / ``nin`` with a value that is not a container is
the exception: TrueNAS answers it from the rows, so it is an evaluation error, see `engine`.)
Whatever the input (any JSON, however deep), they return or raise `QueryError`, never anything
else: nesting is checked before it is descended.

Errors name the offending element: ``filters``, ``filters[1][2]``, ``filters[0][1][0]``,
``options.limit``, ``options.order_by[1]``.
"""

from __future__ import annotations

import re
import reprlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sessions_app.query.ast import AllOf, AnyOf, Leaf, Node, OrderKey, Path, QueryOptions, SelectItem
from sessions_app.query.errors import QueryError
from sessions_app.query.operators import (
    MAX_IN_VALUES,
    InvalidRegex,
    Operator,
    compile_regex,
    json_type,
    lookup_operator,
)

#: Most nested OR nodes / AND groups (spec: "query-filters max recursion depth exceeded").
MAX_DEPTH = 3
#: Most ``[path, operator, value]`` leaves in one filters array, all levels counted.
MAX_LEAVES = 100
#: Most nested arrays/objects inside one filter value. Not in the spec: it keeps value decoding
#: and Python's (recursive) comparisons far from the interpreter's recursion limit.
MAX_VALUE_DEPTH = 32
#: Longest option string (order_by entries, select paths and aliases, extra keys, prefix, extend...).
MAX_OPTION_STRING = 1024
#: Largest ``limit``.
MAX_LIMIT = 10_000

#: The keys `parse_options` accepts; anything else (``extend_fk``, ``delete_invalid_rows``) is unknown.
OPTION_NAMES: tuple[str, ...] = (
    "relationships",
    "extend",
    "extend_context",
    "prefix",
    "extra",
    "order_by",
    "select",
    "count",
    "get",
    "offset",
    "limit",
    "force_sql_filters",
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNESCAPED_DOT = re.compile(r"(?<!\\)\.")
_DATE_SUFFIX = "$date"


def _short(text: str, limit: int = 60) -> str:
    """A string for an error message, cut to a readable length."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- paths -----------------------------------------------------------------------------------------


def parse_path(raw: str, *, allow_date: bool = True) -> Path:
    """Split a dotted path: ``.`` separates segments, ``\\.`` is a literal dot.

    With ``allow_date`` (filters), a trailing unescaped ``.$date`` segment is removed and sets
    `Path.date`. Options (order_by, select) pass ``allow_date=False``: there ``$date`` is a plain key.
    Any string is a path; ``""`` is the empty key.
    """
    parts = _UNESCAPED_DOT.split(raw)
    date = allow_date and len(parts) > 1 and parts[-1] == _DATE_SUFFIX
    if date:
        parts = parts[:-1]
    return Path(tuple(part.replace("\\.", ".") for part in parts), raw, date)


# --- values ----------------------------------------------------------------------------------------


def datetime_from_ms(ms: object, where: str) -> datetime:
    """``{"$date": ms}`` -> aware UTC datetime; ``ms`` must be an int in datetime's range."""
    if not isinstance(ms, int) or isinstance(ms, bool):
        raise QueryError(where, f'{{"$date": ...}} needs integer milliseconds, got {json_type(ms)}')
    try:
        return _EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        raise QueryError(where, '{"$date": ...} is out of the supported date range') from None


def _not_a_timestamp(value: object) -> str:
    """TrueNAS's message for a ``.$date`` value that is not an ISO-8601 string (the value, then why)."""
    shown = value if isinstance(value, str) else reprlib.repr(value)  # str(), bounded
    return f"{_short(shown)}: must be an ISO-8601 formatted timestamp string"


def datetime_from_iso(text: str, where: str) -> datetime:
    """ISO-8601 (`datetime.fromisoformat` syntax) -> aware UTC datetime; no offset means UTC."""
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise QueryError(where, _not_a_timestamp(text)) from None


def _check_value_depth(value: object, where: str) -> None:
    # Iterative, so that a 10,000-deep array is refused without recursing into it.
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, list):
            children: Any = current
        elif isinstance(current, dict):
            children = current.values()
        else:
            continue
        if depth >= MAX_VALUE_DEPTH:
            raise QueryError(where, f"the value is nested more than {MAX_VALUE_DEPTH} levels deep")
        stack.extend((child, depth + 1) for child in children)


def _decode_dates(value: Any, where: str) -> Any:
    """Replace every ``{"$date": ms}`` by its datetime (depth already bounded by the caller)."""
    if isinstance(value, dict):
        if _DATE_SUFFIX in value:
            if len(value) != 1:
                raise QueryError(where, '{"$date": ms} must not have other keys')
            return datetime_from_ms(value[_DATE_SUFFIX], where)
        return {key: _decode_dates(item, where) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode_dates(item, where) for item in value]
    return value


def _parse_value(raw: object, where: str, operator: Operator, casefold: bool, path: Path) -> Any:
    value_at = f"{where}[2]"
    _check_value_depth(raw, value_at)
    value = _decode_dates(raw, value_at)

    if path.date:
        # TrueNAS's wording (middlewared.utils.filter_list): clients show these messages.
        if casefold or not operator.date_ok:
            written = ("C" if casefold else "") + operator.name
            raise QueryError(f"{where}[1]", f"{written}: invalid timestamp operation.")
        if isinstance(value, str):
            return datetime_from_iso(value, value_at)
        if isinstance(value, datetime):
            return value  # {"$date": ms} (deviation: TrueNAS takes only the ISO string)
        raise QueryError(value_at, _not_a_timestamp(raw))

    if casefold and operator.casefold_mode == "fold" and value is not None and not isinstance(value, str):
        if not isinstance(value, list):
            raise QueryError(value_at, f"a C operator needs a string value, got {json_type(value)}")
        for index, element in enumerate(value):
            if not isinstance(element, str):
                raise QueryError(
                    f"{value_at}[{index}]", f"a C operator needs strings, got {json_type(element)}"
                )

    rule = operator.value_rule
    if rule == "string" and not isinstance(value, str):
        raise QueryError(value_at, f"{operator.name!r} needs a string value, got {json_type(value)}")
    # `in` / `nin` with a value that is not a container (`["x", "in", 12]`) is not refused here: as
    # in TrueNAS, it matches no row that lacks the path and raises only where the leaf is evaluated
    # (query-language.md §5). Declared fields refuse it up front (`schema.check`).
    if rule == "container" and isinstance(value, list) and len(value) > MAX_IN_VALUES:
        raise QueryError(value_at, f"an {operator.name!r} list holds at most {MAX_IN_VALUES} values")
    if rule == "regex":
        if not isinstance(value, str):
            raise QueryError(value_at, f"a regular expression must be a string, got {json_type(value)}")
        try:
            compile_regex(value, casefold)
        except InvalidRegex as exc:
            raise QueryError(value_at, str(exc)) from None
    return value


# --- filters ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class _FilterState:
    leaves: int = 0


def parse_filters(filters: object) -> AllOf:
    """Validate query-filters (a JSON array or null) and return the AND of its elements.

    Each element is a leaf ``[path, operator, value]`` or ``["OR", [branches]]``; a branch is a
    leaf, an OR node or an AND group ``[[...], [...]]``. Values come back with every
    ``{"$date": ms}`` decoded to an aware UTC datetime (and ``.$date`` ISO strings parsed).
    Raises `QueryError` naming the first offending element (left to right); never anything else.
    """
    if filters is None:
        return AllOf((), "filters")
    if not isinstance(filters, list):
        raise QueryError("filters", f"must be an array or null, got {json_type(filters)}")
    state = _FilterState()
    children = tuple(
        _parse_node(entry, f"filters[{index}]", 0, state, in_or=False) for index, entry in enumerate(filters)
    )
    return AllOf(children, "filters")


def _enter_level(level: int, where: str) -> None:
    if level > MAX_DEPTH:
        raise QueryError(where, "query-filters max recursion depth exceeded")


def _parse_node(entry: object, where: str, level: int, state: _FilterState, *, in_or: bool) -> Node:
    if not isinstance(entry, list):
        raise QueryError(where, f"a filter must be an array, got {json_type(entry)}")
    if entry and isinstance(entry[0], list):
        if not in_or:
            raise QueryError(where, "an AND group [[...], ...] is only allowed as a branch of an OR")
        _enter_level(level + 1, where)
        members = tuple(
            _parse_node(member, f"{where}[{index}]", level + 1, state, in_or=False)
            for index, member in enumerate(entry)
        )
        return AllOf(members, where)
    if len(entry) == 2:
        if not (isinstance(entry[0], str) and entry[0] == "OR"):
            raise QueryError(where, 'a filter of 2 elements must be ["OR", [branches]]')
        _enter_level(level + 1, where)
        branches = entry[1]
        if not isinstance(branches, list):
            raise QueryError(
                f"{where}[1]", f"the branches of an OR must be an array, got {json_type(branches)}"
            )
        return AnyOf(
            tuple(
                _parse_node(branch, f"{where}[1][{index}]", level + 1, state, in_or=True)
                for index, branch in enumerate(branches)
            ),
            where,
        )
    if len(entry) == 3 and not (entry[0] == "OR" and isinstance(entry[1], list)):
        return _parse_leaf(entry, where, state)
    count = len(entry)
    raise QueryError(
        where,
        f'a filter must be [path, operator, value] or ["OR", [branches]], '
        f"got {count} element{'' if count == 1 else 's'}",
    )


def _parse_leaf(entry: list[Any], where: str, state: _FilterState) -> Leaf:
    raw_path, raw_operator, raw_value = entry
    if not isinstance(raw_path, str):
        raise QueryError(f"{where}[0]", f"the path must be a string, got {json_type(raw_path)}")
    if not isinstance(raw_operator, str):
        raise QueryError(f"{where}[1]", f"the operator must be a string, got {json_type(raw_operator)}")
    found = lookup_operator(raw_operator)
    if found is None:
        raise QueryError(f"{where}[1]", f"unknown operator {_short(raw_operator)!r}")
    operator, casefold = found
    state.leaves += 1
    if state.leaves > MAX_LEAVES:
        raise QueryError("filters", f"query-filters may hold at most {MAX_LEAVES} filters")
    path = parse_path(raw_path)
    value = _parse_value(raw_value, where, operator, casefold, path)
    return Leaf(path, operator.name, casefold, value, where)


# --- options ---------------------------------------------------------------------------------------


def _option_string(value: object, attribute: str) -> str:
    if not isinstance(value, str):
        raise QueryError(attribute, f"must be a string, got {json_type(value)}")
    if len(value) > MAX_OPTION_STRING:
        raise QueryError(attribute, f"must be at most {MAX_OPTION_STRING} characters")
    return value


def _option_string_or_null(value: object, attribute: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise QueryError(attribute, f"must be a string or null, got {json_type(value)}")
    return _option_string(value, attribute)


def _option_path(value: object, attribute: str) -> Path:
    text = _option_string(value, attribute)
    if not text:
        raise QueryError(attribute, "must name a field")
    return parse_path(text, allow_date=False)


def _parse_order_key(entry: object, attribute: str) -> OrderKey:
    text = _option_string(entry, attribute)
    nulls: Any = None
    for prefix, placement in (("nulls_first:", "first"), ("nulls_last:", "last")):
        if text.startswith(prefix):
            text, nulls = text[len(prefix) :], placement
            break
    descending = text.startswith("-")
    if descending:
        text = text[1:]
    if not text:
        raise QueryError(attribute, "must name a field: [nulls_first:|nulls_last:][-]path")
    return OrderKey(parse_path(text, allow_date=False), descending, nulls)


def _parse_select_item(entry: object, attribute: str) -> SelectItem:
    if isinstance(entry, list):
        # TrueNAS's wording (truenas_pyfilter), which starts with the entry's repr; `reprlib`
        # bounds its length and depth (an entry may be nested thousands of levels deep).
        if len(entry) != 2:
            raise QueryError(
                attribute, f"{reprlib.repr(entry)}: select as list may only contain two parameters"
            )
        if not isinstance(entry[0], str):
            raise QueryError(f"{attribute}[0]", f"{reprlib.repr(entry)}: first item must be a string")
        if not isinstance(entry[1], str):
            raise QueryError(f"{attribute}[1]", f"{reprlib.repr(entry)}: second item must be a string")
        path = _option_path(entry[0], f"{attribute}[0]")
        alias = _option_string(entry[1], f"{attribute}[1]")
        if not alias:
            raise QueryError(f"{attribute}[1]", "the alias must not be empty")
        return SelectItem(path, alias)
    if not isinstance(entry, str):
        raise QueryError(attribute, f"must be a path or [path, alias], got {json_type(entry)}")
    return SelectItem(_option_path(entry, attribute))


def _option_list(value: object, attribute: str) -> list[Any]:
    if not isinstance(value, list):
        raise QueryError(attribute, f"must be an array, got {json_type(value)}")
    return value


def _option_int(value: object, attribute: str, low: int, high: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise QueryError(attribute, f"must be an integer, got {json_type(value)}")
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise QueryError(attribute, f"must be {bounds}")
    return value


def _unknown_option_attribute(key: object) -> str:
    if isinstance(key, str) and len(key) <= 64:
        return f"options.{key}"
    return "options"


def parse_options(options: object) -> QueryOptions:
    """Validate query-options (a JSON object or null) into `QueryOptions`.

    Types are strict (``1``/``0`` are not booleans, booleans are not integers), unknown keys are
    rejected, option strings are at most `MAX_OPTION_STRING` characters, ``0 <= limit <= 10000``,
    ``offset >= 0``, and ``get`` refuses ``limit > 1`` and ``offset != 0``. ``order_by`` entries are
    ``[nulls_first:|nulls_last:][-]path`` (one prefix, then one ``-``: ``--v`` sorts descending by
    the key ``-v``), ``select`` entries a path or ``[path, alias]``. Raises `QueryError`.
    """
    if options is None:
        return QueryOptions()
    if not isinstance(options, dict):
        raise QueryError("options", f"must be an object or null, got {json_type(options)}")
    for key in options:
        if key not in OPTION_NAMES:
            raise QueryError(_unknown_option_attribute(key), "unknown option")

    parsed: dict[str, Any] = {}
    for name in ("relationships", "count", "get", "force_sql_filters"):
        if name in options:
            if not isinstance(options[name], bool):
                raise QueryError(f"options.{name}", f"must be a boolean, got {json_type(options[name])}")
            parsed[name] = options[name]
    for name in ("extend", "extend_context", "prefix"):
        if name in options:
            parsed[name] = _option_string_or_null(options[name], f"options.{name}")
    if "extra" in options:
        extra = options["extra"]
        if not isinstance(extra, dict):
            raise QueryError("options.extra", f"must be an object, got {json_type(extra)}")
        for key in extra:
            _option_string(key, "options.extra")
        parsed["extra"] = dict(extra)
    if "order_by" in options:
        entries = _option_list(options["order_by"], "options.order_by")
        parsed["order_by"] = tuple(
            _parse_order_key(entry, f"options.order_by[{index}]") for index, entry in enumerate(entries)
        )
    if "select" in options:
        entries = _option_list(options["select"], "options.select")
        parsed["select"] = tuple(
            _parse_select_item(entry, f"options.select[{index}]") for index, entry in enumerate(entries)
        )
    if "offset" in options:
        parsed["offset"] = _option_int(options["offset"], "options.offset", 0)
    if "limit" in options:
        parsed["limit"] = _option_int(options["limit"], "options.limit", 0, MAX_LIMIT)

    result = QueryOptions(**parsed)
    if result.get and result.limit > 1:
        raise QueryError("options.limit", "get returns one row: limit must be 0 or 1")
    if result.get and result.offset != 0:
        raise QueryError("options.offset", "get returns the first row: offset must be 0")
    return result
