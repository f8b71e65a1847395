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

# --- `in` / `nin` with a value that is not a container: an evaluation error, raised lazily -----------
#
# TrueNAS compiles `["credentials_data.api_key.id", "in", 12]` without looking at 12 and calls
# `PySequence_Contains(12, x)` per row: no row with the path, no match and no error; a row with the
# path (even a null there), `TypeError`. query-language.md §5 lists "`in`/`rin` with a
# non-container" among the errors raised only where the leaf is evaluated.

# The cases themselves (which rows raise, which never evaluate the leaf, `get` stopping early, the
# error naming the leaf inside an OR) are conformance cases: tests/data/query-cases-project.jsonl,
# topic "lazy-errors", run by tests/query/test_conformance.py.


def test_in_a_scalar_parses() -> None:
    (leaf,) = parse_filters([["a", "in", {"$date": 0}]]).children
    assert leaf.value == dt.datetime(1970, 1, 1, tzinfo=UTC)  # type: ignore[union-attr]


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

# The select and timestamp messages, word for word, are conformance cases:
# tests/data/query-cases-project.jsonl, topic "messages".


def test_select_error_shows_a_bounded_entry() -> None:
    deep: Any = "x"
    for _ in range(50_000):
        deep = [deep]
    with pytest.raises(QueryError) as raised:
        parse_options({"select": [[deep, "alias"]]})
    assert raised.value.message.endswith(": first item must be a string")
    assert len(raised.value.message) < 200


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
