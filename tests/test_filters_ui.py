"""The tables' filters (issue 17, "What was seen" 5): the user filter is a case-insensitive prefix
run in the database, a match count shows above each table, the Active/History tabs keep the filters
they share, and a first click on a column sorts in its natural direction."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from hypothesis import assume, given
from hypothesis import strategies as st

from sessions_app import selectors, tables
from sessions_app.auth.clients import Client as Peer
from sessions_app.auth.roles import Role
from sessions_app.exceptions import QueryTimeout
from sessions_app.forms import SessionFilterForm, SessionHistoryFilterForm
from sessions_app.models import AuditEvent, AuditRecord, Credentials, UserSession
from sessions_app.query import prefixes as folded
from sessions_app.query.execution import run_in_memory
from sessions_app.services.session_ending import session_end
from sessions_app.services.sessions import session_create
from sessions_app.specs import AUDIT_SPEC
from tests.conftest import PASSWORD

# --- casefold_prefixes: C^ as index ranges (pure) ------------------------------------------------------


def test_a_prefix_expands_to_the_case_variants_of_its_letters() -> None:
    prefixes = folded.casefold_prefixes("demo_a")
    assert prefixes is not None
    # d e m o: two cases each, "_" one; the last "a" three: "ẚ".casefold() == "aʾ" starts with "a".
    assert len(prefixes) == 2 * 2 * 2 * 2 * 3
    assert {"demo_a", "DEMO_A", "Demo_A", "dEmO_a", "demo_ẚ"} <= set(prefixes)
    assert "demoẚ" not in set(folded.casefold_prefixes("demoa_") or ())  # "aʾ" is not "a_"


def test_characters_that_fold_to_several_are_found() -> None:
    assert set(folded.casefold_prefixes("s") or ()) == {"s", "S", "ß", "ẞ", "ſ", "ﬅ", "ﬆ"}
    assert "ß" in (folded.casefold_prefixes("ss") or ())  # "ß".casefold() == "ss"
    assert "straß" in (folded.casefold_prefixes("STRASS", limit=10_000) or ())
    assert "K" in (folded.casefold_prefixes("k") or ())  # KELVIN SIGN
    assert folded.casefold_prefixes("") == [""]


def test_a_prefix_with_too_many_variants_is_refused() -> None:
    assert folded.casefold_prefixes("bcdgmnp", limit=64) is None  # 128 variants
    assert len(folded.casefold_prefixes("bcdgmn", limit=64) or ()) == 64


def test_every_character_that_changes_when_casefolded_is_in_planes_0_and_1() -> None:
    # `_unfolded` reads planes 0 and 1 only; a later Unicode with a case mapping beyond would fail here.
    assert all(chr(c).casefold() == chr(c) for c in range(0x20000, 0x110000))


_TRICKY = "aAbBsSßẞſkKKiIİı_.-ﬅ"


@given(st.text(alphabet=_TRICKY, max_size=6), st.text(alphabet=_TRICKY, min_size=0, max_size=4))
def test_the_prefixes_match_exactly_the_strings_whose_casefold_starts_with_the_prefix(
    subject: str, prefix: str
) -> None:
    prefixes = folded.casefold_prefixes(prefix, limit=10_000)
    # More than 10,000 spellings ("Kßßß": k, K or the Kelvin sign, then six s's each s, S or ſ,
    # or pairs as ß or ẞ) is None by design: the caller narrows to a shorter prefix instead.
    assume(prefixes is not None)
    assert prefixes is not None
    expected = subject.casefold().startswith(prefix.casefold())
    assert any(subject.startswith(raw) for raw in prefixes) == expected


# --- the user filter ------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_chart_cache() -> None:
    cache.clear()  # the dashboard keeps its chart aggregates for 30 s


class Browser:
    """Django's test client, signed in through the sign-in page like a browser."""

    def __init__(self, username: str) -> None:
        self.http = Client(enforce_csrf_checks=True, REMOTE_ADDR="127.0.0.1")
        self.http.get("/sign-in/")
        token = self.http.cookies["csrftoken"].value
        response = self.http.post(
            "/sign-in/",
            {"username": username, "password": PASSWORD, "next": "/", "csrfmiddlewaretoken": token},
        )
        assert response.status_code == 302, response.content[:500]

    def get(self, path: str, data: Any = None) -> Any:
        return self.http.get(path, data)


@pytest.fixture
def operator(make_user: Any) -> Browser:
    make_user("op", roles=[Role.AUTH_SESSIONS_READ, Role.AUDIT_READ])
    return Browser("op")


@pytest.fixture
def sessions_of(make_user: Any) -> Callable[..., list[UserSession]]:
    def make(
        username: str, count: int = 1, *, credentials: str = Credentials.LOGIN_PASSWORD
    ) -> list[UserSession]:
        user = make_user(username)
        peer = Peer(address="10.1.2.3", port=4000)
        return [session_create(credentials=credentials, client=peer, user=user).session for _ in range(count)]

    return make


def _rows(response: Any) -> list[str]:
    return re.findall(r'data-session-id="([^"]+)"', response.content.decode())


def _text(response: Any) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", response.content.decode()))


def test_the_user_filter_finds_names_by_prefix_in_any_case(operator: Browser, sessions_of: Any) -> None:
    alice = sessions_of("demo_alice")
    albert = sessions_of("Demo_Albert")
    sessions_of("demo_bob")
    sessions_of("xdemo_a")
    response = operator.get("/sessions/", {"user": "DEMO_A"})
    assert response.status_code == 200
    assert set(_rows(response)) == {alice[0].public_id, albert[0].public_id}
    assert "Starts with, any case." in response.content.decode()


def test_the_user_filter_of_the_history_tab_is_a_prefix_too(operator: Browser, sessions_of: Any) -> None:
    ended = sessions_of("demo_alice")[0]
    session_end(session=ended, reason="LOGOUT")
    session_end(session=sessions_of("bob")[0], reason="LOGOUT")
    assert _rows(operator.get("/sessions/history/", {"user": "Demo_"})) == [ended.public_id]


def test_the_dashboard_user_filter_runs_on_the_casefolded_column(operator: Browser, sessions_of: Any) -> None:
    sessions_of("demo_alice")
    with CaptureQueriesContext(connection) as queries:
        operator.get("/sessions/", {"user": "Demo_A"})
    page_sql = [q["sql"] for q in queries if "username_folded" in q["sql"]]
    assert page_sql, "the prefix is compared with username_folded in SQL"
    assert all(re.search(r'"username_folded" >= ', sql) for sql in page_sql)  # a range: the index


@pytest.mark.parametrize("value", ["a\x00b", "x" * 151])
def test_a_malformed_user_filter_is_a_field_error(operator: Browser, value: str) -> None:
    for path in ("/sessions/", "/sessions/history/", "/audit/"):
        response = operator.get(path, {"user": value})
        assert response.status_code == 400, path
        assert 'id="id_user_error"' in response.content.decode(), path


def _audit(username: str | None, **extra: Any) -> AuditRecord:
    return AuditRecord.objects.create(
        event=AuditEvent.AUTHENTICATION,
        success=True,
        username=username,
        address="10.0.0.1:1",
        event_data={"mechanism": "PASSWORD_PLAIN", "credentials": "LOGIN_PASSWORD", **extra},
    )


_AUDIT_NAMES = [
    "demo_alice",
    "Demo_Albert",
    "DEMO_ANN",
    "demo_bob",
    "xdemo_a",
    None,
    "straße",
    "STRASSE",
    "ſam",
    "Kai",
]


@pytest.mark.parametrize(
    "prefix",
    [
        "demo_a",
        "DEMO_AL",
        "",
        "strass",
        "STRAß",
        "s",
        "sam",
        "k",
        "demo_alice_with_a_long_tail_of_letters",
        "zz",
    ],
)
def test_the_audit_user_filter_matches_the_query_language(db: Any, prefix: str) -> None:
    for name in _AUDIT_NAMES:
        _audit(name)
    rows = run_in_memory(AUDIT_SPEC, selectors.audit_query(), [], {})
    assert isinstance(rows, list)
    filters = [["username", "C^", prefix]]
    expected = run_in_memory(AUDIT_SPEC, rows, filters, {})
    assert isinstance(expected, list)
    page = tables.audit_page(filters=filters, limit=50, count=True)
    assert sorted(r["audit_id"] for r in page.rows) == sorted(r["audit_id"] for r in expected)
    assert page.match_count == len(expected)
    assert not page.match_count_capped


def test_the_audit_user_filter_runs_as_index_ranges(db: Any) -> None:
    _audit("demo_alice")
    with CaptureQueriesContext(connection) as queries:
        page = tables.audit_page(filters=[["username", "C^", "Demo_A"]], limit=5)
    assert [r["username"] for r in page.rows] == ["demo_alice"]
    assert len(queries) <= 2  # the page in one statement (plus a budget SET on PostgreSQL)
    sql = " ".join(q["sql"] for q in queries)
    assert re.search(r'"username" >= ', sql)
    assert "LIMIT 6" in sql


def _push_down(prefix: str) -> tuple[Any, Any]:
    from sessions_app.query import parse_filters, parse_options
    from sessions_app.query.schema import check

    tree, _ = check(parse_filters([["username", "C^", prefix]]), parse_options({}), AUDIT_SPEC.schema)
    queryset, rest, read_values = folded._push_down_folded_prefixes(
        AUDIT_SPEC, AUDIT_SPEC.schema, AuditRecord.objects.all(), tree
    )
    assert read_values is (len(prefix) > 6)  # a whole name lists the names present; a short prefix: ranges
    return queryset, rest


def test_a_whole_audit_user_name_becomes_a_list_of_the_names_present(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("Demo_Alice.Smith", "demo_alice.smithers", "demo_alice.jones", "demo_bob"):
        _audit(name)
    queryset, rest = _push_down("DEMO_ALICE.SMITH")  # too many spellings to list as ranges
    assert rest.children == ()  # exact in SQL: username IN (the names that match)
    assert sorted(queryset.values_list("username", flat=True)) == ["Demo_Alice.Smith", "demo_alice.smithers"]
    queryset, rest = _push_down("demo_alice.smith_nobody")
    assert rest.children == ()
    assert not queryset.exists()
    queryset, rest = _push_down("demo_a")  # few spellings: ranges alone
    assert rest.children == ()
    assert '"username" >= ' in str(queryset.query)
    monkeypatch.setattr(folded, "FOLDED_PREFIX_VALUES", 2)  # more names in range than listed
    queryset, rest = _push_down("DEMO_ALICE.SMITH")
    assert len(rest.children) == 1  # checked in Python, on the rows of the narrowed range
    assert '"username" >= ' in str(queryset.query)
    page = tables.audit_page(filters=[["username", "C^", "DEMO_ALICE.SMITH"]], count=True)
    assert sorted(r["username"] for r in page.rows) == ["Demo_Alice.Smith", "demo_alice.smithers"]
    assert page.match_count == 2


def test_a_python_checked_count_stops_at_its_deadline(sessions_of: Any) -> None:
    import time

    from sessions_app.specs import SESSION_SPEC

    sessions_of("demo_alice", 3)
    queryset, context, options = tables._session_table(
        history=False, device=False, user=None, current_pk=None
    )
    filtered = tables._filtered(
        spec=SESSION_SPEC,
        queryset=queryset(),
        context=context,
        filters=[["credentials_data.username", "C~", "DEMO"]],
        options=options,
    )
    assert filtered.predicate is not None
    assert tables._match_count(filtered, SESSION_SPEC, context, 10) == tables.MatchCount(3)
    late = tables._match_count(filtered, SESSION_SPEC, context, 10, time.monotonic() - 1)
    assert late == tables.MatchCount(None, more=True)


def test_the_audit_page_user_filter_is_a_prefix_in_any_case(operator: Browser) -> None:
    _audit("demo_alice")
    _audit("Demo_Albert")
    _audit("demo_bob")
    response = operator.get("/audit/", {"user": "DEMO_A"})
    assert response.status_code == 200
    table = _text(response).split("Audit records")[1]
    assert "demo_alice" in table
    assert "Demo_Albert" in table
    assert "demo_bob" not in table
    assert "Starts with, any case." in response.content.decode()
    assert "2 matching" in _text(response)


# --- the match count --------------------------------------------------------------------------------------


def test_the_dashboard_shows_how_many_sessions_match(operator: Browser, sessions_of: Any) -> None:
    sessions_of("demo_alice", 3)
    sessions_of("bob", 2)
    assert "3 matching" in _text(operator.get("/sessions/", {"user": "demo_"}))
    assert "6 matching" in _text(operator.get("/sessions/"))  # the operator's own session too
    assert "0 matching" in _text(operator.get("/sessions/", {"user": "nobody"}))


def test_the_count_is_capped_and_says_so(
    operator: Browser, sessions_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions_of("demo_alice", 5)
    monkeypatch.setattr(tables, "MATCH_COUNT_CAP", 3)
    text = _text(operator.get("/sessions/", {"user": "demo"}))
    assert "3+ matching" in text
    page = tables.session_page(filters=[["credentials_data.username", "C^", "demo"]], count=True)
    assert (page.match_count, page.match_count_capped) == (3, True)
    monkeypatch.setattr(tables, "MATCH_COUNT_CAP", 5)
    page = tables.session_page(filters=[["credentials_data.username", "C^", "demo"]], count=True)
    assert (page.match_count, page.match_count_capped) == (5, False)


def test_the_count_formats_thousands(operator: Browser, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tables, "_match_count", lambda *args: tables.MatchCount(10_000, more=True))
    assert "10,000+ matching" in _text(operator.get("/sessions/"))
    monkeypatch.setattr(tables, "_match_count", lambda *args: tables.MatchCount(1234))
    assert "1,234 matching" in _text(operator.get("/sessions/history/"))
    assert "1,234 matching" in _text(operator.get("/audit/"))


def test_the_count_counts_every_page_not_the_page(sessions_of: Any) -> None:
    sessions_of("demo_alice", 7)
    first = tables.session_page(limit=3, count=True)
    second = tables.session_page(limit=3, count=True, cursor=first.next_cursor)
    assert len(first.rows) == 3
    assert first.match_count == second.match_count == 7
    assert tables.session_page(limit=3).matches is None  # not asked: not counted


def test_filters_checked_in_python_are_counted_within_a_scan_limit(
    sessions_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions_of("demo_alice", 4)
    sessions_of("bob", 3)
    # A case-insensitive regex: evaluated in Python on every row.
    filters = [["credentials_data.username", "C~", "DEMO_A"]]
    assert tables.session_page(filters=filters, count=True).match_count == 4
    monkeypatch.setattr(tables, "MATCH_SCAN_LIMIT", 5)
    page = tables.session_page(filters=filters, count=True)
    assert page.match_count_capped
    assert page.match_count is not None
    assert page.match_count <= 4
    assert tables.session_count(filters=filters, cap=None) == tables.MatchCount(4)


def test_a_count_the_database_gives_up_on_leaves_the_page(
    operator: Browser, sessions_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions_of("demo_alice", 2)

    def too_slow(*args: Any) -> tables.MatchCount:
        raise QueryTimeout(tables.MATCH_COUNT_BUDGET)

    monkeypatch.setattr(tables, "_match_count", too_slow)
    response = operator.get("/sessions/")
    assert response.status_code == 200
    assert len(_rows(response)) == 3
    assert "Not counted: counting the matches took too long." in _text(response)


def test_a_count_over_its_budget_is_cancelled_by_the_database(
    sessions_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real budget: a count that cannot finish in a tiny budget is reported as not counted,
    and the connection (and the test's transaction on PostgreSQL) stays usable."""
    sessions_of("demo_alice", 2)
    monkeypatch.setattr(tables, "MATCH_COUNT_BUDGET", 0.000_001)
    slow = tables.MatchCount(None)
    calls: list[int] = []

    def heavy(*args: Any) -> tables.MatchCount:
        calls.append(1)
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SELECT pg_sleep(1)")
            else:
                cursor.execute(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000000) "
                    "SELECT count(*) FROM n"
                )
        return tables.MatchCount(1)

    monkeypatch.setattr(tables, "_match_count", heavy)
    page = tables.session_page(count=True)
    assert calls
    assert page.matches == slow
    assert UserSession.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_cancelled_count_outside_a_transaction_leaves_the_connection_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As a request runs it (autocommit): the count's budget ends with the count."""

    def settings_now() -> str:
        with connection.cursor() as cursor:
            if connection.vendor != "postgresql":
                return "sqlite"
            cursor.execute("SHOW statement_timeout")
            return str(cursor.fetchone()[0])

    before = settings_now()
    monkeypatch.setattr(tables, "MATCH_COUNT_BUDGET", 0.000_001)

    def heavy(deadline: float) -> tables.MatchCount:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SELECT pg_sleep(1)")
            else:
                cursor.execute(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000000) "
                    "SELECT count(*) FROM n"
                )
        return tables.MatchCount(1)

    assert tables._display_count(heavy) == tables.MatchCount(None)
    assert not connection.in_atomic_block
    assert settings_now() == before
    assert tables._display_count(lambda deadline: tables.MatchCount(3)) == tables.MatchCount(3)


def test_the_bulk_count_is_exact_beyond_the_cap(sessions_of: Any) -> None:
    sessions_of("demo_alice", 4)
    sessions_of("bob", 1)
    filters = [["credentials_data.username", "C^", "DEMO"]]
    assert tables.session_count(filters=filters) == tables.MatchCount(4)
    assert tables.session_count(filters=filters, cap=2) == tables.MatchCount(2, more=True)
    assert tables.session_count(filters=filters, cap=None) == tables.MatchCount(4)
    assert tables.session_count(filters=filters, history=True, cap=None) == tables.MatchCount(0)


def test_my_sessions_pages_carry_their_count(make_user: Any, sessions_of: Any) -> None:
    sessions_of("alice", 2)
    sessions_of("bob", 1)
    alice = UserSession.objects.filter(username="alice").first()
    assert alice is not None
    page = tables.session_page(user=alice.user, count=True, device=True)
    assert page.match_count == 2


# --- tabs keep the shared filters ----------------------------------------------------------------------------


def _tab_links(response: Any) -> dict[str, str]:
    nav = re.search(r'<nav class="tabs".*?</nav>', response.content.decode(), re.S)
    assert nav is not None
    return {
        label: html.unescape(href)
        for href, label in re.findall(r'<a href="([^"]*)"[^>]*>(Active|History)</a>', nav.group(0))
    }


def test_the_tabs_keep_the_filters_both_tables_have(operator: Browser) -> None:
    response = operator.get(
        "/sessions/",
        {
            "user": "demo_a",
            "type": "API_KEY",
            "internal": "no",
            "origin": "10.",
            "since": "2024-01-01T00:00",
            "query": '[["secure_transport", "=", true]]',
            "sort": "last_seen",
            "dir": "asc",
            "cursor": "abc",
        },
    )
    links = _tab_links(response)
    history = links["History"]
    assert history.startswith("/sessions/history/?")
    for kept in ("user=demo_a", "type=API_KEY", "origin=10.", "since=2024-01-01T00%3A00", "query="):
        assert kept in history
    for dropped in ("internal", "sort", "dir", "cursor"):
        assert f"{dropped}=" not in history
    assert links["Active"].startswith("/sessions/?")
    assert "cursor=" not in links["Active"]


def test_the_tabs_keep_a_sort_the_other_table_has(operator: Browser) -> None:
    links = _tab_links(
        operator.get("/sessions/history/", {"user": "x", "reason": "EXPIRED", "sort": "user", "dir": "asc"})
    )
    assert "sort=user" in links["Active"]
    assert "dir=asc" in links["Active"]
    assert "reason=" not in links["Active"]
    links = _tab_links(operator.get("/sessions/history/", {"sort": "ended"}))
    assert links["Active"] == "/sessions/"


def test_the_tab_sort_lists_match_the_forms() -> None:
    from pathlib import Path

    text = Path("templates/sessions_app/partials/session_tabs.html").read_text()
    active, history = re.findall(r"sorts='([^']*)'", text)
    assert set(active.split()) == set(SessionFilterForm.sorts)
    assert set(history.split()) == set(SessionHistoryFilterForm.sorts)


# --- natural first sort direction ------------------------------------------------------------------------


def _headers(response: Any) -> dict[str, tuple[str | None, str]]:
    """Column label -> (aria-sort, the dir its link asks for)."""
    out = {}
    for aria, href, label in re.findall(
        r'<th scope="col"(?: aria-sort="(\w+)")?><a href="([^"]*)">([^<]+)<', response.content.decode()
    ):
        direction = re.search(r"dir=(\w+)", html.unescape(href))
        out[label] = (aria or None, direction.group(1) if direction else "")
    return out


def test_a_first_click_sorts_names_a_to_z_and_times_newest_first(operator: Browser) -> None:
    headers = _headers(operator.get("/sessions/"))
    assert headers["User"] == (None, "asc")
    assert headers["Credential"] == (None, "asc")
    assert headers["Device · origin"] == (None, "asc")
    assert headers["Created"] == ("descending", "asc")  # the sorted column: a click reverses it
    assert headers["Last seen"] == (None, "desc")
    history = _headers(operator.get("/sessions/history/"))
    assert history["Ended"] == ("descending", "asc")
    assert history["Created"] == (None, "desc")
    assert history["User"] == (None, "asc")
    audit = _headers(operator.get("/audit/"))
    assert audit["Time"] == ("descending", "asc")
    assert audit["Event"] == (None, "asc")
    assert audit["User"] == (None, "asc")


def test_aria_sort_follows_the_sorted_column_and_direction(operator: Browser) -> None:
    headers = _headers(operator.get("/sessions/", {"sort": "user", "dir": "asc"}))
    assert headers["User"] == ("ascending", "desc")
    assert headers["Created"] == (None, "desc")
    assert [aria for aria, _ in headers.values() if aria] == ["ascending"]
    headers = _headers(operator.get("/sessions/", {"sort": "user", "dir": "desc"}))
    assert headers["User"] == ("descending", "asc")


def test_a_sort_without_a_direction_takes_the_natural_one(operator: Browser, sessions_of: Any) -> None:
    for name in ("carol", "alice", "bob"):
        sessions_of(name)
    response = operator.get("/sessions/", {"sort": "user"})
    names = [UserSession.objects.get(public_id=i).username for i in _rows(response)]
    assert names == sorted(names)
    assert _headers(response)["User"] == ("ascending", "desc")


# --- the audit page's sentences ----------------------------------------------------------------------------


def test_audit_details_are_sentences_with_the_json_behind_a_disclosure(operator: Browser) -> None:
    _audit("<b>mallory</b>")
    response = operator.get("/audit/")
    body = response.content.decode()
    assert "&lt;b&gt;mallory&lt;/b&gt; signed in with a password" in body
    assert "<b>mallory</b>" not in body
    assert re.search(r"<details class=\"audit-details\"><summary>Details</summary>.*PASSWORD_PLAIN", body)
