"""``TRUENAS_NODE`` logins: a peer node of the same deployment proves it knows the node secret.

The peer sends ``{"mechanism": "NODE_HMAC", "node": name, "timestamp": unix seconds, "nonce": 16-64
URL-safe characters, "signature": hex}`` to ``auth.login_ex``, where ``signature`` is
``HMAC-SHA256(SESSIONS_NODE_SECRET, "<node>\\n<timestamp>\\n<nonce>")``. The timestamp must lie within
``SESSIONS_NODE_MAX_SKEW`` seconds of the server clock and every nonce is accepted once (kept for the
window), so a captured request cannot be replayed. The session is ``internal`` with
``credentials_data {}``; with no node secret configured the mechanism is disabled.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import time
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from sessions_app import conf
from sessions_app.auth import policy
from sessions_app.auth.clients import Client
from sessions_app.models import Credentials, EndReason, NodeNonce, UserSession
from sessions_app.services.login_results import LoginResult, fail
from sessions_app.services.session_ending import session_end
from sessions_app.services.sessions import NewSession, session_create

_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_NODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def node_signature(*, secret: str, node: str, timestamp: int, nonce: str) -> str:
    """What a peer sends: HMAC-SHA256 over node, timestamp and nonce (hex)."""
    message = f"{node}\n{timestamp}\n{nonce}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def node_login(
    *, node: object, timestamp: object, nonce: object, signature: object, client: Client
) -> NewSession | None:
    """Verify a node's proof; a new internal ``TRUENAS_NODE`` session, or None (never says why)."""
    secret = conf.get("SESSIONS_NODE_SECRET")
    if (
        not secret
        or not isinstance(node, str)
        or not isinstance(nonce, str)
        or not isinstance(signature, str)
    ):
        return None
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        return None
    if not _NODE.match(node) or not _NONCE.match(nonce) or len(signature) != 64:
        return None
    expected = node_signature(secret=secret, node=node, timestamp=timestamp, nonce=nonce)
    if not hmac.compare_digest(expected, signature.lower()):
        return None
    skew = int(conf.get("SESSIONS_NODE_MAX_SKEW"))
    if abs(time.time() - timestamp) > skew:
        return None
    now = timezone.now()
    try:
        with transaction.atomic():
            NodeNonce.objects.filter(seen_at__lt=now - dt.timedelta(seconds=2 * skew)).delete()
            NodeNonce.objects.create(nonce=nonce, seen_at=now)
    except IntegrityError:
        return None  # replayed
    return session_create(
        credentials=Credentials.TRUENAS_NODE,
        client=client,
        internal=True,
        audit_data={"mechanism": "NODE_HMAC", "node": node},
    )


def _node_login(params: dict[str, Any], client: Client, replaces: UserSession | None) -> LoginResult:
    with transaction.atomic():
        new = node_login(
            node=params["node"],
            timestamp=params["timestamp"],
            nonce=params["nonce"],
            signature=params["signature"],
            client=client,
        )
        if new is not None and replaces is not None:
            session_end(
                session=replaces, reason=EndReason.LOGOUT, actor=replaces.username, address=client.origin
            )
    if new is None:
        return fail(
            client=client, mechanism="NODE_HMAC", username=None, reason="invalid node proof", count=False
        )
    response = {"response_type": "SUCCESS", "authenticator": policy.assurance_level(), "user_info": None}
    return LoginResult(response, new_session=new)
