"""The browser tables reuse the compiled statement of a page (`tables._PAGES`, issue 18): the same
rows as compiling it afresh, read afresh each time, and never reused where the statement depends on
more than its key (filters checked in Python, values read from the data)."""

from __future__ import annotations

from typing import Any

import pytest

from sessions_app import tables
from sessions_app.models import AuditEvent, AuditRecord, UserSession
from tests.factories import session


@pytest.fixture
def made(db: Any) -> list[UserSession]:
    rows = [session(username=f"user{i % 7}", origin=f"10.0.0.{i}:4000") for i in range(30)]
    return UserSession.objects.bulk_create(rows)


def _compile_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**kwargs: Any) -> Any:
        raise AssertionError("compiled again")

    monkeypatch.setattr(tables, "_filtered", refuse)


def test_a_repeated_page_runs_its_statement_and_reads_the_data_afresh(
    made: list[UserSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    filters = [["credentials_data.username", "C^", "USER1"]]
    first = tables.session_page(filters=filters, sort="created", limit=3)
    assert len(tables._PAGES) == 1
    _compile_refused(monkeypatch)
    again = tables.session_page(filters=filters, sort="created", limit=3)
    assert again == first
    newest = UserSession.objects.bulk_create([session(username="user1")])[0]
    fresh = tables.session_page(filters=filters, sort="created", limit=3)
    assert fresh.rows[0]["id"] == newest.public_id  # a statement, not a copy of the rows
    monkeypatch.undo()
    tables.session_page(filters=filters, sort="created", limit=3, cursor=first.next_cursor)
    following = tables.session_page(filters=filters, sort="created", limit=3, cursor=first.next_cursor)
    tables._PAGES.clear()
    assert following == tables.session_page(
        filters=filters, sort="created", limit=3, cursor=first.next_cursor
    )


@pytest.mark.parametrize(
    ("kwargs", "other"),
    [
        ({"sort": "created"}, {"sort": "origin"}),
        ({"sort": "created"}, {"sort": "created", "descending": False}),
        ({"sort": "created", "limit": 5}, {"sort": "created", "limit": 4}),
        ({"sort": "created", "history": False}, {"sort": "created", "history": True}),
        ({"sort": "created", "current_pk": None}, {"sort": "created", "current_pk": 1}),
        ({"filters": [["origin", "^", "10.0.0.1"]]}, {"filters": [["origin", "^", "10.0.0.2"]]}),
    ],
)
def test_every_part_of_the_page_is_in_its_key(
    made: list[UserSession], kwargs: dict[str, Any], other: dict[str, Any]
) -> None:
    tables.session_page(**kwargs)
    reused = tables.session_page(**other)
    tables._PAGES.clear()
    assert reused == tables.session_page(**other)


def test_pages_checked_in_python_or_listing_data_values_are_compiled_each_time(
    made: list[UserSession],
) -> None:
    # A case-insensitive operator on a device field is checked in Python on both databases.
    tables.session_page(filters=[["device.browser", "C=", "firefox"]], device=True)
    assert not tables._PAGES
    for name in ("Demo_Alice.Smith", "demo_alice.smithers", "demo_bob"):
        AuditRecord.objects.create(event=AuditEvent.AUTHENTICATION, success=True, username=name)
    # A whole audit user name lists the names present: a later record must be found.
    page = tables.audit_page(filters=[["username", "C^", "DEMO_ALICE.SMITH"]])
    assert sorted(r["username"] for r in page.rows) == ["Demo_Alice.Smith", "demo_alice.smithers"]
    AuditRecord.objects.create(event=AuditEvent.AUTHENTICATION, success=True, username="DEMO_alice.smithy")
    page = tables.audit_page(filters=[["username", "C^", "DEMO_ALICE.SMITH"]])
    assert len(page.rows) == 3
    assert not tables._PAGES


def test_a_page_counted_from_the_cache_counts_afresh(made: list[UserSession]) -> None:
    first = tables.session_page(filters=[["origin", "^", "10.0.0."]], count=True)
    assert first.match_count == 30
    UserSession.objects.bulk_create([session(origin="10.0.0.99:1")])
    assert tables.session_page(filters=[["origin", "^", "10.0.0."]], count=True).match_count == 31


def test_a_reused_page_sends_no_more_statements_than_a_compiled_one(made: list[UserSession]) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def sent() -> list[str]:
        with CaptureQueriesContext(connection) as captured:
            tables.session_page(filters=[["origin", "^", "10.0.0."]], count=True)
        return [query["sql"].split(" ", 1)[0] for query in captured.captured_queries]

    compiled = sent()
    assert tables._PAGES
    assert sent() == compiled  # on PostgreSQL: one statement budget for page and count, as compiled
