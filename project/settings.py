"""Settings of the session registry: one module, driven by the environment.

Every variable read here is listed in the README. Unsafe combinations fail loudly: with DEBUG off
(the default) a secret key must be given, either in ``DJANGO_SECRET_KEY`` or in the file named by
``DJANGO_SECRET_KEY_FILE``.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {raw!r}")


def _env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None
    if not 0 < value < 86400:
        raise ImproperlyConfigured(f"{name} must be between 0 and 86400 seconds, got {raw!r}")
    return value


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None


# --- Security ------------------------------------------------------------------------------------

DEBUG = _env_bool("DJANGO_DEBUG", False)


def _env_or_file(name: str) -> str:
    """``$NAME``, else the contents of the file ``$NAME_FILE`` names (stripped), else ""."""
    value = os.environ.get(name, "")
    path = os.environ.get(f"{name}_FILE", "")
    if not value and path:
        try:
            value = Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE {path!r}: {exc.strerror}") from None
    return value


def _secret_key() -> str:
    key = _env_or_file("DJANGO_SECRET_KEY")
    if not key:
        if not DEBUG:
            raise ImproperlyConfigured(
                "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) is required when DJANGO_DEBUG is off"
            )
        key = "insecure-development-key-only-used-with-DJANGO_DEBUG-on"
    return key


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = _env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost")

# Cookies are always marked Secure outside DEBUG; browsers treat loopback as a secure context.
SESSION_COOKIE_SECURE = _env_bool("DJANGO_SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = _env_bool("DJANGO_CSRF_COOKIE_SECURE", not DEBUG)
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
SECURE_HSTS_SECONDS = _env_int("DJANGO_SECURE_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = _env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
# TLS is normally terminated by a reverse proxy; the service answers plain HTTP on loopback.
SECURE_SSL_REDIRECT = _env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^api/"]
# TLS normally ends at the reverse proxy, which redirects to HTTPS itself, and the service answers plain
# HTTP on 127.0.0.1 (loopback counts as a secure transport). HSTS preloading is a decision for the
# domain's owner (DJANGO_SECURE_HSTS_PRELOAD), not a default.
_SILENCED_DEPLOY_CHECKS = ["security.W021"] + ([] if SECURE_SSL_REDIRECT else ["security.W008"])
_proxy_header = os.environ.get("DJANGO_SECURE_PROXY_SSL_HEADER", "")
if _proxy_header:
    _name, _sep, _value = _proxy_header.partition("=")
    if not _sep or not _name.strip() or not _value.strip():
        raise ImproperlyConfigured(
            "DJANGO_SECURE_PROXY_SSL_HEADER must look like HTTP_X_FORWARDED_PROTO=https"
        )
    SECURE_PROXY_SSL_HEADER = (_name.strip(), _value.strip())
CSRF_TRUSTED_ORIGINS = _env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

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
#: SESSIONS_QUERY_TIMEOUT, sessions_app/db.py).
PG_STATEMENT_TIMEOUT_MS = _env_int("PG_STATEMENT_TIMEOUT_MS", 30000)
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{_default_sqlite}"),
        conn_max_age=_env_int("DJANGO_CONN_MAX_AGE", 60),
        conn_health_checks=os.environ.get("DJANGO_CONN_HEALTH_CHECKS", "true").lower()
        in ("1", "true", "yes"),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0 if DEBUG else DATABASES["default"]["CONN_MAX_AGE"]
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": _env_int("SQLITE_BUSY_TIMEOUT", 20),
            "init_command": (
                "PRAGMA journal_mode=WAL;"
                "PRAGMA synchronous=NORMAL;"
                "PRAGMA foreign_keys=ON;"
                "PRAGMA temp_store=MEMORY;"
                "PRAGMA mmap_size=268435456;"
            ),
        }
    )
    if os.environ.get("SQLITE_TEST_NAME"):
        DATABASES["default"]["TEST"] = {"NAME": os.environ["SQLITE_TEST_NAME"]}
    if Path(DATABASES["default"]["NAME"]) == _default_sqlite:
        # var/ holds the database, its -wal and -shm files and bin/serve's secret key: private to the
        # service's account (0700), tightened if an older release created it 0755 (security.md F6).
        # The files themselves are made 0600 on connection (sessions_app/db.py).
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
    _pool_size = _env_int("DJANGO_DB_POOL_SIZE", 10)
    if _pool_size > 0:
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": 1,
            "max_size": _pool_size,
            "timeout": _env_int("DJANGO_DB_POOL_TIMEOUT", 10),
            "max_idle": 300,
            "max_lifetime": 3600,
        }
        DATABASES["default"]["CONN_MAX_AGE"] = 0
    # Prepared statements: Django's own cursors bind client-side and never prepare; the per-request
    # authentication lookup (sessions_app/prepared.py) asks for one, which psycopg honours only with a
    # threshold set. Off (DJANGO_DB_PREPARED=false) behind a pooler that cannot keep them, such as
    # PgBouncer in transaction mode before 1.21: the lookup is then parsed and planned every time.
    if os.environ.get("DJANGO_DB_PREPARED", "true").lower() in ("1", "true", "yes"):
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
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
}

# --- The session registry (sessions_app/conf.py lists the defaults) ----------------------------------

SESSIONS_ASSURANCE_LEVEL = os.environ.get("SESSIONS_ASSURANCE_LEVEL", "LEVEL_1")
SESSIONS_MAX_PER_USER = _env_int("SESSIONS_MAX_PER_USER", 100)
SESSIONS_HISTORY_DAYS = _env_int("SESSIONS_HISTORY_DAYS", 90)
SESSIONS_TRUSTED_PROXIES = _env_list("SESSIONS_TRUSTED_PROXIES", "")
SESSIONS_NODE_SECRET = os.environ.get("SESSIONS_NODE_SECRET", "")
SESSIONS_FAIL_DELAY = os.environ.get("SESSIONS_FAIL_DELAY", "")
SESSIONS_LOGIN_RATE = _env_int("SESSIONS_LOGIN_RATE", 20)
SESSIONS_EVENT_POLL_INTERVAL = _env_float("SESSIONS_EVENT_POLL_INTERVAL", 0.25)
SESSIONS_SOCKET_CHECK_INTERVAL = _env_float("SESSIONS_SOCKET_CHECK_INTERVAL", 1.0)
SESSIONS_EVENT_RETENTION = _env_int("SESSIONS_EVENT_RETENTION", 3600)

# SCRAM-SHA-512 API-key logins (sessions_app/auth/scram.py). New verifiers are computed with this many
# PBKDF2 rounds; the official TrueNAS client refuses fewer than 50 000 and more than 5 000 000.
SESSIONS_SCRAM_ITERATIONS = _env_int("SESSIONS_SCRAM_ITERATIONS", 500_000)
if not 1_000 <= SESSIONS_SCRAM_ITERATIONS <= 5_000_000:
    raise ImproperlyConfigured("SESSIONS_SCRAM_ITERATIONS must be between 1000 and 5000000")
# The certificate clients see (PEM or DER), for SCRAM's tls-server-end-point channel binding:
# bin/serve's TLS_CERT when it serves TLS itself, else the TLS proxy's certificate; empty: no binding.
SESSIONS_TLS_BINDING_CERT = os.environ.get("SESSIONS_TLS_BINDING_CERT", "")

# Devices, places and new-sign-in notices (sessions_app/devices, services/notices.py).
# A MaxMind-format database (GeoLite2 City or Country); empty: no place is looked up.
SESSIONS_GEOIP_PATH = os.environ.get("SESSIONS_GEOIP_PATH", "")
SESSIONS_NOTICE_DAYS = _env_int("SESSIONS_NOTICE_DAYS", 90)
SESSIONS_NOTICE_API_KEYS = _env_bool("SESSIONS_NOTICE_API_KEYS", True)
# The service's address as users reach it, for links in emails ("This wasn't me"), e.g.
# https://sessions.example.com; empty: taken from the login's own request when there is one.
SESSIONS_BASE_URL = os.environ.get("SESSIONS_BASE_URL", "").rstrip("/")

# Email (new-sign-in notices): printed to the console unless an SMTP host is configured.
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_PORT = _env_int("EMAIL_PORT", 587)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = _env_or_file("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = _env_bool("EMAIL_USE_TLS", True)
EMAIL_TIMEOUT = _env_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "sessions@localhost")


def _field_key() -> str:
    """The key that seals secrets at rest (sessions_app/auth/fieldcrypt.py); "" derives it from SECRET_KEY."""
    key = _env_or_file("SESSIONS_FIELD_KEY")
    if key and len(key) < 32:
        raise ImproperlyConfigured("SESSIONS_FIELD_KEY must be at least 32 characters")
    return key


SESSIONS_FIELD_KEY = _field_key()
# Old field keys, comma-separated: accepted for opening only, until `manage.py rotate_field_key` ran.
SESSIONS_FIELD_KEY_PREVIOUS = _env_list("SESSIONS_FIELD_KEY_PREVIOUS", "")
