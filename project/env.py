"""Every environment variable a deployment may set, in one table, with one parser per type.

Why a table and not ``os.environ.get`` calls spread over settings: the reference documentation
(docs/configuration.md) is generated from it, a test compares that document and the variables the
code and the scripts read with it both ways, and every value is checked once, at start-up, with one
rule per type -- so ``DJANGO_DB_PREPARED=on`` means what ``DJANGO_DEBUG=on`` means, and a bad value
stops the process with one line naming the variable instead of starting half-configured or failing
at the first request that reads it.

``project/settings.py`` calls `load` first and reads every value from what it returns; the app's own
defaults stay in ``sessions_app/conf.py`` (read at call time, so ``override_settings`` works) and the
table's defaults equal them. Variables read by the shell scripts (``bin/serve``, ``bin/_venv.sh``,
``bin/test``, ``.ci/run``) are listed too, marked by their reader, so the reference is complete;
`check` validates them as well.

From the command line (no Django settings needed)::

    python -m project.env --check      # validate the environment: one line and exit status 2 if bad
    python -m project.env --markdown   # print the reference table
    python -m project.env --update docs/configuration.md   # rewrite the table between its markers

This module imports nothing of the project and nothing of Django but its exception class, so the
checks can run before anything else is set up.
"""

from __future__ import annotations

import argparse
import enum
import ipaddress
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

#: Where ``bin/serve`` keeps the secret key it generates when no key variable is set.
GENERATED_SECRET_KEY = BASE_DIR / "var" / "secret_key"

#: The key used with ``DJANGO_DEBUG`` on and no key anywhere: development only, never accepted outside it.
INSECURE_DEVELOPMENT_KEY = "insecure-development-key-only-used-with-DJANGO_DEBUG-on"

#: The generated table sits between these lines of docs/configuration.md.
BEGIN_MARKER = (
    "<!-- BEGIN generated configuration table: python -m project.env --update docs/configuration.md -->"
)
END_MARKER = "<!-- END generated configuration table -->"


class ConfigurationError(ImproperlyConfigured):
    """A variable's value is not acceptable; the message is one line and names the variable."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(message)
        self.variable = variable


# --- Parsers: one per type, the same rule for every variable of that type ------------------------


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([smhd]?)", re.IGNORECASE)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_bool(text: str) -> bool:
    """``true/false``, ``1/0``, ``yes/no``, ``on/off`` in any case; anything else is an error.

    An unknown word is refused rather than read as false: ``DJANGO_DB_PREPARED=ture`` must not
    quietly turn prepared statements off.
    """
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def parse_int(text: str) -> int:
    """A decimal integer, optionally signed; no fractions, underscores or exponents."""
    stripped = text.strip()
    if not _INTEGER.fullmatch(stripped):
        raise ValueError(f"not an integer: {text!r}")
    return int(stripped)


def parse_float(text: str) -> float:
    """A finite decimal number (``nan`` and ``inf`` are errors: no bound can hold them)."""
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


def parse_duration(text: str) -> int | float:
    """Seconds: ``90``, ``1.5``, or a number with a unit ``s``, ``m``, ``h`` or ``d`` (``5m``, ``12h``).

    Whole results are ints, so a duration fits settings that Django or a library wants as an int.
    Negative durations do not parse: no variable means anything by one.
    """
    match = _DURATION.fullmatch(text.strip())
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()] if match else math.nan
    if not math.isfinite(seconds):
        raise ValueError(f"not a duration: {text!r}")
    return int(seconds) if seconds.is_integer() else seconds


def parse_list(text: str) -> list[str]:
    """Comma-separated items, each stripped; empty items are dropped (``a,,b,`` is ``[a, b]``)."""
    return [item.strip() for item in text.split(",") if item.strip()]


# --- Extra rules of single variables --------------------------------------------------------------


def _ip_networks(value: list[str]) -> bool:
    """Every item an address or a network (``10.0.0.0/8``); a typo must not silently trust nothing."""
    try:
        for item in value:
            ipaddress.ip_network(item, strict=False)
    except ValueError:
        return False
    return True


def _header_assignment(value: str) -> bool:
    name, sep, expected = value.partition("=")
    return bool(sep and re.fullmatch(r"[A-Za-z0-9_]+", name.strip()) and expected.strip())


def _http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not parts.query


def _long_key(value: str) -> bool:
    return len(value) >= 32


def _database_url(value: str) -> bool:
    import dj_database_url

    try:
        dj_database_url.parse(value)
    except Exception:  # noqa: BLE001 - the library raises several unrelated types for a bad URL
        return False
    return True


# --- The table ------------------------------------------------------------------------------------


class Kind(enum.Enum):
    BOOL = "boolean"
    INT = "integer"
    FLOAT = "number"
    DURATION = "duration"
    STR = "text"
    LIST = "list"
    PATH = "path"
    CHOICE = "choice"


# Who reads a variable. Python readers get every value checked at settings import (`load`).
SETTINGS = "settings"  # project/settings.py, through `load`
APP = "sessions_app"  # read by the app's code directly (os.environ), at the point of use
SERVE = "bin/serve"
VENV = "bin/_venv.sh"
TEST = "bin/test"
CI = ".ci/run"
PYTHON_READERS = frozenset({SETTINGS, APP})
SCRIPTS = (SERVE, VENV, TEST, CI)


@dataclass(frozen=True, slots=True)
class Var:
    """One variable: how it parses, what it defaults to, what it means, who reads it."""

    name: str
    kind: Kind
    default: Any
    doc: str
    group: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    #: Never shown in an error message (keys, passwords, URLs that may hold a password).
    secret: bool = False
    #: ``NAME_FILE`` may name a file holding the value (read and stripped) when ``NAME`` is unset.
    file: bool = False
    #: PATH: must name a readable file when set.
    must_exist: bool = False
    #: A rule beyond the type's, with `form` saying what it accepts.
    rule: Callable[[Any], bool] | None = None
    form: str = ""
    #: The default as the documentation shows it, when settings compute it (None default).
    shown_default: str | None = None
    read_by: tuple[str, ...] = (SETTINGS,)

    @property
    def names(self) -> tuple[str, ...]:
        """The environment names of this row: ``NAME``, and ``NAME_FILE`` when files are accepted."""
        return (self.name, f"{self.name}_FILE") if self.file else (self.name,)

    def expected(self) -> str:
        """What the variable accepts, for error messages (ASCII: it may reach any terminal)."""
        if self.form and self.kind in (Kind.STR, Kind.LIST):
            return self.form
        bounds = _bounds_text(self, plain=True)
        base = {
            Kind.BOOL: "true or false (also 1/0, yes/no, on/off)",
            Kind.INT: f"an integer{bounds}",
            Kind.FLOAT: f"a number{bounds}",
            Kind.DURATION: f"a duration{bounds} (seconds, or with a unit: 90, 1.5, 5m, 12h, 1d)",
            Kind.STR: "text",
            Kind.LIST: "a comma-separated list",
            Kind.PATH: "the path of a readable file" if self.must_exist else "a path",
            Kind.CHOICE: "one of " + ", ".join(self.choices),
        }[self.kind]
        return f"{base} ({self.form})" if self.form else base

    def parse(self, text: str, *, source: str | None = None) -> Any:
        """``text`` as this variable's value, or ConfigurationError naming it and the accepted form."""
        try:
            value = self._convert(text)
        except ValueError:
            value = None
            ok = False
        else:
            ok = self._within_bounds(value) and (self.rule is None or self.rule(value))
        if not ok:
            shown = " (value not shown)" if self.secret else f"={_shown(text)}"
            raise ConfigurationError(self.name, f"{source or self.name}{shown}: expected {self.expected()}")
        return value

    def value(self, environ: Mapping[str, str]) -> Any:
        """The parsed value in ``environ`` (or its ``_FILE``), else the default; empty means unset."""
        text, source = self._raw(environ)
        if text is None:
            return list(self.default) if self.kind is Kind.LIST else self.default
        return self.parse(text, source=source)

    def _raw(self, environ: Mapping[str, str]) -> tuple[str | None, str]:
        text = environ.get(self.name, "")
        if self.kind is not Kind.STR or not self.secret:
            text = text.strip()
        if text:
            return text, self.name
        path = environ.get(f"{self.name}_FILE", "").strip() if self.file else ""
        if not path:
            return None, self.name
        try:
            contents = Path(path).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not a readable text file"
            raise ConfigurationError(self.name, f"{self.name}_FILE={_shown(path, 300)}: {reason}") from None
        if not contents:
            raise ConfigurationError(self.name, f"{self.name}_FILE={_shown(path, 300)}: the file is empty")
        return contents, f"{self.name}_FILE's contents"

    def _convert(self, text: str) -> Any:
        if self.kind is Kind.BOOL:
            return parse_bool(text)
        if self.kind is Kind.INT:
            return parse_int(text)
        if self.kind is Kind.FLOAT:
            return parse_float(text)
        if self.kind is Kind.DURATION:
            return parse_duration(text)
        if self.kind is Kind.LIST:
            return parse_list(text)
        if self.kind is Kind.CHOICE:
            if text.strip() not in self.choices:
                raise ValueError(f"not one of {self.choices}")
            return text.strip()
        if self.kind is Kind.PATH and self.must_exist:
            path = Path(text)
            if not path.is_file() or not os.access(path, os.R_OK):
                raise ValueError(f"not a readable file: {text!r}")
        return text

    def _within_bounds(self, value: Any) -> bool:
        if self.kind not in (Kind.INT, Kind.FLOAT, Kind.DURATION):
            return True
        return (self.minimum is None or value >= self.minimum) and (
            self.maximum is None or value <= self.maximum
        )


def _shown(text: str, limit: int = 60) -> str:
    """A value as an error message quotes it: repr (no control characters), at most ``limit`` long."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _amount(value: float, kind: Kind) -> str:
    if kind is not Kind.DURATION:
        return f"{value:g}" if isinstance(value, float) else str(value)
    for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= seconds and value % seconds == 0:
            return f"{int(value // seconds)}{unit}"
    return f"{value:g}s"


def _bounds_text(var: Var, *, plain: bool) -> str:
    low = None if var.minimum is None else _amount(var.minimum, var.kind)
    high = None if var.maximum is None else _amount(var.maximum, var.kind)
    if low is not None and high is not None:
        return f" from {low} to {high}" if plain else f" {low}–{high}"
    if low is not None:
        return f" of at least {low}" if plain else f" ≥ {low}"
    if high is not None:
        return f" of at most {high}" if plain else f" ≤ {high}"
    return ""


CORE = "Core"
SERVING = "Serving (bin/serve)"
HTTP = "HTTP, cookies and TLS"
DATABASE = "Database"
POLICY = "Sessions and login policy"
KEYS = "API keys, SCRAM and secrets at rest"
PEERS = "Peer nodes"
LIVE = "Live events and sockets"
NOTICES = "Devices, places and new-sign-in notices"
EMAIL = "Email"
DEVELOPMENT = "Development and tests"

GROUPS = (CORE, SERVING, HTTP, DATABASE, POLICY, KEYS, PEERS, LIVE, NOTICES, EMAIL, DEVELOPMENT)

_I, _B, _D, _S, _L, _P, _C = Kind.INT, Kind.BOOL, Kind.DURATION, Kind.STR, Kind.LIST, Kind.PATH, Kind.CHOICE
_DAY = 86400

# A table is read by rows: kept one variable to a few lines, not one argument to a line.
# fmt: off
VARS: tuple[Var, ...] = (
    # --- Core
    Var("DJANGO_SECRET_KEY", _S, "", "signs cookies and derives the API-key pepper and field key when those are "
        "not set; every host of one deployment needs the same key (a new key signs everyone out); without "
        "DJANGO_DEBUG, start-up refuses to go on with no key", CORE, secret=True, file=True,
        shown_default="`var/secret_key` if it exists (`bin/serve` writes it), else required",
        read_by=(SETTINGS, SERVE, TEST)),
    Var("DJANGO_DEBUG", _B, False, "development mode (tracebacks in pages, no Secure cookies by default); "
        "never in production", CORE),
    Var("DJANGO_ALLOWED_HOSTS", _L, ("127.0.0.1", "localhost"), "host names the service answers to", CORE),
    Var("DJANGO_LOG_LEVEL", _C, "INFO", "level of the root logger (to standard error)", CORE,
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")),
    # --- Serving (bin/serve)
    Var("BIND", _S, "127.0.0.1:8000", "gunicorn's TCP bind, `HOST:PORT`", SERVING, read_by=(SERVE,)),
    Var("SOCKET", _P, "", "also serve on this unix socket (plain HTTP/WS, mode 0770; local tools log in as "
        "their own account)", SERVING, read_by=(SERVE,)),
    Var("WEB_CONCURRENCY", _I, 2, "gunicorn worker processes (each holds up to DJANGO_DB_POOL_SIZE "
        "PostgreSQL connections)", SERVING, minimum=1, maximum=1024, read_by=(SERVE,)),
    Var("GUNICORN_TIMEOUT", _I, 45, "seconds before gunicorn restarts a silent worker; keep it above "
        "PG_STATEMENT_TIMEOUT_MS", SERVING, minimum=1, maximum=_DAY, read_by=(SERVE,)),
    Var("CONTROL_SOCKET", _P, "", "gunicorn's control socket of this instance", SERVING,
        shown_default="`var/gunicorn.ctl`", read_by=(SERVE,)),
    Var("TLS_CERT", _P, "", "PEM certificate (chain); with TLS_KEY the TCP bind serves HTTPS and WSS, the "
        "unix socket stays plain; relative to where `bin/serve` starts, which checks both files", SERVING,
        read_by=(SERVE,)),
    Var("TLS_KEY", _P, "", "PEM private key of TLS_CERT", SERVING, read_by=(SERVE,)),
    Var("SKIP_MIGRATE", _B, False, "do not migrate at start (several hosts: migrate once, from one host, "
        "first); a database behind the code then stops start-up", SERVING, read_by=(SERVE,)),
    Var("DJANGO_SUPERUSER_USERNAME", _S, "", "with DJANGO_SUPERUSER_PASSWORD: the first administrator, "
        "created at start if missing", SERVING, read_by=(SERVE,)),
    Var("DJANGO_SUPERUSER_PASSWORD", _S, "", "the first administrator's password", SERVING, secret=True,
        read_by=(SERVE,)),
    Var("DJANGO_SUPERUSER_EMAIL", _S, "", "the first administrator's email address", SERVING,
        shown_default="`admin@localhost`", read_by=(SERVE,)),
    Var("PYTHON", _S, "", "the Python (≥ 3.11) that creates `.venv`", SERVING,
        shown_default="the newest of `python3.13` … `python3` on the PATH", read_by=(VENV,)),
    # --- HTTP, cookies and TLS
    Var("DJANGO_SESSION_COOKIE_SECURE", _B, None, "mark the session cookie Secure (loopback is a secure "
        "context for browsers)", HTTP, shown_default="true unless DJANGO_DEBUG"),
    Var("DJANGO_CSRF_COOKIE_SECURE", _B, None, "mark the CSRF cookie Secure", HTTP,
        shown_default="true unless DJANGO_DEBUG"),
    Var("DJANGO_SECURE_HSTS_SECONDS", _I, 31536000, "HSTS max-age", HTTP, minimum=0, maximum=63072000),
    Var("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", _B, True, "HSTS covers subdomains", HTTP),
    Var("DJANGO_SECURE_HSTS_PRELOAD", _B, False, "ask for HSTS preloading (the domain owner's decision)", HTTP),
    Var("DJANGO_SECURE_SSL_REDIRECT", _B, False, "redirect HTTP to HTTPS (TLS usually ends at the proxy, "
        "which redirects itself)", HTTP),
    Var("DJANGO_SECURE_PROXY_SSL_HEADER", _S, "", "behind a TLS proxy: the header that says a request came "
        "over HTTPS", HTTP, rule=_header_assignment, form="`HEADER=value`, e.g. HTTP_X_FORWARDED_PROTO=https"),
    Var("DJANGO_CSRF_TRUSTED_ORIGINS", _L, (), "origins (`https://host`) trusted for unsafe requests", HTTP),
    Var("SESSIONS_TRUSTED_PROXIES", _L, (), "addresses or networks whose `X-Forwarded-For` is believed", HTTP,
        rule=_ip_networks, form="comma-separated addresses or networks, e.g. 127.0.0.1,10.0.0.0/8"),
    Var("SESSIONS_TLS_BINDING_CERT", _P, "", "the certificate clients see (PEM or DER), for SCRAM's "
        "`tls-server-end-point` channel binding; behind a TLS proxy, the proxy's; empty: bound SCRAM "
        "logins are refused", HTTP, must_exist=True, shown_default="TLS_CERT under `bin/serve`, else —",
        read_by=(SETTINGS, SERVE)),
    # --- Database
    Var("DATABASE_URL", _S, None, "the database: `sqlite:///path` or `postgres://user@host:5432/db`; not SQLite: `bin/serve` "
        "generates no key, set DJANGO_SECRET_KEY_FILE", DATABASE,
        secret=True, rule=_database_url, form="a database URL such as postgres://user@host:5432/db",
        shown_default="`sqlite:///var/db.sqlite3`", read_by=(SETTINGS, SERVE)),
    Var("DJANGO_CONN_MAX_AGE", _D, 60, "lifetime of a persistent connection (SQLite, or PostgreSQL with the "
        "pool off)", DATABASE, minimum=0, maximum=_DAY),
    Var("DJANGO_CONN_HEALTH_CHECKS", _B, True, "check a persistent connection before a request uses it",
        DATABASE),
    Var("DJANGO_DB_POOL_SIZE", _I, 10, "PostgreSQL: pooled connections per server process; `0` turns the "
        "pool off. Hosts × WEB_CONCURRENCY × this must stay below the server's `max_connections`", DATABASE,
        minimum=0, maximum=1000),
    Var("DJANGO_DB_POOL_TIMEOUT", _D, 10, "PostgreSQL: how long a request waits for a pooled connection "
        "before failing (503)", DATABASE, minimum=0.1, maximum=3600),
    Var("DJANGO_DB_PREPARED", _B, True, "PostgreSQL: the authentication lookup is a prepared statement; "
        "false behind PgBouncer in transaction mode (< 1.21)", DATABASE),
    Var("SQLITE_BUSY_TIMEOUT", _D, 20, "SQLite: how long a writer waits for the lock", DATABASE, minimum=0,
        maximum=3600),
    Var("PG_STATEMENT_TIMEOUT_MS", _I, 30000, "PostgreSQL: milliseconds any statement may run; `0`: no "
        "ceiling", DATABASE, minimum=0, maximum=86_400_000),
    Var("SESSIONS_QUERY_TIMEOUT", _D, 10, "statement budget of query endpoints (JSON-RPC, REST, dashboard); "
        "past it → 503 `ETIMEDOUT` with `Retry-After`; `0`: none", DATABASE, minimum=0, maximum=3600),
    # --- Sessions and login policy
    Var("SESSIONS_ASSURANCE_LEVEL", _C, "LEVEL_1", "`LEVEL_1`: 30 d, no idle limit, 1–2 s failure delay; "
        "`LEVEL_2`: 12 h, 30 min idle, 4–5 s, no API-key logins", POLICY, choices=("LEVEL_1", "LEVEL_2")),
    Var("SESSIONS_MAX_AGE", _D, None, "absolute session lifetime; can only shorten the level's", POLICY,
        minimum=1, shown_default="the level's"),
    Var("SESSIONS_IDLE_TIMEOUT", _D, None, "idle limit; can only shorten the level's (or add one)", POLICY,
        minimum=1, shown_default="the level's"),
    Var("SESSIONS_MAX_PER_USER", _I, 100, "concurrent active sessions per user; the oldest is ended beyond",
        POLICY, minimum=1, maximum=100_000),
    Var("SESSIONS_LAST_SEEN_INTERVAL", _D, 60, "how stale a session's last-seen time may get before a request "
        "writes it (at most a tenth of the idle limit)", POLICY, minimum=0, maximum=3600),
    Var("SESSIONS_HISTORY_DAYS", _I, 90, "days ended sessions and audit records are kept (`sessions purge`)",
        POLICY, minimum=1, maximum=36500),
    Var("SESSIONS_FAIL_DELAY", _D, None, "fixed delay of a failed login; `0` in tests", POLICY, minimum=0,
        maximum=60, shown_default="the level's: 1–2 s or 4–5 s", read_by=(SETTINGS, TEST)),
    Var("SESSIONS_LOGIN_RATE", _I, 20, "login attempts (every entrance) and failed per-request credentials "
        "per window and client address; `0`: no limit", POLICY, minimum=0, maximum=1_000_000),
    Var("SESSIONS_LOGIN_RATE_WINDOW", _D, 60, "the fixed window of SESSIONS_LOGIN_RATE", POLICY, minimum=1,
        maximum=_DAY),
    Var("SESSIONS_LOCKOUT_THRESHOLD", _I, 10, "consecutive failed logins that lock an account", POLICY,
        minimum=1, maximum=1000),
    Var("SESSIONS_LOCKOUT_SECONDS", _D, 300, "the first lock; doubles with each further lock", POLICY,
        minimum=1, maximum=30 * _DAY),
    Var("SESSIONS_LOCKOUT_MAX_SECONDS", _D, 3600, "the longest lock", POLICY, minimum=1, maximum=30 * _DAY),
    Var("SESSIONS_LOCKOUT_WINDOW", _D, 900, "quiet time after the last failure after which counting restarts",
        POLICY, minimum=1, maximum=30 * _DAY),
    Var("SESSIONS_MAX_PASSWORD_LENGTH", _I, 1024, "longer passwords are refused before any hashing", POLICY,
        minimum=64, maximum=65536),
    Var("SESSIONS_OTP_MAX_FAILURES", _I, 5, "wrong codes before a pending second factor is dropped", POLICY,
        minimum=1, maximum=100),
    Var("SESSIONS_STEPUP_WINDOW", _D, 300, "how long a password re-entry (step-up) stays valid for "
        "second-factor and browser API-key changes", POLICY, minimum=1, maximum=_DAY),
    Var("SESSIONS_ROOT_USERNAME", _S, "root", "the account uid 0 on the unix socket logs in as", POLICY),
    # --- API keys, SCRAM and secrets at rest
    Var("SESSIONS_MAX_KEYS_PER_USER", _I, 100, "API keys one account may hold (revoked and expired ones count "
        "until deleted)", KEYS, minimum=1, maximum=100_000),
    Var("SESSIONS_API_KEY_PEPPER", _S, "", "HMAC key of API-key hashes; changing it invalidates every API key",
        KEYS, secret=True, file=True, shown_default="derived from DJANGO_SECRET_KEY"),
    Var("SESSIONS_FIELD_KEY", _S, "", "key sealing TOTP seeds and SCRAM verifiers at rest; keep it out of the "
        "database and its backups", KEYS, secret=True, file=True, rule=_long_key,
        form="at least 32 characters", shown_default="derived from DJANGO_SECRET_KEY"),
    Var("SESSIONS_FIELD_KEY_PREVIOUS", _L, (), "old field keys, for opening only, until `manage.py "
        "rotate_field_key` has run", KEYS, secret=True),
    Var("SESSIONS_SCRAM_ITERATIONS", _I, 500_000, "PBKDF2 rounds of a new SCRAM verifier (the official client "
        "refuses fewer than 50 000)", KEYS, minimum=1000, maximum=5_000_000),
    Var("SESSIONS_SCRAM_EXCHANGE_SECONDS", _D, 60, "how long a SCRAM exchange waits for its final message",
        KEYS, minimum=1, maximum=3600),
    # --- Peer nodes
    Var("SESSIONS_NODE_SECRET", _S, "", "shared secret of `TRUENAS_NODE` peers; empty: node logins refused",
        PEERS, secret=True, file=True),
    Var("SESSIONS_NODE_MAX_SKEW", _D, 60, "replay window of node signatures (clock difference allowed)",
        PEERS, minimum=1, maximum=3600),
    # --- Live events and sockets
    Var("SESSIONS_EVENT_POLL_INTERVAL", _D, 0.25, "time between reads of the event outbox, per process "
        "(bounds event and socket-close delay)", LIVE, minimum=0.01, maximum=_DAY),
    Var("SESSIONS_SOCKET_CHECK_INTERVAL", _D, 1.0, "time between re-validations of the sessions of open "
        "WebSockets and event streams", LIVE, minimum=0.01, maximum=_DAY),
    Var("SESSIONS_EVENT_RETENTION", _D, 3600, "how long an outbox event is kept before `sessions purge` "
        "deletes it", LIVE, minimum=1, maximum=30 * _DAY),
    # --- Devices, places and new-sign-in notices
    Var("SESSIONS_GEOIP_PATH", _P, "", "a MaxMind-format database (GeoLite2 City or Country, `.mmdb`) for "
        "the place of a login; empty: no places", NOTICES, must_exist=True),
    Var("SESSIONS_NOTICE_DAYS", _I, 90, "days after which a device or network unused by the account makes "
        "an interactive login a new sign-in", NOTICES, minimum=1, maximum=3650),
    Var("SESSIONS_NOTICE_API_KEYS", _B, True, "an API key's use from a network it was not used from lately "
        "is a notice to its owner", NOTICES),
    Var("SESSIONS_BASE_URL", _S, "", "how users reach the service, for the link in notice emails; empty: the "
        "login's Host when it is one of DJANGO_ALLOWED_HOSTS (never with `*`)", NOTICES, rule=_http_url,
        form="an http(s) URL such as https://sessions.example.org"),
    # --- Email
    Var("EMAIL_HOST", _S, "", "SMTP server of notice emails; empty: they are printed to the console", EMAIL),
    Var("EMAIL_BACKEND", _S, None, "Django email backend (dotted path)", EMAIL,
        shown_default="SMTP with EMAIL_HOST, else the console"),
    Var("EMAIL_PORT", _I, 587, "SMTP port", EMAIL, minimum=1, maximum=65535),
    Var("EMAIL_HOST_USER", _S, "", "SMTP user name", EMAIL),
    Var("EMAIL_HOST_PASSWORD", _S, "", "SMTP password", EMAIL, secret=True, file=True),
    Var("EMAIL_USE_TLS", _B, True, "STARTTLS to the SMTP server", EMAIL),
    Var("EMAIL_TIMEOUT", _D, 10, "SMTP connection timeout", EMAIL, minimum=1, maximum=600),
    Var("DEFAULT_FROM_EMAIL", _S, "sessions@localhost", "sender of notice emails", EMAIL),
    # --- Development and tests
    Var("SQLITE_TEST_NAME", _P, "", "the SQLite file of the test database (shared with the servers tests "
        "start)", DEVELOPMENT, shown_default="`var/test.sqlite3` under `bin/test`", read_by=(SETTINGS, TEST)),
    Var("SESSIONS_FAULT_INJECT", _C, "", "tests only, never in production: the process kills itself at this "
        "point of an audited change", DEVELOPMENT, choices=("before_audit", "after_audit"), read_by=(APP,)),
    Var("VENV_EXTRAS", _S, "", "extras installed into `.venv` (`bin/test` sets `dev`)", DEVELOPMENT,
        read_by=(VENV,)),
    Var("CI_POSTGRES_URL", _S, "", "the PostgreSQL database of CI's second run", DEVELOPMENT, secret=True,
        shown_default="`postgres://postgres@127.0.0.1:5432/test`", read_by=(CI,)),
)
# fmt: on

BY_NAME: Mapping[str, Var] = {var.name: var for var in VARS}


def variable_for(name: str) -> Var | None:
    """The row of environment name ``name`` (``X`` or the ``X_FILE`` of a row accepting files)."""
    if name in BY_NAME:
        return BY_NAME[name]
    if name.endswith("_FILE"):
        row = BY_NAME.get(name.removesuffix("_FILE"))
        if row is not None and row.file:
            return row
    return None


# --- Loading and checking --------------------------------------------------------------------------


def load(
    environ: Mapping[str, str] | None = None, *, readers: Iterable[str] = PYTHON_READERS
) -> dict[str, Any]:
    """Every value of the variables ``readers`` read, parsed and bounds-checked, by name.

    All of them, whether or not this process will use them (``DJANGO_DB_POOL_SIZE`` on SQLite
    too), so a bad value is found at the first start and not after a move to PostgreSQL. Raises one
    ConfigurationError: the first bad variable's message, naming the others when there are more.
    """
    environ = os.environ if environ is None else environ
    wanted = frozenset(readers)
    values: dict[str, Any] = {}
    errors: list[ConfigurationError] = []
    for var in VARS:
        if wanted.isdisjoint(var.read_by):
            continue
        try:
            values[var.name] = var.value(environ)
        except ConfigurationError as exc:
            errors.append(exc)
    if errors:
        first = errors[0]
        more = f" (also invalid: {', '.join(e.variable for e in errors[1:])})" if errors[1:] else ""
        raise ConfigurationError(first.variable, f"{first}{more}")
    return values


def check(environ: Mapping[str, str] | None = None, *, generated: Path = GENERATED_SECRET_KEY) -> None:
    """Validate every variable of the table, the scripts' too, and that a secret key is found.

    What a start needs before anything runs: ``bin/serve`` runs it ahead of its first command, and
    a service unit starting gunicorn directly can (``ExecStartPre``), since a worker failing at
    settings import makes gunicorn print a traceback per worker instead of one line.
    """
    values = load(environ, readers=[SETTINGS, APP, *SCRIPTS])
    secret_key(values["DJANGO_SECRET_KEY"], debug=values["DJANGO_DEBUG"], generated=generated)


def secret_key(configured: str, *, debug: bool, generated: Path = GENERATED_SECRET_KEY) -> str:
    """The secret key: the variable (or its file), else ``bin/serve``'s generated file, else none.

    Management commands run by hand after ``bin/serve`` (``createsuperuser``) thus use the key the
    server uses. With no key anywhere, only DEBUG may go on, with a key that says what it is.
    """
    if configured:
        return configured
    try:
        key = generated.read_text().strip()
    except FileNotFoundError:
        key = ""
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not a readable text file"
        raise ConfigurationError("DJANGO_SECRET_KEY", f"{generated}: {reason}") from None
    if key:
        return key
    if debug:
        return INSECURE_DEVELOPMENT_KEY
    raise ConfigurationError(
        "DJANGO_SECRET_KEY",
        "no secret key: set DJANGO_SECRET_KEY or DJANGO_SECRET_KEY_FILE (bin/serve writes "
        f"{generated.relative_to(BASE_DIR) if generated.is_relative_to(BASE_DIR) else generated} "
        "on its first start), or DJANGO_DEBUG=true for development",
    )


# --- The reference table ---------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _shown_default(var: Var) -> str:
    if var.shown_default is not None:
        return var.shown_default
    value = var.default
    if value is None or value == "" or value == ():
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return f"`{','.join(value)}`"
    return f"`{value}`"


def _accepted(var: Var) -> str:
    if var.kind is Kind.CHOICE:
        text = ", ".join(f"`{choice}`" for choice in var.choices)
    elif var.kind is Kind.PATH:
        text = "file" if var.must_exist else "path"
    elif var.rule is not None:
        text = var.form
    else:
        text = var.kind.value + _bounds_text(var, plain=False)
    if var.file:
        text += f"; or `{var.name}_FILE`"
    return text


def markdown() -> str:
    """The reference tables, one per group, as docs/configuration.md holds them between the markers."""
    lines = [
        "Values: booleans are `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`, any case); durations "
        "are seconds (`90`, `1.5`) or a number with a unit (`5m`, `12h`, `1d`); lists are comma-separated. "
        "An empty variable counts as unset. Where a row accepts `NAME_FILE`, that variable may name a "
        "file holding the value instead (`NAME` wins when both are set). A value outside its type or range stops "
        "start-up with one line naming the variable (exit status 2); `python -m project.env --check` "
        "checks every variable, the scripts' too.",
    ]
    for group in GROUPS:
        rows = [var for var in VARS if var.group == group]
        lines += [
            "",
            f"### {group}",
            "",
            "| variable | accepts | default | read by | meaning |",
            "|---|---|---|---|---|",
        ]
        for var in rows:
            cells = (
                f"`{var.name}`",
                _accepted(var),
                _shown_default(var),
                ", ".join(var.read_by),
                var.doc,
            )
            lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def replace_table(document: str, table: str) -> str:
    """``document`` with the text between the markers replaced by ``table``; ValueError without markers."""
    begin = document.index(BEGIN_MARKER) + len(BEGIN_MARKER)
    end = document.index(END_MARKER, begin)
    return document[:begin] + "\n" + table + document[end:]


def table_in(document: str) -> str:
    """The text between the markers of ``document`` (ValueError without them)."""
    begin = document.index(BEGIN_MARKER) + len(BEGIN_MARKER)
    end = document.index(END_MARKER, begin)
    return document[begin:end].removeprefix("\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m project.env", description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--check", action="store_true", help="validate the environment (exit status 2 if bad)"
    )
    action.add_argument("--markdown", action="store_true", help="print the reference table")
    action.add_argument("--update", metavar="FILE", help="rewrite the table between the markers of FILE")
    args = parser.parse_args(argv)
    if args.check:
        try:
            check()
        except ConfigurationError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.markdown:
        sys.stdout.write(markdown())
        return 0
    target = Path(args.update)
    try:
        target.write_text(replace_table(target.read_text(), markdown()))
    except (OSError, ValueError) as exc:
        print(f"error: {target}: {getattr(exc, 'strerror', None) or 'no table markers'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
