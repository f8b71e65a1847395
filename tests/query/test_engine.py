"""The in-memory engine beyond the conformance cases: path walking, laziness, errors, no mutation."""

from __future__ import annotations

import copy
import datetime as dt
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from sessions_app.query import (
    MISSING,
    Leaf,
    MatchNotFound,
    Path,
    QueryError,
    filter_list,
    make_predicate,
    parse_filters,
    parse_options,
    resolve,
)
from sessions_app.query.engine import execute, iter_values, list_index, project, select_row

UTC = dt.UTC
ROW = {"a": {"b": 1}, "l": [10, [20, 21], {"k": "v"}], "s": "str", "n": None, "*": {"v": "star"}}


@pytest.mark.parametrize(
    ("segments", "values"),
    [
        (("a", "b"), [1]),
        (("a", "zz"), []),
        (("s", "length"), ["str"]),
        (("n", "x", "y"), [None]),
        (("l", "0"), [10]),
        (("l", "3"), [None]),
        (("l", "3", "deeper"), [None]),
        (("l", "9" * 5000), [None]),
        (("l", "-1"), []),
        (("l", "\u0661"), []),  # ARABIC-INDIC DIGIT ONE: a digit, but not ASCII
        (("l", "\u00b2"), []),  # SUPERSCRIPT TWO
        (("l", "*"), [10, [20, 21], {"k": "v"}]),
        (("l", "*", "k"), [10, "v"]),
        (("l", "*", "*"), [10, 20, 21]),
        (("*", "v"), ["star"]),
        (("missing",), []),
    ],
)
def test_iter_values(segments: tuple[str, ...], values: list[Any]) -> None:
    assert list(iter_values(ROW, segments)) == values


@pytest.mark.parametrize(
    ("segments", "value"),
    [
        (("a", "b"), 1),
        (("a", "zz"), MISSING),
        (("s", "length"), MISSING),
        (("n",), None),
        (("n", "x"), MISSING),
        (("l", "1", "0"), 20),
        (("l", "7"), None),
        (("l", "*"), MISSING),
        (("*", "v"), "star"),
    ],
)
def test_resolve(segments: tuple[str, ...], value: Any) -> None:
    got = resolve(ROW, Path(segments, ".".join(segments)))
    if value is MISSING:
        assert got is MISSING
    else:
        assert got == value
    assert resolve(ROW, segments) == got


def test_list_index() -> None:
    assert list_index("0") == 0
    assert list_index("0012") == 12
    assert list_index("9" * 100) == sys.maxsize
    assert list_index("") is None
    assert list_index("1a") is None
    assert list_index("+1") is None


def test_rows_that_are_not_objects_resolve_to_themselves() -> None:
    rows = ["abc", 5, None, [1, 2]]
    assert filter_list(rows, [["anything.at.all", "=", "abc"]]) == ["abc"]
    assert filter_list(rows, [["x", "=", None]]) == [None]
    assert filter_list(rows, [["1", "=", 2]]) == [[1, 2]]


def test_regex_timeout_is_a_query_error_naming_the_leaf() -> None:
    rows = [{"id": 1, "v": "a" * 5000 + "!"}]
    with pytest.raises(QueryError) as raised:
        filter_list(rows, [["id", "!=", 0], ["OR", [["v", "~", "(a|aa)+$"]]]])
    assert raised.value.attribute == "filters[1][1][0]"


def test_ci_regex_ignores_case_with_the_pattern_as_written() -> None:
    rows = [{"v": "STRASSE"}, {"v": "straße"}]
    assert filter_list(rows, [["v", "C~", "stras"]]) == [{"v": "STRASSE"}]


def test_evaluation_error_names_the_leaf_and_is_lazy() -> None:
    rows = [{"id": 1, "v": "x"}, {"id": 2, "v": 5}]
    assert filter_list(rows, [["id", "=", 1], ["v", "^", "x"]]) == [rows[0]]
    with pytest.raises(QueryError) as raised:
        filter_list(rows, [["id", ">", 0], ["v", "^", "x"]])
    assert raised.value.attribute == "filters[1]"


@pytest.mark.parametrize(
    ("operator", "value"),
    [("in", {"k": 1}), ("rin", "x"), ("C=", "x"), ("~", "x"), ("$", "x"), ("Crin", "x")],
)
def test_inapplicable_operators_raise(operator: str, value: Any) -> None:
    with pytest.raises(QueryError):
        filter_list([{"v": [[1]]} if operator == "in" else {"v": 5}], [["v", operator, value]])


def test_ordering_operators_never_match_across_types_or_nulls() -> None:
    rows: list[Any] = [{"v": v} for v in (1, "1", None, [1], {"a": 1}, True, 1.5)]
    assert filter_list(rows, [["v", ">=", 1]]) == [{"v": 1}, {"v": True}, {"v": 1.5}]
    assert filter_list(rows, [["v", "<", None]]) == []
    assert filter_list(rows, [["v", ">", {"a": 0}]]) == []


def test_naive_datetimes_in_rows_are_taken_as_utc() -> None:
    rows = [{"ts": dt.datetime(2024, 1, 1)}, {"ts": dt.datetime(2024, 1, 2, tzinfo=UTC)}]
    assert filter_list(rows, [["ts.$date", "<", "2024-01-01T12:00:00Z"]]) == [rows[0]]
    assert filter_list(rows, [["ts", "=", {"$date": 1704067200000}]]) == [rows[0]]
    assert filter_list(rows, [], {"order_by": ["-ts"]}) == [rows[1], rows[0]]


def test_get_without_order_by_reads_only_up_to_the_first_match() -> None:
    consumed: list[int] = []

    def rows() -> Iterator[dict[str, Any]]:
        for index in range(5):
            consumed.append(index)
            yield {"id": index}

    assert filter_list(rows(), [["id", ">=", 1]], {"get": True}) == {"id": 1}
    assert consumed == [0, 1]


def test_get_without_match_and_count_with_get() -> None:
    with pytest.raises(MatchNotFound):
        filter_list([{"id": 1}], [["id", "=", 2]], {"get": True})
    assert filter_list([{"id": 1}, {"id": 1}], [["id", "=", 1]], {"get": True, "count": True}) == 1


def test_secondary_order_key_compares_only_within_ties() -> None:
    rows = [{"g": 1, "v": "b"}, {"g": 2, "v": 5}, {"g": 1, "v": "a"}, {"g": 2, "v": 3}]
    assert filter_list(rows, [], {"order_by": ["g", "v"]}) == [rows[2], rows[0], rows[3], rows[1]]
    with pytest.raises(QueryError) as raised:
        filter_list(rows, [], {"order_by": ["v"]})
    assert raised.value.attribute == "options.order_by[0]"


def test_select_does_not_mutate_rows() -> None:
    rows = [{"id": 1, "p": {"city": "x", "zip": 1}, "q": {"r": {"s": 1, "t": 2}}}]
    snapshot = copy.deepcopy(rows)
    result = filter_list(rows, [], {"select": ["p", "p.city", "q.r", "q.r.s", ["id", "p2"]]})
    assert result == [{"p": {"city": "x", "zip": 1}, "q": {"r": {"s": 1, "t": 2}}, "p2": 1}]
    assert rows == snapshot


def test_select_nested_under_a_non_object_output_key_is_an_error() -> None:
    with pytest.raises(QueryError) as raised:
        select_row({"id": 1, "a": {"b": 2}}, parse_options({"select": [["id", "a"], "a.b"]}).select)
    assert raised.value.attribute == "options.select[1]"
    # nothing to store, nothing to conflict with
    assert select_row({"id": 1, "a": {}}, parse_options({"select": [["id", "a"], "a.b"]}).select) == {"a": 1}


def test_execute_and_project_are_the_pipeline_pieces() -> None:
    rows = [{"id": 2, "x": 1}, {"id": 1, "x": 2}]
    tree = parse_filters([["x", ">", 0]])
    opts = parse_options({"order_by": ["id"], "select": ["id"]})
    assert execute(rows, tree, opts) == [{"id": 1}, {"id": 2}]
    assert project(rows[0], opts.select) == {"id": 2}


def test_make_predicate_on_hand_built_leaf_with_bad_regex() -> None:
    leaf = Leaf(Path(("v",), "v"), "~", False, "(", "filters[0]")
    with pytest.raises(QueryError) as raised:
        make_predicate(leaf)
    assert raised.value.attribute == "filters[0]"


def test_deep_row_values_are_compared_without_recursion_errors() -> None:
    deep: Any = 1
    for _ in range(5000):
        deep = [deep]
    rows = [{"v": deep}, {"v": deep}]
    assert filter_list(rows, [["v", "=", [[[1]]]]]) == []
    assert filter_list(rows, [["v", "rin", [[1]]]]) == []
    result = filter_list(rows, [], {"order_by": ["v"]})  # equal: identity short-circuits
    assert isinstance(result, list)
    assert len(result) == 2
