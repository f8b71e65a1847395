"""``auth.generate_token``: short-lived tokens, stored hashed, bound to the creating session."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import transaction
from django.utils import timezone

from sessions_app.audit import audit_record
from sessions_app.auth import keys, policy
from sessions_app.auth.clients import Client
from sessions_app.exceptions import InvalidParams, NotSupported
from sessions_app.models import AuditEvent, Credentials, Token, UserSession

DEFAULT_TTL = 600


def token_generate(
    *,
    session: UserSession,
    client: Client,
    ttl: Any = None,
    attrs: Any = None,
    match_origin: Any = True,
    single_use: Any = False,
) -> str:
    """Create a token for ``session``; returns the 64-character token (only its hash is stored).

    ``ttl`` None means 600 s; the expiry never passes the session's absolute lifetime (B22) and
    slides on use. One-time-password sessions cannot create tokens; multi-use tokens are refused
    above LEVEL_1.
    """
    if ttl is None:
        ttl = DEFAULT_TTL
    errors = []
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= 30 * 86400:
        errors.append(("ttl", "an integer number of seconds from 1 to 2592000 is required"))
    if attrs is None:
        attrs = {}
    if not isinstance(attrs, dict):
        errors.append(("attrs", "must be an object"))
    if not isinstance(match_origin, bool):
        errors.append(("match_origin", "must be a boolean"))
    if not isinstance(single_use, bool):
        errors.append(("single_use", "must be a boolean"))
    if errors:
        raise InvalidParams(errors)
    if session.credentials == Credentials.LOGIN_ONETIME_PASSWORD:
        raise NotSupported("One-time password sessions cannot create tokens")
    if not single_use and policy.assurance_level() != "LEVEL_1":
        raise NotSupported("Multi-use tokens are not allowed at this assurance level")
    now = timezone.now()
    token = keys.new_token()
    with transaction.atomic():
        row = Token.objects.create(
            token_hash=keys.hash_secret(token),
            session=session,
            created_at=now,
            expires_at=min(now + dt.timedelta(seconds=ttl), session.expires_at),
            ttl=ttl,
            match_origin=match_origin,
            origin_ip=client.address if client.peer is None else None,
            origin_uid=client.peer[1] if client.peer else None,
            origin_gid=client.peer[2] if client.peer else None,
            single_use=single_use,
            attrs=attrs,
        )
        audit_record(
            event=AuditEvent.METHOD_CALL,
            success=True,
            username=session.username,
            session=session.public_id,
            address=client.origin,
            event_data={
                "method": "auth.generate_token",
                "token_id": row.pk,
                "ttl": ttl,
                "match_origin": match_origin,
                "single_use": single_use,
            },
        )
    return token
