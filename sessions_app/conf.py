"""App settings, read at call time so that ``override_settings`` works (never bound at import).

`DEFAULTS` are the app's own defaults, for a project that does not set a knob. This project sets
every one of them from the environment variable of the same name (``project/settings.py`` through
``project/env.py``, whose table documents each one and whose defaults equal these -- a test
compares them), so an operator can turn any knob without editing code.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    "SESSIONS_ASSURANCE_LEVEL": "LEVEL_1",
    "SESSIONS_MAX_PER_USER": 100,
    "SESSIONS_MAX_KEYS_PER_USER": 100,  # API keys one user may hold (revoked/expired count; F11)
    "SESSIONS_HISTORY_DAYS": 90,
    "SESSIONS_TRUSTED_PROXIES": [],
    "SESSIONS_NODE_SECRET": "",
    "SESSIONS_FAIL_DELAY": None,  # seconds; None (or "") = the assurance level's random delay
    "SESSIONS_LOGIN_RATE": 20,  # login attempts (every entrance) and failed credentials per window and address
    "SESSIONS_LOGIN_RATE_WINDOW": 60,  # seconds: the fixed window of SESSIONS_LOGIN_RATE
    "SESSIONS_LOCKOUT_THRESHOLD": 10,  # consecutive failed logins that lock an account
    "SESSIONS_LOCKOUT_SECONDS": 300,  # first lock; doubles on each further lock
    "SESSIONS_LOCKOUT_MAX_SECONDS": 3600,  # cap of the doubling
    "SESSIONS_LOCKOUT_WINDOW": 900,  # seconds after the last failure before counting restarts
    "SESSIONS_MAX_AGE": None,  # seconds; can only shorten the assurance level's absolute lifetime
    "SESSIONS_IDLE_TIMEOUT": None,  # seconds; can only shorten (or add) the idle limit
    "SESSIONS_LAST_SEEN_INTERVAL": 60,  # seconds between last_seen_at writes (coalescing)
    "SESSIONS_ROOT_USERNAME": "root",  # the account uid 0 on the unix socket maps to
    "SESSIONS_API_KEY_PEPPER": "",  # HMAC key of API-key hashes; derived from SECRET_KEY when empty
    "SESSIONS_FIELD_KEY": "",  # key sealing TOTP seeds at rest (auth/fieldcrypt.py); SECRET_KEY when empty
    "SESSIONS_FIELD_KEY_PREVIOUS": [],  # old field keys: open only, until `manage.py rotate_field_key`
    "SESSIONS_NODE_MAX_SKEW": 60,  # seconds: replay window of TRUENAS_NODE signatures
    "SESSIONS_MAX_PASSWORD_LENGTH": 1024,  # longer passwords are refused before any hashing
    "SESSIONS_OTP_MAX_FAILURES": 5,  # wrong codes before a pending second factor is dropped
    "SESSIONS_EVENT_POLL_INTERVAL": 0.25,  # seconds between reads of the event outbox (per process)
    "SESSIONS_SOCKET_CHECK_INTERVAL": 1.0,  # seconds between validations of open sockets' sessions
    "SESSIONS_EVENT_RETENTION": 3600,  # seconds an outbox event is kept (purged by `sessions purge`)
    "SESSIONS_QUERY_TIMEOUT": 10.0,  # seconds: statement budget of query endpoints (C20); 0 = none
    "SESSIONS_STEPUP_WINDOW": 300,  # seconds a re-authentication (step-up, security.md F2) stays valid
    "SESSIONS_SCRAM_ITERATIONS": 500_000,  # PBKDF2 rounds of new SCRAM verifiers (client accepts 50k-5M)
    "SESSIONS_SCRAM_EXCHANGE_SECONDS": 60,  # how long a SCRAM exchange may wait for its final message
    "SESSIONS_TLS_BINDING_CERT": "",  # certificate clients see (PEM/DER): SCRAM's tls-server-end-point
    "SESSIONS_GEOIP_PATH": "",  # MaxMind-format database (GeoLite2 City/Country); empty: no places
    "SESSIONS_NOTICE_DAYS": 90,  # a device or network unused this long makes a login a new sign-in
    "SESSIONS_NOTICE_API_KEYS": True,  # an API key's first use from a new network notifies its owner
    "SESSIONS_BASE_URL": "",  # how users reach the service, for links in emails; empty: the request's
}


def get(name: str) -> Any:
    """The value of app setting ``name`` (project settings first, then `DEFAULTS`)."""
    return getattr(settings, name, DEFAULTS[name])
