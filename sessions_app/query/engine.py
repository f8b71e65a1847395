"""In-memory evaluation of parsed query-filters and query-options (pure Python).

`filter_list` is the schema-less engine: it validates filters and options (`parser`), keeps the
rows the filters match and applies the options pipeline **select -> count -> order_by -> offset ->
limit -> get**. The building blocks are public so that the Django side can reuse them for leaves it
cannot push down to SQL: `make_predicate`, `apply_options`, and the path walkers `iter_values`
(filter semantics) and `resolve` (single value, order_by semantics) with the `MISSING` sentinel.

Errors met while evaluating (``^`` on a number, ``in`` a string with a null, a ``C`` operator on a
non-string, a regex match over its time budget, order_by values of different types, selecting
through an array) raise `QueryError` only when that leaf or row is actually reached: rows in order,
filters left to right, OR branches left to right, with short-circuiting, and ``get`` without
``order_by`` stops at the first matching row. Input rows are never mutated.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from sessions_app.query.ast import AllOf, AnyOf, Leaf, Node, OrderKey, Path, QueryOptions, SelectItem
from sessions_app.query.errors import MatchNotFound, QueryError
from sessions_app.query.operators import (
    OPERATORS,
    REGEX_QUERY_BUDGET_SECONDS,
    REGEX_TIMEOUT_SECONDS,
    NotApplicable,
    casefold_value,
    json_type,
    regex_subject,
)
from sessions_app.query.parser import parse_filters, parse_options

Predicate = Callable[[Any], bool]

#: List indexes longer than this many digits are "past the end" without converting them (Python
#: refuses to convert very long digit strings to int, and no list is that long anyway).
_MAX_INDEX_DIGITS = 18
_WILDCARD = "*"


class _Missing:
    """Type of `MISSING`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"


#: What a path yields where a key is absent (distinct from a present null). Compare with ``is``.
MISSING: Final = _Missing()


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _segments(path: Path | Sequence[str]) -> Sequence[str]:
    return path.segments if isinstance(path, Path) else path


def list_index(segment: str) -> int | None:
    """The list index a path segment names (ASCII digits only), or None for any other segment.

    A huge index is returned as `sys.maxsize`, i.e. past the end of every list.
    """
    if not (segment.isascii() and segment.isdigit()):
        return None
    if len(segment) > _MAX_INDEX_DIGITS:
        return sys.maxsize
    return int(segment)


# --- path walking ----------------------------------------------------------------------------------


def _walk_one(row: Any, segments: Sequence[str]) -> Any:
    """Filter semantics without wildcards: the value at the path or MISSING."""
    current = row
    for segment in segments:
        if isinstance(current, dict):
            if segment not in current:
                return MISSING
            current = current[segment]
        elif isinstance(current, list | tuple):
            index = list_index(segment)
            if index is None:
                return MISSING
            current = current[index] if index < len(current) else None
        else:
            return current  # a scalar (or null) before the end of the path is the value
    return current


def iter_values(row: Any, path: Path | Sequence[str]) -> Iterator[Any]:
    """The values a filter leaf on ``path`` compares, lazily and in document order.

    Dicts are walked by key (a missing key yields nothing: the leaf cannot match); lists by ASCII
    digit index (past the end: null) or by ``*``, which continues into every element (an empty list
    yields nothing); any other segment on a list yields nothing; a scalar or null met before the
    end of the path is yielded itself. On a dict, ``*`` is an ordinary key.
    """
    segments = _segments(path)
    if _WILDCARD not in segments:
        value = _walk_one(row, segments)
        if value is not MISSING:
            yield value
        return
    end = len(segments)
    stack: list[tuple[Any, int]] = [(row, 0)]
    while stack:
        current, position = stack.pop()
        while True:
            if position == end:
                yield current
                break
            segment = segments[position]
            if isinstance(current, dict):
                if segment not in current:
                    break
                current = current[segment]
            elif isinstance(current, list | tuple):
                if segment == _WILDCARD:
                    stack.extend((element, position + 1) for element in reversed(current))
                    break
                index = list_index(segment)
                if index is None:
                    break
                current = current[index] if index < len(current) else None
            else:
                yield current
                break
            position += 1


def resolve(row: Any, path: Path | Sequence[str]) -> Any:
    """The single value at ``path`` as order_by sees it, or `MISSING`.

    Dict keys and ASCII-digit list indexes (past the end: null) are followed; ``*`` on a list, any
    other segment on a list, a missing key, and a scalar or null before the end of the path give
    `MISSING` (paths never do attribute lookup). Order_by sorts `MISSING` like null.
    """
    current = row
    for segment in _segments(path):
        if isinstance(current, dict):
            if segment not in current:
                return MISSING
            current = current[segment]
        elif isinstance(current, list | tuple):
            index = list_index(segment)
            if index is None:
                return MISSING
            current = current[index] if index < len(current) else None
        else:
            return MISSING
    return current


def _aware(value: Any) -> Any:
    # Rows should hold aware UTC datetimes; a naive one is taken as UTC rather than never matching.
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


# --- predicates ------------------------------------------------------------------------------------


class RegexBudget:
    """The time the regular-expression matches of one query evaluation may take together.

    One budget is shared by every row and every ``~`` leaf of a query (`make_predicate` makes one
    per call unless it is given one), so the cost of a query is bounded per query, not per row: a
    pattern that backtracks for just under `REGEX_TIMEOUT_SECONDS` on each of many rows is stopped
    once `REGEX_QUERY_BUDGET_SECONDS` have been spent in matches in total. A single match is still
    bounded by `REGEX_TIMEOUT_SECONDS` (or what is left of the budget, if less). Either way the
    match raises `TimeoutError`, which the leaf turns into a `QueryError`.

    The budget is spent in CPU time of the thread (``time.thread_time``), not wall-clock time: on a
    busy machine a query's thread waits for the CPU, and that wait must not turn the thousands of
    cheap matches of an ordinary query into a refusal. Matching is deterministic, so a (pattern,
    value) pair is matched once per query and its answer reused: rows repeat values (usernames,
    origins), and repeated leaves repeat patterns. At most `MEMO_SIZE` answers are kept.
    ``matches`` counts the matches actually run (for tests).
    """

    MEMO_SIZE = 65_536

    __slots__ = ("_memo", "matches", "remaining")

    def __init__(self, seconds: float = REGEX_QUERY_BUDGET_SECONDS) -> None:
        self.remaining = seconds
        self.matches = 0
        self._memo: dict[tuple[int, str], bool] = {}

    def match(self, x: Any, pattern: Any) -> bool:
        """``pattern.match(x)`` (null as ``""``) within the budget; raises `TimeoutError` when spent."""
        subject = regex_subject(x)
        key = (id(pattern), subject)  # the leaf's closure keeps `pattern` alive: ids stay unique
        found = self._memo.get(key)
        if found is not None:
            return found
        if self.remaining <= 0:
            raise TimeoutError
        self.matches += 1
        started = time.thread_time()
        try:
            found = pattern.match(subject, timeout=min(self.remaining, REGEX_TIMEOUT_SECONDS)) is not None
        finally:
            self.remaining -= time.thread_time() - started
        if len(self._memo) >= self.MEMO_SIZE:
            self._memo.clear()
        self._memo[key] = found
        return found


def _leaf_predicate(leaf: Leaf, budget: RegexBudget) -> Predicate:
    operator = OPERATORS[leaf.op]
    evaluate = budget.match if leaf.op == "~" else operator.evaluate
    segments = leaf.path.segments
    only_dates = leaf.path.date
    fold = leaf.casefold and operator.casefold_mode == "fold"
    wildcard = _WILDCARD in segments
    try:
        expected = operator.prepare(leaf.value, leaf.casefold)
    except (NotApplicable, ValueError) as exc:  # only for hand-built leaves; the parser checks values
        raise QueryError(leaf.where, str(exc)) from None

    def test(value: Any) -> bool:
        value = _aware(value)
        if only_dates and not isinstance(value, datetime):
            return False
        if fold:
            value = casefold_value(value)
        return evaluate(value, expected)

    def predicate(row: Any) -> bool:
        try:
            if not wildcard:
                value = _walk_one(row, segments)
                return value is not MISSING and test(value)
            return any(test(value) for value in iter_values(row, segments))
        except TypeError as exc:  # NotApplicable, or Python refusing an operation
            raise QueryError(
                leaf.where, f"{leaf.operator!r} cannot be applied at {_short(leaf.path.raw)!r}: {exc}"
            ) from None
        except TimeoutError:
            raise QueryError(
                leaf.where,
                f"the regular expressions ran longer than their time budget ({REGEX_TIMEOUT_SECONDS} s "
                f"for one match, {REGEX_QUERY_BUDGET_SECONDS} s for the whole query)",
            ) from None
        except RecursionError:
            raise QueryError(leaf.where, "the value is nested too deeply to compare") from None

    return predicate


def _always(row: Any) -> bool:
    return True


def _never(row: Any) -> bool:
    return False


def make_predicate(node: Node, budget: RegexBudget | None = None) -> Predicate:
    """Compile a parsed filter tree into ``predicate(row) -> bool``.

    Its ``~`` leaves share ``budget`` (a new `RegexBudget` if None): use one predicate, or one
    budget, per query evaluation.

    `AllOf` matches when every child matches (none: always), `AnyOf` when a branch matches (none:
    never), children and branches evaluated left to right with short-circuiting. A leaf matches
    when any value `iter_values` yields for its path satisfies the operator; a missing key never
    matches, whatever the operator. Evaluation errors raise `QueryError` naming the leaf
    (``leaf.where``) when that leaf is evaluated.
    """
    if budget is None:
        budget = RegexBudget()
    if isinstance(node, Leaf):
        return _leaf_predicate(node, budget)
    if isinstance(node, AllOf):
        children = [make_predicate(child, budget) for child in node.children]
        if not children:
            return _always
        if len(children) == 1:
            return children[0]

        def all_of(row: Any) -> bool:
            return all(child(row) for child in children)

        return all_of
    if isinstance(node, AnyOf):
        branches = [make_predicate(branch, budget) for branch in node.branches]
        if not branches:
            return _never

        def any_of(row: Any) -> bool:
            return any(branch(row) for branch in branches)

        return any_of
    raise TypeError(f"not a filter node: {type(node).__name__}")


def matches(node: Node, row: Any) -> bool:
    """Whether one row matches a parsed filter tree (see `make_predicate`)."""
    return make_predicate(node)(row)


# --- select ----------------------------------------------------------------------------------------


def _select_value(row: Any, segments: Sequence[str], attribute: str) -> Any:
    current = row
    for segment in segments:
        if isinstance(current, dict):
            if segment not in current:
                return MISSING
            current = current[segment]
        elif isinstance(current, list | tuple):
            raise QueryError(attribute, "cannot select through an array")
        else:
            return MISSING  # through a scalar or null: omitted
    return current


def select_row(row: Any, select: Sequence[SelectItem]) -> dict[str, Any]:
    """Project one row.

    A path rebuilds its nesting in the output (``"a.b"`` -> ``{"a": {"b": v}}``, siblings merge, a
    later whole object replaces earlier sub-keys); ``[path, alias]`` stores the value under the
    flat key ``alias``; a missing path, or one through a scalar or null, is omitted (a null value is
    kept). Selecting through an array, or nesting under an output key that already holds a
    non-object, raises `QueryError` (``options.select[i]``). The row is not mutated: objects that
    get extra keys are copied first.
    """
    output: dict[str, Any] = {}
    owned: list[dict[str, Any]] = [output]  # dicts created here (kept alive so ids stay unique)
    owned_ids = {id(output)}
    for index, item in enumerate(select):
        attribute = f"options.select[{index}]"
        value = _select_value(row, item.path.segments, attribute)
        if value is MISSING:
            continue
        if item.alias is not None:
            output[item.alias] = value
            continue
        *parents, last = item.path.segments
        target = output
        for segment in parents:
            child = target.get(segment, MISSING)
            if isinstance(child, dict) and id(child) in owned_ids:
                target = child
                continue
            if child is MISSING:
                child = {}
            elif isinstance(child, dict):
                child = dict(child)
            else:
                raise QueryError(
                    attribute, f"the output key {_short(segment)!r} already holds {json_type(child)}"
                )
            target[segment] = child
            owned.append(child)
            owned_ids.add(id(child))
            target = child
        target[last] = value
    return output


# --- order_by --------------------------------------------------------------------------------------


class _SortKey:
    """Compares rows key by key: first key primary, nulls placed per key, direction per key."""

    __slots__ = ("keys", "values")

    def __init__(self, values: list[Any], keys: Sequence[OrderKey]) -> None:
        self.values = values
        self.keys = keys

    def __lt__(self, other: _SortKey) -> bool:
        for index, key in enumerate(self.keys):
            mine, theirs = self.values[index], other.values[index]
            if mine is None or theirs is None:
                if mine is None and theirs is None:
                    continue
                return (mine is None) == key.nulls_first
            first, second = (theirs, mine) if key.descending else (mine, theirs)
            try:
                if mine == theirs:
                    continue
                if first < second:
                    return True
                if second < first:
                    return False
                # neither equal nor ordered (NaN): treat as a tie on this key
            except TypeError:
                raise QueryError(
                    f"options.order_by[{index}]",
                    f"cannot order {json_type(mine)} and {json_type(theirs)} values",
                ) from None
        return False


def order_rows(rows: Iterable[Any], order_by: Sequence[OrderKey]) -> list[Any]:
    """Stable sort by the order_by keys (the first is primary, ``-`` descends).

    Null and missing values (and paths through a scalar, ``*``) sort last ascending and first
    descending unless the key says ``nulls_first:`` / ``nulls_last:``. Values of different types
    (other than numbers and booleans) cannot be ordered: `QueryError` (``options.order_by[i]``),
    raised only when two such values are actually compared.
    """

    def sort_key(row: Any) -> _SortKey:
        values = []
        for key in order_by:
            value = resolve(row, key.path)
            values.append(None if value is MISSING else _aware(value))
        return _SortKey(values, order_by)

    try:
        return sorted(rows, key=sort_key)
    except RecursionError:
        raise QueryError("options.order_by", "values nested too deeply to order") from None


# --- pipeline --------------------------------------------------------------------------------------


def apply_options(rows: Iterable[Any], options: QueryOptions) -> list[Any] | dict[str, Any] | int:
    """Apply select -> count -> order_by -> offset -> limit -> get to already-filtered rows.

    ``rows`` may be a lazy iterable: with ``get`` and no ``order_by`` only the first row is pulled
    (so rows after it are never filtered). ``count`` ignores offset and limit and gives 0 or 1 with
    ``get``; ``get`` with no row raises `MatchNotFound`. Returns a new list (rows themselves are
    shared with the input unless selected), one row, or an int.
    """
    if options.get and not options.order_by:
        first = next(iter(rows), MISSING)
        if first is MISSING:
            if options.count:
                return 0
            raise MatchNotFound()
        if options.select:
            first = select_row(first, options.select)
        return 1 if options.count else first

    result = [select_row(row, options.select) for row in rows] if options.select else list(rows)
    if options.count:
        return min(len(result), 1) if options.get else len(result)
    if options.order_by:
        result = order_rows(result, options.order_by)
    if options.offset:
        result = result[options.offset :]
    if options.limit:
        result = result[: options.limit]
    if options.get:
        if not result:
            raise MatchNotFound()
        return result[0]
    return result


def execute(rows: Iterable[Any], tree: Node, options: QueryOptions) -> list[Any] | dict[str, Any] | int:
    """Filter ``rows`` with an already-parsed tree, then `apply_options` (lazily, see there)."""
    predicate = make_predicate(tree)
    matching: Iterable[Any] = rows if predicate is _always else (row for row in rows if predicate(row))
    return apply_options(matching, options)


#: Alias of `select_row` (the projection of one row by ``options.select``).
project = select_row


def filter_list(
    rows: Iterable[Any], filters: object = None, options: object = None
) -> list[Any] | dict[str, Any] | int:
    """Filter plain rows with query-filters and shape them with query-options (schema-less).

    ``filters`` (a JSON array or null) is validated first, then ``options`` (an object or null), both
    completely before any row is read, so malformed input fails even without rows. Returns the list
    of matching rows, one row (``get``) or an int (``count``). Raises `QueryError` for invalid input
    and for errors met while evaluating (see the module docstring), `MatchNotFound` for ``get``
    without a row, and nothing else for any JSON ``filters`` / ``options``. ``rows`` are not mutated.
    """
    tree = parse_filters(filters)
    parsed_options = parse_options(options)
    return execute(rows, tree, parsed_options)
