"""Settings of the session registry: one module, driven by the environment.

Every variable comes through `project.env`, whose table says its type, default and bounds and
generates docs/configuration.md; `env.load` checks them all first, so a bad value stops start-up
with one line naming it. Unsafe combinations fail loudly: with DEBUG off (the default) a secret key
must be found -- ``DJANGO_SECRET_KEY``, the file ``DJANGO_SECRET_KEY_FILE`` names, or the
``var/secret_key`` that ``bin/serve`` generates.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from project import env

BASE_DIR = Path(__file__).resolve().parent.parent

# Every variable, checked before anything else is set: a bad value stops here with one line naming it.
_env = env.load()

# --- Security ------------------------------------------------------------------------------------

DEBUG: bool = _env["DJANGO_DEBUG"]
SECRET_KEY = env.secret_key(_env["DJANGO_SECRET_KEY"], debug=DEBUG)
ALLOWED_HOSTS: list[str] = _env["DJANGO_ALLOWED_HOSTS"]

# Cookies are always marked Secure outside DEBUG; browsers treat loopback as a secure context.
SESSION_COOKIE_SECURE = (
    not DEBUG if _env["DJANGO_SESSION_COOKIE_SECURE"] is None else _env["DJANGO_SESSION_COOKIE_SECURE"]
)
CSRF_COOKIE_SECURE = (
    not DEBUG if _env["DJANGO_CSRF_COOKIE_SECURE"] is None else _env["DJANGO_CSRF_COOKIE_SECURE"]
)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy on every response (django-csp): scripts and styles only from this origin or
# inline with the response's nonce (`request.csp_nonce`; the Swagger UI page's initialiser has one),
# never 'unsafe-inline' or 'unsafe-eval'. Images may be data: URLs (the Swagger UI's icons).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, NONCE],
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}
SECURE_HSTS_SECONDS: int = _env["DJANGO_SECURE_HSTS_SECONDS"]
SECURE_HSTS_INCLUDE_SUBDOMAINS: bool = _env["DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS"]
SECURE_HSTS_PRELOAD: bool = _env["DJANGO_SECURE_HSTS_PRELOAD"]
# TLS is normally terminated by a reverse proxy; the service answers plain HTTP on loopback.
SECURE_SSL_REDIRECT: bool = _env["DJANGO_SECURE_SSL_REDIRECT"]
SECURE_REDIRECT_EXEMPT = [r"^api/", r"^healthz$"]  # load-balancer probes speak plain HTTP
# TLS normally ends at the reverse proxy, which redirects to HTTPS itself, and the service answers plain
# HTTP on 127.0.0.1 (loopback counts as a secure transport). HSTS preloading is a decision for the
# domain's owner (DJANGO_SECURE_HSTS_PRELOAD), not a default.
_SILENCED_DEPLOY_CHECKS = ["security.W021"] + ([] if SECURE_SSL_REDIRECT else ["security.W008"])
if _env["DJANGO_SECURE_PROXY_SSL_HEADER"]:  # HEADER=value, checked by env
    _name, _sep, _value = _env["DJANGO_SECURE_PROXY_SSL_HEADER"].partition("=")
    SECURE_PROXY_SSL_HEADER = (_name.strip(), _value.strip())
CSRF_TRUSTED_ORIGINS: list[str] = _env["DJANGO_CSRF_TRUSTED_ORIGINS"]

# --- Applications --------------------------------------------------------------------------------

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "sessions_app",
]

# Sessions are the registry's own (sessions_app.middleware), checked against the database on every
# request; Django's session framework is not used. Messages live in a signed cookie.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Outside everything that can answer (WhiteNoise, CSRF failures, error pages): all get the policy.
    "sessions_app.server.csp.ContentSecurityPolicyMiddleware",
    # Static files (admin, Swagger UI, the dashboard's stylesheet) served by the app itself: no CDN.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.middleware.common.CommonMiddleware",
    "sessions_app.middleware.SessionAuthenticationMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: keeps the chain synchronous under ASGI (one thread per request, not one hop per method).
    "sessions_app.middleware.SyncBoundary",
]
MESSAGE_STORAGE = "django.contrib.messages.storage.cookie.CookieStorage"
# admin.E408/E410 ask for Django's session and authentication middleware; ours replaces both.
SILENCED_SYSTEM_CHECKS = ["admin.E408", "admin.E410", *_SILENCED_DEPLOY_CHECKS]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"
ASGI_APPLICATION = "project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "sessions_app.context_processors.sign_in_notices",
                "sessions_app.context_processors.roles",
            ],
        },
    },
]

# --- Database ------------------------------------------------------------------------------------
# SQLite is the embedded default: WAL so readers never wait for the writer, IMMEDIATE transactions so
# that two writers queue on the busy timeout instead of failing with "database is locked" when a read
# transaction tries to upgrade. PostgreSQL (DATABASE_URL=postgres://...) is the scale-out engine.

_default_sqlite = BASE_DIR / "var" / "db.sqlite3"
#: PostgreSQL: the ceiling of every statement (query endpoints run under the lower
#: SESSIONS_QUERY_TIMEOUT, sessions_app/db/connections.py).
PG_STATEMENT_TIMEOUT_MS: int = _env["PG_STATEMENT_TIMEOUT_MS"]
DATABASES = {
    "default": dj_database_url.parse(
        _env["DATABASE_URL"] or f"sqlite:///{_default_sqlite}",
        conn_max_age=_env["DJANGO_CONN_MAX_AGE"],
        conn_health_checks=_env["DJANGO_CONN_HEALTH_CHECKS"],
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0 if DEBUG else DATABASES["default"]["CONN_MAX_AGE"]
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": _env["SQLITE_BUSY_TIMEOUT"],
            "init_command": (
                "PRAGMA journal_mode=WAL;"
                "PRAGMA synchronous=NORMAL;"
                "PRAGMA foreign_keys=ON;"
                "PRAGMA temp_store=MEMORY;"
                "PRAGMA mmap_size=268435456;"
            ),
        }
    )
    if _env["SQLITE_TEST_NAME"]:
        DATABASES["default"]["TEST"] = {"NAME": _env["SQLITE_TEST_NAME"]}
    if Path(DATABASES["default"]["NAME"]) == _default_sqlite:
        # var/ holds the database, its -wal and -shm files and bin/serve's secret key: private to the
        # service's account (0700), tightened if an older release created it 0755 (security.md F6).
        # The files themselves are made 0600 on connection (sessions_app/db/connections.py).
        _var = _default_sqlite.parent
        _var.mkdir(mode=0o700, exist_ok=True)
        if _var.stat().st_mode & 0o077:
            try:
                _var.chmod(0o700)
            except OSError as exc:
                raise ImproperlyConfigured(
                    f"cannot make {_var} private (mode 0700): {exc.strerror}"
                ) from None
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A ceiling for any statement; query endpoints lower it (SESSIONS_QUERY_TIMEOUT).
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "options", f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MS}"
    )
    # A connection pool per process (psycopg_pool). Under ASGI every request runs its ORM code in a
    # thread of its own, so persistent per-thread connections would be opened per request and left
    # behind; the pool hands each request or WebSocket call a connection and takes it back at the end
    # (CONN_MAX_AGE must then be 0). Connections are checked when taken from the pool, so one the
    # server dropped (restart, pg_terminate_backend) is replaced instead of failing a request (D7).
    _pool_size = _env["DJANGO_DB_POOL_SIZE"]
    if _pool_size > 0:
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": 1,
            "max_size": _pool_size,
            "timeout": _env["DJANGO_DB_POOL_TIMEOUT"],
            "max_idle": 300,
            "max_lifetime": 3600,
        }
        DATABASES["default"]["CONN_MAX_AGE"] = 0
    # Prepared statements: Django's own cursors bind client-side and never prepare; the per-request
    # authentication lookup (sessions_app/auth/prepared.py) asks for one, which psycopg honours only with a
    # threshold set. Off (DJANGO_DB_PREPARED=false) behind a pooler that cannot keep them, such as
    # PgBouncer in transaction mode before 1.21: the lookup is then parsed and planned every time.
    if _env["DJANGO_DB_PREPARED"]:
        DATABASES["default"]["OPTIONS"].setdefault("prepare_threshold", 5)
    # Django's backend with a checkout check that asks the server only when an idle connection's
    # socket has something to say (project/postgresql/base.py), not a round trip per request.
    DATABASES["default"]["ENGINE"] = "project.postgresql"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Authentication ------------------------------------------------------------------------------

# Argon2id first; PBKDF2 hashes are still accepted and re-hashed with Argon2id at the next login.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Internationalisation / static -----------------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
# WhiteNoise would send "Access-Control-Allow-Origin: *" with every static file; same origin only.
WHITENOISE_ALLOW_ALL_ORIGINS = False

# --- Django REST framework -----------------------------------------------------------------------

# The REST API (/api/v2.0/, sessions_app/api/rest): authentication is the registry middleware's,
# adopted by RegistryAuthentication (CSRF enforced for cookie sessions); strict JSON in, JSON with
# {"$date": ms} datetimes out; one error body for every error status. No ?format= override: unknown
# query parameters are errors.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["sessions_app.api.rest.authentication.RegistryAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["sessions_app.api.rest.permissions.IsRegistryUser"],
    "DEFAULT_RENDERER_CLASSES": ["sessions_app.api.rest.renderers.EJSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["sessions_app.api.rest.parsers.StrictJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "sessions_app.api.rest.exceptions.api_exception_handler",
    "URL_FORMAT_OVERRIDE": None,
}

# OpenAPI 3 at /api/v2.0/schema/, Swagger UI at /api/v2.0/docs/ from drf-spectacular-sidecar's static
# files (served like any static file: no CDN).
SPECTACULAR_SETTINGS = {
    "TITLE": "Session registry API",
    "DESCRIPTION": (
        "Authentication sessions, API keys and audit records (TrueNAS auth.sessions compatible). "
        'Datetimes are {"$date": milliseconds}. Errors: {"errors": [{"attribute", "message", '
        '"errno"}]}.'
    ),
    "VERSION": "2.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v2\.0",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "sessions_app.api.rest.schema.add_components_and_errors",
    ],
}

# --- Logging ---------------------------------------------------------------------------------------

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": _env["DJANGO_LOG_LEVEL"]},
}

# --- The session registry (sessions_app/conf.py holds the app's defaults, equal to env's) ----------
# Every knob of sessions_app/conf.py, from the variable of the same name (project/env.py says each
# one's type, bounds and meaning).

SESSIONS_ASSURANCE_LEVEL: str = _env["SESSIONS_ASSURANCE_LEVEL"]
SESSIONS_MAX_AGE: float | None = _env["SESSIONS_MAX_AGE"]
SESSIONS_IDLE_TIMEOUT: float | None = _env["SESSIONS_IDLE_TIMEOUT"]
SESSIONS_MAX_PER_USER: int = _env["SESSIONS_MAX_PER_USER"]
SESSIONS_LAST_SEEN_INTERVAL: float = _env["SESSIONS_LAST_SEEN_INTERVAL"]
SESSIONS_HISTORY_DAYS: int = _env["SESSIONS_HISTORY_DAYS"]
SESSIONS_FAIL_DELAY: float | None = _env["SESSIONS_FAIL_DELAY"]
SESSIONS_LOGIN_RATE: int = _env["SESSIONS_LOGIN_RATE"]
SESSIONS_LOGIN_RATE_WINDOW: float = _env["SESSIONS_LOGIN_RATE_WINDOW"]
SESSIONS_LOCKOUT_THRESHOLD: int = _env["SESSIONS_LOCKOUT_THRESHOLD"]
SESSIONS_LOCKOUT_SECONDS: float = _env["SESSIONS_LOCKOUT_SECONDS"]
SESSIONS_LOCKOUT_MAX_SECONDS: float = _env["SESSIONS_LOCKOUT_MAX_SECONDS"]
SESSIONS_LOCKOUT_WINDOW: float = _env["SESSIONS_LOCKOUT_WINDOW"]
SESSIONS_MAX_PASSWORD_LENGTH: int = _env["SESSIONS_MAX_PASSWORD_LENGTH"]
SESSIONS_OTP_MAX_FAILURES: int = _env["SESSIONS_OTP_MAX_FAILURES"]
SESSIONS_STEPUP_WINDOW: float = _env["SESSIONS_STEPUP_WINDOW"]
SESSIONS_ROOT_USERNAME: str = _env["SESSIONS_ROOT_USERNAME"]
SESSIONS_QUERY_TIMEOUT: float = _env["SESSIONS_QUERY_TIMEOUT"]
SESSIONS_TRUSTED_PROXIES: list[str] = _env["SESSIONS_TRUSTED_PROXIES"]

# API keys, SCRAM-SHA-512 logins (sessions_app/auth/scram.py) and secrets at rest
# (sessions_app/auth/fieldcrypt.py). Empty pepper and field key are derived from SECRET_KEY.
SESSIONS_MAX_KEYS_PER_USER: int = _env["SESSIONS_MAX_KEYS_PER_USER"]
SESSIONS_API_KEY_PEPPER: str = _env["SESSIONS_API_KEY_PEPPER"]
SESSIONS_FIELD_KEY: str = _env["SESSIONS_FIELD_KEY"]
# Old field keys: accepted for opening only, until `manage.py rotate_field_key` ran.
SESSIONS_FIELD_KEY_PREVIOUS: list[str] = _env["SESSIONS_FIELD_KEY_PREVIOUS"]
SESSIONS_SCRAM_ITERATIONS: int = _env["SESSIONS_SCRAM_ITERATIONS"]
SESSIONS_SCRAM_EXCHANGE_SECONDS: float = _env["SESSIONS_SCRAM_EXCHANGE_SECONDS"]
# The certificate clients see (PEM or DER), for SCRAM's tls-server-end-point channel binding:
# bin/serve's TLS_CERT when it serves TLS itself, else the TLS proxy's certificate; empty: no binding.
SESSIONS_TLS_BINDING_CERT: str = _env["SESSIONS_TLS_BINDING_CERT"]

# TRUENAS_NODE peers (sessions_app/services/node.py).
SESSIONS_NODE_SECRET: str = _env["SESSIONS_NODE_SECRET"]
SESSIONS_NODE_MAX_SKEW: float = _env["SESSIONS_NODE_MAX_SKEW"]

# Live events (sessions_app/server/live.py, events.py).
SESSIONS_EVENT_POLL_INTERVAL: float = _env["SESSIONS_EVENT_POLL_INTERVAL"]
SESSIONS_SOCKET_CHECK_INTERVAL: float = _env["SESSIONS_SOCKET_CHECK_INTERVAL"]
SESSIONS_EVENT_RETENTION: float = _env["SESSIONS_EVENT_RETENTION"]

# Devices, places and new-sign-in notices (sessions_app/devices, services/notices.py).
SESSIONS_GEOIP_PATH: str = _env["SESSIONS_GEOIP_PATH"]
SESSIONS_NOTICE_DAYS: int = _env["SESSIONS_NOTICE_DAYS"]
SESSIONS_NOTICE_API_KEYS: bool = _env["SESSIONS_NOTICE_API_KEYS"]
# The service's address as users reach it, for links in emails ("This wasn't me"); empty: taken from
# the login's own request when there is one.
SESSIONS_BASE_URL: str = _env["SESSIONS_BASE_URL"].rstrip("/")

# Email (new-sign-in notices): printed to the console unless an SMTP host is configured.
EMAIL_HOST: str = _env["EMAIL_HOST"]
EMAIL_BACKEND: str = _env["EMAIL_BACKEND"] or (
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend"
)
EMAIL_PORT: int = _env["EMAIL_PORT"]
EMAIL_HOST_USER: str = _env["EMAIL_HOST_USER"]
EMAIL_HOST_PASSWORD: str = _env["EMAIL_HOST_PASSWORD"]
EMAIL_USE_TLS: bool = _env["EMAIL_USE_TLS"]
EMAIL_TIMEOUT: float = _env["EMAIL_TIMEOUT"]
DEFAULT_FROM_EMAIL: str = _env["DEFAULT_FROM_EMAIL"]
