"""``auth.login_ex`` with ``"mechanism": "SCRAM"``: API-key login by SCRAM-SHA-512 (spec/scram.md).

Two calls. ``CLIENT_FIRST_MESSAGE`` opens an exchange (`ScramExchange`, found by the hash of a secret
the client holds: the pending-login cookie over HTTP, the connection over WebSocket) and answers
``SERVER_FIRST_RESPONSE``; ``CLIENT_FINAL_MESSAGE`` uses it up, whatever the outcome, and on a right
proof opens an ``API_KEY`` session exactly like ``API_KEY_PLAIN`` (same ``credentials_data``,
cascades and audit; the session remembers ``login_mechanism = "SCRAM"``) and answers
``SERVER_FINAL_RESPONSE`` with ``user_info``. Every failure is ``AUTH_ERR`` after the usual failure
delay, with an audit record; a wrong proof counts toward the key's own lockout counter (F7), never
toward the owner's password. ``LEVEL_2`` refuses SCRAM with ``EOPNOTSUPP``, as every API-key login.

Decisions where the spec leaves room:

* A well-formed client-first that names an unknown key, another user's key or a key without
  verifiers is answered like a real one, with a stand-in salt derived from the principal (stable,
  so that asking twice does not tell them apart), and fails at the final message. A malformed
  message, or a channel binding this request cannot have, fails at once. So nobody learns which key
  ids exist or who owns them without the key's secret (RFC 5802 §9; F7). The stand-in's iteration
  count is the current ``SESSIONS_SCRAM_ITERATIONS``; a real key answers with the count it was
  made with, so after a change of the setting older keys differ by ``i=`` (reset them to align).
* Refusals at client-first that name a key (a binding this request cannot have, a downgrade)
  count toward that key like a wrong proof; a message too malformed to name one counts toward the
  address only (the login rate limit).
* ``y,,`` (client supports binding, thinks the server does not) is refused when this request could
  have been bound: a downgrade (RFC 5802 §6). ``n,,`` is always accepted.
* Revoked, expired, owner inactive or locked: ``AUTH_ERR`` only after a right proof, as the plain
  login answers only after a right secret. Never ``EXPIRED`` (the client treats it as a protocol
  error). Unlike ``API_KEY_PLAIN`` over an insecure transport, SCRAM never revokes a key: the secret
  never travels.
"""

from __future__ import annotations

import datetime as dt
import errno
import hmac
from typing import Any

from django.utils import timezone

from sessions_app import conf
from sessions_app.auth import keys, policy, scram, throttle
from sessions_app.auth.channel_binding import server_binding
from sessions_app.auth.clients import Client
from sessions_app.exceptions import CallError, NotSupported
from sessions_app.models import ApiKey, ScramExchange, UserSession
from sessions_app.services.api_key_login import open_api_key_session
from sessions_app.services.api_keys import api_key_pepper, verifier_open
from sessions_app.services.login_results import LoginResult, fail, success

MECHANISM = "SCRAM"


class ScramNotInProgress(CallError):
    """A client-final with no exchange in progress: a call error, not an ``AUTH_ERR`` (spec §2)."""

    errno, errname, http_status, default_reason = (
        errno.EINVAL,
        "EINVAL",
        400,
        "SCRAM authentication is not in progress",
    )


def _stand_in_salt(principal: str) -> bytes:
    """A salt for a principal without a usable key: stable per principal, unrelated to any key."""
    digest = hmac.new(api_key_pepper(), b"scram-stand-in-salt|" + principal.encode(), "sha256").digest()
    return digest[: scram.SALT_BYTES]


# --- the exchange -----------------------------------------------------------------------------------


def scram_login(
    *, params: dict[str, Any], client: Client, pending_secret: str | None, replaces: UserSession | None
) -> LoginResult:
    """One SCRAM step (``params`` already validated by `login.login_ex`); returns a `LoginResult`."""
    if policy.assurance_level() != "LEVEL_1":
        raise NotSupported("API key authentication is not allowed at this assurance level")
    if params["scram_type"] == scram.CLIENT_FIRST:
        return _first(params["rfc_str"], client)
    return _final(params, client, pending_secret, replaces)


def _bindable(client: Client) -> bool:
    """Whether this request could be channel-bound: TLS (not the unix socket) and a known binding."""
    return client.secure and client.peer is None and server_binding() is not None


def _key_ref(key: ApiKey | None) -> dict[str, str]:
    """The audit record's reference to the key presented (as a failed ``API_KEY_PLAIN`` names it)."""
    return {"api_key_ref": f"{key.pk}:{key.name}" if key is not None else "<INVALID>"}


def _first(text: str, client: Client) -> LoginResult:
    try:
        first = scram.parse_client_first(text)
    except scram.ScramError as exc:  # names no key: counted toward the address only (login rate)
        return fail(client=client, mechanism=MECHANISM, username=None, reason=str(exc), count=False)
    key = ApiKey.objects.select_related("user").filter(pk=first.key_id).first()
    refusal = None
    if first.bound and not _bindable(client):
        refusal = "channel binding requested on a request that cannot be bound"
    elif first.gs2_header == scram.GS2_UNSUPPORTED and _bindable(client):
        refusal = "the client thinks this server cannot bind: a downgrade"
    if refusal is not None:  # a failed attempt at key N: counted toward key N (F7)
        return fail(
            client=client, mechanism=MECHANISM, username=first.username[:150], reason=refusal,
            count=True, lockout_name=throttle.api_key_lockout_name(first.key_id), extra=_key_ref(key),
        )  # fmt: skip
    verifier = None
    if key is not None and key.user.get_username() == first.username:
        verifier = verifier_open(key)
    if verifier is not None:
        salt, iterations = verifier.salt, verifier.iterations
    else:
        salt = _stand_in_salt(f"{first.username}:{first.key_id}")
        iterations = int(conf.get("SESSIONS_SCRAM_ITERATIONS"))
    message, _ = scram.server_first(first, salt=salt, iterations=iterations)
    secret = keys.new_token()
    now = timezone.now()
    ScramExchange.objects.create(
        secret_hash=keys.hash_secret(secret),
        key_id=first.key_id,
        username=first.username,
        gs2_header=first.gs2_header,
        client_first_bare=first.bare,
        server_first=message,
        origin=client.origin,
        created_at=now,
        expires_at=now + dt.timedelta(seconds=int(conf.get("SESSIONS_SCRAM_EXCHANGE_SECONDS"))),
    )
    response = {
        "response_type": "SCRAM_RESPONSE",
        "scram_type": "SERVER_FIRST_RESPONSE",
        "rfc_str": message,
        "user_info": None,
    }
    return LoginResult(response, pending_secret=secret)


def _take_exchange(pending_secret: str | None) -> ScramExchange | None:
    """The client's exchange in progress, used up (deleted) whatever comes next; None if there is
    none, it expired, or a concurrent final message took it."""
    if not pending_secret:
        return None
    exchange = ScramExchange.objects.filter(secret_hash=keys.hash_secret(pending_secret)).first()
    if exchange is None or not ScramExchange.objects.filter(pk=exchange.pk).delete()[0]:
        return None
    return exchange if exchange.expires_at > timezone.now() else None


def _final(
    params: dict[str, Any], client: Client, pending_secret: str | None, replaces: UserSession | None
) -> LoginResult:
    exchange = _take_exchange(pending_secret)
    if exchange is None:
        raise ScramNotInProgress()
    username, counter = exchange.username[:150], throttle.api_key_lockout_name(exchange.key_id)
    key = ApiKey.objects.select_related("user").filter(pk=exchange.key_id).first()

    def refused(reason: str, *, count: bool) -> LoginResult:
        result = fail(
            client=client, mechanism=MECHANISM, username=username, reason=reason,
            count=count, lockout_name=counter if count else None, extra=_key_ref(key),
        )  # fmt: skip
        result.pending_cleared = True
        return result

    if throttle.locked_until(username=counter) is not None:
        return refused("locked key", count=False)
    try:
        final = scram.parse_client_final(params["rfc_str"])
    except scram.ScramError as exc:
        return refused(str(exc), count=True)
    first = scram.ClientFirst(exchange.gs2_header, exchange.username, exchange.key_id, b"", "")
    binding = server_binding() if first.bound and _bindable(client) else None
    if first.bound and binding is None:
        return refused("channel binding no longer available", count=True)
    if not hmac.compare_digest(final.channel_binding, scram.expected_channel_binding(first, binding)):
        return refused("channel binding mismatch", count=True)
    server_nonce = exchange.server_first.split(",", 1)[0][2:]
    if not hmac.compare_digest(final.nonce.encode(), server_nonce.encode()):
        return refused("nonce mismatch", count=True)
    owned = key is not None and key.user.get_username() == exchange.username
    verifier = verifier_open(key) if key is not None and owned else None
    answer = None
    if verifier is not None:
        answer = scram.verify(
            verifier=verifier,
            client_first_bare=exchange.client_first_bare,
            server_first_message=exchange.server_first,
            final=final,
        )
    if key is None or answer is None:
        return refused("invalid key" if verifier is not None or key is None else "no verifier", count=True)
    # The right proof: now the same checks as a right plain-text key (login._api_key_login).
    if throttle.locked_until(username=username) is not None:
        return refused("locked", count=False)
    if key.revoked or not key.user.is_active:
        return refused("revoked key" if key.revoked else "inactive user", count=False)
    now = timezone.now()
    if key.expires_at is not None and key.expires_at <= now:
        return refused("expired key", count=False)
    new = open_api_key_session(
        key=key,
        client=client,
        replaces=replaces,
        lockout_name=counter,
        now=now,
        audit_data={
            "mechanism": MECHANISM,
            "api_key_ref": f"{key.pk}:{key.name}",
            "channel_binding": first.bound,
        },
    )
    result = success(key.user, new, params.get("login_options", {}))
    result.response = {
        "response_type": "SCRAM_RESPONSE",
        "scram_type": "SERVER_FINAL_RESPONSE",
        "rfc_str": answer,
        "user_info": result.response["user_info"],
    }
    result.pending_cleared = True
    return result
