"""`parse_filters` / `parse_options`: valid shapes, and the `attribute` each invalid input names."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from sessions_app.query import (
    AllOf,
    AnyOf,
    Leaf,
    OrderKey,
    Path,
    QueryError,
    QueryOptions,
    SelectItem,
    parse_filters,
    parse_options,
)
from sessions_app.query.operators import OPERATOR_NAMES, OPERATORS, lookup_operator
from sessions_app.query.parser import parse_path

UTC = dt.UTC


def _nested_or(levels: int, inner: list[Any] | None = None) -> list[Any]:
    node: list[Any] = ["OR", [inner if inner is not None else ["a", "=", 1]]]
    for _ in range(levels - 1):
        node = ["OR", [node]]
    return node


def _leaves(count: int) -> list[Any]:
    return [["a", "=", index] for index in range(count)]


# --- paths -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "segments", "date"),
    [
        ("a", ("a",), False),
        ("a.b.c", ("a", "b", "c"), False),
        ("", ("",), False),
        ("a.", ("a", ""), False),
        ("x\\.y", ("x.y",), False),
        ("m.x\\.y", ("m", "x.y"), False),
        ("w\\", ("w\\",), False),
        ("a\\\\.b", ("a\\.b",), False),
        ("ts.$date", ("ts",), True),
        ("meta.seen.$date", ("meta", "seen"), True),
        ("$date", ("$date",), False),
        ("ts\\.$date", ("ts.$date",), False),
        ("items.*.v", ("items", "*", "v"), False),
    ],
)
def test_parse_path(raw: str, segments: tuple[str, ...], date: bool) -> None:
    assert parse_path(raw) == Path(segments, raw, date)


def test_parse_path_without_date_keeps_the_segment() -> None:
    assert parse_path("ts.$date", allow_date=False) == Path(("ts", "$date"), "ts.$date", False)


# --- operators -------------------------------------------------------------------------------------


def test_operator_names_are_the_base_operators_and_their_c_variants() -> None:
    assert len(OPERATOR_NAMES) == 2 * len(OPERATORS) == 30
    assert lookup_operator("C!^") == (OPERATORS["!^"], True)
    assert lookup_operator("nin") == (OPERATORS["nin"], False)
    for unknown in ("c=", "C", "CC=", "==", "", " =", "LIKE", "IN", "Cor"):
        assert lookup_operator(unknown) is None


# --- valid filters ---------------------------------------------------------------------------------


def test_null_and_empty_filters_are_an_empty_and() -> None:
    assert parse_filters(None) == AllOf((), "filters")
    assert parse_filters([]) == AllOf((), "filters")


def test_leaf_shape_and_locations() -> None:
    tree = parse_filters(
        [
            ["name", "C=", "Bob"],
            ["OR", [["uid", ">", 5], [["a.b", "in", [1]], ["OR", []]]]],
        ]
    )
    assert tree.where == "filters"
    first, second = tree.children
    assert first == Leaf(Path(("name",), "name"), "=", True, "Bob", "filters[0]")
    assert first.operator == "C="
    assert isinstance(second, AnyOf)
    assert second.where == "filters[1]"
    leaf, group = second.branches
    assert isinstance(leaf, Leaf)
    assert leaf.where == "filters[1][1][0]"
    assert isinstance(group, AllOf)
    assert group.where == "filters[1][1][1]"
    assert group.children[0] == Leaf(Path(("a", "b"), "a.b"), "in", False, [1], "filters[1][1][1][0]")
    assert group.children[1] == AnyOf((), "filters[1][1][1][1]")


def test_leaf_named_or_is_a_leaf() -> None:
    (leaf,) = parse_filters([["OR", "=", 1]]).children
    assert isinstance(leaf, Leaf)
    assert leaf.path.segments == ("OR",)


def test_date_objects_are_decoded_everywhere_in_values() -> None:
    (leaf,) = parse_filters([["v", "in", [{"$date": 0}, {"a": [{"$date": 1500}]}]]]).children
    assert isinstance(leaf, Leaf)
    epoch = dt.datetime(1970, 1, 1, tzinfo=UTC)
    assert leaf.value == [epoch, {"a": [epoch + dt.timedelta(milliseconds=1500)]}]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-01T00:00:00Z", dt.datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-01-01T01:00:00+01:00", dt.datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-01-01T00:00:00", dt.datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-01-02", dt.datetime(2024, 1, 2, tzinfo=UTC)),
        ("2024-01-01T00:00:00.500", dt.datetime(2024, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC)),
        ({"$date": 1704067200000}, dt.datetime(2024, 1, 1, tzinfo=UTC)),
    ],
)
def test_date_suffix_values_become_aware_utc_datetimes(value: object, expected: dt.datetime) -> None:
    (leaf,) = parse_filters([["ts.$date", ">=", value]]).children
    assert isinstance(leaf, Leaf)
    assert leaf.path.date
    assert leaf.value == expected
    assert leaf.value.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize(
    "filters",
    [
        [["a", "~", "a" * 256]],
        [["a", "in", list(range(1000))]],
        [["a", "Cnin", ["x"] * 1000]],
        _leaves(100),
        [_nested_or(3)],
        [["OR", [[_nested_or(1), ["b", "=", 1]]]]],
        [["OR", [["OR", [["OR", []]]]]]],
        [["a", "C=", None], ["a", "C=", ["x", "Y"]], ["a", "Crin", "X"], ["a", "C~", "[A-Z]"]],
        [["a", "in", "substring"], ["a", "nin", {"key": 1}], ["a", "rin", 5], ["a", "=", [[[1]]]]],
        [["a", "~", "\\{x\\}|[\\[]|a{2,3}|\\N{LATIN SMALL LETTER A}"]],
    ],
)
def test_valid_filters(filters: list[Any]) -> None:
    tree = parse_filters(filters)
    assert isinstance(tree, AllOf)
    assert len(tree.children) == len(filters)  # one node per element, none dropped or merged


# --- invalid filters -------------------------------------------------------------------------------

INVALID_FILTERS: list[tuple[str, object, str]] = [
    ("string", "name", "filters"),
    ("object", {"name": "x"}, "filters"),
    ("number", 5, "filters"),
    ("number entry", [7], "filters[0]"),
    ("string entry", ["a=1"], "filters[0]"),
    ("object entry", [{"a": 1}], "filters[0]"),
    ("null entry", [None], "filters[0]"),
    ("empty entry", [[]], "filters[0]"),
    ("one element", [["a"]], "filters[0]"),
    ("four elements", [["a", "=", 1, 2]], "filters[0]"),
    ("two elements not OR", [["a", "b"]], "filters[0]"),
    ("lowercase or", [["or", [["a", "=", 1]]]], "filters[0]"),
    ("OR without branches", [["OR"]], "filters[0]"),
    ("OR with extra element", [["OR", [["a", "=", 1]], "x"]], "filters[0]"),
    ("OR branches not a list", [["OR", 5]], "filters[0][1]"),
    ("OR branches a string", [["OR", ""]], "filters[0][1]"),
    ("OR empty branch", [["OR", [[]]]], "filters[0][1][0]"),
    ("OR string branch", [["OR", ["a=1"]]], "filters[0][1][0]"),
    ("OR bad leaf", [["OR", [["a", "=", 1], ["a", "===", 1]]]], "filters[0][1][1][1]"),
    ("top-level AND group", [[["a", "=", 1], ["b", "=", 2]]], "filters[0]"),
    ("top-level AND group of three", [[["a", "=", 1], ["b", "=", 2], ["c", "=", 3]]], "filters[0]"),
    ("AND group in AND group", [["OR", [[[["a", "=", 1]]]]]], "filters[0][1][0][0]"),
    ("AND group member not array", [["OR", [[["a", "=", 1], "x"]]]], "filters[0][1][0][1]"),
    ("path not a string", [[5, "=", 1]], "filters[0][0]"),
    ("path null", [[None, "=", 1]], "filters[0][0]"),
    ("operator not a string", [["a", 5, 1]], "filters[0][1]"),
    ("unknown operator", [["a", "==", 1]], "filters[0][1]"),
    ("empty operator", [["a", "", 1]], "filters[0][1]"),
    ("lowercase c prefix", [["a", "c=", "x"]], "filters[0][1]"),
    ("bare C", [["a", "C", "x"]], "filters[0][1]"),
    ("double C", [["a", "CC=", "x"]], "filters[0][1]"),
    ("invalid after valid", [["a", "=", 1], ["b", "is", 2]], "filters[1][1]"),
    ("C with int", [["a", "C=", 1]], "filters[0][2]"),
    ("C with bool", [["a", "C!=", True]], "filters[0][2]"),
    ("C with object", [["a", "Cin", {"x": 1}]], "filters[0][2]"),
    ("C with date", [["a", "C=", {"$date": 5}]], "filters[0][2]"),
    ("C list with int", [["a", "Cin", ["x", 1]]], "filters[0][2][1]"),
    ("C list with null", [["a", "Cin", [None, "x"]]], "filters[0][2][0]"),
    ("startswith int", [["a", "^", 1]], "filters[0][2]"),
    ("endswith null", [["a", "!$", None]], "filters[0][2]"),
    ("in list too long", [["a", "in", list(range(1001))]], "filters[0][2]"),
    ("Cin list too long", [["a", "Cin", ["x"] * 1001]], "filters[0][2]"),
    ("regex number", [["a", "~", 5]], "filters[0][2]"),
    ("regex null", [["a", "~", None]], "filters[0][2]"),
    ("regex does not compile", [["a", "~", "("]], "filters[0][2]"),
    ("C regex does not compile", [["a", "C~", "["]], "filters[0][2]"),
    ("regex too long", [["a", "~", "a" * 257]], "filters[0][2]"),
    ("regex expands too far", [["a", "~", "(?:(?:a{1000}){1000}){1000}"]], "filters[0][2]"),
    ("regex huge repeat", [["a", "~", "a{4294967294}"]], "filters[0][2]"),
    ("regex-package syntax", [["a", "~", "\\p{L}"]], "filters[0][2]"),
    ("fuzzy constraint", [["a", "~", "a{e<=1}"]], "filters[0][2]"),
    ("posix class", [["a", "~", "[[:alpha:]]"]], "filters[0][2]"),
    ("date with in", [["ts.$date", "in", ["2024-01-01"]]], "filters[0][1]"),
    ("date with C=", [["ts.$date", "C=", "2024-01-01"]], "filters[0][1]"),
    ("date with regex", [["ts.$date", "~", "2024"]], "filters[0][1]"),
    ("date unparseable", [["ts.$date", ">", "yesterday"]], "filters[0][2]"),
    ("date number", [["ts.$date", ">", 1704067200000]], "filters[0][2]"),
    ("date null", [["ts.$date", "=", None]], "filters[0][2]"),
    ("date list", [["ts.$date", "=", ["2024-01-01"]]], "filters[0][2]"),
    ("date offset out of range", [["ts.$date", "<", "0001-01-01T00:00:00+01:00"]], "filters[0][2]"),
    ("$date string", [["ts", "=", {"$date": "2024-01-01"}]], "filters[0][2]"),
    ("$date float", [["ts", "=", {"$date": 1.5}]], "filters[0][2]"),
    ("$date bool", [["ts", "=", {"$date": True}]], "filters[0][2]"),
    ("$date out of range", [["ts", "=", {"$date": 10**20}]], "filters[0][2]"),
    ("$date with other keys", [["ts", "=", {"$date": 1, "x": 2}]], "filters[0][2]"),
    ("$date nested", [["ts", "in", [[{"a": {"$date": None}}]]]], "filters[0][2]"),
    ("value nested too deep", [["a", "=", _nested_or(40, [])]], "filters[0][2]"),
    ("depth 4", [_nested_or(4)], "filters[0][1][0][1][0][1][0]"),
    ("depth 4 empty", [_nested_or(3, ["OR", []])], "filters[0][1][0][1][0][1][0]"),
    ("OR AND OR AND", [["OR", [[["OR", [[["a", "=", 0]]]]]]]], "filters[0][1][0][0][1][0]"),
    ("OR OR AND OR", [["OR", [["OR", [[["OR", [["a", "=", 0]]]]]]]]], "filters[0][1][0][1][0][0]"),
    ("101 leaves", _leaves(101), "filters"),
    ("101 leaves inside OR", [["OR", _leaves(101)]], "filters"),
]


@pytest.mark.parametrize(
    ("filters", "attribute"),
    [(filters, attribute) for _, filters, attribute in INVALID_FILTERS],
    ids=[name for name, _, _ in INVALID_FILTERS],
)
def test_invalid_filters_name_the_offending_element(filters: object, attribute: str) -> None:
    with pytest.raises(QueryError) as raised:
        parse_filters(filters)
    assert raised.value.attribute == attribute
    assert raised.value.as_extra() == [[attribute, raised.value.message, 22]]


def test_depth_error_message() -> None:
    with pytest.raises(QueryError, match="query-filters max recursion depth exceeded"):
        parse_filters([_nested_or(4)])


def _deep_list(depth: int, innermost: Any) -> Any:
    value = innermost
    for _ in range(depth):
        value = [value]
    return value


def _deep_or(depth: int) -> Any:
    node: Any = ["a", "=", 1]
    for _ in range(depth):
        node = ["OR", [node]]
    return node


@pytest.mark.parametrize(
    "filters",
    [
        _deep_list(10_000, None),
        [_deep_list(10_000, None)],
        [_deep_or(10_000)],
        [["a", "=", _deep_list(10_000, 1)]],
        [["a", "in", _deep_list(10_000, 1)]],
        [[_deep_list(10_000, "a"), "=", 1]],
        [["a", "=", {"k": _deep_list(10_000, {"$date": 1})}]],
        [["OR", [[_deep_or(10_000)]]]],
    ],
    ids=["bare", "entry", "or-chain", "eq-value", "in-value", "path", "object-value", "and-group"],
)
def test_ten_thousand_deep_nesting_is_a_query_error(filters: object) -> None:
    with pytest.raises(QueryError):
        parse_filters(filters)


# --- options ---------------------------------------------------------------------------------------


def test_null_and_empty_options_are_the_defaults() -> None:
    assert parse_options(None) == QueryOptions()
    assert parse_options({}) == QueryOptions()


def test_every_option_parsed() -> None:
    parsed = parse_options(
        {
            "relationships": False,
            "extend": "user.extend",
            "extend_context": None,
            "prefix": "acct_",
            "extra": {"history": True},
            "order_by": ["nulls_first:-a.b", "c"],
            "select": ["a.b", ["x\\.y", "xy"]],
            "count": True,
            "get": False,
            "offset": 3,
            "limit": 10_000,
            "force_sql_filters": True,
        }
    )
    assert parsed == QueryOptions(
        relationships=False,
        extend="user.extend",
        extend_context=None,
        prefix="acct_",
        extra={"history": True},
        order_by=(
            OrderKey(Path(("a", "b"), "a.b"), descending=True, nulls="first"),
            OrderKey(Path(("c",), "c")),
        ),
        select=(SelectItem(Path(("a", "b"), "a.b")), SelectItem(Path(("x.y",), "x\\.y"), "xy")),
        count=True,
        offset=3,
        limit=10_000,
        force_sql_filters=True,
    )


@pytest.mark.parametrize(
    ("entry", "segments", "descending", "nulls"),
    [
        ("v", ("v",), False, None),
        ("-v", ("v",), True, None),
        ("--v", ("-v",), True, None),
        ("-nulls_first:v", ("nulls_first:v",), True, None),
        ("nulls_last:v", ("v",), False, "last"),
        ("nulls_first:-u.v", ("u", "v"), True, "first"),
        ("nulls_first:nulls_last:v", ("nulls_last:v",), False, "first"),
        ("ts.$date", ("ts", "$date"), False, None),
        ("a\\.b", ("a.b",), False, None),
    ],
)
def test_order_by_entries(entry: str, segments: tuple[str, ...], descending: bool, nulls: str | None) -> None:
    (key,) = parse_options({"order_by": [entry]}).order_by
    assert (key.path.segments, key.descending, key.nulls) == (segments, descending, nulls)


def test_get_accepts_limit_one_and_offset_zero() -> None:
    assert parse_options({"get": True, "limit": 1, "offset": 0}).get


INVALID_OPTIONS: list[tuple[str, object, str]] = [
    ("array", [], "options"),
    ("string", "limit", "options"),
    ("unknown key", {"bogus": 1}, "options.bogus"),
    ("extend_fk", {"extend_fk": []}, "options.extend_fk"),
    ("delete_invalid_rows", {"delete_invalid_rows": True}, "options.delete_invalid_rows"),
    ("long unknown key", {"k" * 2000: 1}, "options"),
    ("relationships int", {"relationships": 1}, "options.relationships"),
    ("count int", {"count": 1}, "options.count"),
    ("count zero", {"count": 0}, "options.count"),
    ("get string", {"get": "true"}, "options.get"),
    ("get null", {"get": None}, "options.get"),
    ("force_sql_filters string", {"force_sql_filters": "no"}, "options.force_sql_filters"),
    ("extend list", {"extend": ["x"]}, "options.extend"),
    ("extend_context int", {"extend_context": 1}, "options.extend_context"),
    ("prefix int", {"prefix": 5}, "options.prefix"),
    ("prefix too long", {"prefix": "p" * 1025}, "options.prefix"),
    ("extend too long", {"extend": "e" * 1025}, "options.extend"),
    ("extra list", {"extra": []}, "options.extra"),
    ("extra null", {"extra": None}, "options.extra"),
    ("extra key too long", {"extra": {"k" * 1025: 1}}, "options.extra"),
    ("offset bool", {"offset": True}, "options.offset"),
    ("offset negative", {"offset": -1}, "options.offset"),
    ("offset float", {"offset": 1.0}, "options.offset"),
    ("limit negative", {"limit": -1}, "options.limit"),
    ("limit over cap", {"limit": 10_001}, "options.limit"),
    ("limit float", {"limit": 2.0}, "options.limit"),
    ("limit bool", {"limit": False}, "options.limit"),
    ("limit string", {"limit": "5"}, "options.limit"),
    ("get with limit 2", {"get": True, "limit": 2}, "options.limit"),
    ("get with offset", {"get": True, "offset": 1}, "options.offset"),
    ("order_by string", {"order_by": "id"}, "options.order_by"),
    ("order_by number entry", {"order_by": ["a", 1]}, "options.order_by[1]"),
    ("order_by empty", {"order_by": [""]}, "options.order_by[0]"),
    ("order_by dash", {"order_by": ["-"]}, "options.order_by[0]"),
    ("order_by prefix only", {"order_by": ["nulls_first:"]}, "options.order_by[0]"),
    ("order_by prefix dash", {"order_by": ["nulls_last:-"]}, "options.order_by[0]"),
    ("order_by too long", {"order_by": ["x" * 1025]}, "options.order_by[0]"),
    ("select string", {"select": "id"}, "options.select"),
    ("select number", {"select": [1]}, "options.select[0]"),
    ("select null", {"select": ["a", None]}, "options.select[1]"),
    ("select empty path", {"select": [""]}, "options.select[0]"),
    ("select pair of one", {"select": [["id"]]}, "options.select[0]"),
    ("select pair of three", {"select": [["id", "a", "b"]]}, "options.select[0]"),
    ("select pair path int", {"select": [[1, "a"]]}, "options.select[0][0]"),
    ("select pair alias int", {"select": [["id", 2]]}, "options.select[0][1]"),
    ("select pair alias empty", {"select": [["id", ""]]}, "options.select[0][1]"),
    ("select too long", {"select": ["y" * 1025]}, "options.select[0]"),
    ("select alias too long", {"select": [["id", "y" * 1025]]}, "options.select[0][1]"),
]


@pytest.mark.parametrize(
    ("options", "attribute"),
    [(options, attribute) for _, options, attribute in INVALID_OPTIONS],
    ids=[name for name, _, _ in INVALID_OPTIONS],
)
def test_invalid_options_name_the_offending_element(options: object, attribute: str) -> None:
    with pytest.raises(QueryError) as raised:
        parse_options(options)
    assert raised.value.attribute == attribute


@pytest.mark.parametrize("length", [1024])
def test_option_strings_of_1024_characters_are_accepted(length: int) -> None:
    opts = parse_options(
        {
            "order_by": ["o" * length],
            "select": ["s" * length, ["p", "a" * length]],
            "extra": {"k" * length: 1},
            "prefix": "p" * length,
            "extend": "e" * length,
            "extend_context": "c" * length,
        }
    )
    assert opts.order_by[0].path.raw == "o" * length
    assert [item.alias for item in opts.select] == [None, "a" * length]
    assert opts.extra == {"k" * length: 1}
    assert (opts.prefix, opts.extend, opts.extend_context) == ("p" * length, "e" * length, "c" * length)
