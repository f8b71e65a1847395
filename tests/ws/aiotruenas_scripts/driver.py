"""Drive the PyPI client aiotruenas, unmodified, for ``tests/ws/test_aiotruenas.py``.

aiotruenas needs Python >= 3.13, so the tests run this script in a virtualenv of its own and talk to
it over pipes: one JSON command per line on stdin, one JSON answer per line on stdout. Clients are
named, so that one driver holds several connections. It prints ``{"ready": true, "version": ...}``
first.

Commands (``{"op": ..., ...}``) and their results:

* ``connect`` ``name``, ``port``, ``api_key`` (``host`` 127.0.0.1): ``TrueNASClient(host, api_key,
  use_tls=False, port=port).connect()``, which logs in with ``auth.login_with_api_key``; null.
* ``call`` ``name``, ``method``, ``params``: ``client.call(method, params)``; the result.
* ``subscribe`` ``name``, ``event``: ``client.subscribe(event)``; the subscription id.
* ``events`` ``name``, ``subscription``, ``timeout``: ``client.get_subscription_events(...)``; the raw
  notifications queued (waiting up to ``timeout`` for the first).
* ``unsubscribe`` ``name``, ``subscription``; null. ``is_subscribed`` ``name``, ``subscription``; bool.
* ``connected`` ``name``: ``client.connected``. ``wait_disconnected`` ``name``, ``timeout``: whether
  ``client.connected`` turned false (the client saw its socket close) within ``timeout``.
* ``close`` ``name``: ``client.close()``; null.

The answer is ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {"type", "message", "code",
"errname", "data", "phase"}}`` with the exception aiotruenas raised.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiotruenas
from aiotruenas import TrueNASClient


def _error(exc: BaseException) -> dict[str, Any]:
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "code": getattr(exc, "code", None),
        "errname": getattr(exc, "errname", None),
        "data": getattr(exc, "data", None),
        "phase": getattr(exc, "phase", None),
    }


async def _wait_disconnected(client: TrueNASClient, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while client.connected:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def _run(clients: dict[str, TrueNASClient], command: dict[str, Any]) -> Any:
    op, name = command["op"], command["name"]
    if op == "connect":
        client = TrueNASClient(
            command.get("host", "127.0.0.1"), command["api_key"], use_tls=False, port=command["port"]
        )
        clients[name] = client
        await client.connect()
        return None
    client = clients[name]
    if op == "call":
        return await client.call(command["method"], command.get("params"))
    if op == "subscribe":
        subscription, _queue = await client.subscribe(command["event"])
        return subscription
    if op == "events":
        return await client.get_subscription_events(command["subscription"], command["timeout"])
    if op == "unsubscribe":
        await client.unsubscribe(command["subscription"])
        return None
    if op == "is_subscribed":
        return await client.is_subscribed(command["subscription"])
    if op == "connected":
        return client.connected
    if op == "wait_disconnected":
        return await _wait_disconnected(client, command["timeout"])
    if op == "close":
        await client.close()
        return None
    raise ValueError(f"unknown op {op!r}")


async def main() -> None:
    clients: dict[str, TrueNASClient] = {}
    print(json.dumps({"ready": True, "version": aiotruenas.__version__}), flush=True)
    try:
        while line := await asyncio.to_thread(sys.stdin.readline):
            try:
                answer = {"ok": True, "result": await _run(clients, json.loads(line))}
            except Exception as exc:  # every failure is reported to the test, which asserts on it
                answer = {"ok": False, "error": _error(exc)}
            print(json.dumps(answer), flush=True)
    finally:
        for client in clients.values():
            await client.close()


if __name__ == "__main__":
    asyncio.run(main())
