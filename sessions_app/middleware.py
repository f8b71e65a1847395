"""Authentication of every request from the database: session cookie, unix socket, or a
per-request ``Authorization`` header (``Bearer <api key>`` / ``Basic``).

``request.user`` is the authenticated user (or ``AnonymousUser``), ``request.auth_session`` the
`UserSession` (None for per-request credentials and anonymous requests) and ``request.api_key`` the
key of a Bearer request. An ``Authorization`` header is used alone: a request carrying one never
falls back to the cookie (B17). Tokens in query strings are ignored (B5). If the session store
cannot be read, or the lookup fails in any other way, the request is answered 503 -- never served as
anonymous or authenticated (D8).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import errno
import logging
import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

from sessions_app import conf
from sessions_app.audit import audit_record
from sessions_app.auth import keys, policy, throttle
from sessions_app.auth.clients import Client, client_from_request
from sessions_app.auth.prepared import RowLoader
from sessions_app.auth.request import RegistryRequest
from sessions_app.exceptions import Busy
from sessions_app.models import ApiKey, AuditEvent, Credentials, EndReason, UserSession
from sessions_app.selectors import user_get_by_username
from sessions_app.services.api_keys import (
    api_key_pepper,
    api_key_revoke,
    api_key_touch,
    api_key_touch_due,
    verifier_backfill,
)
from sessions_app.services.login_results import has_totp
from sessions_app.services.notices import api_key_use_noticed
from sessions_app.services.password_login import check_password
from sessions_app.services.session_ending import session_end
from sessions_app.services.sessions import session_authenticate, session_check, session_create

logger = logging.getLogger(__name__)


def session_cookie_name() -> str:
    """``__Host-sid`` when cookies are Secure (no Domain, Path=/), else ``sid`` (DEBUG over http)."""
    return "__Host-sid" if settings.SESSION_COOKIE_SECURE else "sid"


def pending_cookie_name() -> str:
    """The pending second factor's cookie: ``__Host-otp_pending`` when cookies are Secure."""
    return "__Host-otp_pending" if settings.SESSION_COOKIE_SECURE else "otp_pending"


def _set_login_cookie(response: HttpResponse, name: str, secret: str, max_age: int | None = None) -> None:
    """Every cookie that carries login state has the same flags (security.md F12): Secure (when
    cookies are), HttpOnly, SameSite=Lax, Path=/, no Domain -- so the ``__Host-`` prefix holds."""
    response.set_cookie(
        name,
        secret,
        max_age=max_age,
        secure=settings.SESSION_COOKIE_SECURE,
        httponly=True,
        samesite="Lax",
        path="/",
    )


def set_session_cookie(response: HttpResponse, secret: str) -> None:
    _set_login_cookie(response, session_cookie_name(), secret)


def clear_session_cookie(response: HttpResponse) -> None:
    response.delete_cookie(session_cookie_name(), path="/", samesite="Lax")


def set_pending_cookie(response: HttpResponse, secret: str, max_age: int) -> None:
    _set_login_cookie(response, pending_cookie_name(), secret, max_age=max_age)


def clear_pending_cookie(response: HttpResponse) -> None:
    response.delete_cookie(pending_cookie_name(), path="/", samesite="Lax")


def pending_cookie(request: HttpRequest) -> str | None:
    """The pending second factor's secret the browser sent, if any."""
    return request.COOKIES.get(pending_cookie_name())


@dataclass(frozen=True, slots=True)
class EndedSession:
    """What the holder of a session cookie may be told about its session, which has ended: why, and
    whether the user ended it (from another of their sessions) or someone else did -- never who."""

    reason: str | None
    by_owner: bool
    by_other: bool


def ended_session(request: HttpRequest) -> EndedSession | None:
    """The ended session the request's session cookie names; None without a cookie, for an active
    session, and for a value that names no session (forged, or its row purged).

    Read only on the way to the sign-in page (`sessions_app.views`), never on the per-request path:
    `session_authenticate` has already refused the cookie (and ended the session if it had just run
    out), so this is one indexed lookup by the hash of a secret only the holder has.
    """
    secret = request.COOKIES.get(session_cookie_name(), "")
    if not secret or len(secret) > 256:
        return None
    found = (
        UserSession.objects.filter(secret_hash=keys.hash_secret(secret), ended_at__isnull=False)
        .values_list("end_reason", "ended_by", "username")
        .first()
    )
    if found is None:
        return None
    reason, ended_by, username = found
    return EndedSession(
        reason=reason,
        by_owner=ended_by is not None and ended_by == username,
        by_other=ended_by is not None and ended_by != username,
    )


def error_response(status: int, errno: int, attribute: str, message: str, retry_after: int) -> JsonResponse:
    """An answer given before any view runs, in the API's error shape (``{"errors": [...]}``)."""
    response = JsonResponse(
        {"errors": [{"attribute": attribute, "message": message, "errno": errno}]}, status=status
    )
    response["Retry-After"] = str(retry_after)
    response["Cache-Control"] = "no-store"
    return response


def service_unavailable() -> JsonResponse:
    return error_response(
        503, errno.EAGAIN, "database", "the session store cannot be reached; retry shortly", 5
    )


#: `GET /healthz` (project/urls.py): answered without authentication of any kind.
HEALTH_PATH = "/healthz"


class SessionAuthenticationMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # Django's plain request becomes the `RegistryRequest` the views expect: set here, first.
        request = cast(RegistryRequest, request)
        request.auth_session = None
        request.api_key = None
        request.user = AnonymousUser()
        #: Why a per-request credential was refused, when the caller may be told (F8); else None.
        request.auth_refusal = None
        if request.path_info == HEALTH_PATH:
            # The load balancer's probe carries no credential that matters: none is checked (a probe
            # over the unix socket would otherwise open a session, a stale cookie be audited).
            return self.get_response(request)
        try:
            self.authenticate(request)
        except Busy as exc:
            response = error_response(
                429, errno.EBUSY, "authorization", "too many failed attempts; retry later", exc.retry_after
            )
            if request.COOKIES.get(session_cookie_name()) and not request.META.get("HTTP_AUTHORIZATION"):
                # Refused for a rejected cookie (F9): drop it, so that a browser holding a stale
                # cookie is served (as anonymous, and can sign in) from its next request on.
                clear_session_cookie(response)
            return response
        except Exception:
            # Fail closed (D8): a credential that cannot be checked -- the database is busy or down, the
            # connection is gone (Django's InterfaceError is no DatabaseError), or the lookup itself
            # failed -- gets 503, never an answer as anonymous or as authenticated, nor a 500 page.
            logger.exception("session store unavailable")
            return service_unavailable()
        return self.get_response(request)

    def authenticate(self, request: RegistryRequest) -> None:
        client = client_from_request(request)
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if client.peer is not None and not header:
            session = unix_socket_session(client)
        elif header:
            self.per_request(request, client, header)
            return
        else:
            secret = request.COOKIES.get(session_cookie_name(), "")
            session = session_authenticate(secret=secret, client=client) if secret else None
            if secret and session is None:
                # A cookie that names no active session: never issued, forged or ended (B1). Audited
                # once per address and window, with a count, and throttled per address (F9).
                logger.warning("unknown or ended session cookie from %s", client.origin)
                _audit_failure(client, "SESSION_COOKIE", None, "unknown or ended session")
        if session is not None:
            request.auth_session = session
            request.user = session.user if session.user is not None else AnonymousUser()

    def per_request(self, request: RegistryRequest, client: Client, header: str) -> None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            try:
                key = bearer_api_key(value.strip(), client)
            except CredentialRefused as exc:
                request.auth_refusal = exc.reason
                return
            if key is not None:
                request.api_key = key
                request.user = key.user
        elif scheme.lower() == "basic":
            try:
                user = basic_user(value.strip(), client)
            except CredentialRefused as exc:
                request.auth_refusal = exc.reason
                return
            if user is not None:
                request.user = user


#: Why Basic is refused for a right password of an account that must use a second factor (F8).
SECOND_FACTOR_REQUIRED = "second factor required; Basic cannot carry it"
#: Why a Bearer request is refused for the right secret of a revoked or expired key.
API_KEY_REVOKED = "API key revoked"
API_KEY_EXPIRED = "API key expired"
API_KEY_REVOKED_INSECURE = "API key revoked: it was sent over an insecure transport"


class CredentialRefused(Exception):
    """A per-request credential was right but cannot be used here; ``reason`` may be shown."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _audit_failure(client: Client, mechanism: str, username: str | None, reason: str, **data: Any) -> None:
    """Audit a failed per-request credential (aggregated per address and window) and count it
    toward the address's failure limit; over the limit, raise `Busy` (429) (F9)."""
    retry_after = throttle.record_request_failure(
        address=client.rate_key,
        origin=client.origin,
        mechanism=mechanism,
        username=username,
        reason=reason,
        data=data,
    )
    if retry_after is not None:
        raise Busy(retry_after)


def bearer_api_key(text: str, client: Client) -> ApiKey | None:
    """Per-request API key: same checks as ``API_KEY_PLAIN``, no session. Use is audited and
    ``last_used_at`` written at most once a minute per key (no write per request).

    None (the generic 401) for a malformed, unknown or wrong key, a disabled owner, or any key at
    LEVEL_2. The right secret of a revoked or expired key raises `CredentialRefused` with
    `API_KEY_REVOKED` / `API_KEY_EXPIRED` (revoked wins when both hold): only after the secret
    verified, so the answer tells nothing to whoever does not already hold the key, and its holder --
    a script -- learns that a new key is needed rather than that it sent no credential. The revoke
    reason is not said (it is the owner's note, shown on their API keys page). A key just revoked
    for crossing plain HTTP says so (`API_KEY_REVOKED_INSECURE`).
    """
    parsed = keys.split_api_key(text)
    key: ApiKey | None = _KEY_BY_ID.load(parsed[0]) if parsed else None
    digest = keys.api_key_hash(parsed[1] if parsed else text[:200], pepper=api_key_pepper())
    now = timezone.now()
    label = f"{key.pk}:{key.name}" if key is not None else "<INVALID>"
    if key is None or not keys.same_hash(key.key_hash, digest):
        if parsed:  # a guess against key N counts toward key N, never its owner (F7)
            throttle.record_failure(
                username=throttle.api_key_lockout_name(parsed[0]),
                address=client.origin,
                mechanism="API_KEY_BEARER",
            )
        _audit_failure(client, "API_KEY_BEARER", None, "invalid key", api_key_ref=label)
        return None
    if policy.assurance_level() != "LEVEL_1":
        _audit_failure(
            client, "API_KEY_BEARER", key.user.get_username(), "refused at this level", api_key_ref=label
        )
        return None
    expired = key.expires_at is not None and key.expires_at <= now
    if key.revoked or not key.user.is_active or expired:
        _audit_failure(
            client,
            "API_KEY_BEARER",
            key.user.get_username(),
            "revoked, expired or inactive",
            api_key_ref=label,
        )
        if not key.user.is_active:  # as a disabled account's password: nothing said (A1)
            return None
        raise CredentialRefused(API_KEY_REVOKED if key.revoked else API_KEY_EXPIRED)
    if not client.secure_transport:
        api_key_revoke(key=key, reason="Attempt to use over an insecure transport", actor=None)
        _audit_failure(
            client,
            "API_KEY_BEARER",
            key.user.get_username(),
            "insecure transport: key revoked",
            api_key_ref=label,
        )
        raise CredentialRefused(API_KEY_REVOKED_INSECURE)
    if key.scram_verifier is None and parsed:
        verifier_backfill(key=key, secret=parsed[1])  # a key older than SCRAM: once, at its first use
    if not api_key_touch_due(key=key, now=now):
        return key  # used within the minute: nothing to record, no transaction
    with transaction.atomic():  # the use and its audit record commit together (D10)
        if api_key_touch(key=key, now=now):
            audit_record(
                event=AuditEvent.AUTHENTICATION,
                success=True,
                username=key.user.get_username(),
                address=client.origin,
                event_data={"mechanism": "API_KEY_BEARER", "per_request": True, "api_key_ref": label},
            )
            # A recorded use only (once a minute per key): from a new network, a notice to the owner.
            api_key_use_noticed(key=key, client=client, now=now)
    return key


def basic_user(text: str, client: Client) -> Any:
    """Per-request ``Basic`` credentials (password users without a second factor only), under the
    same policy as a password login: the login rate limit of the address (every Basic request is a
    login attempt, F4), the account lockout, the failure delay, and an audit record either way
    (failures aggregated per address, F9). A right password of an account that must use a second
    factor raises `CredentialRefused` with the reason and is not counted as a failure (F8)."""
    retry_after = throttle.hit_login_limit(address=client.rate_key)
    if retry_after is not None:
        with contextlib.suppress(Busy):  # the login limit's Retry-After is the one to give
            _audit_failure(client, "PASSWORD_BASIC", None, "rate limited")
        raise Busy(retry_after)
    try:
        decoded = base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        throttle.sleep_after_failure()
        _audit_failure(client, "PASSWORD_BASIC", None, "malformed header")
        return None
    username, sep, password = decoded.partition(":")
    user = user_get_by_username(username=username) if sep else None
    locked = throttle.locked_until(username=username) if username else None
    ok = check_password(user, password)
    if locked is not None or not ok or user is None or not user.is_active:
        if username and locked is None:
            throttle.record_failure(username=username, address=client.origin, mechanism="PASSWORD_BASIC")
        throttle.sleep_after_failure()
        _audit_failure(
            client, "PASSWORD_BASIC", username[:150] or None, "locked" if locked else "invalid credentials"
        )
        return None
    if has_totp(user) or policy.assurance_level() != "LEVEL_1":
        # The right password: not a failure of the account (F8), but no login without the factor.
        throttle.sleep_after_failure()
        _audit_failure(client, "PASSWORD_BASIC", user.get_username(), "second factor required")
        raise CredentialRefused(SECOND_FACTOR_REQUIRED)
    throttle.record_success(username=username)
    with transaction.atomic():
        audit_record(
            event=AuditEvent.AUTHENTICATION,
            success=True,
            username=user.get_username(),
            address=client.origin,
            event_data={"mechanism": "PASSWORD_BASIC", "per_request": True},
        )
    return user


def unix_socket_session(client: Client) -> UserSession | None:
    """The ``UNIX_SOCKET`` session of the peer process (pid, uid, gid), created on first use.

    uid -> local account name -> user of that name; uid 0 is the configured root account and the
    session is ``internal``. A uid without a matching user gets no session.
    """
    assert client.peer is not None
    pid, uid, gid = client.peer
    _end_sessions_of_gone_peers(uid=uid, gid=gid)
    existing = (
        UserSession.objects.active()
        .select_related("user")  # UNIX_SOCKET sessions have no API key and no parent
        .filter(credentials=Credentials.UNIX_SOCKET, peer_pid=pid, peer_uid=uid, peer_gid=gid)
        .order_by("-created_at")
        .first()
    )
    if existing is not None and _process_started_after(pid, existing.created_at):
        # The pid was reused by a new process: the old process's session ends.
        session_end(session=existing, reason=EndReason.LOGOUT, note="peer process exited")
        existing = None
    if existing is not None:
        checked = session_check(row=existing, client=client)
        if checked is not None:
            return checked
    user = unix_socket_user(uid)
    if user is None:
        return None
    return session_create(
        credentials=Credentials.UNIX_SOCKET, client=client, user=user, internal=uid == 0
    ).session


def unix_socket_user(uid: int) -> Any:
    """The active user a unix-socket peer's uid maps to (uid -> account name -> user), or None.

    uid 0 is the configured root account (``SESSIONS_ROOT_USERNAME``).
    """
    if uid == 0:
        name = conf.get("SESSIONS_ROOT_USERNAME")
    else:
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            return None
    user = user_get_by_username(username=name)
    return user if user is not None and user.is_active else None


_KEY_BY_ID = RowLoader(ApiKey, "id", related="user")


def _process_started_after(pid: int, moment: dt.datetime) -> bool:
    """Whether process ``pid`` started after ``moment`` (Linux ``/proc``; False when unknown)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        start_ticks = int(fields[19])
        with open("/proc/stat", "rb") as system:
            boot = next(int(line.split()[1]) for line in system if line.startswith(b"btime"))
    except (OSError, ValueError, IndexError, StopIteration):
        return False
    started = boot + start_ticks / os.sysconf("SC_CLK_TCK")
    return bool(started > moment.timestamp() + 1)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _end_sessions_of_gone_peers(*, uid: int, gid: int) -> None:
    """A peer's session ends when its process is gone (checked when the same account connects)."""
    for session in (
        UserSession.objects.active()
        .filter(credentials=Credentials.UNIX_SOCKET, peer_uid=uid, peer_gid=gid)
        .only("pk", "peer_pid", "public_id", "username", "credentials", "token_id")
    ):
        if session.peer_pid is not None and not _pid_alive(session.peer_pid):
            session_end(session=session, reason=EndReason.LOGOUT, note="peer process exited")


class SyncBoundary:
    """The innermost middleware, synchronous only: under ASGI it makes Django run the whole
    (synchronous) middleware chain and view in one worker thread, instead of hopping between the
    event loop and a thread for every ``process_request``/``process_response`` of each middleware
    that can run both ways (~14 hops, 2.3 ms of a 2.5 ms ``core.ping`` here). No effect under WSGI.
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)
