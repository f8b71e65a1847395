"""The ``auth.sessions`` event outbox: written with the change, read once each, TrueNAS shapes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import transaction

from sessions_app import events
from sessions_app.auth.clients import Client
from sessions_app.events import EventCursor, notification
from sessions_app.models import Credentials, EndReason, SessionEvent, UserSession
from sessions_app.services.session_ending import session_end
from sessions_app.services.sessions import session_create, session_rotate
from sessions_app.services.tokens import token_generate

pytestmark = pytest.mark.django_db
LOCAL = Client(address="127.0.0.1", port=4242)


def _kinds() -> list[tuple[str, str, bool]]:
    return list(SessionEvent.objects.order_by("id").values_list("kind", "public_id", "ended"))


def test_a_login_writes_added_with_the_fields_truenas_sends(make_user: Callable[..., Any]) -> None:
    user = make_user("alice")
    new = session_create(credentials=Credentials.LOGIN_PASSWORD, client=LOCAL, user=user)
    event = SessionEvent.objects.get()
    assert (event.kind, event.public_id, event.session, event.internal) == (
        "added",
        new.session.public_id,
        new.session.pk,
        False,
    )
    ms = events._ejson(new.session.created_at)
    assert notification(event) == {
        "jsonrpc": "2.0",
        "method": "collection_update",
        "params": {
            "msg": "added",
            "collection": "auth.sessions",
            "fields": {
                "id": new.session.public_id,
                "origin": "127.0.0.1:4242",
                "credentials": "LOGIN_PASSWORD",
                "credentials_data": {"username": "alice", "login_at": ms},
                "created_at": ms,
                "secure_transport": True,
            },
        },
    }
    assert set(ms) == {"$date"}
    assert isinstance(ms["$date"], int)


def test_ending_writes_removed_once_with_only_the_id(make_user: Callable[..., Any]) -> None:
    new = session_create(credentials=Credentials.LOGIN_PASSWORD, client=LOCAL, user=make_user("alice"))
    assert session_end(session=new.session, reason=EndReason.TERMINATED)
    assert not session_end(session=new.session, reason=EndReason.TERMINATED)  # idempotent: no 2nd event
    removed = SessionEvent.objects.filter(kind="removed").get()
    assert notification(removed) == {
        "jsonrpc": "2.0",
        "method": "collection_update",
        "params": {
            "msg": "removed",
            "collection": "auth.sessions",
            "extra": {"fields": {"id": new.session.public_id}},
        },
    }


def test_a_cascade_removes_every_derived_session(make_user: Callable[..., Any]) -> None:
    parent = session_create(credentials=Credentials.LOGIN_PASSWORD, client=LOCAL, user=make_user("alice"))
    token = token_generate(session=parent.session, client=LOCAL, ttl=600, attrs={}, match_origin=False)
    from sessions_app.services.login import login_ex

    child = login_ex(params={"mechanism": "TOKEN_PLAIN", "token": token}, client=LOCAL).new_session
    assert child is not None
    session_end(session=parent.session, reason=EndReason.TERMINATED)
    removed = {pid for kind, pid, _ in _kinds() if kind == "removed"}
    assert removed == {parent.session.public_id, child.session.public_id}


def test_a_rolled_back_login_leaves_no_event(make_user: Callable[..., Any]) -> None:
    user = make_user("alice")
    with transaction.atomic():
        session_create(credentials=Credentials.LOGIN_PASSWORD, client=LOCAL, user=user)
        transaction.set_rollback(True)
    assert not SessionEvent.objects.exists()
    assert not UserSession.objects.exists()


def test_rotation_replaces_the_id_without_ending_the_session(make_user: Callable[..., Any]) -> None:
    new = session_create(credentials=Credentials.LOGIN_PASSWORD, client=LOCAL, user=make_user("alice"))
    old_id = new.session.public_id
    session_rotate(session=new.session)
    assert _kinds()[1:] == [("removed", old_id, False), ("added", new.session.public_id, True)]


def test_internal_sessions_are_flagged(make_user: Callable[..., Any]) -> None:
    unix = Client(peer=(123, 0, 0))
    session_create(credentials=Credentials.UNIX_SOCKET, client=unix, user=make_user("root"), internal=True)
    assert SessionEvent.objects.get().internal is True


def _event(pk: int) -> SessionEvent:
    return SessionEvent.objects.create(id=pk, kind="removed", session=1, public_id=f"s{pk}")


def test_the_cursor_returns_each_event_once_and_waits_for_late_commits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(events.time, "monotonic", lambda: clock[0])
    cursor = EventCursor.at_end()
    assert cursor.fetch() == []
    _event(1)
    _event(2)
    _event(5)  # 3 and 4 are still committing (PostgreSQL hands out ids before commit)
    assert [e.id for e in cursor.fetch()] == [1, 2, 5]
    assert [e.id for e in cursor.fetch()] == []
    _event(4)
    assert [e.id for e in cursor.fetch()] == [4]
    clock[0] += events.GAP_GRACE + 1  # 3 never came (rolled back): no longer waited for
    _event(3)
    _event(6)
    assert [e.id for e in cursor.fetch()] == [6]
    assert cursor.gaps == {}


def test_a_new_cursor_starts_after_the_existing_events() -> None:
    _event(10)
    cursor = EventCursor.at_end()
    _event(11)
    assert [e.id for e in cursor.fetch()] == [11]


def test_purge_deletes_old_events(make_user: Callable[..., Any], settings: Any) -> None:
    import datetime as dt

    from django.utils import timezone

    from sessions_app.services.maintenance import history_purge

    settings.SESSIONS_EVENT_RETENTION = 60
    old = _event(1)
    SessionEvent.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(minutes=5))
    _event(2)
    result = history_purge(older_than=dt.timedelta(days=90), actor="test")
    assert result.session_events == 1
    assert list(SessionEvent.objects.values_list("id", flat=True)) == [2]
