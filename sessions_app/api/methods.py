"""The JSON-RPC methods: positional ``params`` in, one service or selector call, result out.

Shared by ``POST /api/current`` and the WebSocket at ``/api/current`` (`sessions_app.api.websocket`). A method declares whether it
needs an authenticated caller, which role it needs, and whether unauthenticated calls are rate
limited; it validates its positional parameters and raises `InvalidParams` naming the bad one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.contrib.auth.models import AnonymousUser
from django.db import transaction
from django.http import HttpResponse

from sessions_app import selectors
from sessions_app.audit import audit_record
from sessions_app.auth import policy
from sessions_app.auth.clients import Client
from sessions_app.auth.roles import Role, has_role
from sessions_app.exceptions import InvalidParams, NotAuthenticated, NotAuthorized, NotFound
from sessions_app.middleware import (
    clear_pending_cookie,
    clear_session_cookie,
    set_pending_cookie,
    set_session_cookie,
)
from sessions_app.models import ApiKey, AuditEvent, UserSession
from sessions_app.services import api_keys as api_key_services
from sessions_app.services import session_ending as session_services
from sessions_app.services.login import MECHANISMS, login_ex
from sessions_app.services.login_results import LoginResult, user_info
from sessions_app.services.tokens import token_generate
from sessions_app.services.totp_login import login_ex_continue
from sessions_app.services.users import onetime_password_issue

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from sessions_app.api.websocket import Connection
    from sessions_app.auth.request import RegistryRequest

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass
class CallContext:
    """One call: who is calling, from where, and the cookies the transport must set afterwards."""

    request: RegistryRequest | None
    client: Client
    #: None for a session row whose user was deleted.
    user: User | AnonymousUser | None
    session: UserSession | None
    pending_secret: str | None = None
    cookie_actions: list[Callable[[HttpResponse], None]] = field(default_factory=list)
    #: The WebSocket connection the call came on (None over HTTP): ``core.subscribe`` needs it.
    connection: Connection | None = None

    @property
    def username(self) -> str | None:
        return self.user.get_username() if self.user is not None and self.user.is_authenticated else None

    @property
    def caller(self) -> User:
        """The user of a method that needs an authenticated caller (`jsonrpc.execute` let no one else
        call it)."""
        assert self.user is not None
        assert not isinstance(self.user, AnonymousUser)
        return self.user

    def require_role(self, role: Role) -> None:
        if not has_role(self.user, role):
            raise NotAuthorized()


@dataclass(frozen=True)
class Method:
    name: str
    func: Callable[[CallContext, list[Any]], Any]
    auth_required: bool = True
    rate_limited: bool = False
    role: Role | None = None
    max_params: int = 2
    #: Callable by a one-time-password session that has not set its new password yet.
    before_password_change: bool = False
    #: A role-protected call that changes something: its audit record commits with the change (D5).
    writes: bool = False

    def __call__(self, context: CallContext, params: list[Any]) -> Any:
        if len(params) > self.max_params:
            raise InvalidParams.one("params", f"at most {self.max_params} positional parameters")
        if self.role is not None and not has_role(context.user, self.role):
            audit_method_call(context, self.name, False)
            raise NotAuthorized()
        if (
            context.session is not None
            and context.session.password_change_required
            and self.auth_required
            and not self.before_password_change
        ):
            raise NotAuthorized("A new password must be set first")
        if self.role is None:
            return self.func(context, params)
        # Role-protected calls are audited (spec §7), success or failure. The record of a call that
        # changes something is written in the same transaction as the change: if either cannot be
        # written (the database busy past its timeout), neither is, and the call fails (D5, D9).
        try:
            with transaction.atomic() if self.writes else contextlib.nullcontext():
                result = self.func(context, params)
                audit_method_call(context, self.name, True)
        except Exception:
            audit_method_call(context, self.name, False)
            raise
        return result


METHODS: dict[str, Method] = {}


def method(
    name: str,
    *,
    auth: bool = True,
    rate_limited: bool = False,
    role: Role | None = None,
    max_params: int = 2,
    before_password_change: bool = False,
    writes: bool = False,
) -> Callable[[Callable[[CallContext, list[Any]], Any]], Callable[[CallContext, list[Any]], Any]]:
    def register(func: Callable[[CallContext, list[Any]], Any]) -> Callable[[CallContext, list[Any]], Any]:
        METHODS[name] = Method(
            name,
            func,
            auth_required=auth,
            rate_limited=rate_limited,
            role=role,
            max_params=max_params,
            before_password_change=before_password_change,
            writes=writes,
        )
        return func

    return register


def _param(params: list[Any], index: int, default: Any = None) -> Any:
    return params[index] if len(params) > index else default


def _ejson_datetime(value: Any, attribute: str) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dict) and set(value) == {"$date"} and isinstance(value["$date"], int):
        if isinstance(value["$date"], bool) or abs(value["$date"]) > 10**14:
            raise InvalidParams.one(attribute, "date out of range")
        return EPOCH + dt.timedelta(milliseconds=value["$date"])
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            raise InvalidParams.one(attribute, "not an ISO-8601 datetime") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    raise InvalidParams.one(attribute, 'a datetime ({"$date": ms} or ISO-8601) or null is required')


# --- logins --------------------------------------------------------------------------------------


def _apply_login(context: CallContext, result: LoginResult) -> None:
    if result.pending_secret is not None:
        secret = result.pending_secret
        context.pending_secret = secret
        context.cookie_actions.append(lambda r: set_pending_cookie(r, secret, max_age=300))
    elif result.pending_cleared:
        context.pending_secret = None
        context.cookie_actions.append(clear_pending_cookie)
    if result.new_session is not None:
        # The login service ended the client's previous session (``replaces``) in the transaction
        # that created this one (B2: no fixation; D5: both or neither).
        new = result.new_session
        context.session = new.session
        context.user = new.session.user
        context.cookie_actions.append(lambda r: set_session_cookie(r, new.secret))


@method("auth.login_ex", auth=False, rate_limited=True, max_params=1)
def auth_login_ex(context: CallContext, params: list[Any]) -> Any:
    result = login_ex(
        params=_param(params, 0),
        client=context.client,
        pending_secret=context.pending_secret,
        replaces=context.session,
    )
    _apply_login(context, result)
    return result.response


@method("auth.login_ex_continue", auth=False, rate_limited=True, max_params=1)
def auth_login_ex_continue(context: CallContext, params: list[Any]) -> Any:
    result = login_ex_continue(
        params=_param(params, 0),
        client=context.client,
        pending_secret=context.pending_secret,
        replaces=context.session,
    )
    _apply_login(context, result)
    return result.response


@method("auth.login", auth=False, rate_limited=True, max_params=3)
def auth_login(context: CallContext, params: list[Any]) -> bool:
    """Legacy: ``[username, password, otp_token?]`` -> true / false."""
    username, password, otp = _param(params, 0), _param(params, 1), _param(params, 2)
    result = login_ex(
        params={"mechanism": "PASSWORD_PLAIN", "username": username, "password": password},
        client=context.client,
        pending_secret=context.pending_secret,
        replaces=context.session,
    )
    if result.response["response_type"] == "OTP_REQUIRED" and isinstance(otp, str):
        result = login_ex_continue(
            params={"mechanism": "OTP_TOKEN", "otp_token": otp},
            client=context.client,
            pending_secret=result.pending_secret,
            replaces=context.session,
        )
    elif result.pending_secret is not None:
        result = LoginResult({"response_type": "AUTH_ERR"})
    _apply_login(context, result)
    return result.ok


@method("auth.login_with_api_key", auth=False, rate_limited=True, max_params=1)
def auth_login_with_api_key(context: CallContext, params: list[Any]) -> bool:
    key = _param(params, 0)
    if not isinstance(key, str):
        raise InvalidParams.one("api_key", "a string is required")
    from sessions_app.auth.keys import split_api_key

    parsed = split_api_key(key)
    owner = ApiKey.objects.select_related("user").filter(pk=parsed[0]).first() if parsed else None
    username = owner.user.get_username() if owner is not None else ""
    result = login_ex(
        params={"mechanism": "API_KEY_PLAIN", "username": username, "api_key": key},
        client=context.client,
        replaces=context.session,
    )
    _apply_login(context, result)
    return result.ok


@method("auth.login_with_token", auth=False, rate_limited=True, max_params=1)
def auth_login_with_token(context: CallContext, params: list[Any]) -> bool:
    result = login_ex(
        params={"mechanism": "TOKEN_PLAIN", "token": _param(params, 0)},
        client=context.client,
        replaces=context.session,
    )
    _apply_login(context, result)
    return result.ok


@method("auth.mechanism_choices", auth=False, max_params=0)
def auth_mechanism_choices(context: CallContext, params: list[Any]) -> list[str]:
    """TrueNAS's lists (spec/scram.md §1): the official client looks for ``"SCRAM"`` before an API-key
    login. At ``LEVEL_2`` only ``PASSWORD_PLAIN`` is offered, as TrueNAS does; a single-use token is
    still accepted there (A19), as it is by TrueNAS."""
    if policy.assurance_level() != "LEVEL_1":
        return ["PASSWORD_PLAIN"]
    return ["API_KEY_PLAIN", "TOKEN_PLAIN", "PASSWORD_PLAIN", "SCRAM"]


@method("core.ping", auth=False, max_params=0)
def core_ping(context: CallContext, params: list[Any]) -> str:
    return "pong"


_CORE_OPTIONS = {"legacy_jobs": bool, "private_methods": bool, "py_exceptions": bool}


@method("core.set_options", auth=False, max_params=1)
def core_set_options(context: CallContext, params: list[Any]) -> dict[str, Any]:
    options = _param(params, 0, {})
    if not isinstance(options, dict):
        raise InvalidParams.one("options", "must be an object")
    errors = [(f"options.{k}", "unknown option") for k in options if k not in _CORE_OPTIONS]
    errors += [
        (f"options.{k}", "must be a boolean")
        for k, v in options.items()
        if k in _CORE_OPTIONS and not isinstance(v, bool)
    ]
    if errors:
        raise InvalidParams(errors)
    return {name: bool(options.get(name, False)) for name in _CORE_OPTIONS}


@method("auth.logout", max_params=0, before_password_change=True)
def auth_logout(context: CallContext, params: list[Any]) -> bool:
    if context.session is not None:
        session_services.session_logout(session=context.session, client=context.client)
    context.cookie_actions.append(clear_session_cookie)
    return True


@method("auth.me", max_params=0, before_password_change=True)
def auth_me(context: CallContext, params: list[Any]) -> dict[str, Any]:
    return user_info(context.user, context.session)


@method("auth.set_password", max_params=1, before_password_change=True)
def auth_set_password(context: CallContext, params: list[Any]) -> bool:
    """``[{"old_password": ..., "new_password": ...}]``: change one's own password.

    The current session survives with a new id and secret (the cookie is replaced); every other
    session of the user ends. A one-time-password session needs no old password.
    """
    from sessions_app.services.users import user_change_password

    data = _param(params, 0)
    if not isinstance(data, dict) or set(data) - {"old_password", "new_password"}:
        raise InvalidParams.one("set_password", "an object with old_password and new_password is required")
    new, old = data.get("new_password"), data.get("old_password")
    if not isinstance(new, str) or not 1 <= len(new) <= 1024 or "\x00" in new:
        raise InvalidParams.one("set_password.new_password", "a password of 1 to 1024 characters is required")
    names = {"current_password": "set_password.old_password", "new_password": "set_password.new_password"}
    try:
        secret = user_change_password(
            user=context.user,
            session=context.session,
            client=context.client,
            current_password=old,
            new_password=new,
            purpose="auth.set_password",
        )
    except InvalidParams as exc:
        raise InvalidParams([(names[field], message) for field, message in exc.errors]) from None
    if secret is not None:
        context.cookie_actions.append(lambda r: set_session_cookie(r, secret))
    return True


# --- sessions ----------------------------------------------------------------------------------------


@method("auth.sessions", role=Role.AUTH_SESSIONS_READ)
def auth_sessions(context: CallContext, params: list[Any]) -> Any:
    return selectors.session_query(
        filters=_param(params, 0, []),
        options=_param(params, 1, {}),
        current_pk=context.session.pk if context.session else None,
    )


@method("auth.my_sessions")
def auth_my_sessions(context: CallContext, params: list[Any]) -> Any:
    return selectors.session_query(
        filters=_param(params, 0, []),
        options=_param(params, 1, {}),
        user=context.user,
        current_pk=context.session.pk if context.session else None,
    )


def _session_id(params: list[Any]) -> str:
    value = _param(params, 0)
    if not isinstance(value, str) or not 1 <= len(value) <= 128:
        raise InvalidParams.one("id", "a session id (string) is required")
    return value


@method("auth.terminate_session", role=Role.AUTH_SESSIONS_WRITE, max_params=1, writes=True)
def auth_terminate_session(context: CallContext, params: list[Any]) -> bool:
    return session_services.session_terminate(
        public_id=_session_id(params), actor=context.session, client=context.client
    )


@method("auth.terminate_my_session", max_params=1)
def auth_terminate_my_session(context: CallContext, params: list[Any]) -> bool:
    public_id = _session_id(params)
    if not UserSession.objects.filter(
        public_id=public_id, user=context.caller, ended_at__isnull=True
    ).exists():
        return False
    return session_services.session_terminate(
        public_id=public_id, actor=context.session, client=context.client
    )


@method("auth.terminate_other_sessions", role=Role.AUTH_SESSIONS_WRITE, max_params=0, writes=True)
def auth_terminate_other_sessions(context: CallContext, params: list[Any]) -> bool:
    if context.session is None:
        raise NotAuthorized("Per-request credentials have no session to keep")
    session_services.session_terminate_others(current=context.session, client=context.client)
    return True


@method("auth.generate_token", max_params=4, before_password_change=True)
def auth_generate_token(context: CallContext, params: list[Any]) -> str:
    if context.session is None:
        raise NotAuthorized("Per-request credentials cannot create tokens")
    return token_generate(
        session=context.session,
        client=context.client,
        ttl=_param(params, 0),
        attrs=_param(params, 1, {}),
        match_origin=_param(params, 2, True),
        single_use=_param(params, 3, False),
    )


@method("auth.generate_onetime_password", role=Role.FULL_ADMIN, max_params=1, writes=True)
def auth_generate_onetime_password(context: CallContext, params: list[Any]) -> str:
    data = _param(params, 0)
    if not isinstance(data, dict) or not isinstance(data.get("username"), str) or set(data) - {"username"}:
        raise InvalidParams.one("generate_onetime_password.username", "an object with a username is required")
    user = selectors.user_get_by_username(username=data["username"])
    if user is None:
        raise InvalidParams.one("generate_onetime_password.username", "no such user")
    return onetime_password_issue(user=user, actor=context.username, address=context.client.origin)


# --- API keys ---------------------------------------------------------------------------------------


def _key_scope(context: CallContext) -> User | AnonymousUser | None:
    return None if has_role(context.user, Role.API_KEY_READ) else context.user


@method("api_key.query")
def api_key_query(context: CallContext, params: list[Any]) -> Any:
    return selectors.api_key_query(
        filters=_param(params, 0, []), options=_param(params, 1, {}), user=_key_scope(context)
    )


@method("api_key.my_keys")
def api_key_my_keys(context: CallContext, params: list[Any]) -> Any:
    return selectors.api_key_query(
        filters=_param(params, 0, []), options=_param(params, 1, {}), user=context.user
    )


def _key_id(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**62:
        raise InvalidParams.one("id", "an API key id (integer) is required")
    return value


def _owned_key(context: CallContext, key_id: int) -> ApiKey:
    qs = ApiKey.objects.select_related("user")
    if not has_role(context.user, Role.API_KEY_WRITE):
        qs = qs.filter(user=context.caller)
    key = qs.filter(pk=key_id).first()
    if key is None:
        raise NotFound(f"API key {key_id} does not exist")
    return key


@method("api_key.get_instance", max_params=1)
def api_key_get_instance(context: CallContext, params: list[Any]) -> Any:
    key_id = _key_id(_param(params, 0))
    rows = selectors.api_key_query(filters=[["id", "=", key_id]], options={}, user=_key_scope(context))
    if not rows:
        raise NotFound(f"API key {key_id} does not exist")
    return rows[0]


@method("api_key.create", max_params=1)
def api_key_create(context: CallContext, params: list[Any]) -> Any:
    data = _param(params, 0)
    if not isinstance(data, dict):
        raise InvalidParams.one("api_key_create", "must be an object")
    unknown = [
        (f"api_key_create.{k}", "unexpected field")
        for k in data
        if k not in {"name", "username", "expires_at"}
    ]
    if unknown:
        raise InvalidParams(unknown)
    user = context.user
    username = data.get("username")
    if username is not None and username != context.username:
        if not has_role(context.user, Role.API_KEY_WRITE):
            raise NotAuthorized()
        user = selectors.user_get_by_username(username=username)
        if user is None:
            raise InvalidParams.one("api_key_create.username", "no such user")
    expires_at = _ejson_datetime(data.get("expires_at"), "api_key_create.expires_at")
    key, plaintext = api_key_services.api_key_create(
        user=user,
        name=data.get("name"),
        expires_at=expires_at,
        actor=context.username,
        address=context.client.origin,
    )
    row = (
        api_key_get_instance(context, [key.pk])
        if has_role(context.user, Role.API_KEY_READ) or key.user == context.user
        else {}
    )
    return {**row, "key": plaintext}


@method("api_key.update", max_params=2)
def api_key_update(context: CallContext, params: list[Any]) -> Any:
    key = _owned_key(context, _key_id(_param(params, 0)))
    data = _param(params, 1, {})
    if not isinstance(data, dict):
        raise InvalidParams.one("api_key_update", "must be an object")
    unknown = [
        (f"api_key_update.{k}", "unexpected field") for k in data if k not in {"name", "expires_at", "reset"}
    ]
    if unknown:
        raise InvalidParams(unknown)
    name = data.get("name")
    if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= 200 or "\x00" in name):
        # Named here: the service's own check names api_key_create.name.
        raise InvalidParams.one("api_key_update.name", "a name of 1 to 200 characters is required")
    reset = data.get("reset", False)
    if not isinstance(reset, bool):
        raise InvalidParams.one("api_key_update.reset", "must be a boolean")
    expires = (
        _ejson_datetime(data["expires_at"], "api_key_update.expires_at") if "expires_at" in data else ...
    )
    _, plaintext = api_key_services.api_key_update(
        key=key,
        name=data.get("name"),
        expires_at=expires,
        reset=reset,
        actor=context.username,
        address=context.client.origin,
    )
    row = api_key_get_instance(context, [key.pk])
    return {**row, "key": plaintext} if plaintext else row


@method("api_key.delete", max_params=1)
def api_key_delete(context: CallContext, params: list[Any]) -> bool:
    key = _owned_key(context, _key_id(_param(params, 0)))
    api_key_services.api_key_delete(key=key, actor=context.username, address=context.client.origin)
    return True


# --- audit --------------------------------------------------------------------------------------------


@method("audit.query", role=Role.AUDIT_READ)
def audit_query(context: CallContext, params: list[Any]) -> Any:
    return selectors.audit_query(filters=_param(params, 0, []), options=_param(params, 1, {}))


def audit_method_call(context: CallContext, name: str, success: bool) -> None:
    with transaction.atomic():
        audit_record(
            event=AuditEvent.METHOD_CALL,
            success=success,
            username=context.username,
            session=context.session.public_id if context.session else None,
            address=context.client.origin,
            event_data={"method": name},
        )


__all__ = ["METHODS", "MECHANISMS", "CallContext", "Method", "NotAuthenticated"]
