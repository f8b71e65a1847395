"""What every benchmark script shares: the machine line, its own section of RESULTS.md, and a
gunicorn on 127.0.0.1 to load."""

from __future__ import annotations

import http.client
import json
import os
import platform
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
DATA = ROOT / "bench" / "data"
ASGI_WORKER = "sessions_app.server.asgi_worker.PeerCredUvicornWorker"
PG_BASE = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
PING = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "core.ping", "params": []}).encode()
#: The secret key of every bench's Django process: benchmark-only, never a deployment's.
SECRET_KEY = "benchmark-only-secret-key-not-for-production-use-0123456789"


def environment(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a bench's Django process (in-process or a server it starts): production
    settings (``DEBUG`` off) on ``database_url`` with the benchmark-only key, and the login rate
    limit and failure delay off -- a bench is one address making logins as fast as it can. ``extra``
    adds or overrides variables."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DJANGO_SECRET_KEY": SECRET_KEY,
        "DATABASE_URL": database_url,
        "DJANGO_DEBUG": "false",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
        "SESSIONS_LOGIN_RATE": "0",
        "SESSIONS_FAIL_DELAY": "0",
        **extra,
    }
    env.pop("DJANGO_SECRET_KEY_FILE", None)
    return env


def setup_django(database_url: str, *, fast_hasher: bool = False, **extra: str) -> None:
    """Configure Django in this process with `environment`; ``fast_hasher``: MD5 password hashing,
    for benches that create users but do not measure logins."""
    os.environ.update(environment(database_url, **extra))
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    if fast_hasher:
        from django.test.utils import override_settings

        override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]).enable()


def machine() -> str:
    """Cores, CPU model, Python, SQLite and kernel of this machine, for the results' header."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"nproc {os.cpu_count()} ({cpu}), Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {platform.system()} {platform.release()}"
    )


def write_section(name: str, text: str) -> None:
    """Replace the ``<!-- name:start -->`` … ``<!-- name:end -->`` section of RESULTS.md (or append it)."""
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->", re.S)
    if pattern.search(current):
        current = pattern.sub(lambda _: text, current)
    else:
        current = current.rstrip() + "\n\n" + text
    RESULTS.write_text(current.rstrip() + "\n")


def fresh_database(engine: str, *, sqlite: Path, postgres: str) -> str:
    """The URL of a freshly created, empty database: the SQLite file ``sqlite`` (and its -wal/-shm)
    removed, or the PostgreSQL database ``postgres`` on ``BENCH_PG_URL`` dropped and created."""
    DATA.mkdir(parents=True, exist_ok=True)
    if engine == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{sqlite}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{sqlite}"
    pg = ["-h", "127.0.0.1", "-U", "postgres"]
    subprocess.run(["dropdb", *pg, "--if-exists", postgres], check=True, capture_output=True)
    subprocess.run(["createdb", *pg, postgres], check=True, capture_output=True)
    return f"{PG_BASE}/{postgres}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ping(port: int) -> int:
    """The HTTP status of a JSON-RPC ``core.ping`` to 127.0.0.1:``port``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/api/current", PING, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


class Gunicorn:
    """gunicorn on 127.0.0.1 with ``workers`` workers and the environment ``env``: the configuration
    `bin/serve` runs (uvicorn workers, ``project.asgi``) or, ``asgi=False``, ``project.wsgi`` on sync
    workers. Ready when ``core.ping`` answers; each instance has its own control socket, and its log
    (bench/data/``name``-<port>.log) is shown if it does not start and removed when it stops."""

    def __init__(
        self, env: dict[str, str], *, workers: int = 1, asgi: bool = True, name: str = "bench"
    ) -> None:
        self.port = free_port()
        DATA.mkdir(parents=True, exist_ok=True)
        self.log = DATA / f"{name}-gunicorn-{self.port}.log"
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        if asgi:
            command = [gunicorn, "project.asgi:application", "--worker-class", ASGI_WORKER]
        else:
            command = [gunicorn, "project.wsgi", "--worker-class", "sync"]
        command += ["--bind", f"127.0.0.1:{self.port}", "--workers", str(workers)]
        command += ["--control-socket", f"/tmp/{name}-{self.port}.ctl"]
        command += ["--graceful-timeout", "2", "--log-level", "warning"]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                if ping(self.port) == 200:
                    return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = self.log.read_text()[-3000:]
                self.stop()
                sys.exit(f"gunicorn did not start:\n{log}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.unlink(missing_ok=True)

    def __enter__(self) -> Gunicorn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def login_loop(
    *,
    users: list[str],
    password: str,
    stop_file: str,
    max_seconds: float,
    max_logins: int | None = None,
    check_every: int = 10,
    ready_after: int = 20,
) -> dict[str, Any]:
    """Log in (``auth.login_ex``, password, the ``users`` in turn) in a loop until ``stop_file``
    exists (looked for every ``check_every`` logins), ``max_seconds`` passed or ``max_logins`` were
    made; ``stop_file + ".ready"`` appears after ``ready_after`` logins, so the parent starts its
    measurement with logins running. Each login's start time and latency, and every failure (its
    first line, never retried). Django must be set up (`setup_django`)."""
    from sessions_app.auth.clients import Client
    from sessions_app.services.login import login_ex

    stop = Path(stop_file)
    ready = Path(stop_file + ".ready")
    logins: list[tuple[float, float]] = []  # (start, ms) of successful logins
    failures: list[tuple[float, str]] = []
    started = time.time()
    i = 0
    while (max_logins is None or i < max_logins) and time.time() - started < max_seconds:
        if i % check_every == 0 and stop.exists():
            break
        params = {"mechanism": "PASSWORD_PLAIN", "username": users[i % len(users)], "password": password}
        at = time.time()
        t0 = time.perf_counter()
        try:
            result = login_ex(params=params, client=Client(address="127.0.0.1", port=10000 + i % 50000))
            ms = (time.perf_counter() - t0) * 1000
            if result.ok:
                logins.append((at, ms))
            else:
                failures.append((at, f"answer {result.response['response_type']}"))
        except Exception as exc:  # noqa: BLE001 - every failure is the measurement
            failures.append((at, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"))
        i += 1
        if i == ready_after:
            ready.touch()
    return {"logins": logins, "failures": failures, "bounded": max_logins is not None and i >= max_logins}
