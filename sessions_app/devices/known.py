"""Known devices and open new-sign-in notices: what a login is compared with, and what the banner
shows. Reads only; `sessions_app.services.notices` writes both.

A *known device* is a (signature, network) pair a user signed in from (`KnownDevice`): the
signature is browser, system and device family (`devices.agents.Device.signature`), the network the
country or the /24 (/48) of the address (`devices.places.network`). API keys keep their own pairs,
with the signature ``api_key:<id>``: a key's use is compared with that key's earlier uses only, and
interactive logins with interactive ones only.

A pair counts as *used* when it was seen within ``SESSIONS_NOTICE_DAYS`` or the user confirmed it
("Yes, it was me"); confirmed pairs never age out.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from sessions_app import conf
from sessions_app.models import Credentials, KnownDevice, SignInNotice, UserSession

#: The logins that can be new sign-ins, see banners and answer them: someone typed the password.
INTERACTIVE = frozenset(
    {Credentials.LOGIN_PASSWORD, Credentials.LOGIN_TWOFACTOR, Credentials.LOGIN_ONETIME_PASSWORD}
)
API_KEY_SIGNATURE = "api_key:"
#: How long an unanswered notice stays in the banner.
BANNER_DAYS = 7
#: At most this many notices in one banner (the newest).
BANNER_LIMIT = 5


def api_key_signature(key_id: int) -> str:
    return f"{API_KEY_SIGNATURE}{key_id}"


def api_key_id(signature: str) -> int | None:
    """The key id of an API key's signature, None for a device signature."""
    if not signature.startswith(API_KEY_SIGNATURE):
        return None
    text = signature.removeprefix(API_KEY_SIGNATURE)
    return int(text) if text.isdigit() else None


def session_signature(row: UserSession) -> str:
    """The device signature of a session, from the columns its login filled (as `Device.signature`)."""
    return "|".join((row.device_browser or "", row.device_os or "", row.device_family or ""))


def _used(user: Any, now: dt.datetime) -> QuerySet[KnownDevice]:
    cutoff = now - dt.timedelta(days=int(conf.get("SESSIONS_NOTICE_DAYS")))
    return KnownDevice.objects.filter(Q(confirmed=True) | Q(last_seen_at__gte=cutoff), user=user)


def sign_in_is_new(
    *, user: Any, signature: str, network: str, session: UserSession, now: dt.datetime
) -> bool:
    """Whether an interactive login (``session``, just created) is a new sign-in: its signature or its
    network not used by ``user`` lately -- unless it is the user's first login (no known device and
    no earlier interactive session whose device was recorded, so that upgrading to this feature does
    not make every user's next login a notice)."""
    used = _used(user, now).exclude(signature__startswith=API_KEY_SIGNATURE)
    if used.filter(signature=signature).exists() and used.filter(network=network).exists():
        return False
    if KnownDevice.objects.filter(user=user).exclude(signature__startswith=API_KEY_SIGNATURE).exists():
        return True
    earlier = UserSession.objects.filter(
        user=user, credentials__in=INTERACTIVE, device_label__isnull=False
    ).exclude(pk=session.pk)
    return earlier.exists()


def api_key_use_is_new(*, user: Any, key_id: int, network: str, now: dt.datetime) -> bool:
    """Whether a use of API key ``key_id`` comes from a network the key has not been used from
    lately. A key's first use is not: it only sets where the key is used from."""
    signature = api_key_signature(key_id)
    if _used(user, now).filter(signature=signature, network=network).exists():
        return False
    return KnownDevice.objects.filter(user=user, signature=signature).exists()


def known_device_list(*, user: Any) -> QuerySet[KnownDevice]:
    """``user``'s remembered devices, the most recently seen first."""
    return KnownDevice.objects.filter(user=user).order_by("-last_seen_at", "-id")


def known_device_get(*, user: Any, pk: int) -> KnownDevice | None:
    """One of ``user``'s devices (another user's is None: a 404, never a 403)."""
    return KnownDevice.objects.filter(user=user, pk=pk).first()


def notice_get(*, user: Any, pk: int) -> SignInNotice | None:
    """One of ``user``'s notices, answered or not (another user's is None)."""
    return SignInNotice.objects.filter(user=user, pk=pk).first()


def notice_list_open(*, session: UserSession, now: dt.datetime | None = None) -> QuerySet[SignInNotice]:
    """The notices the banner of ``session`` shows: its user's unanswered notices of the last
    `BANNER_DAYS`, except those about this session or about sessions from its own device signature
    (a second session on a new device must not vouch for the first). Only interactive sessions see
    notices; one indexed query (``notice_user_open``)."""
    if session.user_id is None or session.credentials not in INTERACTIVE:
        return SignInNotice.objects.none()
    since = (now or timezone.now()) - dt.timedelta(days=BANNER_DAYS)
    return (
        SignInNotice.objects.filter(user_id=session.user_id, answered_at__isnull=True, created_at__gte=since)
        .exclude(session_id=session.pk)
        .exclude(signature=session_signature(session))
        .order_by("-created_at", "-id")
    )


def notice_get_open(*, session: UserSession, pk: int) -> SignInNotice | None:
    """A notice the banner of ``session`` shows (so one it may answer), or None."""
    return notice_list_open(session=session).filter(pk=pk).first()
