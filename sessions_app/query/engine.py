"""In-memory evaluation of parsed query-filters and query-options (pure Python).

`filter_list` is the schema-less engine: it validates filters and options (`parser`), keeps the
rows the filters match and applies the options pipeline **select -> count -> order_by -> offset ->
limit -> get**. The building blocks are public so that the Django side can reuse them for leaves it
cannot push down to SQL: `make_predicate`, `apply_options`, and the path walkers `iter_values`
(filter semantics) and `resolve` (single value, order_by semantics) with the `MISSING` sentinel.

Errors met while evaluating (``^`` on a number, ``in`` a string with a null or a number, a ``C``
operator on a non-string, a regex match over its time budget, order_by values of different types,
selecting through an array) raise `QueryError` only when that leaf or row is actually reached: rows
in order, filters left to right, OR branches left to right, with short-circuiting, and ``get``
without ``order_by`` stops at the first matching row. Input rows are never mutated.

Speed (a million rows is an ordinary input): the filter tree is compiled once into closures, each
leaf specialised for its operator and path, so a row costs a few calls and no dispatch on operator
names; ``order_by`` with ``limit`` is a top-k selection (O(n log k)) over keys Python compares
natively, which gives exactly the rows and the order a full stable sort gives; ``count`` does not
keep the rows; ``limit`` without ``order_by`` stops reading rows once no later row can change the
answer (the filters cannot raise and nothing is selected). Every shortcut falls back to the general
path whenever it could answer differently, errors included.
"""

from __future__ import annotations

import heapq
import operator as _op
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from itertools import islice, repeat
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
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NONE_TYPE = type(None)


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


def _value_getter(segments: Sequence[str]) -> Callable[[Any], Any]:
    """`_walk_one` compiled for one path.

    Plain dicts, which is what rows nearly always are, are read with ``dict.get`` directly; the
    first value of any other type (a list to index, a scalar before the end of the path, a dict
    subclass) hands the whole row to `_walk_one`, so the answer is always `_walk_one`'s.
    """
    path = tuple(segments)
    if len(path) == 1:
        (key,) = path

        def get_one(row: Any) -> Any:
            if type(row) is dict:
                return row.get(key, MISSING)
            return _walk_one(row, path)

        return get_one
    if len(path) == 2:
        first, second = path

        def get_two(row: Any) -> Any:
            if type(row) is dict:
                inner = row.get(first, MISSING)
                if type(inner) is dict:
                    return inner.get(second, MISSING)
                if inner is MISSING:
                    return MISSING
            return _walk_one(row, path)

        return get_two

    def get_path(row: Any) -> Any:
        current = row
        for segment in path:
            if type(current) is not dict:
                return _walk_one(row, path)
            current = current.get(segment, MISSING)
            if current is MISSING:
                return MISSING
        return current

    return get_path


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


def _evaluation_error(leaf: Leaf, exc: BaseException) -> QueryError:
    """The `QueryError` naming ``leaf`` for an exception raised while evaluating it."""
    if isinstance(exc, TimeoutError):
        return QueryError(
            leaf.where,
            f"the regular expressions ran longer than their time budget ({REGEX_TIMEOUT_SECONDS} s "
            f"for one match, {REGEX_QUERY_BUDGET_SECONDS} s for the whole query)",
        )
    if isinstance(exc, RecursionError):
        return QueryError(leaf.where, "the value is nested too deeply to compare")
    return QueryError(leaf.where, f"{leaf.operator!r} cannot be applied at {_short(leaf.path.raw)!r}: {exc}")


def _generic_leaf(leaf: Leaf, budget: RegexBudget, expected: Any) -> Predicate:
    """Any leaf: every value of the path (wildcards too), normalised, then the operator table's test."""
    operator = OPERATORS[leaf.op]
    evaluate = budget.match if leaf.op == "~" else operator.evaluate
    segments = leaf.path.segments
    only_dates = leaf.path.date
    fold = leaf.casefold and operator.casefold_mode == "fold"
    get = None if _WILDCARD in segments else _value_getter(segments)

    def test(value: Any) -> bool:
        value = _aware(value)
        if only_dates and not isinstance(value, datetime):
            return False
        if fold:
            value = casefold_value(value)
        return evaluate(value, expected)

    def predicate(row: Any) -> bool:
        try:
            if get is not None:
                value = get(row)
                return value is not MISSING and test(value)
            return any(test(value) for value in iter_values(row, segments))
        except (TypeError, TimeoutError, RecursionError) as exc:  # TypeError: NotApplicable too
            raise _evaluation_error(leaf, exc) from None

    return predicate


_ORDERINGS: Final[dict[str, Callable[[Any, Any], Any]]] = {
    ">": _op.gt,
    ">=": _op.ge,
    "<": _op.lt,
    "<=": _op.le,
}
_STRING_TESTS: Final[dict[str, tuple[Callable[[str, str], bool], bool]]] = {
    "^": (str.startswith, False),
    "!^": (str.startswith, True),
    "$": (str.endswith, False),
    "!$": (str.endswith, True),
}
#: Types whose equal values hash equally and compare without surprises: an ``in`` list made only
#: of these can be looked up as a set.
_HASHABLE_SCALARS = (str, int, bool, float, _NONE_TYPE)


#: Stands for a missing object on the way to a nested key (never mutated, never returned).
_NO_OBJECT: Final[dict[str, Any]] = {}


def _equality(leaf: Leaf, expected: Any, get: Callable[[Any], Any], generic: Predicate) -> Predicate:
    """``=`` / ``!=``: Python (in)equality with a present value; one or two keys read inline."""
    # operator.eq / ne: as fast as an inline `==`, where testing a polarity flag would cost ~10%.
    compare = _op.ne if leaf.op == "!=" else _op.eq
    segments = leaf.path.segments
    # `==` raises for no JSON value; a RecursionError (or an odd object's TypeError) is reported
    # as the generic leaf reports it.
    if len(segments) == 1:
        (key,) = segments

        def equality_at_key(row: Any) -> bool:
            if type(row) is not dict:
                return generic(row)
            x = row.get(key, MISSING)
            try:
                return x is not MISSING and compare(x, expected)
            except (TypeError, RecursionError) as exc:
                raise _evaluation_error(leaf, exc) from None

        return equality_at_key

    if len(segments) == 2:
        first, second = segments

        def equality_at_keys(row: Any) -> bool:
            if type(row) is dict:
                inner = row.get(first, _NO_OBJECT)
                if type(inner) is dict:
                    x = inner.get(second, MISSING)
                    try:
                        return x is not MISSING and compare(x, expected)
                    except (TypeError, RecursionError) as exc:
                        raise _evaluation_error(leaf, exc) from None
            return generic(row)

        return equality_at_keys

    def equality(row: Any) -> bool:
        x = get(row)
        try:
            return x is not MISSING and compare(x, expected)
        except (TypeError, RecursionError) as exc:
            raise _evaluation_error(leaf, exc) from None

    return equality


def _membership(leaf: Leaf, members: list[Any], get: Callable[[Any], Any], generic: Predicate) -> Predicate:
    """``in`` / ``nin`` a list (identity or ``==``), looked up as a set when that is the same."""
    negate = leaf.op == "nin"
    want = not negate  # `found is want`: `in` gives a bool, and `is` costs less than `!=`
    segments = leaf.path.segments
    if not all(type(m) in _HASHABLE_SCALARS and m == m for m in members):  # m == m: no NaN

        def membership(row: Any) -> bool:
            x = get(row)
            if x is MISSING or (negate and x is None):
                return False
            try:
                return (x in members) is want
            except RecursionError as exc:
                raise _evaluation_error(leaf, exc) from None

        return membership

    lookup = frozenset(members)
    key = segments[0] if len(segments) == 1 else None

    def set_membership(row: Any) -> bool:
        if key is None:
            x = get(row)
        elif type(row) is dict:
            x = row.get(key, MISSING)
        else:
            return generic(row)
        if x is MISSING or (negate and x is None):
            return False
        try:
            return (x in lookup) is want
        except TypeError:  # unhashable (a list, an object): equal to no scalar of the list
            return negate

    return set_membership


def _string_test(leaf: Leaf, expected: str, get: Callable[[Any], Any], generic: Predicate) -> Predicate:
    """``^ !^ $ !$`` on a string value; anything else but a null goes to ``generic``, which raises."""
    method, negated = _STRING_TESTS[leaf.op]
    want = not negated  # str.startswith / endswith give a bool: `is` costs less than `!=`
    segments = leaf.path.segments
    if len(segments) == 1:
        (key,) = segments

        def string_test_at_key(row: Any) -> bool:
            if type(row) is dict:
                x = row.get(key, MISSING)
                if type(x) is str:
                    return method(x, expected) is want
                if x is MISSING or x is None:
                    return False
            return generic(row)

        return string_test_at_key

    def string_test(row: Any) -> bool:
        x = get(row)
        if type(x) is str:
            return method(x, expected) is want
        if x is MISSING or x is None:
            return False
        return generic(row)

    return string_test


def _ordering(leaf: Leaf, expected: Any, get: Callable[[Any], Any]) -> Predicate:
    """``> >= < <=``: never a null, never across kinds of values."""
    if expected is None:
        return _never
    compare = _ORDERINGS[leaf.op]

    def ordering(row: Any) -> bool:
        x = get(row)
        if x is MISSING or x is None:
            return False
        try:
            return bool(compare(x, expected))
        except TypeError:  # values of different kinds are not ordered: no match
            return False
        except RecursionError as exc:
            raise _evaluation_error(leaf, exc) from None

    return ordering


def _fast_leaf(leaf: Leaf, expected: Any, generic: Predicate) -> Predicate | None:
    """A predicate specialised for one common leaf, or None when the generic one must be used.

    Covered: no ``C`` prefix, no ``*`` and no ``.$date`` in the path, and a filter value that needs
    no normalisation of the row value (a row's naive datetime only matters against a datetime):
    ``= != > >= < <=`` against anything but a datetime, ``in`` / ``nin`` against a list without
    datetimes, ``^ !^ $ !$`` against a string. Short paths are read inline from plain dicts. The
    answer is `_generic_leaf`'s for every row, errors included: the specialised code handles the
    usual rows and values and hands anything else (a list to index, a non-string for ``^``, a dict
    subclass) to ``generic``.
    """
    op = leaf.op
    if leaf.casefold or leaf.path.date or _WILDCARD in leaf.path.segments or isinstance(expected, datetime):
        return None
    get = _value_getter(leaf.path.segments)
    if op in ("=", "!="):
        return _equality(leaf, expected, get, generic)
    if op in _ORDERINGS:
        return _ordering(leaf, expected, get)
    if op in ("in", "nin") and type(expected) is list:
        if any(isinstance(member, datetime) for member in expected):
            return None
        return _membership(leaf, expected, get, generic)
    if op in _STRING_TESTS and type(expected) is str:
        return _string_test(leaf, expected, get, generic)
    return None


def _leaf_predicate(leaf: Leaf, budget: RegexBudget) -> Predicate:
    operator = OPERATORS[leaf.op]
    try:
        expected = operator.prepare(leaf.value, leaf.casefold)
    except (NotApplicable, ValueError) as exc:  # only for hand-built leaves; the parser checks values
        raise QueryError(leaf.where, str(exc)) from None
    generic = _generic_leaf(leaf, budget, expected)
    return _fast_leaf(leaf, expected, generic) or generic


def _always(row: Any) -> bool:
    return True


def _never(row: Any) -> bool:
    return False


def _all_of(children: list[Predicate]) -> Predicate:
    if not children:
        return _always
    if len(children) == 1:
        return children[0]
    if len(children) == 2:
        first, second = children
        return lambda row: first(row) and second(row)
    if len(children) == 3:
        first, second, third = children
        return lambda row: first(row) and second(row) and third(row)

    def all_of(row: Any) -> bool:
        for child in children:  # noqa: SIM110 (all() would build a generator for every row)
            if not child(row):
                return False
        return True

    return all_of


def _any_of(branches: list[Predicate]) -> Predicate:
    if not branches:
        return _never
    if len(branches) == 1:
        return branches[0]
    if len(branches) == 2:
        first, second = branches
        return lambda row: first(row) or second(row)
    if len(branches) == 3:
        first, second, third = branches
        return lambda row: first(row) or second(row) or third(row)

    def any_of(row: Any) -> bool:
        for branch in branches:  # noqa: SIM110 (any() would build a generator for every row)
            if branch(row):
                return True
        return False

    return any_of


def make_predicate(node: Node, budget: RegexBudget | None = None) -> Predicate:
    """Compile a parsed filter tree into ``predicate(row)``, whose truth says whether the row matches.

    Its ``~`` leaves share ``budget`` (a new `RegexBudget` if None): use one predicate, or one
    budget, per query evaluation.

    `AllOf` matches when every child matches (none: always), `AnyOf` when a branch matches (none:
    never), children and branches evaluated left to right with short-circuiting. A leaf matches
    when any value `iter_values` yields for its path satisfies the operator; a missing key never
    matches, whatever the operator. Evaluation errors raise `QueryError` naming the leaf
    (``leaf.where``) when that leaf is evaluated. The tree is compiled once: each leaf becomes a
    closure specialised for its operator and path (`_fast_leaf`), so evaluating a row re-reads
    neither the tree nor the operator table.
    """
    if budget is None:
        budget = RegexBudget()
    if isinstance(node, Leaf):
        return _leaf_predicate(node, budget)
    if isinstance(node, AllOf):
        return _all_of([make_predicate(child, budget) for child in node.children])
    if isinstance(node, AnyOf):
        return _any_of([make_predicate(branch, budget) for branch in node.branches])
    raise TypeError(f"not a filter node: {type(node).__name__}")


def matches(node: Node, row: Any) -> bool:
    """Whether one row matches a parsed filter tree (see `make_predicate`)."""
    return bool(make_predicate(node)(row))


#: Operators whose evaluation cannot raise for any row value (ordering catches its TypeError, the
#: filter value's depth bounds every comparison), provided there is no ``C`` prefix.
_TOTAL_OPERATORS = frozenset({"=", "!=", ">", ">=", "<", "<="})


def _never_raises(node: Node) -> bool:
    """Whether evaluating ``node`` on any row can never raise (so skipping rows cannot hide an error)."""
    if isinstance(node, Leaf):
        if node.casefold:
            return False
        if node.op in _TOTAL_OPERATORS:
            return True
        return node.op in ("in", "nin") and isinstance(node.value, list)
    if isinstance(node, AllOf):
        return all(_never_raises(child) for child in node.children)
    return all(_never_raises(branch) for branch in node.branches)


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


def _sort_generally(rows: list[Any], order_by: Sequence[OrderKey]) -> list[Any]:
    """The reference order: a stable sort comparing `_SortKey`s (any values, lazy errors)."""

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


class _Reversed:
    """A string that sorts backwards (a descending string key among ascending ones)."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and self.value == other.value

    def __lt__(self, other: _Reversed) -> bool:
        return other.value < self.value


_NUMBER_TYPES = frozenset({int, bool, float})


def _order_column(rows: list[Any], segments: Sequence[str], plain_dicts: bool) -> list[Any]:
    """The value of one order key for every row: `resolve`'s, with `MISSING` as None."""
    if plain_dicts and len(segments) == 1:
        return list(map(dict.get, rows, repeat(segments[0])))
    values = []
    for row in rows:
        value = resolve(row, segments)
        values.append(None if value is MISSING else value)
    return values


def _native_keys(rows: list[Any], order_by: Sequence[OrderKey]) -> tuple[list[Any] | None, bool] | None:
    """Sort keys that Python compares natively, ordering ``rows`` exactly as `_sort_generally` does.

    Returns ``(keys, reverse)`` for ``sorted(range(n), key=keys.__getitem__, reverse=reverse)``
    (``keys`` None: every key is null, the order is the input order), or None when a key's values
    are not all of one natively ordered kind -- strings, numbers (booleans included, no NaN) or
    datetimes -- so that the general comparison, with its errors, decides. Per key, nulls become a
    rank placing them first or last, and a key whose direction is not the first key's is negated
    (numbers, datetimes as a distance from the epoch) or wrapped in `_Reversed` (strings). Using the
    keys may still raise TypeError (naive next to aware datetimes): the caller then sorts generally.
    """
    reverse = order_by[0].descending
    plain_dicts = set(map(type, rows)) <= {dict}
    columns: list[list[Any]] = []
    for key in order_by:
        column = _order_column(rows, key.path.segments, plain_dicts)
        kinds = set(map(type, column))
        has_null = _NONE_TYPE in kinds
        kinds.discard(_NONE_TYPE)
        if not kinds:
            continue  # null for every row: no effect on the order
        if kinds <= _NUMBER_TYPES:
            if float in kinds and any(map(_op.ne, column, column)):
                return None  # NaN is neither equal nor ordered: only the general comparison is exact
            flip: Callable[[Any], Any] = _op.neg
        elif kinds == {datetime}:
            # Naive datetimes are UTC to the general comparison: among themselves they order the
            # same raw; next to aware ones, comparing raises TypeError and the general sort decides.
            def flip(value: Any) -> Any:
                return _EPOCH - value

        elif kinds == {str}:
            flip = _Reversed
        else:
            return None
        if key.descending != reverse:
            column = [None if value is None else flip(value) for value in column]
        if has_null:
            null_rank = int(key.nulls_first == reverse)
            column = [(null_rank, 0) if value is None else (1 - null_rank, value) for value in column]
        columns.append(column)
    if not columns:
        return None, reverse
    return (columns[0] if len(columns) == 1 else list(zip(*columns, strict=True))), reverse


def order_rows(rows: Iterable[Any], order_by: Sequence[OrderKey], first: int | None = None) -> list[Any]:
    """Stable sort by the order_by keys (the first is primary, ``-`` descends); the first ``first``
    rows of that order when ``first`` is given.

    Null and missing values (and paths through a scalar, ``*``) sort last ascending and first
    descending unless the key says ``nulls_first:`` / ``nulls_last:``. Values of different types
    (other than numbers and booleans) cannot be ordered: `QueryError` (``options.order_by[i]``),
    raised only when two such values are actually compared. With ``first``, the rows come from a
    top-k selection (``heapq``, O(n log k)) over native keys, which gives exactly the sort's first
    rows; keys that are not natively ordered are sorted the general way (`_sort_generally`).
    """
    rows = rows if isinstance(rows, list) else list(rows)
    if not order_by or len(rows) < 2:
        return rows[:first] if first is not None else list(rows)
    try:
        native = _native_keys(rows, order_by)
        if native is not None:
            keys, reverse = native
            if keys is None:
                return rows[:first] if first is not None else list(rows)
            by_key = keys.__getitem__
            if first is not None and first < len(rows):
                # heapq's selections are documented as equal to sorted(...)[:first], ties in input
                # order; one pass over the keys (further passes cost more than they save).
                select = heapq.nlargest if reverse else heapq.nsmallest
                indexes = select(first, range(len(rows)), key=by_key)
            else:
                indexes = sorted(range(len(rows)), key=by_key, reverse=reverse)
            return [rows[index] for index in indexes]
    except TypeError:
        pass  # naive next to aware datetimes (or a tzinfo without offset): the general sort decides
    ordered = _sort_generally(rows, order_by)
    return ordered[:first] if first is not None else ordered


# --- pipeline --------------------------------------------------------------------------------------


def _count(rows: Iterable[Any]) -> int:
    """How many rows an iterable yields, without keeping them."""
    if isinstance(rows, list | tuple):
        return len(rows)
    last = deque(enumerate(rows, 1), maxlen=1)
    return last[0][0] if last else 0


def _apply(
    rows: Iterable[Any], options: QueryOptions, *, may_stop_early: bool
) -> list[Any] | dict[str, Any] | int:
    if options.get and not options.order_by:
        first = next(iter(rows), MISSING)
        if isinstance(first, _Missing):
            if options.count:
                return 0
            raise MatchNotFound()
        if options.select:
            first = select_row(first, options.select)
        return 1 if options.count else first

    if options.select:
        select = options.select
        rows = (select_row(row, select) for row in rows)
    if options.count:
        # After select (its errors count), before order_by, offset and limit.
        count = _count(rows)
        return min(count, 1) if options.get else count

    end = options.offset + options.limit if options.limit else None
    if options.get:
        end = 1
    if options.order_by:
        result = order_rows(rows, options.order_by, end)
    elif end is not None and may_stop_early and not options.select:
        result = list(islice(rows, end))
    else:
        result = list(rows)
    if options.offset:
        result = result[options.offset :]
    if options.limit:
        result = result[: options.limit]
    if options.get:
        if not result:
            raise MatchNotFound()
        row: dict[str, Any] = result[0]  # a row is a JSON object
        return row
    return result


def apply_options(rows: Iterable[Any], options: QueryOptions) -> list[Any] | dict[str, Any] | int:
    """Apply select -> count -> order_by -> offset -> limit -> get to already-filtered rows.

    ``rows`` may be a lazy iterable: with ``get`` and no ``order_by`` only the first row is pulled
    (so rows after it are never filtered). ``count`` ignores offset and limit and gives 0 or 1 with
    ``get``; ``get`` with no row raises `MatchNotFound`. Returns a new list (rows themselves are
    shared with the input unless selected), one row, or an int.
    """
    return _apply(rows, options, may_stop_early=False)


def execute(rows: Iterable[Any], tree: Node, options: QueryOptions) -> list[Any] | dict[str, Any] | int:
    """Filter ``rows`` with an already-parsed tree, then `apply_options` (lazily, see there).

    With ``limit`` and no ``order_by``, reading stops after ``offset + limit`` matches when the
    filters cannot raise and nothing is selected: the rows left unread could change nothing.
    """
    predicate = make_predicate(tree)
    matching: Iterable[Any] = rows if predicate is _always else filter(predicate, rows)
    return _apply(matching, options, may_stop_early=_never_raises(tree))


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
    without a row, and nothing else for any JSON ``filters`` / ``options``; like TrueNAS's
    ``filter_list``, any other keyword argument is a `TypeError`. ``rows`` are not mutated.
    """
    tree = parse_filters(filters)
    parsed_options = parse_options(options)
    return execute(rows, tree, parsed_options)
