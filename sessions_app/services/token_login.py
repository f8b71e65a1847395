"""``auth.login_ex`` with ``TOKEN_PLAIN``: a token minted by a session opens a derived one.

The parent session is checked as on every request; scoped tokens cannot log in, multi-use tokens
are refused above ``LEVEL_1`` (A19), and a token bound to its origin must come from there.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, TypedDict

from django.db import transaction
from django.utils import timezone

from sessions_app.auth import keys, policy
from sessions_app.auth.clients import Client
from sessions_app.models import Credentials, Token, UserSession
from sessions_app.services.login_results import LoginResult, fail, open_session, success
from sessions_app.services.sessions import session_check


class _Refusal(TypedDict):
    """The arguments of `fail` that every refusal of a token login shares."""

    client: Client
    mechanism: str
    username: str | None
    count: bool


def _token_login(
    token_text: str, client: Client, options: dict[str, Any], replaces: UserSession | None
) -> LoginResult:
    now = timezone.now()
    token = (
        Token.objects.select_related("session", "session__user", "session__api_key", "session__parent")
        .filter(token_hash=keys.hash_secret(token_text))
        .first()
        if 0 < len(token_text) <= 256
        else None
    )
    refused: _Refusal = {"client": client, "mechanism": "TOKEN_PLAIN", "username": None, "count": False}
    if token is None or token.expires_at <= now:
        return fail(**refused, reason="unknown or expired token")
    parent = session_check(row=token.session, client=client, now=now)
    if parent is None or parent.user is None:
        return fail(**refused, reason="parent session ended")
    if token.attrs:
        return fail(**refused, reason="scoped token cannot open a session")
    if not token.single_use and policy.assurance_level() != "LEVEL_1":
        # Minted before the level was raised: multi-use tokens are LEVEL_1 only (A19).
        return fail(**refused, reason="multi-use token refused at this level")
    if token.match_origin:
        if token.origin_uid is not None:
            same = client.peer is not None and (client.peer[1], client.peer[2]) == (
                token.origin_uid,
                token.origin_gid,
            )
        else:
            same = client.peer is None and client.address is not None and client.address == token.origin_ip
        if not same:
            return fail(**refused, reason="origin does not match")
    # The token is used up (or its expiry slides) in the transaction that opens the session and writes
    # its audit record: a process killed in between leaves the token as it was (D10).
    with transaction.atomic():
        if token.single_use:
            used = not Token.objects.filter(pk=token.pk).delete()[0]
        else:
            used = False
            Token.objects.filter(pk=token.pk).update(
                expires_at=min(now + dt.timedelta(seconds=token.ttl), parent.expires_at)
            )
        new = None
        if not used:
            new = open_session(
                credentials=Credentials.TOKEN,
                client=client,
                user=parent.user,
                replaces=replaces,
                token=token,
                audit_data={"mechanism": "TOKEN_PLAIN", "parent": parent.public_id},
            )
    if new is None:
        return fail(**refused, reason="token already used")
    return success(parent.user, new, options)
