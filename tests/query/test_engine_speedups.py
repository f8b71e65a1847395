"""The in-memory engine's shortcuts answer exactly as the plain evaluation does (issue 18).

`engine` compiles leaves into specialised closures, selects the top k rows with ``heapq`` over
native keys, counts without keeping rows and stops reading early when nothing later can matter.
Each shortcut is checked here against the straightforward evaluation it replaces -- every leaf
through `_generic_leaf`, every row filtered, a full `_SortKey` sort -- on generated rows and
queries: the same rows (the same objects, in the same order), or the same `QueryError`.
"""

from __future__ import annotations

import collections
import datetime as dt
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sessions_app.query import AllOf, AnyOf, Leaf, MatchNotFound, Node, QueryError, engine, filter_list
from sessions_app.query.operators import OPERATORS
from sessions_app.query.parser import parse_filters, parse_options

UTC = dt.UTC
CHECK = settings(deadline=None, database=None, max_examples=300)


class Text(str):
    """A str subclass: the specialised leaves must hand it to the generic code."""


class Record(dict[str, Any]):
    """A dict subclass row: read through the general path walker."""


naive = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2030, 1, 1))
aware = naive.map(lambda d: d.replace(tzinfo=UTC))
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["", "a", "ab", "b", "10.12.1", "10.2", "Ab"])
    | st.sampled_from(["ab", "a"]).map(Text)
    | aware
    | naive
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.sampled_from("abv"), children, max_size=3)
    ),
    max_leaves=6,
)
dict_rows = st.dictionaries(st.sampled_from(["v", "a", "l", "id"]), values, max_size=4)
rows_strategy = st.lists(dict_rows | dict_rows.map(Record) | values, max_size=8)

FAST_OPERATORS = ["=", "!=", ">", ">=", "<", "<=", "in", "nin", "^", "!^", "$", "!$"]
filter_values = (
    scalars
    | st.lists(scalars, max_size=4)
    | st.sampled_from([{"a": 1}, "ab", [[1]], [None], [1, "a", None]])
    | st.builds(lambda ms: {"$date": ms}, st.integers(0, 2 * 10**12))
)
PATHS = ["v", "a.b", "a.b.v", "l.0", "a.0.b", "id"]


def _outcome(call: Any) -> Any:
    try:
        return ("ok", call())
    except QueryError as exc:
        return ("error", exc.attribute, exc.message, type(exc).__name__)


@CHECK
@given(
    rows=rows_strategy,
    path=st.sampled_from(PATHS),
    operator=st.sampled_from(FAST_OPERATORS),
    value=filter_values,
)
def test_specialised_leaves_answer_as_the_generic_leaf(
    rows: list[Any], path: str, operator: str, value: Any
) -> None:
    try:
        (leaf,) = parse_filters([[path, operator, value]]).children
    except QueryError:
        assume(False)
    assert isinstance(leaf, Leaf)
    expected = OPERATORS[leaf.op].prepare(leaf.value, leaf.casefold)
    generic = engine._generic_leaf(leaf, engine.RegexBudget(), expected)
    compiled = engine.make_predicate(leaf)
    for row in rows:
        mine = _outcome(lambda row=row: bool(compiled(row)))
        assert mine == _outcome(lambda row=row: bool(generic(row))), row


# --- the whole pipeline against a plain reference ------------------------------------------------


def _reference_match(node: Node, row: Any, budget: engine.RegexBudget) -> bool:
    if isinstance(node, Leaf):
        expected = OPERATORS[node.op].prepare(node.value, node.casefold)
        return bool(engine._generic_leaf(node, budget, expected)(row))
    if isinstance(node, AllOf):
        return all(_reference_match(child, row, budget) for child in node.children)
    assert isinstance(node, AnyOf)
    return any(_reference_match(branch, row, budget) for branch in node.branches)


def _reference(rows: list[Any], filters: Any, options: Any) -> Any:
    """The pipeline evaluated the plain way: every row, every leaf generic, a full general sort."""
    tree, opts = parse_filters(filters), parse_options(options)
    budget = engine.RegexBudget()
    matched = (row for row in rows if _reference_match(tree, row, budget))
    if opts.get and not opts.order_by:
        first = next(matched, engine.MISSING)
        if first is engine.MISSING:
            if opts.count:
                return 0
            raise MatchNotFound()
        return 1 if opts.count else (engine.select_row(first, opts.select) if opts.select else first)
    result = list(matched)
    if opts.select:
        result = [engine.select_row(row, opts.select) for row in result]
    if opts.count:
        return min(len(result), 1) if opts.get else len(result)
    if opts.order_by:
        result = engine._sort_generally(result, opts.order_by)
    result = result[opts.offset :]
    if opts.limit:
        result = result[: opts.limit]
    if opts.get:
        if not result:
            raise MatchNotFound()
        return result[0]
    return result


def _same(a: Any, b: Any) -> bool:
    """Equal outcomes; rows must be the same objects (selected rows are new dicts: equal)."""
    if a[0] != b[0]:
        return False
    if a[0] == "error":
        return bool(a == b)
    x, y = a[1], b[1]
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(
            p is q or (type(p) is dict and p == q) for p, q in zip(x, y, strict=True)
        )
    return x is y or bool(x == y)


order_keys = st.sampled_from(
    ["v", "-v", "nulls_first:v", "nulls_last:-v", "a.b", "-a.b", "nulls_first:-a.b", "id", "-id", "l.0", "x"]
)
leaves = st.tuples(
    st.sampled_from(PATHS), st.sampled_from([*FAST_OPERATORS, "~", "Cin", "C=", "rin"]), filter_values
)
filter_trees = st.lists(
    leaves.map(list) | st.lists(leaves.map(list), max_size=3).map(lambda branches: ["OR", branches]),
    max_size=3,
)
option_sets = st.fixed_dictionaries(
    {},
    optional={
        "order_by": st.lists(order_keys, min_size=1, max_size=3),
        "limit": st.integers(0, 4),
        "offset": st.integers(0, 3),
        "count": st.booleans(),
        "select": st.sampled_from([["v", "id"], [["v", "w"]], ["a.b"], ["l.0"]]),
    },
)


@CHECK
@given(rows=rows_strategy, filters=filter_trees, options=option_sets)
def test_filter_list_answers_as_the_plain_evaluation(rows: list[Any], filters: Any, options: Any) -> None:
    try:
        parse_filters(filters), parse_options(options)
    except QueryError:
        assume(False)
    assert _same(
        _outcome(lambda: filter_list(rows, filters, options)),
        _outcome(lambda: _reference(rows, filters, options)),
    )


# --- top-k against the full sort ----------------------------------------------------------------

column_kinds = st.sampled_from(
    [
        st.text(alphabet="ab", max_size=2),
        st.integers(-2, 2) | st.booleans() | st.floats(-2, 2, allow_nan=False),
        aware | naive,
        st.floats(allow_nan=True),
        st.text(alphabet="ab", max_size=1) | st.integers(0, 1),
        st.lists(st.integers(0, 1), max_size=2),
        st.dictionaries(st.sampled_from("ab"), st.integers(0, 1), max_size=1),
    ]
)


@st.composite
def sortable_rows(draw: Any) -> list[Any]:
    """Rows whose keys are mostly of one kind each (the native path), sometimes of several."""
    kinds = {name: draw(column_kinds) for name in ("v", "w")}
    nested = draw(column_kinds)
    count = draw(st.integers(0, 25))
    rows: list[Any] = []
    for _ in range(count):
        row: dict[str, Any] = {"id": len(rows)}
        for name, kind in kinds.items():
            presence = draw(st.sampled_from(["value", "value", "value", "null", "missing"]))
            if presence != "missing":
                row[name] = draw(kind) if presence == "value" else None
        if draw(st.booleans()):
            row["a"] = {"b": draw(nested | st.none())}
        rows.append(row)
    return rows


@settings(deadline=None, database=None, max_examples=500)
@given(
    rows=sortable_rows(),
    keys=st.lists(
        st.sampled_from(
            ["v", "-v", "nulls_first:v", "nulls_last:-v", "w", "-w", "nulls_last:w", "a.b", "-a.b"]
        ),
        min_size=1,
        max_size=3,
    ),
    first=st.none() | st.integers(0, 30),
)
def test_top_k_is_the_first_rows_of_the_full_sort(
    rows: list[Any], keys: list[str], first: int | None
) -> None:
    order_by = parse_options({"order_by": keys}).order_by
    mine = _outcome(lambda: engine.order_rows(rows, order_by, first))
    full = _outcome(lambda: engine._sort_generally(rows, order_by))
    if full[0] == "ok" and first is not None:
        full = ("ok", full[1][:first])
    assert _same(mine, full)


def test_ties_keep_input_order_in_both_directions_and_with_nulls() -> None:
    rows = [{"id": i, "v": v} for i, v in enumerate([2, None, 1, 2, None, 1, 2])]
    for keys in (["v"], ["-v"], ["nulls_first:v"], ["nulls_last:-v"], ["-v", "id"], ["v", "-id"]):
        order_by = parse_options({"order_by": keys}).order_by
        full = engine._sort_generally(rows, order_by)
        for first in range(len(rows) + 1):
            assert engine.order_rows(rows, order_by, first) == full[:first], (keys, first)


def test_mixed_directions_on_every_kind() -> None:
    day = dt.datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        {"s": s, "n": n, "d": day + dt.timedelta(hours=h)}
        for s, n, h in [("b", 1, 2), ("a", 2, 1), ("b", 1.5, 0), ("a", True, 3), ("b", 1, 1), ("a", 2, 2)]
    ]
    for keys in (["s", "-n", "d"], ["-s", "n", "-d"], ["n", "-s"], ["-d", "s"], ["s", "-d"]):
        order_by = parse_options({"order_by": keys}).order_by
        full = engine._sort_generally(rows, order_by)
        assert engine.order_rows(rows, order_by) == full
        assert engine.order_rows(rows, order_by, 2) == full[:2]


def test_naive_next_to_aware_datetimes_order_as_utc() -> None:
    noon = dt.datetime(2026, 1, 1, 12)
    rows = [
        {"t": noon.replace(tzinfo=UTC)},
        {"t": noon + dt.timedelta(hours=1)},
        {"t": noon - dt.timedelta(hours=1)},
    ]
    for keys, hours in ((["t"], [11, 12, 13]), (["-t"], [13, 12, 11])):
        order_by = parse_options({"order_by": keys}).order_by
        full = engine._sort_generally(rows, order_by)
        assert [row["t"].hour for row in full] == hours
        assert engine.order_rows(rows, order_by) == full
        assert engine.order_rows(rows, order_by, 1) == full[:1]


def test_incomparable_values_are_still_an_error_with_a_limit() -> None:
    rows = [{"v": 1}, {"v": "a"}, {"v": 2}]
    with pytest.raises(QueryError) as raised:
        filter_list(rows, [], {"order_by": ["v"], "limit": 1})
    assert raised.value.attribute == "options.order_by[0]"


def test_nan_is_ordered_as_the_general_comparison_orders_it() -> None:
    rows = [{"v": 1.0, "w": 2}, {"v": math.nan, "w": 1}, {"v": 0.5, "w": 0}, {"v": 1.0, "w": 0}]
    order_by = parse_options({"order_by": ["v", "w"]}).order_by
    assert engine.order_rows(rows, order_by, 2) == engine._sort_generally(rows, order_by)[:2]


# --- reading rows --------------------------------------------------------------------------------


def _counted(rows: list[Any], consumed: list[int]) -> Iterator[Any]:
    for index, row in enumerate(rows):
        consumed.append(index)
        yield row


def test_limit_without_order_stops_reading_when_the_filters_cannot_raise() -> None:
    rows = [{"id": i, "v": i % 3} for i in range(100)]
    consumed: list[int] = []
    result = filter_list(_counted(rows, consumed), [["v", "=", 0]], {"offset": 1, "limit": 2})
    assert result == [rows[3], rows[6]]
    assert consumed == list(range(7))


@pytest.mark.parametrize(
    ("filters", "options"),
    [
        ([["v", "^", "x"]], {"limit": 1}),  # `^` raises on a number: every row must be seen
        ([["v", "in", [1]]], {"limit": 1, "select": ["l.0"]}),  # select raises on a list
    ],
)
def test_limit_still_reads_every_row_when_a_later_row_could_raise(filters: Any, options: Any) -> None:
    rows = [{"v": "x", "l": {"0": 1}}, {"v": 1, "l": [1]}]
    with pytest.raises(QueryError):
        filter_list(rows, filters, options)


def test_count_reads_a_generator_once_without_keeping_it() -> None:
    consumed: list[int] = []
    rows = [{"v": i % 2} for i in range(1000)]
    assert filter_list(_counted(rows, consumed), [["v", "=", 1]], {"count": True}) == 500
    assert len(consumed) == 1000
    assert filter_list(iter(rows), [], {"count": True}) == 1000
    assert filter_list(iter([]), [], {"count": True}) == 0


def test_in_lists_compare_as_list_membership() -> None:
    rows: list[Any] = [{"v": v} for v in (1, 1.0, True, "1", None, [1], {"a": 1}, math.nan, 0)]
    assert filter_list(rows, [["v", "in", [1, None]]]) == [rows[0], rows[1], rows[2], rows[4]]
    assert filter_list(rows, [["v", "nin", [1, None]]]) == [rows[3], rows[5], rows[6], rows[7], rows[8]]
    assert filter_list(rows, [["v", "in", [[1], {"a": 1}]]]) == [rows[5], rows[6]]


def test_rows_of_other_shapes_take_the_general_path() -> None:
    rows: list[Any] = [
        Record(v="ab"),
        collections.OrderedDict(v="ab"),
        {"v": Text("ab")},
        "ab",
        ["ab"],
        {"a": [{"b": "ab"}]},
        {"a": "ab"},
    ]
    assert filter_list(rows, [["v", "^", "a"]]) == rows[:4]
    assert filter_list(rows, [["a.0.b", "=", "ab"]]) == [rows[3], rows[5], rows[6]]
