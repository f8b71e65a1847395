#!/usr/bin/env python
"""SCRAM-SHA-512 API-key login (issue 15): server work next to ``API_KEY_PLAIN``, the cost of making a
key, and whether making one stalls the WebSocket worker's event loop.

    .venv/bin/python bench/scram_bench.py                   # SQLite and PostgreSQL
    .venv/bin/python bench/scram_bench.py --engines sqlite --rounds 20

Production settings (``SESSIONS_SCRAM_ITERATIONS`` = 500 000), a fresh database per engine.

1. **In-process login** (one Django process, no network, no failure delay): ``--rounds`` logins of
   each kind, interleaved -- ``API_KEY_PLAIN`` (one ``auth.login_ex``) and SCRAM (the two
   ``auth.login_ex`` calls; the client's work between them -- its PBKDF2, done once per key as the
   official client caches nothing but we exclude it by policy, and its proof -- is not timed).
   Medians, and SCRAM's ratio to the plain login (target: at most 2x).
2. **Making a key**: ``api_key_create`` (one PBKDF2 of 500 000 rounds, then the insert), and the
   PBKDF2 alone, medians of ``--keys``.
3. **Event loop**: gunicorn with 1 uvicorn worker (``bin/serve``'s configuration). One WebSocket
   sends ``api_key.create`` while a second sends ``core.ping`` back to back; the pings' p50 and
   max while keys are being made, next to pings alone. ``hashlib.pbkdf2_hmac`` releases the GIL
   and calls run in worker threads, so the loop keeps answering.

The section between ``<!-- scram_bench:start -->`` and ``<!-- scram_bench:end -->`` of
bench/RESULTS.md is replaced.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, Gunicorn, fresh_database, machine, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = "benchmark-only-secret-key-scram-0123456789"
LABELS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
ADMIN_PASSWORD = "bench admin password"


def environment(url: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DJANGO_SECRET_KEY": SECRET_KEY,
        "DATABASE_URL": url,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SESSIONS_FAIL_DELAY": "0",
        "SESSIONS_LOGIN_RATE": "0",
        "SESSIONS_SCRAM_ITERATIONS": "500000",
    }
    env.pop("DJANGO_SECRET_KEY_FILE", None)
    return env


class ScramClient:
    """The client side of RFC 5802 with TrueNAS's nonce rule; its PBKDF2 is cached per salt."""

    def __init__(self, username: str, key: str) -> None:
        self.key_id, self.secret = key.split("-", 1)
        self.username = username
        self.salted: dict[tuple[bytes, int], bytes] = {}

    def first(self) -> str:
        self.bare = f"n={self.username}:{self.key_id},r={base64.b64encode(os.urandom(32)).decode()}"
        return "n,," + self.bare

    def final(self, server_first: str) -> str:
        attributes = dict(part.split("=", 1) for part in server_first.split(","))
        salt, iterations = base64.b64decode(attributes["s"]), int(attributes["i"])
        if (salt, iterations) not in self.salted:
            self.salted[salt, iterations] = hashlib.pbkdf2_hmac(
                "sha512", self.secret.encode(), salt, iterations, 64
            )
        salted = self.salted[salt, iterations]
        client_key = hmac.new(salted, b"Client Key", "sha512").digest()
        without_proof = f"c=biws,r={attributes['r']}"
        message = f"{self.bare},{server_first},{without_proof}".encode()
        signature = hmac.new(hashlib.sha512(client_key).digest(), message, "sha512").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        return f"{without_proof},p={base64.b64encode(proof).decode()}"


def worker(url: str, rounds: int, key_count: int) -> dict[str, Any]:
    os.environ.clear()
    os.environ.update({**environment(url), "DJANGO_DB_POOL_SIZE": "0"})
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from sessions_app.auth import scram
    from sessions_app.auth.clients import Client
    from sessions_app.models import UserSession
    from sessions_app.services.api_keys import api_key_create
    from sessions_app.services.login import login_ex

    call_command("migrate", verbosity=0)
    model = get_user_model()
    user = model.objects.create_user("bench", password=None)
    model.objects.create_superuser("admin", password=ADMIN_PASSWORD)
    client = Client(address="127.0.0.1", port=50000)

    create_ms, pbkdf2_ms = [], []
    for number in range(key_count):
        started = time.perf_counter()
        _, key = api_key_create(user=user, name=f"k{number}")
        create_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        scram.derive_verifier(key.split("-", 1)[1], iterations=500_000)
        pbkdf2_ms.append((time.perf_counter() - started) * 1000)

    scram_client = ScramClient("bench", key)
    plain_ms, scram_ms = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        plain = login_ex(
            params={"mechanism": "API_KEY_PLAIN", "username": "bench", "api_key": key}, client=client
        )
        plain_ms.append((time.perf_counter() - started) * 1000)
        assert plain.response["response_type"] == "SUCCESS", plain.response

        first_text = scram_client.first()
        started = time.perf_counter()
        first = login_ex(
            params={"mechanism": "SCRAM", "scram_type": "CLIENT_FIRST_MESSAGE", "rfc_str": first_text},
            client=client,
        )
        server_ms = time.perf_counter() - started
        final_text = scram_client.final(first.response["rfc_str"])  # client work: not timed
        started = time.perf_counter()
        final = login_ex(
            params={"mechanism": "SCRAM", "scram_type": "CLIENT_FINAL_MESSAGE", "rfc_str": final_text},
            client=client,
            pending_secret=first.pending_secret,
        )
        server_ms += time.perf_counter() - started
        scram_ms.append(server_ms * 1000)
        assert final.response.get("scram_type") == "SERVER_FINAL_RESPONSE", final.response
    UserSession.objects.filter(username="bench").delete()
    return {
        "vendor": connection.vendor,
        "plain": plain_ms,
        "scram": scram_ms,
        "create": create_ms,
        "pbkdf2": pbkdf2_ms,
    }


def event_loop(url: str, keys: int) -> dict[str, list[float]]:
    """Pings on one WebSocket, alone and while another makes ``keys`` API keys."""
    from websockets.sync.client import connect

    def ping_until(ws: Any, stop: threading.Event, out: list[float]) -> None:
        number = 0
        while not stop.is_set():
            number += 1
            started = time.perf_counter()
            ws.send(json.dumps({"jsonrpc": "2.0", "id": number, "method": "core.ping", "params": []}))
            assert json.loads(ws.recv(timeout=60))["result"] == "pong"
            out.append((time.perf_counter() - started) * 1000)

    figures: dict[str, list[float]] = {"pings alone": [], "pings while keys are made": []}
    with Gunicorn(environment(url), workers=1, name="scram-bench") as server:
        address = f"ws://127.0.0.1:{server.port}/api/current"
        with connect(address) as maker, connect(address) as pinger:
            login = {"mechanism": "PASSWORD_PLAIN", "username": "admin", "password": ADMIN_PASSWORD}
            maker.send(json.dumps({"jsonrpc": "2.0", "id": 0, "method": "auth.login_ex", "params": [login]}))
            assert json.loads(maker.recv(timeout=60))["result"]["response_type"] == "SUCCESS"
            stop = threading.Event()
            thread = threading.Thread(target=ping_until, args=(pinger, stop, figures["pings alone"]))
            thread.start()
            time.sleep(2.0)  # a baseline of pings over a fixed span
            stop.set()
            thread.join()
            stop = threading.Event()
            busy = figures["pings while keys are made"]
            thread = threading.Thread(target=ping_until, args=(pinger, stop, busy))
            thread.start()
            for number in range(keys):
                params = [{"name": f"loop{number}", "username": "admin"}]
                maker.send(
                    json.dumps({"jsonrpc": "2.0", "id": number, "method": "api_key.create", "params": params})
                )
                reply = json.loads(maker.recv(timeout=60))
                assert "result" in reply, reply
            stop.set()
            thread.join()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--keys", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), int(args.worker[2]))))
        return
    runs = []
    for engine in args.engines.split(","):
        url = fresh_database(engine, sqlite=DATA / "scram_bench.sqlite3", postgres="bench_scram")
        done = subprocess.run(
            [sys.executable, __file__, "--worker", url, str(args.rounds), str(args.keys)],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if done.returncode != 0:
            sys.exit(f"{engine} failed:\n{done.stderr[-3000:]}")
        run = json.loads(done.stdout.strip().splitlines()[-1])
        run["loop"] = event_loop(url, args.keys)
        runs.append(run)
        print(f"{engine}: done", file=sys.stderr)
    lines = [
        "<!-- scram_bench:start -->",
        "## SCRAM-SHA-512 API-key login (`bench/scram_bench.py`)",
        "",
        f"Machine: {machine()}. Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        "`SESSIONS_SCRAM_ITERATIONS` = 500 000 (production), no failure delay.",
        "",
        f"**Server work of a login**, in-process, {args.rounds} of each, interleaved (SCRAM: both "
        "`auth.login_ex` calls; the client's PBKDF2 and proof between them are not counted). Target: "
        "SCRAM at most 2x the plain login.",
        "",
        "| database | API_KEY_PLAIN median ms | SCRAM (2 calls) median ms | SCRAM / plain |",
        "|---|---:|---:|---:|",
    ]
    for run in runs:
        plain, scram_ = statistics.median(run["plain"]), statistics.median(run["scram"])
        lines.append(f"| {LABELS[run['vendor']]} | {plain:.2f} | {scram_:.2f} | {scram_ / plain:.2f} |")
    lines += [
        "",
        f"**Making a key** (`api_key_create`, median of {args.keys}; its PBKDF2 runs before the "
        "transaction, so no row is locked meanwhile):",
        "",
        "| database | api_key_create ms | of which PBKDF2 (500 000 rounds) ms |",
        "|---|---:|---:|",
    ]
    for run in runs:
        lines.append(
            f"| {LABELS[run['vendor']]} | {statistics.median(run['create']):.0f} | "
            f"{statistics.median(run['pbkdf2']):.0f} |"
        )
    lines += [
        "",
        f"**Event loop while keys are made**: gunicorn, 1 uvicorn worker; one WebSocket makes {args.keys} "
        "keys with `api_key.create` while a second sends `core.ping` back to back.",
        "",
        "| database | pings | n | p50 ms | max ms |",
        "|---|---|---:|---:|---:|",
    ]
    for run in runs:
        for name, values in run["loop"].items():
            lines.append(
                f"| {LABELS[run['vendor']]} | {name} | {len(values)} | {statistics.median(values):.2f} | "
                f"{max(values):.1f} |"
            )
    lines.append("<!-- scram_bench:end -->")
    text = "\n".join(lines)
    if args.no_write:
        print(text)
    else:
        write_section("scram_bench", text)


if __name__ == "__main__":
    main()
