"""Plans that do not depend on luck (issue 18): the statements `plans.plan_query` sends.

Two things are checked on the test database (SQLite, or PostgreSQL with ``DATABASE_URL``):

* **Plan shape**, for every query class of ``bench/query_bench.py`` and every sort of the dashboard:
  the plan reads an index, never every row of the table, and sorts at most what an index range or a
  bounded subquery returned. SQLite plans from statistics, not from the table's size: without
  statistics it assumes a large table, and with the rows of ``sqlite_stat1`` measured on a
  ``seed_demo --sessions 1000000`` database (`STAT1_1M`) it plans as it does there -- both are
  checked on a few rows. PostgreSQL plans from the table's real size and on a few rows rightly reads
  the whole table, so its check runs with ``enable_seqscan = off``: a ``Seq Scan`` then remains only
  where no index plan exists. Its choices at 1M rows, with and without statistics, are in
  ``bench/RESULTS-plans.md``.
* **Identity**: the split and deferred-join statements answer exactly what the plain statement and
  the in-memory engine answer -- rows, order (ties and nulls), counts, ``get`` and errors --
  property-based over rows with many equal ``created_at`` values and null usernames.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from unittest import mock

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sessions_app.models import Credentials, UserSession
from sessions_app.query import execution
from sessions_app.query.compiler import FALSE, TRUE, Cond
from sessions_app.query.execution import run_in_memory
from sessions_app.query.plans import usable_indexes
from sessions_app.selectors import session_query, session_rows, session_scope
from sessions_app.specs import SESSION_SPEC
from sessions_app.tables import session_page
from tests.factories import session
from tests.query.test_pushdown import NAMES, ORIGINS, TIMES, outcome, session_fields

SQLITE = connection.vendor == "sqlite"
TABLE = UserSession._meta.db_table
NEWEST = {"order_by": ["-created_at"], "limit": 50}
API_PAGE = [["internal", "=", False], ["credentials", "in", ["LOGIN_PASSWORD", "API_KEY"]]]
OR_TWO = ["OR", [["credentials_data.username", "=", "alice"], ["origin", "^", "10.12.1"]]]

#: ``sqlite_stat1`` rows (index, stat) of the sessions table measured on ``seed_demo --sessions
#: 1000000 --seed 1`` with every migration applied (bench/RESULTS-plans.md): a full ``ANALYZE``, and
#: the approximate one the service runs itself (``PRAGMA analysis_limit``, `planner_stats`), whose
#: guesses are far off (1001 sessions per credential type instead of 99,764).
STAT1_1M: dict[str, list[tuple[str, str]]] = {
    "1M, full ANALYZE": [
        ("sess_active_apikey", "698348 140"),
        ("sess_active_created", "698348 1 1 1 1"),
        ("sess_active_cred", "698348 99764 1"),
        ("sess_active_cred_id", "698348 99764 1 1 1"),
        ("sess_active_origin", "698348 1 1 1"),
        ("sess_active_parent", "698348 6"),
        ("sess_active_seen", "698348 1 1 1"),
        ("sess_active_ufold", "698348 15"),
        ("sess_active_uname_id", "698348 15 1 1"),
        ("sess_active_user", "698348 15"),
        ("sess_active_username", "698348 15 1"),
        ("sess_ended", "301652 1 1"),
        ("sess_ended_created", "301652 1 1"),
        ("sess_ended_cred", "301652 43094 1"),
        ("sess_ended_origin", "301652 1 1"),
        ("sess_ended_username", "301652 10 1"),
        ("sessions_app_usersession_api_key_id_712dc334", "1000000 200"),
        ("sessions_app_usersession_parent_id_0d3197ad", "1000000 6"),
        ("sessions_app_usersession_token_id_e464d19e", "1000000 1000000"),
        ("sessions_app_usersession_user_id_fe9f12ec", "1000000 21"),
        ("sqlite_autoindex_sessions_app_usersession_1", "1000000 1"),
        ("sqlite_autoindex_sessions_app_usersession_2", "1000000 2"),
    ],
    "1M, analysis_limit": [
        ("sess_active_apikey", "758940 143"),
        ("sess_active_created", "594567 1 1 1 1"),
        ("sess_active_cred", "438615 1001 1"),
        ("sess_active_cred_id", "511200 1001 1 1 1"),
        ("sess_active_origin", "599950 1 1 1"),
        ("sess_active_parent", "766692 3"),
        ("sess_active_seen", "615612 1 1 1"),
        ("sess_active_ufold", "2615424 26"),
        ("sess_active_uname_id", "1313532 28 1 1"),
        ("sess_active_user", "931700 167"),
        ("sess_active_username", "1161840 28 1"),
        ("sess_ended", "289275 1 1"),
        ("sess_ended_created", "289275 1 1"),
        ("sess_ended_cred", "467856 1001 1"),
        ("sess_ended_origin", "335610 1 1"),
        ("sess_ended_username", "779526 10 1"),
        ("sessions_app_usersession_api_key_id_712dc334", "1156680 1001"),
        ("sessions_app_usersession_parent_id_0d3197ad", "1169280 3"),
        ("sessions_app_usersession_token_id_e464d19e", "1043072 1001"),
        ("sessions_app_usersession_user_id_fe9f12ec", "1419264 1001"),
        ("sqlite_autoindex_sessions_app_usersession_1", "1060800 1"),
        ("sqlite_autoindex_sessions_app_usersession_2", "41952330 2"),
    ],
}


# --- capturing and explaining statements ----------------------------------------------------------


class LastSelect:
    """The SQL and parameters of the last SELECT sent inside the block (as the driver got them)."""

    sql: str = ""
    params: Sequence[Any] = ()

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.lstrip().upper().startswith("SELECT"):
            self.sql, self.params = sql, params
        return execute(sql, params, many, context)

    def run(self, call: Callable[[], Any]) -> Any:
        execution._STATEMENTS.clear()  # a cached statement would send nothing new
        with connection.execute_wrapper(self):
            return call()


def sent(call: Callable[[], Any]) -> LastSelect:
    last = LastSelect()
    last.run(call)
    assert last.sql, "no SELECT was sent"
    return last


def sqlite_plan(statement: LastSelect) -> list[tuple[int, str]]:
    """(parent node, detail) of every node of EXPLAIN QUERY PLAN; parent 0 is the outer statement."""
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + statement.sql, statement.params)
        return [(parent, detail) for _, parent, _, detail in cursor.fetchall()]


def pg_plan(statement: LastSelect) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + statement.sql, statement.params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("SET LOCAL enable_seqscan = on")
    return plan


@pytest.fixture(params=["no statistics", *STAT1_1M])
def planner_statistics(request: Any, db: Any) -> Iterator[str]:
    """SQLite planning without statistics, then with each set of a 1M-session database. Undone in
    a savepoint, and reloaded after it, so that no other test plans with them."""
    if not SQLITE:
        if request.param != "no statistics":
            pytest.skip("PostgreSQL plans from the table's real size, not from injected statistics")
        yield request.param
        return
    with connection.cursor() as cursor:
        sid = transaction.savepoint()
        cursor.execute("ANALYZE sqlite_schema")  # makes sure sqlite_stat1 exists
        cursor.execute("DELETE FROM sqlite_stat1")
        cursor.executemany(
            "INSERT INTO sqlite_stat1 VALUES (%s, %s, %s)",
            [(TABLE, index, stat) for index, stat in STAT1_1M.get(request.param, [])],
        )
        cursor.execute("ANALYZE sqlite_schema")  # load them
        try:
            yield request.param
        finally:
            transaction.savepoint_rollback(sid)
            cursor.execute("ANALYZE sqlite_schema")  # load what the database holds again


@pytest.fixture
def few_sessions(db: Any) -> None:
    """A few rows of every kind: the plans do not depend on them, the queries must still run."""
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    rows = []
    for i, cred in enumerate(list(Credentials) * 2):
        fields: dict[str, Any] = {
            "credentials": cred,
            "created_at": start + dt.timedelta(minutes=i // 3),
            "origin": f"10.12.{i % 3}.{i}:443",
            "internal": i % 4 == 0,
        }
        if cred == Credentials.API_KEY:
            fields.update(api_key_id=i, api_key_name="ci")
        if cred == Credentials.TOKEN:
            fields.update(root_credentials=Credentials.LOGIN_PASSWORD, root_username="alice")
        if cred != Credentials.TRUENAS_NODE:
            fields["username"] = "alice" if i % 2 else "bob"
        if i % 5 == 4:
            fields.update(ended_at=start + dt.timedelta(days=1), end_reason="LOGOUT")
        rows.append(session(**fields))
    UserSession.objects.bulk_create(rows)


# --- plan shape ---------------------------------------------------------------------------------------

#: (name, filters, options, index uses the SQLite plan must show, whether a sort of the matches is
#: expected: an unbounded result, or a branch ordered by another column than its index's).
QUERY_CLASSES: list[tuple[str, list[Any], dict[str, Any], list[str], bool]] = [
    ("50 newest non-internal", [["internal", "=", False]], NEWEST, ["INDEX sess_active_created"], False),
    ("API page", API_PAGE, NEWEST, ["INDEX sess_active_cred (credentials=?)"], False),
    ("type, newest first", [["credentials", "=", "TOKEN"]], NEWEST, ["INDEX sess_active_cred (credentials=?)"], False),
    ("one user", [["credentials_data.username", "=", "alice"]], {}, ["(username=?)"], True),
    ("user prefix C^", [["credentials_data.username", "C^", "AL"]], {}, ["sess_active_ufold (username_folded>?"], True),
    ("count by type", [["credentials", "=", "API_KEY"]], {"count": True}, ["COVERING INDEX sess_active_cred_id"], False),
    ("origin prefix", [["origin", "^", "10.12."]], {}, ["sess_active_origin (origin>? AND origin<?)"], True),
    ("OR of two", [OR_TWO], {}, ["(username=?)", "sess_active_origin (origin>?"], True),
    ("OR of two, newest 50", [OR_TWO], NEWEST, ["(username=?)", "sess_active_origin (origin>?"], True),
    ("count of an OR", [OR_TWO], {"count": True}, ["(username=?)", "sess_active_origin (origin>?"], True),
    ("deep offset", [], {"offset": 500000, "limit": 50}, ["COVERING INDEX sess_active_created"], False),
]  # fmt: skip

#: (``session_page`` arguments, the index its sort reads on SQLite).
PAGES: list[tuple[dict[str, Any], str]] = [
    ({"sort": "created"}, "sess_active_created"),
    ({"sort": "last_seen"}, "sess_active_seen"),
    ({"sort": "user"}, "sess_active_uname_id"),
    ({"sort": "user", "descending": False}, "sess_active_uname_id"),
    ({"sort": "type"}, "sess_active_cred_id"),
    ({"sort": "origin"}, "sess_active_origin"),
    ({"sort": "ended", "history": True}, "sess_ended"),
    ({"sort": "created", "history": True}, "sess_ended_created"),
    ({"sort": "user", "history": True}, "sess_ended_username"),
    ({"sort": "type", "history": True}, "sess_ended_cred"),
    ({"sort": "origin", "history": True}, "sess_ended_origin"),
]


def _full_scans(plan: list[tuple[int, str]]) -> list[str]:
    """Nodes that read every row of the sessions table (Django aliases a subquery's table U0...)."""
    return [d for _, d in plan if d == f"SCAN {TABLE}" or (d.startswith("SCAN U") and " " not in d[5:])]


def assert_pg_index_plan(statement: LastSelect) -> None:
    plan = pg_plan(statement)
    assert "Seq Scan" not in plan, plan
    assert "Index" in plan, plan


def _whole_sorts(plan: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Sorts of a whole result, except the outer one of a ``pk IN (…)`` statement: that one sorts
    only the few rows a bounded subquery selected."""
    by_key = any(p == 0 and "USING INTEGER PRIMARY KEY" in d for p, d in plan)
    return [(p, d) for p, d in plan if d == "USE TEMP B-TREE FOR ORDER BY" and not (by_key and p == 0)]


@pytest.mark.parametrize(("name", "filters", "options", "uses", "sorts_matches"), QUERY_CLASSES)
def test_every_query_class_reads_an_index(
    planner_statistics: str,
    few_sessions: None,
    name: str,
    filters: list[Any],
    options: dict[str, Any],
    uses: list[str],
    sorts_matches: bool,
) -> None:
    statement = sent(lambda: session_query(filters=filters, options=options))
    if not SQLITE:
        assert_pg_index_plan(statement)
        return
    nodes = sqlite_plan(statement)
    text = "\n".join(d for _, d in nodes)
    assert not _full_scans(nodes), text
    for use in uses:
        assert use in text, text
    if not sorts_matches:
        assert not _whole_sorts(nodes), text


@pytest.mark.parametrize(("kwargs", "index"), PAGES, ids=lambda v: str(v))
def test_every_dashboard_sort_walks_its_index(
    planner_statistics: str, few_sessions: None, kwargs: dict[str, Any], index: str
) -> None:
    statement = sent(lambda: session_page(**kwargs))
    if not SQLITE:
        assert_pg_index_plan(statement)
        return
    nodes = sqlite_plan(statement)
    text = "\n".join(d for _, d in nodes)
    assert f"USING INDEX {index}" in text or f"USING INDEX {index} " in text, text
    assert not _full_scans(nodes), text
    assert "USE TEMP B-TREE" not in text, text


def test_the_forms_are_the_ones_described(few_sessions: None) -> None:
    """Which statement each shape gets (the module docstring of `plans`)."""
    api = sent(lambda: session_query(filters=API_PAGE, options=NEWEST)).sql
    assert api.count("UNION ALL") == 1
    assert api.count("LIMIT 50") == 3  # each branch, then the outer statement
    deep = sent(lambda: session_query(filters=[], options={"offset": 7, "limit": 5})).sql
    assert "UNION" not in deep
    assert "OFFSET 7" in deep.split(" IN (", 1)[1]  # the offset is applied to keys only
    either = sent(lambda: session_query(filters=[OR_TWO])).sql
    assert ("UNION ALL" in either) == SQLITE  # PostgreSQL plans the OR as a BitmapOr by itself
    # No index has (origin, created_at): an ``in`` over origins stays one statement.
    origins = sent(lambda: session_query(filters=[["origin", "in", ORIGINS[:2]]], options=NEWEST)).sql
    assert "UNION" not in origins
    # A branch no index can seek (``internal``): one scan rather than one per branch.
    mixed = ["OR", [["credentials_data.username", "=", "alice"], ["internal", "=", True]]]
    assert "UNION" not in sent(lambda: session_query(filters=[mixed])).sql


def test_partial_indexes_count_only_where_the_scope_implies_their_condition(db: Any) -> None:
    active, _ = session_scope()
    everything, _ = session_scope(history=True)
    ended = everything.filter(ended_at__isnull=False)
    assert {"username", "origin", "last_seen_at"} <= usable_indexes(active).leading
    assert ("credentials", "created_at") in usable_indexes(active).pairs
    assert "origin" not in usable_indexes(everything).leading  # only the table's full indexes
    assert {"id", "public_id", "user_id", "api_key_id"} <= usable_indexes(everything).leading
    assert ("origin", "id") in usable_indexes(ended).pairs
    assert ("credentials", "created_at") not in usable_indexes(ended).pairs


# --- identity -----------------------------------------------------------------------------------------


def plain_plan(
    queryset: Any, cond: Cond, order: Any, *, offset: int = 0, stop: int | None = None, count: bool = False
) -> Any:
    """The statement before issue 18: the scope, the filters, the order and the slice, as is."""
    if cond is FALSE:
        return queryset.none()
    base = queryset if cond is TRUE else queryset.filter(cond)
    return base.order_by() if count else base.order_by(*order)[offset:stop]


def three_ways(filters: Any, options: Any, current_pk: int | None = None) -> tuple[Any, str]:
    """The planned statement's outcome, checked equal to the plain statement's and the engine's;
    and which form was sent."""
    extra = options.get("extra", {}) if isinstance(options, dict) else {}
    memory_rows = session_rows(
        history=extra.get("history") is True, device=extra.get("device") is True, current_pk=current_pk
    )
    expected = outcome(lambda: run_in_memory(SESSION_SPEC, memory_rows, filters, options))
    last = LastSelect()
    planned = outcome(
        lambda: last.run(lambda: session_query(filters=filters, options=options, current_pk=current_pk))
    )
    with mock.patch.object(execution, "plan_query", plain_plan):
        execution._STATEMENTS.clear()
        plain = outcome(lambda: session_query(filters=filters, options=options, current_pk=current_pk))
    execution._STATEMENTS.clear()
    assert planned == plain, f"filters={filters!r} options={options!r}\n{last.sql}"
    assert planned == expected, f"filters={filters!r} options={options!r}\n{last.sql}"
    form = "split" if "UNION ALL" in last.sql else "deferred join" if " IN (SELECT" in last.sql else "plain"
    return planned, form


@pytest.fixture
def tied(db: Any) -> list[UserSession]:
    """Sessions created at two instants only, of two types and several users, some without one."""
    at = [dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 2, tzinfo=dt.UTC)]
    rows = []
    for i in range(24):
        cred = [Credentials.LOGIN_PASSWORD, Credentials.API_KEY, Credentials.TOKEN, Credentials.TRUENAS_NODE][
            i % 4
        ]
        fields: dict[str, Any] = {
            "credentials": cred,
            "created_at": at[i % 2],
            "origin": f"10.12.1.{i % 5}:1" if i % 3 else f"192.168.0.{i}:2",
            "internal": i % 7 == 0,
        }
        if cred == Credentials.API_KEY:
            fields.update(api_key_id=i % 3, api_key_name="k")
        if cred == Credentials.TOKEN:
            fields.update(
                root_credentials=Credentials.LOGIN_PASSWORD, username=None if i % 8 == 2 else "carol"
            )
        elif cred != Credentials.TRUENAS_NODE:
            fields["username"] = ["alice", "bob", "Alice"][i % 3]
        rows.append(session(**fields))
    return UserSession.objects.bulk_create(rows)


@pytest.mark.parametrize(
    ("filters", "options", "form"),
    [
        (API_PAGE, {"order_by": ["-created_at"], "limit": 3, "offset": 2}, "split"),
        (API_PAGE, {"order_by": ["created_at"], "limit": 5}, "split"),
        ([["credentials", "!=", "TRUENAS_NODE"]], {"limit": 7, "offset": 5}, "split"),
        ([["credentials_data.username", "in", ["alice", "carol"]]], {"order_by": ["-created_at"], "limit": 4}, "split"),
        ([["credentials", "in", ["API_KEY", "TOKEN"]]], {"order_by": ["-created_at"], "get": True}, "split"),
        ([], {"order_by": ["nulls_first:credentials_data.username"], "offset": 4, "limit": 6}, "deferred join"),
        ([], {"order_by": ["-credentials_data.username", "-origin"], "offset": 1, "limit": 30}, "deferred join"),
        ([["internal", "=", False]], {"order_by": ["origin"], "offset": 20, "limit": 10}, "deferred join"),
        ([OR_TWO], {}, "split" if SQLITE else "plain"),
        ([OR_TWO], {"order_by": ["-created_at"], "limit": 4, "offset": 1}, "split" if SQLITE else "deferred join"),
        ([OR_TWO], {"count": True}, "split" if SQLITE else "plain"),
        ([OR_TWO, ["credentials", "in", ["API_KEY", "TOKEN"]]], {"limit": 3}, "split"),
        ([["OR", [["credentials_data.username", "=", "alice"], ["credentials_data.username", "=", "Alice"],
                  ["origin", "^", "10.12.1.1"]]]], {"order_by": ["credentials_data.username"], "limit": 5}, "split" if SQLITE else "plain"),
    ],
)  # fmt: skip
def test_rewritten_statements_answer_what_the_plain_one_answers(
    tied: list[UserSession], filters: Any, options: dict[str, Any], form: str
) -> None:
    """Ties on created_at across the split branches, null usernames, overlapping OR branches (a row
    matching both is returned once), offsets inside and past the first branch."""
    result, sent_form = three_ways(filters, options)
    assert sent_form == form
    assert result[0] == "ok"


def test_or_split_returns_only_the_matching_rows(tied: list[UserSession]) -> None:
    """Each branch is a real subquery: a derived table's column is never the outer row's."""
    matching = {s.public_id for s in tied if s.username == "alice" and s.credentials != "TRUENAS_NODE"} | {
        s.public_id for s in tied if s.origin.startswith("10.12.1")
    }
    result, _ = three_ways([OR_TWO], {})
    assert {row["id"] for row in result[1]} == matching
    assert three_ways([OR_TWO], {"count": True})[0] == ("ok", len(matching))


ORDER_KEYS = [
    "created_at", "-created_at", "credentials_data.username", "-credentials_data.username",
    "nulls_first:credentials_data.username", "nulls_last:-credentials_data.username", "origin", "-origin",
    "credentials", "-credentials", "id", "internal",
]  # fmt: skip
#: Leaves the rewrites act on (``in`` lists, ranges, equalities on indexed columns), and others.
SEEKS = [
    lambda v: ["credentials_data.username", "=", v],
    lambda v: ["credentials_data.username", "in", [v, "bob", None]],
    lambda v: ["origin", "^", "10.12.1"],
    lambda v: ["credentials", "=", "API_KEY"],
    lambda v: ["credentials", "in", ["TOKEN", "LOGIN_PASSWORD", "UNIX_SOCKET"]],
    lambda v: ["credentials", "!=", "TRUENAS_NODE"],
    lambda v: ["created_at", ">=", {"$date": int(TIMES[2].timestamp() * 1000)}],
    lambda v: ["credentials_data.api_key.id", "in", [1, 2]],
    lambda v: ["origin", "in", ["10.0.0.1:443", "[::1]:8080"]],
    lambda v: ["internal", "=", True],
    lambda v: ["credentials_data.username", "C=", v],
]


@st.composite
def shaped_filters(draw: Any) -> list[Any]:
    def leaf() -> list[Any]:
        return draw(st.sampled_from(SEEKS))(draw(st.sampled_from(NAMES[:6])))

    terms: list[Any] = [leaf() for _ in range(draw(st.integers(0, 2)))]
    if draw(st.booleans()):
        branches = [
            leaf() if draw(st.integers(0, 3)) else [leaf(), leaf()] for _ in range(draw(st.integers(2, 3)))
        ]
        terms.append(["OR", branches])
    return terms


#: Mostly bounded pages, often past the first rows: the shapes the rewrites are for.
shaped_options = st.fixed_dictionaries(
    {
        "order_by": st.lists(st.sampled_from(ORDER_KEYS), max_size=2),
        "offset": st.integers(0, 6),
        "limit": st.integers(0, 6),
    },
    optional={
        "count": st.booleans(),
        "get": st.booleans(),
        "extra": st.sampled_from([{}, {"history": True}]),
    },
).map(lambda o: {**o, "offset": 0} if o.get("get") else o)


@pytest.mark.django_db
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None)
@given(
    rows=st.lists(session_fields(), min_size=1, max_size=14),
    filters=shaped_filters(),
    options=shaped_options,
    current=st.integers(-1, 13),
)
def test_plans_match_the_plain_statement_and_the_engine(
    rows: list[dict[str, Any]], filters: list[Any], options: dict[str, Any], current: int
) -> None:
    """Property: whatever form is sent, the answer is the plain statement's and the engine's."""
    sid = transaction.savepoint()
    try:
        created = UserSession.objects.bulk_create([session(**fields) for fields in rows])
        current_pk = created[current].pk if 0 <= current < len(created) else None
        _, form = three_ways(filters, options, current_pk)
        event(f"form: {form}")
    finally:
        transaction.savepoint_rollback(sid)
