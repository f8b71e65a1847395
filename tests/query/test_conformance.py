"""Every case of the shared conformance file, and of the project's own, against `filter_list` (no
database).

``tests/data/query-cases.jsonl`` is a verbatim copy of ``shared/conformance/query-cases.jsonl``;
replace the copy when the spec changes (370 cases, ids ``public:…``). The helpers below are copied
from the shared runner (``run_query_cases.py``) so that nothing outside the project is imported at
test time.

``tests/data/query-cases-project.jsonl`` holds the project's cases in the same format (ids
``project:…``; the shared runner runs it as it is): the lazy-error rule of query-language.md §5
(topic ``lazy-errors``: an evaluation error is raised only where the leaf is evaluated, as
TrueNAS's engine does) and TrueNAS's wording of select and timestamp errors (topic ``messages``).
Their ``expect`` may also carry ``attribute`` (the `QueryError`'s attribute), ``message`` (its
exact message) or ``message_contains``, which the shared runner ignores and this test checks.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from sessions_app.query import MatchNotFound, QueryError, filter_list

UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
MS = dt.timedelta(milliseconds=1)

DATA = Path(__file__).resolve().parent.parent / "data"
CASES_FILE = DATA / "query-cases.jsonl"
PROJECT_CASES_FILE = DATA / "query-cases-project.jsonl"


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


CASES = _read(CASES_FILE)
PROJECT_CASES = _read(PROJECT_CASES_FILE)
ALL_CASES = [("public", case) for case in CASES] + [("project", case) for case in PROJECT_CASES]


def _is_date_object(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and len(obj) == 1
        and "$date" in obj
        and isinstance(obj["$date"], int)
        and not isinstance(obj["$date"], bool)
    )


def to_engine(obj: Any) -> Any:
    """{"$date": ms} -> aware UTC datetime, recursively (used for `data`)."""
    if _is_date_object(obj):
        return EPOCH + obj["$date"] * MS
    if isinstance(obj, dict):
        return {k: to_engine(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_engine(v) for v in obj]
    return obj


def from_engine(obj: Any) -> Any:
    """datetime -> {"$date": ms}; tuples -> lists; recursively (used for results)."""
    if isinstance(obj, dt.datetime):
        if obj.tzinfo is None:
            obj = obj.replace(tzinfo=UTC)
        return {"$date": (obj - EPOCH) // MS}
    if isinstance(obj, dict):
        return {k: from_engine(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [from_engine(v) for v in obj]
    return obj


def same(a: Any, b: Any) -> bool:
    """Strict JSON equality: bool vs int and int vs float are different."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def test_case_ids_are_unique() -> None:
    ids = [case["id"] for case in CASES + PROJECT_CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) == 370


@pytest.mark.parametrize(
    "case", [case for _, case in ALL_CASES], ids=[f"{src}:{c['id']}" for src, c in ALL_CASES]
)
def test_conformance_case(case: dict[str, Any]) -> None:
    rows = to_engine(case["data"])
    snapshot = copy.deepcopy(rows)
    expect = case["expect"]

    def call() -> Any:
        return filter_list(rows, case.get("filters", []), case.get("options", {}))

    if expect.get("error") == "MatchNotFound":
        with pytest.raises(MatchNotFound):
            call()
    elif expect.get("error") == "QueryError":
        with pytest.raises(QueryError) as raised:
            call()
        assert not isinstance(raised.value, MatchNotFound)
        if "attribute" in expect:
            assert raised.value.attribute == expect["attribute"]
        if "message" in expect:
            assert raised.value.message == expect["message"]
        if "message_contains" in expect:
            assert expect["message_contains"] in raised.value.message
    else:
        got = from_engine(call())
        assert same(got, expect["result"]), f"expected {expect['result']!r}, got {got!r}"
    assert same(from_engine(rows), from_engine(snapshot)), "the input rows were mutated"
