"""Property-based: any JSON filters/options and any rows give a result or a `QueryError`, nothing else."""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sessions_app.query import MatchNotFound, QueryError, filter_list, parse_filters, parse_options
from sessions_app.query.operators import OPERATOR_NAMES

UTC = dt.UTC
FUZZ = settings(deadline=None, database=None)

KEYS = ["a", "b", "items", "ts", "", "x.y", "*", "0", "v"]
PATHS = [
    "a", "b", "a.b", "a.b.c", "items.*.v", "items.0", "items.*", "items.*.*", "ts", "ts.$date",
    "a.$date", "", "x\\.y", "*", "0", "a.99999999999999999999999", "v.-1", "items.\u0661",
]  # fmt: skip
STRINGS = [
    "a", "A", "ab", "", ".*", "(", "^(a+)+$", "(a|aa)+$", "[A-Z]", "x{e<=1}", "2024-01-01", "2024-01-01T00:00:00Z",
    "Straße", "STRASSE", "\u212a",
]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.integers()
    | st.floats()
    | st.sampled_from(STRINGS)
    | st.text(max_size=6)
)
date_objects = st.builds(lambda ms: {"$date": ms}, st.integers(-(10**15), 10**15) | st.integers() | scalars)
json_values = st.recursive(
    scalars | date_objects,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=16,
)
row_scalars = (
    scalars
    | st.datetimes(timezones=st.just(UTC))
    | st.datetimes()
    | st.sampled_from([dt.datetime(2024, 1, 1, tzinfo=UTC)])
)
row_values = st.recursive(
    row_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(KEYS), children, max_size=4)
    ),
    max_leaves=12,
)
rows_strategy = st.lists(
    st.dictionaries(st.sampled_from(KEYS), row_values, max_size=5) | row_values,
    max_size=6,
)

operators = st.sampled_from(sorted(OPERATOR_NAMES)) | st.sampled_from(["==", "c=", "C", "LIKE", "OR"])
leaf_values = json_values | st.lists(st.sampled_from(STRINGS), max_size=4)
leaves = st.tuples(st.sampled_from(PATHS) | st.text(max_size=5), operators, leaf_values).map(list)
filter_nodes = st.recursive(
    leaves,
    lambda children: st.tuples(
        st.just("OR"), st.lists(children | st.lists(children, min_size=1, max_size=3), max_size=3)
    ).map(list),
    max_leaves=8,
)
structured_filters = st.lists(filter_nodes, max_size=4)

# Well-formed filters: each operator with a value of the shape it takes, on paths the rows have, so
# that most cases reach the evaluation instead of the validation (`structured_filters` above keeps
# the malformed ones).
VALID_PATHS = ["a", "b", "v", "a.b", "items.*.v", "items.0", "ts", "x\\.y"]
STRING_PATHS = st.sampled_from(["a", "v", "items.*.v", "x\\.y"])  # strings in `typed_rows`
simple_values = (
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["a", "A", "ab", "", "Straße"])
)
words = st.sampled_from(["a", "A", "ab", "", "b", "Straße", "STRASSE"])
valid_leaves = st.one_of(
    st.tuples(st.sampled_from(VALID_PATHS), st.sampled_from(["=", "!="]), simple_values),
    st.tuples(
        st.sampled_from(VALID_PATHS), st.sampled_from(["in", "nin"]), st.lists(simple_values, max_size=3)
    ),
    st.tuples(st.just("b"), st.sampled_from([">", ">=", "<", "<="]), st.integers(-3, 3)),
    st.tuples(
        STRING_PATHS, st.sampled_from([">", ">=", "<", "<=", "^", "!^", "$", "!$", "rin", "rnin"]), words
    ),
    st.tuples(STRING_PATHS, st.sampled_from(["~", "C~"]), st.sampled_from(["a", "^a", "b$", "[ab]+", "."])),
    st.tuples(
        STRING_PATHS,
        st.sampled_from(["C=", "C!=", "C^", "C!^", "C$", "C!$", "C<", "C<=", "C>", "C>="]),
        words,
    ),
    st.tuples(STRING_PATHS, st.sampled_from(["Cin", "Cnin"]), st.lists(words, max_size=3)),
).map(list)
valid_nodes = st.recursive(
    valid_leaves,
    lambda children: st.tuples(
        st.just("OR"), st.lists(children | st.lists(children, min_size=1, max_size=2), min_size=1, max_size=3)
    ).map(list),
    max_leaves=6,
)
valid_filters = st.lists(valid_nodes, max_size=3)
# Rows whose fields have one type each, as a declared schema gives them (strings where the string
# operators look, numbers, dates, a list of objects), some keys missing and some null.
typed_rows = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "a": words,
            "b": st.integers(-3, 3) | st.none(),
            "v": words,
            "ts": st.datetimes(timezones=st.just(UTC)),
            "items": st.lists(st.fixed_dictionaries({"v": words}), max_size=3),
            "x.y": words,
        },
    ),
    max_size=6,
)
any_filters = structured_filters | json_values | st.none()

order_entries = st.sampled_from(
    ["a", "-a", "nulls_first:b", "nulls_last:-a.b", "ts", "-ts", "items.0", "v", "--v", "*", "-"]
) | st.text(max_size=5)
select_entries = st.sampled_from(["a", "a.b", "items", "items.v", "*", "ts", "x\\.y"]) | st.tuples(
    st.sampled_from(PATHS), st.sampled_from(["a", "b", "a.b", "x"])
).map(list)
structured_options = st.fixed_dictionaries(
    {},
    optional={
        "count": st.booleans() | json_values,
        "get": st.booleans() | json_values,
        "offset": st.integers(-1, 4) | json_values,
        "limit": st.integers(-1, 4) | json_values,
        "order_by": st.lists(order_entries, max_size=3) | json_values,
        "select": st.lists(select_entries, max_size=3) | json_values,
        "relationships": st.booleans() | json_values,
        "extra": st.dictionaries(st.text(max_size=3), json_values, max_size=2) | json_values,
        "prefix": st.none() | st.text(max_size=3) | json_values,
        "force_sql_filters": st.booleans(),
    },
)
any_options = structured_options | json_values | st.none()


def _outcome(rows: list[Any], filters: object, options: object) -> Any:
    snapshot = copy.deepcopy(rows)
    try:
        result = filter_list(rows, filters, options)
    except QueryError as exc:
        result = exc
    assert rows == snapshot, "filter_list mutated its rows"
    return result


@FUZZ
@given(rows=rows_strategy, filters=any_filters, options=any_options)
def test_filter_list_returns_or_raises_query_error(rows: list[Any], filters: object, options: object) -> None:
    result = _outcome(rows, filters, options)
    if isinstance(result, QueryError):
        assert isinstance(result.attribute, str)
    else:
        assert isinstance(result, list | dict | int) or any(result is row for row in rows)


@FUZZ
@given(filters=json_values | structured_filters)
def test_parse_filters_accepts_or_raises_query_error(filters: object) -> None:
    with contextlib.suppress(QueryError):
        parse_filters(filters)


@FUZZ
@given(options=any_options)
def test_parse_options_accepts_or_raises_query_error(options: object) -> None:
    with contextlib.suppress(QueryError):
        parse_options(options)


def _is_subsequence(found: list[Any], rows: list[Any]) -> bool:
    position = 0
    for row in found:
        while position < len(rows) and rows[position] is not row:
            position += 1
        if position == len(rows):
            return False
        position += 1
    return True


def _check_list_count_and_get(rows: list[Any], filters: list[Any]) -> bool:
    """``list``, ``count``, ``count`` + ``get`` and ``get`` agree; False when the query was refused."""
    try:
        listed = filter_list(rows, filters)
    except QueryError:
        return False
    assert isinstance(listed, list)
    assert _is_subsequence(listed, rows)
    assert filter_list(rows, filters, {"count": True}) == len(listed)
    assert filter_list(rows, filters, {"count": True, "get": True}) == min(len(listed), 1)
    if listed:
        assert filter_list(rows, filters, {"get": True}) is listed[0]
    else:
        with pytest.raises(MatchNotFound):
            filter_list(rows, filters, {"get": True})
    return True


@settings(FUZZ, max_examples=300)  # cheap: in-memory only
@given(rows=typed_rows, filters=valid_filters)
def test_list_count_and_get_agree(rows: list[Any], filters: list[Any]) -> None:
    """Well-formed queries on typed rows: about 9 in 10 are evaluated (the rest meet a type the
    operator refuses, e.g. a regex on a missing key's null), so the agreement is really exercised."""
    _check_list_count_and_get(rows, filters)


@FUZZ
@given(rows=rows_strategy, filters=structured_filters)
def test_list_count_and_get_agree_on_any_input(rows: list[Any], filters: list[Any]) -> None:
    """Malformed filters and untyped rows: refused with `QueryError`, or the same agreement."""
    _check_list_count_and_get(rows, filters)


@FUZZ
@given(
    rows=rows_strategy, key=st.sampled_from(["a", "-a", "nulls_first:a", "nulls_last:-a", "a.b", "items.0"])
)
def test_order_by_is_a_permutation(rows: list[Any], key: str) -> None:
    try:
        ordered = filter_list(rows, [], {"order_by": [key]})
    except QueryError:
        return
    assert isinstance(ordered, list)
    assert sorted(map(id, ordered)) == sorted(map(id, rows))


@pytest.mark.parametrize(
    ("pattern", "subject"),
    [("^(a+)+$", "a" * 30 + "!"), ("(a|aa)+$", "a" * 5000 + "!"), ("(\\w+\\s?)+$", "a" * 5000 + "!")],
)
def test_catastrophic_backtracking_returns_or_raises_query_error(pattern: str, subject: str) -> None:
    for operator in ("~", "C~"):
        outcome = _outcome([{"v": subject}], [["v", operator, pattern]], None)
        if isinstance(outcome, QueryError):
            assert outcome.attribute == "filters[0]"
        else:
            assert outcome == []
