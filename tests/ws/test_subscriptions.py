"""Each subscription sees the events committed after it (and a later subscription hides nothing)."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest
from django.db import connection

from sessions_app.api.websocket import Connection
from sessions_app.auth.clients import Client
from sessions_app.models import SessionEvent


def _in_thread(func: Any, *args: Any) -> Any:
    try:
        return func(*args)
    finally:
        connection.close()  # this thread's connection, not the test's


def _event(public_id: str) -> SessionEvent:
    return SessionEvent.objects.create(kind="removed", session=1, public_id=public_id)


@pytest.mark.django_db(transaction=True)
def test_a_second_subscription_does_not_hide_events_from_the_first() -> None:
    _event("before")

    async def scenario() -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(json.loads(message["text"]))

        socket = Connection({}, send, Client(address="127.0.0.1", port=1))
        socket.user = SimpleNamespace(is_authenticated=True)
        await asyncio.to_thread(_in_thread, socket.subscribe, "auth.sessions")
        await asyncio.to_thread(_in_thread, _event, "between")
        # The hub has not delivered "between" yet when the client subscribes to something else.
        await asyncio.to_thread(_in_thread, socket.subscribe, "core.get_jobs")
        await asyncio.to_thread(_in_thread, _event, "after")
        events = await asyncio.to_thread(_in_thread, lambda: list(SessionEvent.objects.order_by("id")))
        for event in events:
            socket.deliver(event)
        await asyncio.sleep(0.05)
        return sent

    # A loop of its own, in a thread of its own: another test's loop (Playwright's) may be running here.
    with ThreadPoolExecutor(1) as pool:
        sent = pool.submit(asyncio.run, scenario()).result(timeout=30)
    assert [m["params"]["extra"]["fields"]["id"] for m in sent] == ["between", "after"]
