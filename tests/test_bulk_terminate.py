"""Bulk termination as a first-class action (issue 17): the set-based end, the selections and their
counts, the dashboard's and My sessions' confirmation pages (the number typed above 100, the set
fixed at confirmation, the batch-by-batch mode of the page's script), the result messages, the
admin's confirmation page and the "already ended" message of a single termination."""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.core import signing
from django.test import Client
from django.utils import timezone

from sessions_app import targets
from sessions_app.auth.roles import Role
from sessions_app.models import AuditRecord, Credentials, EndReason, SessionEvent, Token, UserSession
from sessions_app.services.maintenance import BulkState, sessions_terminate_selection
from sessions_app.services.session_ending import EndCounts, session_end, sessions_end_batch
from tests.conftest import PASSWORD
from tests.factories import FAR_FUTURE, session

pytestmark = pytest.mark.django_db


def saved(**fields: Any) -> UserSession:
    row = session(**fields)
    row.save()
    return row


def token_of(parent: UserSession, *, single_use: bool = False) -> Token:
    return Token.objects.create(
        token_hash=secrets.token_hex(32), session=parent, expires_at=FAR_FUTURE, single_use=single_use
    )


def derived(parent: UserSession, **fields: Any) -> UserSession:
    """A TOKEN session opened with a (multi-use) token of ``parent``."""
    return saved(
        credentials=Credentials.TOKEN,
        parent=parent,
        token=token_of(parent),
        root_credentials=parent.root_credentials or parent.credentials,
        username=parent.username,
        **fields,
    )


def ended(row: UserSession) -> UserSession:
    row.refresh_from_db()
    return row


# --- the set-based end is `session_end`, set-wise -------------------------------------------------------


def build_world(tag: str) -> tuple[dict[str, UserSession], list[str]]:
    """Sessions named by role; the names to end, in primary-key order."""
    a = saved(username=f"{tag}-alice", origin=f"{tag}:1")
    a1 = derived(a, origin=f"{tag}:2")  # not chosen: cascades
    a11 = derived(a1, origin=f"{tag}:3")  # chosen, but its grandparent ends first
    b = saved(username=f"{tag}-bob", credentials=Credentials.API_KEY, api_key_name="k", origin=f"{tag}:4")
    b1 = derived(b, origin=f"{tag}:5")  # chosen, parent chosen: ends with it
    token_of(b, single_use=True)  # a token b created: deleted with b
    c = saved(username=f"{tag}-carol", origin=f"{tag}:6")  # not chosen: stays
    c_token = token_of(c)
    d = saved(username=f"{tag}-dave", origin=f"{tag}:7", ended_at=timezone.now(), end_reason=EndReason.LOGOUT)
    e = saved(username=f"{tag}-erin", origin=f"{tag}:8", internal=True)
    world = {"a": a, "a1": a1, "a11": a11, "b": b, "b1": b1, "c": c, "d": d, "e": e}
    world["c_token"] = c_token  # type: ignore[assignment]
    return world, ["a", "a11", "b", "b1", "d", "e"]


def outcome(world: dict[str, Any]) -> dict[str, Any]:
    """Everything the end wrote, with session ids replaced by the world's names."""
    sessions = {k: v for k, v in world.items() if isinstance(v, UserSession)}
    name_of = {row.public_id: name for name, row in sessions.items()}
    by_pk = {row.pk: name for name, row in sessions.items()}
    rows = {
        name: (row.ended_at is not None, row.end_reason, row.ended_by)
        for name, row in ((n, ended(r)) for n, r in sessions.items())
    }
    records = sorted(
        (
            r.event,
            r.success,
            (r.username or "").split("-")[-1],
            name_of.get(r.session or ""),
            r.address,
            json.dumps(
                {
                    **r.event_data,
                    "target": name_of.get(r.event_data.get("target", "")),
                    "target_username": (r.event_data.get("target_username") or "").split("-")[-1],
                },
                sort_keys=True,
            ),
        )
        for r in AuditRecord.objects.filter(session__in=list(name_of))
    )
    events = sorted(
        (e.kind, by_pk[e.session], name_of[e.public_id], e.internal, e.ended)
        for e in SessionEvent.objects.filter(session__in=list(by_pk))
    )
    tokens = sorted(by_pk[t.session_id] for t in Token.objects.filter(session_id__in=list(by_pk)))
    return {"rows": rows, "records": records, "events": events, "tokens": tokens}


def test_the_set_based_end_writes_what_session_end_writes() -> None:
    """The same rows, audit records, events and deleted tokens as `session_end` for each chosen
    session in primary-key order (the cascade included: a chosen session derived from another chosen
    one ends with it, as PARENT_ENDED)."""
    one, names = build_world("one")
    two, _ = build_world("two")
    now = timezone.now()
    for name in names:
        row = UserSession.objects.get(pk=one[name].pk)
        session_end(session=row, reason=EndReason.TERMINATED, actor="op", address="10.0.0.1:5", now=now)
    counts = sessions_end_batch(
        pks=[two[name].pk for name in names],
        reason=EndReason.TERMINATED,
        actor="op",
        address="10.0.0.1:5",
        now=now,
    )
    expected = outcome(one)
    assert outcome(two) == expected
    assert expected["rows"]["a11"] == (True, EndReason.PARENT_ENDED, None)
    assert expected["rows"]["b1"] == (True, EndReason.PARENT_ENDED, None)
    assert expected["rows"]["c"] == (False, None, None)
    assert expected["rows"]["d"] == (True, EndReason.LOGOUT, None)
    assert expected["tokens"] == ["c"]
    # a, b, e ended as chosen; a1, a11, b1 with their parents; d had ended.
    assert counts == EndCounts(ended=3, cascaded=3)
    assert len(expected["records"]) == len(expected["events"]) == 6


def test_the_set_based_end_is_idempotent_and_adds_a_note() -> None:
    rows = [saved(username=f"u{i}") for i in range(3)]
    first = sessions_end_batch(pks=[r.pk for r in rows], reason=EndReason.TERMINATED, note="incident 7")
    again = sessions_end_batch(pks=[r.pk for r in rows], reason=EndReason.TERMINATED)
    assert (first, again) == (EndCounts(3, 0), EndCounts(0, 0))
    records = AuditRecord.objects.filter(event_data__method="session.end")
    assert records.count() == 3
    assert {r.event_data["note"] for r in records} == {"incident 7"}
    assert SessionEvent.objects.filter(kind=SessionEvent.Kind.REMOVED).count() == 3


def test_logout_reason_is_a_logout_record() -> None:
    row = saved(username="alice")
    sessions_end_batch(pks=[row.pk], reason=EndReason.LOGOUT, actor="alice")
    record = AuditRecord.objects.get(session=row.public_id)
    assert (record.event, record.event_data["method"]) == ("LOGOUT", "auth.logout")


def test_terminate_other_sessions_of_the_apis_ends_many_in_short_transactions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``auth.terminate_other_sessions`` answers as before (how many ended, derived ones not counted);
    above `OTHERS_AT_ONCE` it ends them in batches."""
    from sessions_app.auth.clients import Client as Peer
    from sessions_app.services import session_ending as session_services

    monkeypatch.setattr(session_services, "OTHERS_AT_ONCE", 2)
    caller = saved(username="op")
    others = [saved(username=f"u{i}") for i in range(5)]
    child = derived(others[0])
    internal = saved(username="root", internal=True)
    ended_count = session_services.session_terminate_others(current=caller, client=Peer(address="10.0.0.1"))
    assert ended_count == 5
    assert all(ended(row).end_reason == EndReason.TERMINATED for row in others)
    assert ended(child).end_reason == EndReason.PARENT_ENDED
    assert ended(internal).ended_at is None
    assert ended(caller).ended_at is None
    assert not AuditRecord.objects.filter(event_data__method="sessions.terminate").exists()


# --- selections and their plans ---------------------------------------------------------------------


def test_a_plan_counts_the_selection_and_the_token_sessions_that_end_with_it() -> None:
    keys = [saved(credentials=Credentials.API_KEY, api_key_name="k", username=f"k{i}") for i in range(3)]
    from_keys = [derived(k) for k in keys[:2]]  # TOKEN: do not match the filter
    deeper = derived(from_keys[0])
    saved(username="pw")  # does not match, no relation
    selection = targets.SessionSelection(filters=[["credentials", "=", "API_KEY"]])
    plan = targets.selection_plan(selection=selection)
    assert (plan.count, plan.terminated, plan.cascaded, plan.extra) == (3, 3, 3, 3)
    assert plan.total == 6
    # Everything: the TOKEN sessions are selected too, and end with their parents.
    everything = targets.selection_plan(selection=targets.SessionSelection(others=True))
    assert (everything.count, everything.terminated, everything.cascaded, everything.extra) == (7, 4, 3, 0)
    state = sessions_terminate_selection(
        selection=selection, actor="op", describe={"test": True}, selected=plan.count
    )
    assert (state.ended, state.cascaded, state.done) == (3, 3, True)
    assert ended(deeper).end_reason == EndReason.PARENT_ENDED


def test_selections_keep_the_callers_session_and_internal_ones() -> None:
    mine = saved(username="op")
    other = saved(username="alice")
    internal = saved(username="root", internal=True)
    plan = targets.selection_plan(selection=targets.SessionSelection(others=True, keep=mine.pk))
    assert (plan.count, plan.keep_ends) == (1, False)
    # The caller's session came from a token of a selected one: it ends too, and the page says so.
    child = derived(other)
    plan = targets.selection_plan(selection=targets.SessionSelection(others=True, keep=child.pk))
    assert (plan.count, plan.extra, plan.keep_ends) == (2, 1, True)
    assert (
        internal.pk not in targets.selection_pks(selection=targets.SessionSelection(others=True), limit=10)[0]
    )


def test_filters_checked_in_python_select_the_same_sessions() -> None:
    rows = [saved(username=f"user{i}", origin=f"10.9.0.{i}:5") for i in range(12)]
    regex = targets.SessionSelection(filters=[["credentials_data.username", "~", "^user1[01]?$"]])
    pks, done = targets.selection_pks(selection=regex, limit=2)
    assert (pks, done) == ([rows[1].pk, rows[10].pk], False)
    pks, done = targets.selection_pks(selection=regex, after=rows[10].pk, limit=2)
    assert (pks, done) == ([rows[11].pk], True)
    assert targets.selection_count(selection=regex) == 3


def test_a_walk_in_slices_carries_its_state_and_summarises_once(monkeypatch: pytest.MonkeyPatch) -> None:
    refreshed: list[int] = []
    monkeypatch.setattr(
        "sessions_app.services.maintenance.planner_stats.refresh_after_bulk_change",
        lambda model, changed: refreshed.append(changed),
    )
    rows = [saved(username=f"u{i}") for i in range(7)]
    children = [derived(rows[0]), derived(rows[6])]
    selection = targets.SessionSelection(filters=[["credentials", "=", "LOGIN_PASSWORD"]], upto=rows[-1].pk)
    state = BulkState()
    slices = 0
    while not state.done:
        state = sessions_terminate_selection(
            selection=selection, actor="op", describe={"x": 1}, selected=7, state=state, max_rows=3
        )
        slices += 1
        assert slices < 10
    assert (state.ended, state.cascaded) == (7, 2)
    assert all(ended(c).end_reason == EndReason.PARENT_ENDED for c in children)
    summary = AuditRecord.objects.get(event_data__method="sessions.terminate")
    assert summary.event_data == {
        "method": "sessions.terminate",
        "reason": None,
        "selection": {"x": 1},
        "selected": 7,
        "ended": 7,
        "cascaded": 2,
        "completed": True,
    }
    assert refreshed == [9]


# --- the browser pages -----------------------------------------------------------------------------


class Browser:
    """Django's test client with CSRF enforced, signed in through the sign-in page."""

    def __init__(self, username: str) -> None:
        self.http = Client(enforce_csrf_checks=True, REMOTE_ADDR="127.0.0.1")
        self.http.get("/sign-in/")
        response = self.post("/sign-in/", {"username": username, "password": PASSWORD, "next": "/"})
        assert response.status_code == 302
        self.session = UserSession.objects.filter(username=username).order_by("-pk").first()

    def get(self, path: str, data: Any = None) -> Any:
        return self.http.get(path, data)

    def post(self, path: str, data: dict[str, Any] | None = None, **extra: Any) -> Any:
        token = self.http.cookies["csrftoken"].value
        return self.http.post(path, {"csrfmiddlewaretoken": token, **(data or {})}, **extra)


@pytest.fixture
def operator(make_user: Any) -> Browser:
    make_user("op", roles=[Role.AUTH_SESSIONS_WRITE])
    return Browser("op")


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def hidden(body: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', body)
    assert match is not None, name
    return match.group(1)


def confirm_fields(body: str) -> dict[str, str]:
    return {"confirm": "1", "upto": hidden(body, "upto"), "expected": hidden(body, "expected")}


def test_the_dashboard_offers_both_bulk_actions_to_writers_only(operator: Browser, make_user: Any) -> None:
    saved(username="alice", credentials=Credentials.API_KEY, api_key_name="k")
    body = operator.get("/sessions/").content.decode()
    assert "Terminate other sessions…" in body
    assert "matching these filters" not in body  # no filter set
    body = operator.get("/sessions/", {"type": "API_KEY", "sort": "user"}).content.decode()
    link = re.search(r'href="(/sessions/terminate-matching/\?[^"]+)"', body)
    assert link is not None
    assert link.group(1) == "/sessions/terminate-matching/?type=API_KEY"
    make_user("reader", roles=[Role.AUTH_SESSIONS_READ])
    reader = Browser("reader")
    assert "matching these filters" not in reader.get("/sessions/", {"type": "API_KEY"}).content.decode()
    assert reader.get("/sessions/terminate-matching/", {"type": "API_KEY"}).status_code == 403


def test_terminate_matching_shows_the_counts_then_ends_them(operator: Browser) -> None:
    keys = [saved(credentials=Credentials.API_KEY, api_key_name="k", username=f"k{i}") for i in range(3)]
    tokens = [derived(k) for k in keys[:2]]
    other = saved(username="pw")
    page = operator.get("/sessions/terminate-matching/", {"type": "API_KEY"})
    assert page.status_code == 200
    body = page.content.decode()
    assert "Terminate the 3 sessions matching these filters?" in body
    assert '<span id="bulk-cascade">2</span> <span class="muted small">(none of them selected;' in body
    assert 'name="typed"' not in body  # 100 or fewer: a button is enough
    assert hidden(body, "type") == "API_KEY"
    response = operator.post("/sessions/terminate-matching/", {**confirm_fields(body), "type": "API_KEY"})
    assert response.status_code == 302
    assert response["Location"] == "/sessions/?type=API_KEY"
    assert messages_of(response) == ["3 sessions terminated, and 2 token sessions that came from them."]
    assert all(ended(k).end_reason == EndReason.TERMINATED for k in keys)
    assert all(ended(t).end_reason == EndReason.PARENT_ENDED for t in tokens)
    assert ended(other).ended_at is None
    assert ended(keys[0]).ended_by == "op"
    summary = AuditRecord.objects.get(event_data__method="sessions.terminate")
    assert summary.event_data["selection"] == {
        "page": "dashboard",
        "filters": [["credentials", "=", "API_KEY"]],
    }
    assert (summary.event_data["ended"], summary.event_data["cascaded"]) == (3, 2)


def test_the_callers_own_session_is_never_selected(operator: Browser) -> None:
    body = operator.get("/sessions/terminate-matching/", {"user": "op"}).content.decode()
    assert "No session is active that matches these filters" in body
    response = operator.post("/sessions/terminate-matching/", {"confirm": "1", "user": "op"})
    assert messages_of(response) == ["No session was active any more: nothing was terminated."]
    assert ended(operator.session).ended_at is None


def test_more_than_100_must_be_typed(operator: Browser) -> None:
    UserSession.objects.bulk_create(session(username=f"bulk{i}", origin="10.7.0.1:5") for i in range(101))
    body = operator.get("/sessions/terminate-matching/", {"origin": "10.7."}).content.decode()
    assert "Type <strong>101</strong> to confirm" in body
    fields = {**confirm_fields(body), "origin": "10.7."}
    for typed, error in (("", "Type 101 (the number of sessions) to confirm."), ("100", "That is not 101")):
        response = operator.post("/sessions/terminate-matching/", {**fields, "typed": typed})
        assert response.status_code == 400
        assert error in response.content.decode()
    response = operator.post("/sessions/terminate-matching/", {**fields, "typed": "1O1"})
    assert "Type the number in digits" in response.content.decode()
    assert not UserSession.objects.filter(origin="10.7.0.1:5", ended_at__isnull=False).exists()
    # Leaving out the number shown does not skip the question: the server counts.
    response = operator.post("/sessions/terminate-matching/", {"confirm": "1", "origin": "10.7."})
    assert response.status_code == 400
    assert "Type 101 (the number of sessions) to confirm." in response.content.decode()
    # Nor does showing a smaller one.
    response = operator.post("/sessions/terminate-matching/", {**fields, "expected": "5", "typed": "5"})
    assert "101 sessions are selected now, more than the 5 shown" in response.content.decode()
    response = operator.post("/sessions/terminate-matching/", {**fields, "typed": "1 01"})
    assert response.status_code == 302
    assert messages_of(response) == ["101 sessions terminated."]


@pytest.mark.parametrize(
    "data",
    [
        {"confirm": "1", "upto": "x", "origin": "10.7."},
        {"confirm": "1", "upto": "-1", "origin": "10.7."},
        {"confirm": "1", "expected": "1e9", "origin": "10.7."},
        {"confirm": "1", "typed": "9" * 40, "origin": "10.7."},
        {"confirm": "1", "origin": "10.7.", "batch": "1", "size": "0"},
        {"confirm": "1", "origin": "10.7.", "batch": "1", "size": "x"},
        {"confirm": "1", "origin": "10.7.", "batch": "1", "state": "forged"},
        {"confirm": "1", "origin": "a\x00b"},
        {"confirm": "1", "query": "[["},
    ],
)
def test_malformed_input_is_a_client_error(operator: Browser, data: dict[str, str]) -> None:
    row = saved(origin="10.7.0.1:5")
    response = operator.post("/sessions/terminate-matching/", data)
    assert response.status_code in (302, 400), response.status_code
    assert ended(row).ended_at is None


def test_the_set_is_fixed_when_the_page_is_shown(operator: Browser) -> None:
    before = saved(origin="10.8.0.1:5")
    body = operator.get("/sessions/terminate-matching/", {"origin": "10.8."}).content.decode()
    after = saved(origin="10.8.0.2:5")  # begins after the confirmation page
    response = operator.post("/sessions/terminate-matching/", {**confirm_fields(body), "origin": "10.8."})
    assert messages_of(response) == ["1 session terminated."]
    assert ended(before).ended_at is not None
    assert ended(after).ended_at is None


def test_the_pages_script_mode_ends_batch_by_batch(operator: Browser) -> None:
    rows = [saved(origin=f"10.6.0.{i}:5") for i in range(5)]
    child = derived(rows[1], origin="172.16.0.1:5")
    body = operator.get("/sessions/terminate-matching/", {"origin": "10.6."}).content.decode()
    fields = {**confirm_fields(body), "origin": "10.6.", "batch": "1", "size": "2"}
    answers = []
    state = ""
    while True:
        response = operator.post(
            "/sessions/terminate-matching/", {**fields, **({"state": state} if state else {})}
        )
        assert response.status_code == 200, response.content
        answer = response.json()
        answers.append(answer)
        if answer["done"]:
            break
        state = answer["state"]
        assert len(answers) < 10
    assert [(a["ended"], a["cascaded"], a["remaining"]) for a in answers] == [(2, 1, 3), (2, 0, 1), (1, 0, 0)]
    last = answers[-1]
    assert (last["total_ended"], last["total_cascaded"], last["redirect"]) == (
        5,
        1,
        "/sessions/?origin=10.6.",
    )
    assert messages_of(response) == ["5 sessions terminated, and 1 token session that came from them."]
    assert ended(child).end_reason == EndReason.PARENT_ENDED
    assert AuditRecord.objects.filter(event_data__method="sessions.terminate").count() == 1
    # A state cannot be moved to another selection, nor forged.
    other = {**fields, "origin": "10.5."}
    response = operator.post("/sessions/terminate-matching/", {**other, "state": answers[0]["state"]})
    assert response.status_code == 400
    assert "no longer valid" in response.content.decode()
    forged = signing.dumps({"key": "x", "selected": 1, "state": {}}, salt="wrong")
    assert operator.post("/sessions/terminate-matching/", {**fields, "state": forged}).status_code == 400


def test_the_first_batch_checks_the_typed_number(operator: Browser) -> None:
    UserSession.objects.bulk_create(session(username=f"b{i}", origin="10.4.0.1:5") for i in range(101))
    body = operator.get("/sessions/terminate-matching/", {"origin": "10.4."}).content.decode()
    response = operator.post(
        "/sessions/terminate-matching/", {**confirm_fields(body), "origin": "10.4.", "batch": "1"}
    )
    assert response.status_code == 400
    assert "typed" in response.json()["errors"]
    assert not UserSession.objects.filter(origin="10.4.0.1:5", ended_at__isnull=False).exists()


def test_terminate_others_reports_the_token_sessions_that_ended_with_them(operator: Browser) -> None:
    parents = [saved(username=f"u{i}") for i in range(2)]
    children = [derived(p) for p in parents]
    internal = saved(username="root", internal=True)
    body = operator.get("/sessions/terminate-others/").content.decode()
    assert '<strong id="bulk-count">4</strong> sessions' in body
    response = operator.post("/sessions/terminate-others/", confirm_fields(body))
    assert messages_of(response) == ["2 other sessions terminated, and 2 token sessions that came from them."]
    assert all(ended(c).end_reason == EndReason.PARENT_ENDED for c in children)
    assert ended(internal).ended_at is None
    assert ended(operator.session).ended_at is None


def test_a_caller_derived_from_a_selected_session_is_warned_and_signed_out(operator: Browser) -> None:
    parent = saved(username="op", user=operator.session.user)
    UserSession.objects.filter(pk=operator.session.pk).update(parent=parent)  # as if opened with its token
    body = operator.get("/sessions/terminate-others/").content.decode()
    assert "This session came from a token of one of them: it ends too" in body
    assert "data-bulk-terminate data-plain" in body  # one plain POST: batch requests would stop with it
    response = operator.post("/sessions/terminate-others/", confirm_fields(body))
    assert messages_of(response) == ["1 other session terminated, and 1 token session that came from it."]
    assert ended(operator.session).end_reason == EndReason.PARENT_ENDED


def test_my_sessions_end_all_other_sessions_counts_and_says_so(make_user: Any) -> None:
    make_user("alice")
    alice = Browser("alice")
    others = [Browser("alice").session for _ in range(2)]
    bobs = saved(username="bob")
    body = alice.get("/me/sessions/terminate-others/").content.decode()
    assert '<strong id="bulk-count">2</strong> sessions' in body
    response = alice.post("/me/sessions/terminate-others/", confirm_fields(body))
    assert response["Location"] == "/me/sessions/"
    assert messages_of(response) == ["2 other sessions ended."]
    assert all(ended(s).end_reason == EndReason.TERMINATED for s in others)
    assert ended(bobs).ended_at is None


# --- a single termination of a session that had already ended -------------------------------------------


def test_terminating_an_ended_session_says_when_why_and_by_whom(operator: Browser, make_user: Any) -> None:
    gone = saved(
        username="alice",
        ended_at=timezone.now() - dt.timedelta(minutes=5),
        end_reason=EndReason.TERMINATED,
        ended_by="root",
    )
    response = operator.get(f"/sessions/{gone.public_id}/terminate/", {"next": "/sessions/?type=API_KEY"})
    assert response.status_code == 302
    assert response["Location"] == "/sessions/?type=API_KEY"
    assert messages_of(response) == ["That session had already ended (terminated, 5 minutes ago, by root)."]
    expired = saved(username="alice", expires_at=timezone.now() - dt.timedelta(hours=2, minutes=1))
    response = operator.post(f"/sessions/{expired.public_id}/terminate/", {"confirm": "1"})
    # (The first message is still queued: no page has shown it.)
    assert messages_of(response)[-1] == "That session had already ended (expired, 2 hours ago)."
    assert operator.get("/sessions/nope/terminate/").status_code == 404


def test_my_sessions_keeps_404_for_other_users_and_unknown_ids(make_user: Any) -> None:
    alice = make_user("alice")
    browser = Browser("alice")
    mine = saved(user=alice, username="alice", ended_at=timezone.now(), end_reason=EndReason.LOGOUT)
    bobs = saved(username="bob", ended_at=timezone.now(), end_reason=EndReason.LOGOUT)
    response = browser.get(f"/me/sessions/{mine.public_id}/terminate/")
    assert response["Location"] == "/me/sessions/"
    assert messages_of(response) == ["That session had already ended (signed out, just now)."]
    assert browser.get(f"/me/sessions/{bobs.public_id}/terminate/").status_code == 404
    assert browser.post(f"/me/sessions/{bobs.public_id}/terminate/", {"confirm": "1"}).status_code == 404
    assert browser.get("/me/sessions/nope/terminate/").status_code == 404


# --- the admin's action -------------------------------------------------------------------------------


ADMIN_LIST = "/admin/sessions_app/usersession/"


def test_the_admin_action_asks_first_then_reports_ended_and_already_ended(make_user: Any) -> None:
    make_user("root", superuser=True)
    admin = Browser("root")
    admin.http.defaults["HTTP_HOST"] = "127.0.0.1"
    active = [saved(username=f"a{i}") for i in range(3)]
    child = derived(active[0])
    gone = [saved(username=f"g{i}", ended_at=timezone.now(), end_reason=EndReason.LOGOUT) for i in range(2)]
    chosen = [row.pk for row in active + gone]
    first = admin.post(ADMIN_LIST, {"action": "terminate_sessions", "_selected_action": chosen, "index": 0})
    assert first.status_code == 200  # the confirmation page; nothing ended yet
    body = first.content.decode()
    assert (
        "Of the 5 selected sessions, <strong>3</strong> are active and will end; 2 had already ended." in body
    )
    assert (
        "<strong>1</strong> token session that came from them ends with them (1 not selected themselves)."
        in body
    )
    assert all(ended(row).ended_at is None for row in active)
    response = admin.post(
        ADMIN_LIST,
        {
            "action": "terminate_sessions",
            "_selected_action": chosen,
            "post": "yes",
            "select_across": "0",
            **confirm_fields(body),
        },
    )
    assert response.status_code == 302
    assert messages_of(response) == [
        "3 terminated, and 1 token session that came from them; 2 had already ended."
    ]
    assert all(ended(row).end_reason == EndReason.TERMINATED for row in active)
    assert ended(active[0]).ended_by == "root"
    assert ended(child).end_reason == EndReason.PARENT_ENDED
    # All of them ended already: the page says so and offers nothing to confirm.
    again = admin.post(ADMIN_LIST, {"action": "terminate_sessions", "_selected_action": chosen, "index": 0})
    assert "None of the 5 selected sessions is active" in again.content.decode()
    assert 'name="post"' not in again.content.decode()
    late = admin.post(
        ADMIN_LIST,
        {"action": "terminate_sessions", "_selected_action": chosen, "post": "yes", "confirm": "1"},
    )
    assert messages_of(late) == ["None terminated: 5 sessions had already ended."]


def test_the_admin_asks_to_type_the_number_above_100(make_user: Any) -> None:
    make_user("root", superuser=True)
    admin = Browser("root")
    admin.http.defaults["HTTP_HOST"] = "127.0.0.1"
    UserSession.objects.bulk_create(session(username=f"m{i}", origin="10.3.0.1:5") for i in range(101))
    chosen = list(UserSession.objects.filter(origin="10.3.0.1:5").values_list("pk", flat=True))
    body = admin.post(
        ADMIN_LIST, {"action": "terminate_sessions", "_selected_action": chosen, "index": 0}
    ).content.decode()
    assert "Type <strong>101</strong> to confirm" in body
    fields = {
        "action": "terminate_sessions",
        "_selected_action": chosen,
        "post": "yes",
        **confirm_fields(body),
    }
    wrong = admin.post(ADMIN_LIST, {**fields, "typed": "10"})
    assert wrong.status_code == 200
    assert "That is not 101" in wrong.content.decode()
    assert not UserSession.objects.filter(origin="10.3.0.1:5", ended_at__isnull=False).exists()
    response = admin.post(ADMIN_LIST, {**fields, "typed": "101"})
    assert messages_of(response) == ["101 terminated."]
