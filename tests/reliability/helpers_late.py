"""What the reliability tests D10–D17 share: sizes, gunicorn instances with several workers, bulk rows,
table checksums, and the secret-leak registry that every test of theirs is checked against.

Sizes follow ``RELIABILITY_SCALE``: small by default (the whole of D10–D17 well under 90 s per
database on two cores), the sizes of security.md with ``RELIABILITY_SCALE=full``. Figures (durations,
counts) are printed and, when ``RELIABILITY_FIGURES`` names a file, appended to it as JSON lines.

Every server started here listens on 127.0.0.1 only, and every loop is bounded in count and time.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models import Model

from tests.conftest import PASSWORD
from tests.integration import servers
from tests.integration.servers import (
    COOKIE,
    ROOT,
    STARTUP_TIMEOUT,
    Reply,
    Server,
    _gunicorn,
    _ready,
    _stop,
    free_port,
)

# --- sizes and figures ---------------------------------------------------------------------------------

FULL = os.environ.get("RELIABILITY_SCALE", "").strip().lower() == "full"


def scaled(small: int, full: int) -> int:
    """``full`` with ``RELIABILITY_SCALE=full``, else ``small``."""
    return full if FULL else small


def record_figures(test_id: str, **figures: Any) -> None:
    """Print the figures of a test (``pytest -s`` shows them) and append them to ``RELIABILITY_FIGURES``."""
    entry = {"test": test_id, "database": connection.vendor, "scale": "full" if FULL else "small", **figures}
    line = json.dumps(entry, sort_keys=True, default=str)
    print(f"\nFIGURES {line}")
    target = os.environ.get("RELIABILITY_FIGURES")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(line + "\n")


# --- secrets that must never be logged or audited (D11) -------------------------------------------------


@dataclass
class LeakRegistry:
    """Every secret the tests handled and every log file their servers wrote, for the whole run."""

    secrets: set[str] = field(default_factory=lambda: {PASSWORD})
    #: Short numeric secrets (OTP codes): matched only as a whole number, not inside a longer one.
    numbers: set[str] = field(default_factory=set)
    logs: list[Path] = field(default_factory=list)


LEAKS = LeakRegistry()


def secret(value: str) -> str:
    """Register ``value`` as a secret (a password, key, token, cookie value ...) and return it."""
    if value.isdigit() and len(value) <= 10:
        LEAKS.numbers.add(value)
    elif len(value) >= 6:
        LEAKS.secrets.add(value)
    return value


def register_log(path: Path) -> Path:
    if path not in LEAKS.logs:
        LEAKS.logs.append(path)
    return path


def _patterns() -> list[tuple[str, re.Pattern[str]]]:
    found = [(s, re.compile(re.escape(s))) for s in sorted(LEAKS.secrets)]
    found += [(n, re.compile(rf"(?<![0-9]){re.escape(n)}(?![0-9])")) for n in sorted(LEAKS.numbers)]
    return found


def leaks_in(text: str, where: str) -> list[str]:
    """``"<where>: <secret, shortened>"`` for every registered secret found in ``text``."""
    return [f"{where}: {s[:4]}…({len(s)} chars)" for s, pattern in _patterns() if pattern.search(text)]


def audit_table_text(chunk: int = 5000) -> Iterator[str]:
    """The audit table as text (username, session, address, event_data of each row), in chunks."""
    from sessions_app.models import AuditRecord

    table = connection.ops.quote_name(AuditRecord._meta.db_table)
    last = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, username, session, address, CAST(event_data AS TEXT) FROM {table} "
                f"WHERE id > %s ORDER BY id LIMIT {chunk}",
                [last],
            )
            rows = cursor.fetchall()
        if not rows:
            return
        last = rows[-1][0]
        yield "\n".join("\x1f".join(str(v) for v in row[1:] if v is not None) for row in rows)


def find_leaks(extra_logs: Iterable[Path] = ()) -> list[str]:
    """Registered secrets found in the audit table or in any registered (or ``extra_logs``) log file."""
    found: list[str] = []
    for text in audit_table_text():
        found += leaks_in(text, "audit table")
    for path in [*LEAKS.logs, *extra_logs]:
        if path.exists():
            found += leaks_in(path.read_text(errors="replace"), str(path))
    return sorted(set(found))


@pytest.fixture
def leak_guard(tmp_path: Path) -> Iterator[None]:
    """After the test (before its tables are emptied): no registered secret in the audit table, in any
    log file of the run's servers, or in what this process logged during the test (D11)."""
    log = register_log(tmp_path / "test-process.log")
    handler = logging.FileHandler(log, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
    leaks = find_leaks()
    assert not leaks, f"secrets leaked: {leaks}"


# --- users and sessions ---------------------------------------------------------------------------------

create_user = servers.create_user  # a user the servers can log in with PASSWORD


NOT_AUTHENTICATED = 207


def login(server: Server, username: str, password: str = PASSWORD) -> str:
    """Log in through ``server``; the session cookie's value (registered as a secret)."""
    return secret(server.login(username, password))


def refused(reply: Reply) -> bool:
    """Whether a JSON-RPC reply is the not-authenticated error (-32001, errno 207)."""
    error = reply.payload.get("error") if isinstance(reply.payload, dict) else None
    return bool(
        error
        and error.get("code") == -32001
        and (error.get("data") or {}).get("error") == NOT_AUTHENTICATED
        and reply.status == 200
    )


def me(server: Server, cookie: str, **kwargs: Any) -> Reply:
    return server.call("auth.me", cookie=cookie, **kwargs)


# --- gunicorn instances -----------------------------------------------------------------------------------

#: The served configuration (``bin/serve``): the ASGI application on uvicorn workers.
ASGI_WORKER = "sessions_app.server.asgi_worker.PeerCredUvicornWorker"
#: HTTP statuses in access-log lines: gunicorn's default format and uvicorn's (``"POST / HTTP/1.1" 200``).
_STATUS = re.compile(r'" (\d{3})(?: |$)')


def _tcp_inode(server_port: int, client_port: int) -> str | None:
    """The inode of the server side of the loopback TCP connection from ``client_port``."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                local, remote = parts[1], parts[2]
                if (
                    int(local.rsplit(":", 1)[1], 16) == server_port
                    and int(remote.rsplit(":", 1)[1], 16) == client_port
                ):
                    return parts[9]
    return None


@dataclass
class Instance(Server):
    """A gunicorn master with its workers (`Server` plus what restarts and worker tracking need)."""

    command: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    access_log: Path | None = None
    workers: int = 1

    @property
    def master(self) -> int:
        return self.process.pid

    def worker_pids(self) -> set[int]:
        """The pids of the master's live children (its workers)."""
        path = Path(f"/proc/{self.master}/task/{self.master}/children")
        try:
            return {int(pid) for pid in path.read_text().split()}
        except (OSError, ValueError):
            return set()

    def owner(self, client_port: int, wait: float = 5.0) -> int:
        """The worker that accepted the connection from ``client_port`` (found through /proc: the
        worker holding the server side of that TCP connection)."""
        server_port = int(self.bind.rpartition(":")[2])
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            inode = _tcp_inode(server_port, client_port)
            if inode is not None:
                target = f"socket:[{inode}]"
                for pid in self.worker_pids():
                    with contextlib.suppress(OSError):
                        for fd in os.listdir(f"/proc/{pid}/fd"):
                            with contextlib.suppress(OSError):
                                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                                    return pid
            time.sleep(0.01)
        raise AssertionError(f"no worker of {self.bind} accepted the connection from port {client_port}")

    def via_worker(
        self, method: str, *params: Any, cookie: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Reply]:
        """A JSON-RPC call on a new connection; (pid of the worker that answered, reply). The worker
        is identified once it has accepted the connection, before the request is sent."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
        sent = {"Content-Type": "application/json", **(headers or {})}
        if cookie is not None:
            sent["Cookie"] = f"{COOKIE}={cookie}"
        connection_ = self.connect()
        try:
            connection_.connect()
            pid = self.owner(connection_.sock.getsockname()[1])
            connection_.request("POST", "/api/current", body, sent)
            response = connection_.getresponse()
            data = response.read()
        finally:
            connection_.close()
        return pid, Reply(response.status, json.loads(data), {})

    def statuses(self) -> list[int]:
        """The HTTP status of every request in the access log."""
        if self.access_log is None or not self.access_log.exists():
            return []
        found = (_STATUS.search(line) for line in self.access_log.read_text(errors="replace").splitlines())
        return [int(match[1]) for match in found if match]


def server_environment(**env: str) -> dict[str, str]:
    """The environment of a server process on the test database (as `running_servers` builds it),
    with the login rate limit off and this run's fault injection and figures file not inherited,
    unless ``env`` says otherwise."""
    environment = servers.server_environment(**{"SESSIONS_LOGIN_RATE": "0", **env})
    for name in ("SESSIONS_FAULT_INJECT", "RELIABILITY_FIGURES"):
        if name not in env:
            environment.pop(name, None)
    return environment


def _launch(instance: Instance) -> None:
    with instance.log.open("ab") as out:
        instance.process = subprocess.Popen(
            instance.command, cwd=ROOT, env=instance.environment, stdout=out, stderr=subprocess.STDOUT
        )


@contextlib.contextmanager
def gunicorn(
    tmp: Path,
    *,
    instances: int = 1,
    workers: int = 1,
    timeout: int = 30,
    asgi: bool = False,
    name: str = "gunicorn",
    **env: str,
) -> Iterator[list[Instance]]:
    """Start ``instances`` gunicorn masters of ``workers`` workers each, on 127.0.0.1 and the test
    database; wait until each answers ``core.ping``; always stop them.

    Sync workers serve the WSGI application; ``asgi`` runs the served configuration of ``bin/serve``
    (the ASGI application on uvicorn workers). Access logs keep the default format, as ``bin/serve``
    writes them; every log file is registered for the leak checks.
    """
    environment = server_environment(**env)
    started: list[Instance] = []
    try:
        for number in range(instances):
            bind = f"127.0.0.1:{free_port()}"
            log = register_log(tmp / f"{name}-{number}.log")
            access = register_log(tmp / f"{name}-{number}.access.log")
            if asgi:
                command = [_gunicorn(), "project.asgi:application", "--worker-class", ASGI_WORKER]
            else:
                command = [_gunicorn(), "project.wsgi", "--worker-class", "sync"]
            command += ["--bind", bind, "--workers", str(workers), "--timeout", str(timeout)]
            command += ["--graceful-timeout", "2", "--log-level", "info", "--no-control-socket"]
            command += ["--access-logfile", str(access)]
            instance = Instance(
                [bind],
                None,  # type: ignore[arg-type]  # set by _launch
                log,
                command=command,
                environment=environment,
                access_log=access,
                workers=workers,
            )
            _launch(instance)
            started.append(instance)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        for instance in started:
            _ready(instance, deadline)
            wait_for_workers(instance)
        yield started
    finally:
        for instance in started:
            _stop(instance.process)


def wait_for_workers(
    instance: Instance, *, replacing: Collection[int] = (), timeout: float = 20.0
) -> set[int]:
    """Wait until the master has all its workers and none of ``replacing`` is among them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = instance.worker_pids()
        if len(pids) == instance.workers and not pids & set(replacing):
            return pids
        time.sleep(0.05)
    raise AssertionError(f"workers of {instance.bind}: {instance.worker_pids()} (replacing {replacing})")


def restart(instance: Instance) -> None:
    """Stop the whole service (SIGTERM to the master, wait for it) and start it again, same bind and
    environment (the log files are appended to)."""
    old = instance.master
    _stop(instance.process)
    _launch(instance)
    assert instance.master != old
    _ready(instance, time.monotonic() + STARTUP_TIMEOUT)
    wait_for_workers(instance)


def crash_and_start(instance: Instance) -> None:
    """Kill the whole service at once (``kill -9`` of the master and every worker: a crash or an OOM
    kill, no shutdown at all) and start it again, same bind and environment."""
    old = instance.master
    for pid in [old, *instance.worker_pids()]:  # the master first: it respawns no worker then
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    instance.process.wait(timeout=10)
    _launch(instance)
    assert instance.master != old
    _ready(instance, time.monotonic() + STARTUP_TIMEOUT)
    wait_for_workers(instance)


def reload_workers(instance: Instance) -> set[int]:
    """``kill -HUP`` the master: new workers replace the old ones; their pids once all are new."""
    old = instance.worker_pids()
    instance.process.send_signal(signal.SIGHUP)
    return wait_for_workers(instance, replacing=old)


def spread(
    instance: Instance,
    send: Callable[[Instance], tuple[int, Reply]],
    *,
    pids: set[int] | None = None,
    parallel: int = 4,
    rounds: int = 15,
) -> list[tuple[int, Reply]]:
    """Send ``parallel`` concurrent requests per round (``send`` returns the answering worker's pid and
    the reply, e.g. `Instance.via_worker`) until every worker of ``pids`` (default: the live workers)
    has answered at least one; returns (worker pid, reply) of every request sent."""
    wanted = set(pids if pids is not None else instance.worker_pids())
    answers: list[tuple[int, Reply]] = []
    for _ in range(rounds):
        with ThreadPoolExecutor(parallel) as pool:
            answers += list(pool.map(lambda _: send(instance), range(parallel), timeout=30))
        if wanted <= {pid for pid, _ in answers}:
            return answers
    raise AssertionError(f"workers {wanted} did not all answer: {sorted({pid for pid, _ in answers})}")


def call_killed(server: Server, method: str, *params: Any, **kwargs: Any) -> bool:
    """Send a call that is expected to kill the worker: True when the connection closed without an
    answer; fails when an answer came."""
    try:
        reply = server.call(method, *params, **kwargs)
    except (http.client.RemoteDisconnected, ConnectionResetError, http.client.BadStatusLine):
        return True
    raise AssertionError(f"{method} answered instead of killing the worker: {reply.status} {reply.payload}")


def log_problems(
    instances: Sequence[Server], *, allow: Sequence[str] = (), expected_500s: int = 0
) -> list[str]:
    """Lines of the servers' logs that must never appear: "database is locked", tracebacks and 5xx
    answers other than the documented 503 (``allow``: regexes of expected lines; ``expected_500s``:
    how many 500 answers a test provoked on purpose)."""
    problems: list[str] = []
    forbidden = re.compile(r"database is locked|Traceback|Internal Server Error|unhandled exception")
    allowed = [re.compile(a) for a in allow]
    for server in instances:
        for line in server.log.read_text(errors="replace").splitlines():
            if forbidden.search(line) and not any(a.search(line) for a in allowed):
                problems.append(f"{server.log.name}: {line}")
        if isinstance(server, Instance):
            bad = [status for status in server.statuses() if status >= 500 and status != 503]
            problems += [f"{server.bind}: HTTP {status}" for status in bad]
    for _ in range(expected_500s):
        problems.remove(next(p for p in problems if p.endswith("HTTP 500")))
    return problems


def manage(*args: str, timeout: float = 600, **env: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run ``manage.py`` in a process of its own on the test database; (seconds, completed process)."""
    started = time.perf_counter()
    done = subprocess.run(  # noqa: S603 - our own interpreter and manage.py
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=server_environment(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return time.perf_counter() - started, done


# --- bulk rows and checksums ---------------------------------------------------------------------------------


def bulk_insert(
    model: type[Model], columns: Sequence[str], rows: Iterable[Sequence[Any]], chunk: int = 10_000
) -> int:
    """Insert ``rows`` (values in the order of the model field names ``columns``) fast: ``COPY`` on
    PostgreSQL, ``executemany`` in chunks on SQLite. Other fields get their default (one value for
    every row); datetimes are adapted and dicts and lists become JSON."""
    given = [model._meta.get_field(name) for name in columns]
    others = [
        f
        for f in model._meta.concrete_fields
        if f not in given and not f.primary_key and f.name not in columns
    ]
    defaults = [f.get_default() for f in others]
    fields = [*given, *others]
    names = ", ".join(connection.ops.quote_name(f.column) for f in fields)  # type: ignore[union-attr]
    table = connection.ops.quote_name(model._meta.db_table)
    is_json = [f.get_internal_type() == "JSONField" for f in fields]
    # SQLite stores datetimes as text; bulk rows repeat a few instants, so each is adapted once.
    adapt_datetime = connection.ops.adapt_datetimefield_value
    is_datetime = [f.get_internal_type() == "DateTimeField" and connection.vendor == "sqlite" for f in fields]
    instants: dict[Any, Any] = {}

    def adapt(row: Sequence[Any]) -> list[Any]:
        out = [*row, *defaults]
        for i, value in enumerate(out):
            if value is None:
                continue
            if is_json[i]:
                out[i] = json.dumps(value)
            elif is_datetime[i]:
                adapted = instants.get(value)
                if adapted is None:
                    adapted = instants[value] = adapt_datetime(value)
                out[i] = adapted
        return out

    count = 0
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor, cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(adapt(row))
                count += 1
        return count
    sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join(['%s'] * len(fields))})"
    iterator = iter(rows)
    while batch := [adapt(row) for row in itertools.islice(iterator, chunk)]:
        # One transaction per chunk: in autocommit mode every row would be a commit of its own.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(sql, batch)
        count += len(batch)
    return count


SESSION_COLUMNS = (
    "public_id",
    "secret_hash",
    "user",
    "credentials",
    "username",
    "username_folded",
    "login_at",
    "origin",
    "secure_transport",
    "created_at",
    "last_seen_at",
    "expires_at",
    "idle_timeout",
    "ended_at",
    "end_reason",
    "ended_by",
)


def session_rows(
    count: int,
    *,
    run: str,
    users: Sequence[tuple[int, str]],
    created: Any,
    expires: Any,
    ended: Any = None,
    end_reason: str | None = None,
    last_seen: Any = None,
    idle_timeout: int | None = None,
    secret_hash: Callable[[int], str | None] = lambda i: None,
    start: int = 0,
) -> Iterator[tuple[Any, ...]]:
    """Rows of `SESSION_COLUMNS`: password sessions of ``users`` (pk, name) from varied addresses."""
    for i in range(start, start + count):
        pk, name = users[i % len(users)]
        yield (
            unique_id(i, run),
            secret_hash(i),
            pk,
            "LOGIN_PASSWORD",
            name,
            name.casefold(),
            created,
            f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}:{40000 + i % 20000}",
            False,
            created,
            last_seen or created,
            expires,
            idle_timeout,
            ended,
            end_reason,
            name if ended is not None else None,
        )


AUDIT_COLUMNS = ("audit_id", "timestamp", "event", "username", "session", "address", "success", "event_data")


def audit_rows(count: int, *, run: str, at: Any, start: int = 0) -> Iterator[tuple[Any, ...]]:
    """Audit rows: failed and successful password logins of a few hundred accounts."""
    for i in range(start, start + count):
        ok = i % 4 != 0
        yield (
            f"{run}-{i:023d}",
            at,
            "AUTHENTICATION",
            f"user{i % 500}",
            unique_id(i, run) if ok else None,
            f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}:{40000 + i % 20000}",
            ok,
            {
                "mechanism": "PASSWORD_PLAIN",
                **({"credentials": "LOGIN_PASSWORD"} if ok else {"error": "wrong password"}),
            },
        )


def analyze() -> None:
    """Planner statistics after a bulk load, as autovacuum would gather them (PostgreSQL)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")


def unique_id(number: int, run: str) -> str:
    """A unique, fixed-width text id (public ids, audit ids) for bulk rows."""
    return f"{run}-{number:012d}"


def new_run() -> str:
    return uuid.uuid4().hex[:12]


def table_digest(table: str, columns: Sequence[str], chunk: int = 20_000) -> tuple[int, str]:
    """(row count, SHA-256 of ``columns`` of every row in primary-key order), in bounded memory."""
    quote = connection.ops.quote_name
    digest = hashlib.sha256()
    count = 0
    last: Any = None
    selected = ", ".join(quote(c) for c in ["id", *[c for c in columns if c != "id"]])
    while True:
        where = "" if last is None else f"WHERE {quote('id')} > %s"
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {selected} FROM {quote(table)} {where} ORDER BY {quote('id')} LIMIT {chunk}",
                [] if last is None else [last],
            )
            rows = cursor.fetchall()
        if not rows:
            return count, digest.hexdigest()
        for row in rows:
            digest.update(repr(row).encode())
        count += len(rows)
        last = rows[-1][0]


def table_columns(table: str) -> list[str]:
    with connection.cursor() as cursor:
        return [c.name for c in connection.introspection.get_table_description(cursor, table)]


def wait_until(
    predicate: Callable[[], bool], *, timeout: float, interval: float = 0.05, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)
