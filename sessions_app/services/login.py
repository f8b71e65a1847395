"""``auth.login_ex``: the ``login_data`` of every mechanism checked, then handed to its pathway.

Each mechanism has its own module: ``PASSWORD_PLAIN`` (with a one-time password, or a pending TOTP
second factor) in `password_login`, its second factor (``auth.login_ex_continue``) in `totp_login`,
``API_KEY_PLAIN`` in `api_key_login`, ``SCRAM`` in `scram_login`, ``TOKEN_PLAIN`` in `token_login`,
``NODE_HMAC`` in `node`; what they share (the answers, the session a login opens) is in
`login_results`.

Policy (security.md): users with a confirmed TOTP device must use it for password logins; API keys,
tokens and the unix socket are exempt, as in TrueNAS. At ``LEVEL_2``, password logins need a second
factor, API keys are refused and tokens must be single-use.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from sessions_app.audit import audit_record
from sessions_app.auth import keys, policy
from sessions_app.auth.clients import Client
from sessions_app.auth.scram import CLIENT_FINAL, SCRAM_TYPES
from sessions_app.exceptions import InvalidParams, NotSupported
from sessions_app.models import AuditEvent, PendingLogin, ScramExchange, UserSession
from sessions_app.services.api_key_login import _api_key_login
from sessions_app.services.login_results import LoginResult
from sessions_app.services.node import _node_login
from sessions_app.services.password_login import _password_login
from sessions_app.services.scram_login import scram_login
from sessions_app.services.token_login import _token_login

MECHANISMS = ("PASSWORD_PLAIN", "API_KEY_PLAIN", "TOKEN_PLAIN", "SCRAM", "NODE_HMAC")
_PARAMS = {
    "PASSWORD_PLAIN": {"mechanism", "username", "password", "login_options"},
    "NODE_HMAC": {"mechanism", "node", "timestamp", "nonce", "signature", "login_options"},
    "API_KEY_PLAIN": {"mechanism", "username", "api_key", "login_options"},
    "TOKEN_PLAIN": {"mechanism", "token", "login_options"},
    "SCRAM": {"mechanism", "scram_type", "rfc_str", "login_options"},
    "OTP_TOKEN": {"mechanism", "otp_token", "login_options"},
}
_LOGIN_OPTIONS = {"user_info"}


def _validate(params: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise InvalidParams.one("login_data", "must be an object")
    errors = [(f"login_data.{k}", "unexpected field") for k in params if k not in allowed]
    if "scram_type" in allowed and params.get("scram_type") not in (None, *SCRAM_TYPES):
        errors.append(("login_data.scram_type", f"must be one of {', '.join(SCRAM_TYPES)}"))
    for name in allowed - {"mechanism", "login_options"}:
        value = params.get(name)
        if name == "timestamp":
            if isinstance(value, bool) or not isinstance(value, int):
                errors.append((f"login_data.{name}", "an integer (unix seconds) is required"))
        elif not isinstance(value, str):
            errors.append((f"login_data.{name}", "a string is required"))
        elif "\x00" in value:
            errors.append((f"login_data.{name}", "must not contain NUL characters"))
    options = params.get("login_options", {})
    if not isinstance(options, dict):
        errors.append(("login_data.login_options", "must be an object"))
    else:
        errors += [
            (f"login_data.login_options.{k}", "unexpected option") for k in options if k not in _LOGIN_OPTIONS
        ]
        if "user_info" in options and not isinstance(options["user_info"], bool):
            errors.append(("login_data.login_options.user_info", "must be a boolean"))
    if errors:
        raise InvalidParams(errors)
    return params


def _discard_pending(pending_secret: str | None, client: Client) -> bool:
    """Drop the client's login step in progress: a pending second factor (audited as abandoned) or a
    SCRAM exchange. True when there was one."""
    if not pending_secret:
        return False
    if ScramExchange.objects.filter(secret_hash=keys.hash_secret(pending_secret)).delete()[0]:
        return True
    pending = (
        PendingLogin.objects.select_related("user")
        .filter(secret_hash=keys.hash_secret(pending_secret))
        .first()
    )
    if pending is None:
        return False
    with transaction.atomic():
        if PendingLogin.objects.filter(pk=pending.pk).delete()[0]:
            audit_record(
                event=AuditEvent.AUTHENTICATION,
                success=False,
                username=pending.user.get_username(),
                address=client.origin,
                event_data={"mechanism": "OTP_TOKEN", "error": "abandoned second factor"},
            )
    return True


def login_ex(
    *, params: Any, client: Client, pending_secret: str | None = None, replaces: UserSession | None = None
) -> LoginResult:
    """``auth.login_ex``. A new login discards a pending second factor of the same client (A17) and,
    when it succeeds, ends ``replaces`` (the client's current session) in the same transaction."""
    if not isinstance(params, dict):
        raise InvalidParams.one("login_data", "must be an object")
    mechanism = params.get("mechanism")
    if mechanism == "OTP_TOKEN":
        raise InvalidParams.one("login_data.mechanism", "OTP_TOKEN is only valid with auth.login_ex_continue")
    if mechanism not in _PARAMS:
        raise InvalidParams.one("login_data.mechanism", f"must be one of {', '.join(MECHANISMS)}")
    params = _validate(params, _PARAMS[mechanism])

    if mechanism == "SCRAM":
        if policy.assurance_level() != "LEVEL_1":
            raise NotSupported("API key authentication is not allowed at this assurance level")
        if params["scram_type"] == CLIENT_FINAL:  # continues the exchange the pending secret names
            return scram_login(params=params, client=client, pending_secret=pending_secret, replaces=replaces)
    cleared = _discard_pending(pending_secret, client)
    options = params.get("login_options", {})
    if mechanism == "SCRAM":
        result = scram_login(params=params, client=client, pending_secret=None, replaces=replaces)
    elif mechanism == "PASSWORD_PLAIN":
        result = _password_login(params["username"], params["password"], client, options, replaces)
    elif mechanism == "API_KEY_PLAIN":
        result = _api_key_login(params["username"], params["api_key"], client, options, replaces)
    elif mechanism == "NODE_HMAC":
        result = _node_login(params, client, replaces)
    else:
        result = _token_login(params["token"], client, options, replaces)
    result.pending_cleared = cleared
    return result
