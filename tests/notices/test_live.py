"""Live banners: a notice writes a ``notice`` outbox event that only the user's notice streams hear
(never ``auth.sessions`` subscribers), and the notice stream turns it into an SSE ``notice``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from sessions_app.events import EventCursor, notification
from sessions_app.models import SessionEvent, SignInNotice
from sessions_app.server.live import Hub
from sessions_app.server.streams import _events, _NoticeStream, _Stream
from tests.notices.conftest import AWAY, DESKTOP, HOME, IPHONE

pytestmark = pytest.mark.django_db


class Subscriber:
    """An ``auth.sessions`` listener (a WebSocket subscription or the dashboard's stream)."""

    reader_pk = 1

    def __init__(self) -> None:
        self.got: list[SessionEvent] = []

    def deliver(self, event: SessionEvent) -> None:
        self.got.append(event)

    def read_role_lost(self) -> None:
        pass


def _notice_event(make_user: Callable[..., Any], rpc_login: Any) -> tuple[SessionEvent, Any]:
    user = make_user("alice")
    cursor = EventCursor.at_end()
    rpc_login("alice", ua=DESKTOP, address=HOME)
    rpc_login("alice", ua=IPHONE, address=AWAY)
    assert SignInNotice.objects.count() == 1
    (event,) = [e for e in cursor.fetch() if e.kind == SessionEvent.Kind.NOTICE]
    return event, user


def test_the_notice_event_reaches_only_that_user_s_notice_streams(
    make_user: Callable[..., Any], rpc_login: Any
) -> None:
    event, user = _notice_event(make_user, rpc_login)
    assert event.internal
    assert event.public_id == ""
    assert event.fields == {"user": user.pk}
    hub = Hub()
    subscriber = Subscriber()
    mine = _NoticeStream(session_pk=1, client=None, user_pk=user.pk)
    theirs = _NoticeStream(session_pk=2, client=None, user_pk=user.pk + 1)
    dashboard = _Stream(session_pk=3, client=None, user_pk=user.pk)
    hub.listeners.update({subscriber, mine, theirs, dashboard})
    hub._dispatch(event)
    assert subscriber.got == []
    assert dashboard.queue.empty()
    assert theirs.queue.empty()
    assert mine.queue.get_nowait() == {"kind": "notice"}


def test_the_notice_stream_sends_notice_and_end() -> None:
    stream = _NoticeStream(session_pk=7, client=None, user_pk=1)
    stream.deliver(SessionEvent(kind=SessionEvent.Kind.NOTICE, fields={"user": 1}))
    stream.read_role_lost()  # needs no role: nothing happens
    assert stream.reader_pk is None
    assert _read(stream) == ["retry: 5000\n\n", "event: notice\ndata: {}\n\n", "event: end\ndata: {}\n\n"]


def _read(stream: Any) -> list[str]:
    """What the stream sends: what was queued, then ``end`` once its session is gone."""

    async def read() -> list[str]:
        events = _events(stream)
        chunks = [await anext(events), await anext(events)]
        stream.session_gone(7)
        return chunks + [chunk async for chunk in events]

    return asyncio.run(read())


def test_the_dashboard_stream_still_sends_ids() -> None:
    stream = _Stream(session_pk=7, client=None, user_pk=1)
    stream.deliver(SessionEvent(kind=SessionEvent.Kind.REMOVED, public_id="abc"))
    assert _read(stream)[1] == 'event: removed\ndata: {"id": "abc"}\n\n'


def test_a_notice_event_is_never_an_auth_sessions_notification_kind() -> None:
    """Processes that predate the kind skip it: it is internal (their dispatch drops internal events)."""
    event = SessionEvent(kind=SessionEvent.Kind.NOTICE, internal=True, fields={"user": 1})
    assert event.internal
    assert notification(event)["params"]["msg"] == "removed"  # what an old process would have sent


def test_the_notice_stream_needs_a_session_and_the_asgi_server(
    make_user: Callable[..., Any], browser: Any, client: Any
) -> None:
    assert client.get("/me/notices/events/").status_code == 401
    make_user("alice")
    page = browser("alice", ua=DESKTOP, address=HOME)
    assert page.get("/me/notices/events/").status_code == 501  # WSGI test client
    assert page.http.post("/me/notices/events/").status_code in (403, 405)
