"""Database model of the registry: sessions, API keys, tokens and audit records.

`UserSession` keeps every field of an ``auth.sessions`` row as a real column. ``credentials_data`` is
not stored as JSON: its members are denormalised into indexed columns (``username``, ``login_at``,
``api_key_id`` / ``api_key_name`` and the ``root_*`` columns of a token's root credential) and the
JSON object is rebuilt from them by `sessions_app.rows`. A JSON path such as
``credentials_data.username`` therefore compiles to an indexed column instead of a JSON extraction
that no index serves (250 ms on PostgreSQL and 3.4 s on SQLite at 1M rows; ~1 ms on the column).
Which members are *present* depends only on ``credentials``, so the query compiler can express
"missing key never matches" as a condition on that column.

Ended sessions are never deleted by the lifecycle; they keep ``ended_at`` / ``end_reason`` /
``ended_by`` as history until `sessions purge` removes them after the retention period.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from sessions_app.fields import BinaryCharField

if TYPE_CHECKING:
    from django.contrib.auth.models import User


class Credentials(models.TextChoices):
    UNIX_SOCKET = "UNIX_SOCKET"
    LOGIN_PASSWORD = "LOGIN_PASSWORD"
    LOGIN_TWOFACTOR = "LOGIN_TWOFACTOR"
    LOGIN_ONETIME_PASSWORD = "LOGIN_ONETIME_PASSWORD"
    API_KEY = "API_KEY"
    TOKEN = "TOKEN"
    TRUENAS_NODE = "TRUENAS_NODE"


class EndReason(models.TextChoices):
    LOGOUT = "LOGOUT"
    TERMINATED = "TERMINATED"
    EXPIRED = "EXPIRED"
    IDLE = "IDLE"
    CREDENTIAL_REVOKED = "CREDENTIAL_REVOKED"
    USER_DISABLED = "USER_DISABLED"
    PASSWORD_CHANGED = "PASSWORD_CHANGED"
    PARENT_ENDED = "PARENT_ENDED"
    EVICTED = "EVICTED"


ACTIVE = Q(ended_at__isnull=True)
ENDED = Q(ended_at__isnull=False)


class UserSessionQuerySet(models.QuerySet["UserSession"]):
    def active(self, now: object = None) -> UserSessionQuerySet:
        """Sessions not ended and within their absolute lifetime (idle limits are checked per request).

        Without ``now`` the database clock decides (``CURRENT_TIMESTAMP``), so the SQL carries no
        time parameter and compiled statements can be reused.
        """
        return self.filter(ended_at__isnull=True, expires_at__gt=now or Now())

    def ended(self) -> UserSessionQuerySet:
        return self.filter(ended_at__isnull=False)

    def for_user(self, user: User | int) -> UserSessionQuerySet:
        return self.filter(user=user)


class ApiKey(models.Model):
    """An API key. Only a keyed hash of its secret is stored (`sessions_app.auth.keys`)."""

    # Unique per owner, not across users: a name taken by someone else must not be an oracle (F14).
    name = models.CharField(max_length=200)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    key_hash = models.CharField(max_length=128)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)
    revoked_reason = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    last_used_at = models.DateTimeField(null=True, blank=True)
    # SCRAM-SHA-512 verifier (salt, iterations, stored key, server key), sealed at rest with the
    # field key (auth/fieldcrypt.py, associated data: this key's id). Null for a key made before
    # SCRAM existed, until its next successful plain-text use (services/scram_login.py).
    scram_verifier = models.CharField(max_length=400, null=True, blank=True)  # noqa: DJ001

    class Meta:
        verbose_name = "API key"
        indexes = [models.Index(fields=["user", "created_at"], name="apikey_user_created")]
        constraints = [models.UniqueConstraint(fields=["user", "name"], name="apikey_user_name_unique")]

    def __str__(self) -> str:
        return f"{self.name} (#{self.pk})"


class UserSession(models.Model):
    """One authentication session: a row of ``auth.sessions`` plus what its lifecycle needs."""

    # Public identity: names the session in lists and in terminate calls; never a credential.
    public_id = BinaryCharField(max_length=64, unique=True)
    # SHA-256 of the session secret carried by the cookie; null for sessions without a bearer secret
    # (unix-socket peers, node peers, WebSocket connections).
    secret_hash = models.CharField(max_length=64, unique=True, null=True, blank=True)  # noqa: DJ001

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="auth_sessions",
    )
    credentials = BinaryCharField(max_length=32, choices=Credentials.choices)
    # credentials_data, denormalised (see the module docstring).
    username = BinaryCharField(max_length=150, null=True, blank=True)  # noqa: DJ001
    # str.casefold() of username: lets the C operators (C=, Cin, C^ ...) run as indexed SQL.
    username_folded = BinaryCharField(max_length=150, null=True, blank=True)  # noqa: DJ001
    login_at = models.DateTimeField(null=True, blank=True)
    api_key = models.ForeignKey(
        ApiKey,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="sessions",
    )
    api_key_name = BinaryCharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    # TOKEN sessions: the session whose token was used, and the token chain's root credential.
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="children",
    )
    token = models.ForeignKey(
        "Token",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="sessions",
    )
    root_credentials = BinaryCharField(max_length=32, null=True, blank=True)  # noqa: DJ001
    root_username = BinaryCharField(max_length=150, null=True, blank=True)  # noqa: DJ001
    root_login_at = models.DateTimeField(null=True, blank=True)
    root_api_key_id = models.BigIntegerField(null=True, blank=True)
    root_api_key_name = BinaryCharField(max_length=200, null=True, blank=True)  # noqa: DJ001

    origin = BinaryCharField(max_length=255)
    internal = models.BooleanField(default=False)
    secure_transport = models.BooleanField(default=False)
    # Unix-socket peers: one session per peer process.
    peer_pid = models.IntegerField(null=True, blank=True)
    peer_uid = models.IntegerField(null=True, blank=True)
    peer_gid = models.IntegerField(null=True, blank=True)

    created_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    idle_timeout = models.PositiveIntegerField(null=True, blank=True)  # seconds; null = no idle limit
    # Fingerprint of the user's password hash at login: a password change ends the session.
    user_auth_hash = models.CharField(max_length=64, blank=True, default="")
    # One-time-password sessions must set a password before anything else.
    password_change_required = models.BooleanField(default=False)
    # The login mechanism that opened the session (PASSWORD_PLAIN, API_KEY_PLAIN, SCRAM, ...); null
    # for sessions opened without one (unix socket, REST Bearer, rows from before it was kept).
    login_mechanism = BinaryCharField(max_length=32, null=True, blank=True)  # noqa: DJ001
    # Device and place, from the login's User-Agent and address (sessions_app/devices); null for
    # sessions opened without HTTP headers (unix socket, node peers) and rows from before they were kept.
    user_agent = BinaryCharField(max_length=512, null=True, blank=True)  # noqa: DJ001
    client_address = BinaryCharField(max_length=45, null=True, blank=True)  # noqa: DJ001  (no port)
    device_label = BinaryCharField(max_length=160, null=True, blank=True)  # noqa: DJ001  "Safari on iOS"
    device_browser = BinaryCharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    device_os = BinaryCharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    device_family = BinaryCharField(max_length=64, null=True, blank=True)  # noqa: DJ001  "iPhone"
    location_country = BinaryCharField(max_length=80, null=True, blank=True)  # noqa: DJ001
    location_city = BinaryCharField(max_length=120, null=True, blank=True)  # noqa: DJ001
    # When the password (and second factor) was last proven again in this session (step-up, F2).
    reauthenticated_at = models.DateTimeField(null=True, blank=True)

    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = BinaryCharField(max_length=32, null=True, blank=True, choices=EndReason.choices)  # noqa: DJ001
    ended_by = BinaryCharField(max_length=150, null=True, blank=True)  # noqa: DJ001

    objects = UserSessionQuerySet.as_manager()

    class Meta:
        verbose_name = "session"
        # The roles of spec §6 are these permissions, granted through groups (see sessions_app.auth.roles).
        permissions = [
            ("auth_sessions_read", "AUTH_SESSIONS_READ: list every user's sessions"),
            ("auth_sessions_write", "AUTH_SESSIONS_WRITE: end any session"),
            ("api_key_read", "API_KEY_READ: list every user's API keys"),
            ("api_key_write", "API_KEY_WRITE: manage every user's API keys"),
            ("audit_read", "AUDIT_READ: read the audit trail"),
            ("readonly_admin", "READONLY_ADMIN: every *_READ role"),
        ]
        # Partial indexes over active rows only: what operators query (see README "Indexes"), and
        # over ended rows for the history tab. Every sortable column of the dashboard's two tables
        # (tables.SESSION_SORTS, ordered by (column, id)) has its index, so that a page reads 50
        # index entries instead of sorting every row. ``expires_at`` at the end of an index on active
        # rows decides "active" (``expires_at > now``) from the index: deep offsets (the query
        # compiler's deferred join) and counts by type read no table row, and PostgreSQL without
        # statistics still walks these indexes for a page rather than sorting every active row.
        # ``ended_at`` too where SQLite must find the index covering: it is null in every entry,
        # but SQLite counts an index as covering only when it holds every column the statement
        # names, the partial index's own condition included (PostgreSQL does not need it).
        indexes = [
            models.Index(
                fields=["created_at", "id", "expires_at", "ended_at"],
                condition=ACTIVE,
                name="sess_active_created",
            ),
            models.Index(
                fields=["last_seen_at", "id", "expires_at"], condition=ACTIVE, name="sess_active_seen"
            ),
            models.Index(fields=["username", "created_at"], condition=ACTIVE, name="sess_active_username"),
            models.Index(
                fields=["username", "id", "expires_at"], condition=ACTIVE, name="sess_active_uname_id"
            ),
            models.Index(fields=["username_folded"], condition=ACTIVE, name="sess_active_ufold"),
            models.Index(fields=["credentials", "created_at"], condition=ACTIVE, name="sess_active_cred"),
            models.Index(
                fields=["credentials", "id", "expires_at", "ended_at"],
                condition=ACTIVE,
                name="sess_active_cred_id",
            ),
            # PostgreSQL also has (credentials, expires_at) WHERE active: see migration 0006.
            models.Index(fields=["origin", "id", "expires_at"], condition=ACTIVE, name="sess_active_origin"),
            models.Index(fields=["user"], condition=ACTIVE, name="sess_active_user"),
            models.Index(fields=["api_key"], condition=ACTIVE, name="sess_active_apikey"),
            models.Index(fields=["parent"], condition=ACTIVE, name="sess_active_parent"),
            # ``ended_at IS NOT NULL``, the history tab's own condition: SQLite uses a partial index
            # only when the query's WHERE contains its condition (or a comparison implying it).
            models.Index(fields=["ended_at", "id"], condition=ENDED, name="sess_ended"),
            models.Index(fields=["created_at", "id"], condition=ENDED, name="sess_ended_created"),
            models.Index(fields=["username", "id"], condition=ENDED, name="sess_ended_username"),
            models.Index(fields=["credentials", "id"], condition=ENDED, name="sess_ended_cred"),
            models.Index(fields=["origin", "id"], condition=ENDED, name="sess_ended_origin"),
        ]

    def __str__(self) -> str:
        return f"{self.credentials} {self.username or '-'} {self.public_id[:8]}…"


class Token(models.Model):
    """A short-lived token from ``auth.generate_token``; only its SHA-256 is stored."""

    token_hash = models.CharField(max_length=64, unique=True)
    session = models.ForeignKey(UserSession, on_delete=models.CASCADE, related_name="tokens")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    ttl = models.PositiveIntegerField(default=600)
    match_origin = models.BooleanField(default=True)
    origin_ip = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    origin_uid = models.IntegerField(null=True, blank=True)
    origin_gid = models.IntegerField(null=True, blank=True)
    single_use = models.BooleanField(default=False)
    attrs = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"token #{self.pk} of session {self.session_id}"


def new_audit_id() -> str:
    return str(uuid.uuid4())


class AuditEvent(models.TextChoices):
    AUTHENTICATION = "AUTHENTICATION"
    LOGOUT = "LOGOUT"
    METHOD_CALL = "METHOD_CALL"
    NEW_SIGN_IN = "NEW_SIGN_IN"


class AuditRecord(models.Model):
    """One audit record, written in the same transaction as the change it records."""

    # Text, not a UUID column: it compares as the same string on SQLite and PostgreSQL.
    audit_id = BinaryCharField(max_length=36, unique=True, default=new_audit_id, editable=False)
    timestamp = models.DateTimeField(default=timezone.now)
    event = BinaryCharField(max_length=32, choices=AuditEvent.choices)
    username = BinaryCharField(max_length=150, null=True, blank=True)  # noqa: DJ001
    session = BinaryCharField(max_length=64, null=True, blank=True)  # noqa: DJ001  (public id)
    address = BinaryCharField(max_length=255, blank=True, default="")
    success = models.BooleanField()
    event_data = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["timestamp", "id"], name="audit_ts"),
            models.Index(fields=["username", "timestamp"], name="audit_user_ts"),
            models.Index(fields=["event", "timestamp"], name="audit_event_ts"),
        ]

    def __str__(self) -> str:
        return f"{self.event} {self.username or '-'} {'ok' if self.success else 'failed'}"


class AccountLockout(models.Model):
    """Consecutive failed logins of one account name, across every pathway (`sessions_app.auth.throttle`).

    Keyed by the name as presented, known account or not, so that a lockout answer cannot reveal
    whether an account exists.
    """

    username = BinaryCharField(max_length=150, unique=True)
    failures = models.PositiveIntegerField(default=0)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    locked_until = models.DateTimeField(null=True, blank=True)
    lock_count = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.username}: {self.failures} failures"


class RateCounter(models.Model):
    """Unauthenticated calls of one (method, client address) in the current fixed window."""

    key = BinaryCharField(max_length=255, unique=True)
    window_start = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.key}: {self.count}"


class OneTimePassword(models.Model):
    """An admin-issued one-time password: 24 characters, valid 24 h, single use, stored hashed."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="onetime_passwords"
    )
    password_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    issued_by = models.CharField(max_length=150, blank=True, default="")

    def __str__(self) -> str:
        return f"one-time password #{self.pk} for user {self.user_id}"


class PendingLogin(models.Model):
    """A password login waiting for its second factor (``OTP_REQUIRED``); not a session.

    The OTP step finds it by the hash of a secret held by the client (a cookie over HTTP, the
    connection itself over WebSocket); it never re-asks or accepts a username.
    """

    secret_hash = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    origin = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    failures = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"pending second factor for user {self.user_id}"


class ScramExchange(models.Model):
    """A SCRAM exchange between its client-first and client-final messages; not a session.

    Found, like `PendingLogin`, by the hash of a secret the client holds (a cookie over HTTP, the
    connection over WebSocket); used once by the final message whatever its outcome; expires after
    ``SESSIONS_SCRAM_EXCHANGE_SECONDS``. Nothing here is secret: the messages travel in the clear and
    the proof needs the key's secret. ``key_id`` and ``username`` are as presented (the key may not
    exist or not be theirs: the exchange then runs on a stand-in salt and fails at the end).
    """

    secret_hash = models.CharField(max_length=64, unique=True)
    key_id = models.BigIntegerField()
    username = models.CharField(max_length=1024)
    gs2_header = models.CharField(max_length=32)
    client_first_bare = models.TextField()
    server_first = models.TextField()
    origin = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"SCRAM exchange for API key {self.key_id}"


class KnownDevice(models.Model):
    """A device signature and network a user has signed in from (new-sign-in notices, issue 16).

    ``signature`` is browser family | system family | device family (`devices.agents`); ``network``
    the country (``country:DE``) when GeoIP is on, else the /24 or /48 of the address
    (`devices.places`). ``confirmed``: the user answered "it was me" to a notice about it.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="known_devices")
    signature = models.CharField(max_length=200)
    network = models.CharField(max_length=64)
    label = models.CharField(max_length=160, blank=True, default="")
    place = models.CharField(max_length=200, blank=True, default="")
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    confirmed = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "signature", "network"], name="knowndevice_unique")
        ]
        indexes = [models.Index(fields=["user", "last_seen_at"], name="knowndevice_user_seen")]

    def __str__(self) -> str:
        return f"{self.label or self.signature} ({self.network})"


class SignInNotice(models.Model):
    """A sign-in from a device or network the user had not used lately: shown in their other sessions
    and mailed, with a single-use "This wasn't me" link (services/notices.py)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    session = models.ForeignKey(
        UserSession, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    signature = models.CharField(max_length=200)
    network = models.CharField(max_length=64)
    device_label = models.CharField(max_length=160)
    place = models.CharField(max_length=200, blank=True, default="")
    address = models.CharField(max_length=45, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    emailed_at = models.DateTimeField(null=True, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    answer = models.CharField(max_length=16, blank=True, default="")  # "confirmed" / "denied"
    link_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["user", "answered_at", "created_at"], name="notice_user_open")]

    def __str__(self) -> str:
        return f"new sign-in of user {self.user_id}: {self.device_label}"


class PasswordChangeDemand(models.Model):
    """The user must set a new password at their next interactive login ("This wasn't me")."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    reason = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"password change demanded of user {self.user_id}"


class NodeNonce(models.Model):
    """A ``TRUENAS_NODE`` login nonce already seen inside the replay window (single use)."""

    nonce = models.CharField(max_length=64, unique=True)
    seen_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return self.nonce


class SessionEvent(models.Model):
    """Outbox of ``auth.sessions`` events (ADDED / REMOVED), written in the transaction of the change.

    Every server process polls it (`sessions_app.events`) and pushes new rows to its subscribed
    WebSocket and server-sent-events clients, and closes its sockets whose session was removed: the
    fan-out works across workers and hosts on SQLite and PostgreSQL alike, and an event exists if and
    only if its change committed. Rows older than ``SESSIONS_EVENT_RETENTION`` are purged.

    ``roles`` rows are not sent to anyone: they tell every process that the roles of the users in
    ``fields["users"]`` (``None``: of anyone) may have changed, so that streams the role no longer
    allows end before the next event is delivered (security.md F3).

    ``notice`` rows (``internal``, no session) reach only the notice streams of the user in
    ``fields["user"]`` (`sessions_app.server.streams.notice_events`), never ``auth.sessions`` subscribers.
    """

    class Kind(models.TextChoices):
        ADDED = "added"
        REMOVED = "removed"
        ROLES = "roles"
        #: A new-sign-in notice of ``fields["user"]`` was created or answered: that user's open pages
        #: fetch their banner again (services/notices.py); nothing else is sent, to anyone.
        NOTICE = "notice"

    id = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField(default=timezone.now)
    kind = BinaryCharField(max_length=8, choices=Kind.choices)
    session = models.BigIntegerField()  # UserSession.pk (stays valid when the public id rotates)
    public_id = BinaryCharField(max_length=64)
    internal = models.BooleanField(default=False)
    #: False for the REMOVED of an old id after rotation: the session (and its socket) live on.
    ended = models.BooleanField(default=True)
    #: ADDED: the ``fields`` of the notification (EJSON: dates as ``{"$date": ms}``).
    fields = models.JSONField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["created_at"], name="sessevent_created")]

    def __str__(self) -> str:
        return f"{self.kind} {self.public_id[:8]}…"
