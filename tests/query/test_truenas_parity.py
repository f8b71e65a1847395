"""`filter_list` where TrueNAS's differs in small, visible ways (issue 18): the lazy ``in`` error, the
wording of select and timestamp errors, and unknown keyword arguments.

The TrueNAS behaviour quoted here is that of ``truenas_pyfilter`` (github:truenas/truenas_pyos,
``src/cext/filter_utils``) and ``middlewared/utils/filter_list.py`` (github:truenas/middleware).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from sessions_app.query import QueryError, filter_list, parse_filters, parse_options
from sessions_app.query.schema import Field, FieldType, Schema, check_filters

UTC = dt.UTC
PASSWORD = {"id": "s1", "credentials": "LOGIN_PASSWORD", "credentials_data": {"username": "alice"}}
API_KEY = {"id": "s2", "credentials": "API_KEY", "credentials_data": {"api_key": {"id": 12, "name": "k"}}}
NULL_KEY = {"id": "s3", "credentials": "API_KEY", "credentials_data": {"api_key": {"id": None}}}

# --- `in` / `nin` with a value that is not a container: an evaluation error, raised lazily -----------
#
# TrueNAS compiles `["credentials_data.api_key.id", "in", 12]` without looking at 12 and calls
# `PySequence_Contains(12, x)` per row: no row with the path, no match and no error; a row with the
# path (even a null there), `TypeError`. query-language.md §5 lists "`in`/`rin` with a
# non-container" among the errors raised only where the leaf is evaluated.

LAZY_CASES: list[tuple[str, list[Any], list[Any], Any]] = [
    # (name, rows, filters, expected result, or the attribute of the QueryError)
    ("no row has the path", [PASSWORD], [["credentials_data.api_key.id", "in", 12]], []),
    ("no rows at all", [], [["credentials_data.api_key.id", "in", 12]], []),
    ("a row has the path", [PASSWORD, API_KEY], [["credentials_data.api_key.id", "in", 12]], "filters[0]"),
    ("a null at the path", [NULL_KEY], [["credentials_data.api_key.id", "in", 12]], "filters[0]"),
    ("nin: no row has the path", [PASSWORD], [["credentials_data.api_key.id", "nin", 12]], []),
    ("nin: a null never matches", [NULL_KEY], [["credentials_data.api_key.id", "nin", 12]], []),
    ("nin: a value raises", [API_KEY], [["credentials_data.api_key.id", "nin", 12]], "filters[0]"),
    ("in null", [PASSWORD], [["credentials_data.api_key.id", "in", None]], []),
    ("in true", [API_KEY], [["credentials_data.api_key.id", "in", True]], "filters[0]"),
    ("in a date object", [API_KEY], [["credentials_data.api_key.id", "in", {"$date": 0}]], "filters[0]"),
    ("Cin null: no row has the path", [PASSWORD], [["credentials_data.api_key.name", "Cin", None]], []),
    (
        "an earlier filter is false: never evaluated",
        [PASSWORD, API_KEY],
        [["credentials", "=", "TOKEN"], ["credentials_data.api_key.id", "in", 12]],
        [],
    ),
    (
        "an earlier OR branch matches: never evaluated",
        [API_KEY],
        [["OR", [["id", "=", "s2"], ["credentials_data.api_key.id", "in", 12]]]],
        [API_KEY],
    ),
    (
        "the error names the leaf inside the OR",
        [API_KEY],
        [["OR", [["id", "=", "zz"], ["credentials_data.api_key.id", "in", 12]]]],
        "filters[0][1][1]",
    ),
]


@pytest.mark.parametrize(
    ("rows", "filters", "expected"),
    [case[1:] for case in LAZY_CASES],
    ids=[case[0] for case in LAZY_CASES],
)
def test_in_a_scalar_raises_only_where_evaluated(rows: list[Any], filters: list[Any], expected: Any) -> None:
    if isinstance(expected, str):
        with pytest.raises(QueryError) as raised:
            filter_list(rows, filters)
        assert raised.value.attribute == expected
        assert "cannot be applied" in raised.value.message
    else:
        assert filter_list(rows, filters) == expected


def test_get_stops_before_a_later_in_error() -> None:
    rows = [PASSWORD, API_KEY]
    filters = [["OR", [["credentials", "=", "LOGIN_PASSWORD"], ["credentials_data.api_key.id", "in", 12]]]]
    assert filter_list(rows, filters, {"get": True}) is PASSWORD
    with pytest.raises(QueryError):
        filter_list(rows, filters)  # the second row is evaluated


def test_in_a_scalar_parses() -> None:
    (leaf,) = parse_filters([["a", "in", {"$date": 0}]]).children
    assert leaf.value == dt.datetime(1970, 1, 1, tzinfo=UTC)  # type: ignore[union-attr]


def test_casefolding_a_non_string_is_still_refused_up_front() -> None:
    """query-language.md §1.2: casefolding a non-string is a validation error (TrueNAS too, at compile)."""
    with pytest.raises(QueryError) as raised:
        filter_list([], [["a", "Cin", 12]])
    assert raised.value.attribute == "filters[0][2]"


SCHEMA = Schema.build(
    {
        "id": Field(FieldType.STRING),
        "credentials_data": Field(FieldType.OBJECT, orderable=False),
        "credentials_data.api_key.id": Field(FieldType.INTEGER, nullable=True),
        "event_data": Field(FieldType.OBJECT, open=True),
    }
)


@pytest.mark.parametrize(
    "leaf",
    [
        ["credentials_data.api_key.id", "in", 12],
        ["credentials_data.api_key.id", "nin", None],
        ["id", "in", True],
        ["id", "Cin", None],
        ["credentials_data", "in", 1.5],
    ],
)
def test_declared_fields_refuse_in_a_scalar_up_front(leaf: list[Any]) -> None:
    """§5: with declared types the mistake does not depend on rows; SQL and memory refuse it alike."""
    with pytest.raises(QueryError) as raised:
        check_filters(parse_filters([leaf]), SCHEMA)
    assert raised.value.attribute == "filters[0][2]"
    assert "needs an array, string or object" in raised.value.message


def test_free_form_fields_keep_the_lazy_rule() -> None:
    tree = check_filters(parse_filters([["event_data.n", "in", 12]]), SCHEMA)
    assert filter_list([{"event_data": {}}], [["event_data.n", "in", 12]]) == []
    assert tree.children[0].value == 12  # type: ignore[union-attr]


# --- TrueNAS's wording ---------------------------------------------------------------------------

SELECT_ERRORS = [
    ([["id"]], "options.select[0]", "['id']: select as list may only contain two parameters"),
    (
        [["id", "a", "b"]],
        "options.select[0]",
        "['id', 'a', 'b']: select as list may only contain two parameters",
    ),
    ([[]], "options.select[0]", "[]: select as list may only contain two parameters"),
    ([[1, "cat"]], "options.select[0][0]", "[1, 'cat']: first item must be a string"),
    ([["id", None]], "options.select[0][1]", "['id', None]: second item must be a string"),
    (["id", [["x"], 2]], "options.select[1][0]", "[['x'], 2]: first item must be a string"),
]


@pytest.mark.parametrize(("select", "attribute", "message"), SELECT_ERRORS)
def test_select_errors_are_worded_as_truenas_words_them(
    select: list[Any], attribute: str, message: str
) -> None:
    with pytest.raises(QueryError) as raised:
        filter_list([], [], {"select": select})
    assert (raised.value.attribute, raised.value.message) == (attribute, message)


def test_select_error_shows_a_bounded_entry() -> None:
    deep: Any = "x"
    for _ in range(50_000):
        deep = [deep]
    with pytest.raises(QueryError) as raised:
        parse_options({"select": [[deep, "alias"]]})
    assert raised.value.message.endswith(": first item must be a string")
    assert len(raised.value.message) < 200


TIMESTAMP_ERRORS = [
    (["ts.$date", "=", "Canary"], "filters[0][2]", "Canary: must be an ISO-8601 formatted timestamp string"),
    (["ts.$date", ">", 1], "filters[0][2]", "1: must be an ISO-8601 formatted timestamp string"),
    (["ts.$date", "=", None], "filters[0][2]", "None: must be an ISO-8601 formatted timestamp string"),
    (["ts.$date", "=", ["2024-01-01"]], "filters[0][2]", "['2024-01-01']: must be an ISO-8601 formatted timestamp string"),
    (["ts.$date", "<", "0001-01-01T00:00:00+01:00"], "filters[0][2]", "0001-01-01T00:00:00+01:00: must be an ISO-8601 formatted timestamp string"),
    (["ts.$date", "^", "2023-12-18T16:15:35+00:00"], "filters[0][1]", "^: invalid timestamp operation."),
    (["ts.$date", "C=", "2023-12-18T16:15:35+00:00"], "filters[0][1]", "C=: invalid timestamp operation."),
]  # fmt: skip


@pytest.mark.parametrize(("leaf", "attribute", "message"), TIMESTAMP_ERRORS)
def test_timestamp_errors_are_worded_as_truenas_words_them(
    leaf: list[Any], attribute: str, message: str
) -> None:
    with pytest.raises(QueryError) as raised:
        filter_list([], [leaf])
    assert (raised.value.attribute, raised.value.message) == (attribute, message)


def test_timestamps_still_accept_iso_strings_and_date_objects() -> None:
    rows = [{"ts": dt.datetime(2023, 12, 18, 16, 15, 36, tzinfo=UTC)}]
    assert filter_list(rows, [["ts.$date", ">", "2023-12-18T16:15:35Z"]]) == rows
    assert filter_list(rows, [["ts.$date", ">", {"$date": 0}]]) == rows


# --- the signature ---------------------------------------------------------------------------------


@pytest.mark.parametrize("keyword", [{"model": None}, {"limit": 1}, {"select": ["id"]}, {"filter": []}])
def test_unknown_keyword_arguments_are_a_type_error(keyword: dict[str, Any]) -> None:
    """TrueNAS's ``filter_list(_list, filters=None, options=None, model=None)`` raises ``TypeError`` for
    anything else; options are never keyword arguments. (``model`` is TrueNAS's pydantic hook:
    rows here are plain dicts.)"""
    with pytest.raises(TypeError):
        filter_list([{"id": 1}], [], {}, **keyword)


def test_filters_and_options_by_keyword() -> None:
    rows = [{"id": 2}, {"id": 1}]
    assert filter_list(rows, filters=[["id", ">", 0]], options={"order_by": ["id"]}) == [rows[1], rows[0]]
