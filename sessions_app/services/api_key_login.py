"""``auth.login_ex`` with ``API_KEY_PLAIN``: an API key presented in full.

A guess counts toward the key it names and the client address, never toward the owner (F7). Over an
insecure transport a right key is revoked. `open_api_key_session` is shared with SCRAM
(`scram_login`), the other way to prove a key.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone

from sessions_app.auth import keys, policy, throttle
from sessions_app.auth.clients import Client
from sessions_app.models import ApiKey, Credentials, UserSession
from sessions_app.services.api_keys import api_key_pepper, api_key_revoke, api_key_touch, verifier_backfill
from sessions_app.services.login_results import EXPIRED, LoginResult, fail, open_session, success
from sessions_app.services.sessions import NewSession


def _api_key_login(
    username: str, api_key: str, client: Client, options: dict[str, Any], replaces: UserSession | None
) -> LoginResult:
    now = timezone.now()
    parsed = keys.split_api_key(api_key)
    key = None
    if parsed is not None:
        key = ApiKey.objects.select_related("user").filter(pk=parsed[0]).first()
    digest = keys.api_key_hash(parsed[1] if parsed else api_key[:200], pepper=api_key_pepper())
    key_label = f"{key.pk}:{key.name}" if key is not None else "<INVALID>"
    # F7: a guess against key N counts toward key N (keyed by the id as presented, known or not) and
    # the client address (the login rate limit), never toward the owner or the name presented: nobody
    # can lock a user out, or learn who owns key N, by guessing its secret. Text that names no key id
    # counts toward the address only.
    counter = throttle.api_key_lockout_name(parsed[0]) if parsed is not None else None
    ref = {"api_key_ref": key_label}
    if counter is not None and throttle.locked_until(username=counter) is not None:
        return fail(
            client=client, mechanism="API_KEY_PLAIN", username=username, reason="locked key",
            count=False, extra=ref,
        )  # fmt: skip
    if key is None or not keys.same_hash(key.key_hash, digest) or key.user.get_username() != username:
        return fail(
            client=client, mechanism="API_KEY_PLAIN", username=username, reason="invalid key",
            count=counter is not None, lockout_name=counter, extra=ref,
        )  # fmt: skip
    # The right secret: the owner's own lock (password and second-factor failures) still covers
    # every pathway of the account (A6); asked only now, so it tells a guesser nothing.
    if throttle.locked_until(username=username[:150]) is not None:
        return fail(
            client=client, mechanism="API_KEY_PLAIN", username=username, reason="locked",
            count=False, extra=ref,
        )  # fmt: skip
    if key.revoked or not key.user.is_active:
        reason = "revoked key" if key.revoked else "inactive user"
        return fail(
            client=client, mechanism="API_KEY_PLAIN", username=username, reason=reason, count=False, extra=ref
        )
    if policy.assurance_level() != "LEVEL_1":
        return fail(
            client=client,
            mechanism="API_KEY_PLAIN",
            username=username,
            reason="refused at this level",
            count=False,
        )
    if key.expires_at is not None and key.expires_at <= now:
        return fail(
            client=client, mechanism="API_KEY_PLAIN", username=username, reason="expired key", count=False,
            response=EXPIRED, extra={"api_key_ref": key_label},
        )  # fmt: skip
    if not client.secure_transport:
        api_key_revoke(key=key, reason="Attempt to use over an insecure transport", actor=None)
        return fail(
            client=client, mechanism="API_KEY_PLAIN", username=username, reason="insecure transport: key revoked",
            count=False, response=EXPIRED, extra={"api_key_ref": key_label},
        )  # fmt: skip
    if key.scram_verifier is None and parsed is not None:
        verifier_backfill(key=key, secret=parsed[1])  # a key older than SCRAM: once, at its first use
    new = open_api_key_session(
        key=key,
        client=client,
        replaces=replaces,
        lockout_name=counter,
        now=now,
        audit_data={"mechanism": "API_KEY_PLAIN", "api_key_ref": key_label},
    )
    return success(key.user, new, options)


def open_api_key_session(
    *,
    key: ApiKey,
    client: Client,
    replaces: UserSession | None,
    lockout_name: str | None,
    now: dt.datetime,
    audit_data: dict[str, Any],
) -> NewSession:
    """The session of a key proved right (``API_KEY_PLAIN``, SCRAM): its use recorded, an
    ``API_KEY`` session opened, the key's failure counter (``lockout_name``, F7) reset."""
    api_key_touch(key=key, now=now)
    return open_session(
        credentials=Credentials.API_KEY,
        client=client,
        user=key.user,
        replaces=replaces,
        lockout_name=lockout_name,
        api_key=key,
        audit_data=audit_data,
    )
