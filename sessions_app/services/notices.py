"""New-sign-in notices (issue 16): remember where a user signs in from, tell them when it is somewhere
new, and let them stop it from the message.

**When.** `sign_in_noticed` runs inside the transaction of every successful login
(`services.login_results.open_session`), so the session, the known device, the notice and their audit record
commit together. Interactive logins (``LOGIN_PASSWORD``, ``LOGIN_TWOFACTOR``,
``LOGIN_ONETIME_PASSWORD``) remember their (device signature, network) pair in `KnownDevice` and are
a *new sign-in* when the signature or the network was not used lately (`devices.known`). API keys
(``API_KEY_PLAIN``, SCRAM, and per-request ``Bearer`` through `api_key_use_noticed`) are a notice
when ``SESSIONS_NOTICE_API_KEYS`` is on and the key is used from a network it was not used from
lately. Not notices: a user's first login, a key's first use (both only set the baseline), a pair the
user confirmed, logins over the unix socket (no device, no place), tokens (their root login was
one), per-request ``Basic`` (it opens no session; it is audited per request).

* Bearer requests pay for this only when their key's ``last_used_at`` is written (at most once a
  minute per key): one indexed ``KnownDevice`` lookup then, nothing otherwise. A key used from a new
  network within the minute after a recorded use is noticed at the next recorded use.
* Confirmation is per pair: "Yes, it was me" confirms that device *on that network*, for good. A
  signature is only browser/system/device family, shared by millions; a confirmed signature from a
  new network is still a new sign-in.

**What.** An audit record ``NEW_SIGN_IN`` (device, address, place, network), a `SignInNotice` row, a
``notice`` outbox event (the user's open pages fetch their banner again, `streams.notice_events`), and
an email (`notice_email`) to the user's address if they have one, sent after the commit
(``transaction.on_commit``): a failing mail server never fails the login, and is logged without the
link. Emails are sent in the request that logged in, bounded by ``EMAIL_TIMEOUT``.

**The link** ("This wasn't me"): the notice's id signed with Django's `TimestampSigner` (salted,
`LINK_SALT`), valid `LINK_MAX_AGE` (7 days), used once (``link_used_at``), no login needed. Opening it
shows what the email said and a button; only the POST acts (mail scanners open links). It stays
usable after a "Yes" in a banner -- a "Yes" can come from whoever holds another session -- but not
after a "No". Its base is ``SESSIONS_BASE_URL``; when that is empty, the Host of the login request if
it is one of ``ALLOWED_HOSTS`` (and ``ALLOWED_HOSTS`` is no wildcard: a forged Host must not send the
owner's click elsewhere); else the email has no link and says to use the banner or My sessions.

**"No" (the link or the banner)** ends the session of the notice and every other active session of
the user from the same device signature (``TERMINATED``, by the user; unix-socket, node and internal
sessions aside), records a `PasswordChangeDemand` (the next interactive login's session must set a
new password first, as a one-time-password session must; `password_change_demand_clear` drops it
when the password changes), forgets the pair so that its next login is a notice again, and is
audited. For an API key's notice it revokes the key instead (which ends its sessions); the password
is not in question then.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.http.request import split_domain_port, validate_host
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from sessions_app import conf, events
from sessions_app.audit import audit_record
from sessions_app.auth.clients import Client
from sessions_app.devices.agents import describe
from sessions_app.devices.known import (
    INTERACTIVE,
    api_key_id,
    api_key_signature,
    api_key_use_is_new,
    sign_in_is_new,
)
from sessions_app.devices.places import locate, network
from sessions_app.models import (
    ApiKey,
    AuditEvent,
    Credentials,
    EndReason,
    KnownDevice,
    PasswordChangeDemand,
    SignInNotice,
    UserSession,
)
from sessions_app.services.api_keys import api_key_revoke
from sessions_app.services.session_ending import sessions_end

logger = logging.getLogger(__name__)

LINK_SALT = "sessions_app.notices.not-me"
LINK_MAX_AGE = dt.timedelta(days=7)
CONFIRMED, DENIED = "confirmed", "denied"
#: Sessions that "every session from that device" never includes: they carry no device.
_DEVICELESS = (Credentials.UNIX_SOCKET, Credentials.TRUENAS_NODE)


# --- at login ---------------------------------------------------------------------------------------


def sign_in_noticed(
    *, session: UserSession, client: Client, api_key: ApiKey | None = None, now: dt.datetime | None = None
) -> SignInNotice | None:
    """Remember where the login of ``session`` came from and notice it if it is new (see the module
    docstring); applies a pending `PasswordChangeDemand` to an interactive session. Call inside the
    login's transaction. Returns the notice, if one was made."""
    user = session.user
    if user is None or client.peer is not None:
        return None
    now = now or timezone.now()
    if session.credentials == Credentials.API_KEY and api_key is not None:
        return api_key_use_noticed(key=api_key, client=client, session=session, now=now)
    if session.credentials not in INTERACTIVE:
        return None
    if PasswordChangeDemand.objects.filter(user=user).exists():
        UserSession.objects.filter(pk=session.pk).update(password_change_required=True)
        session.password_change_required = True
    device = describe(client.user_agent, websocket=client.websocket)
    place = locate(client.address)
    where = network(client.address, place)
    new = sign_in_is_new(user=user, signature=device.signature, network=where, session=session, now=now)
    place_label = place.label if place is not None else ""
    _remember(
        user=user, signature=device.signature, network=where, label=device.label, place=place_label, now=now
    )
    if not new:
        return None
    return _notify(
        user=user,
        session=session,
        client=client,
        signature=device.signature,
        network=where,
        label=device.label,
        place=place_label,
        now=now,
    )


def api_key_use_noticed(
    *, key: ApiKey, client: Client, session: UserSession | None = None, now: dt.datetime | None = None
) -> SignInNotice | None:
    """An API key was used (a login, or a Bearer request whose use is being recorded): remember the
    network and notice the owner when it is new for this key. Call inside the transaction that
    records the use."""
    if not conf.get("SESSIONS_NOTICE_API_KEYS") or client.peer is not None:
        return None
    now = now or timezone.now()
    place = locate(client.address)
    where = network(client.address, place)
    new = api_key_use_is_new(user=key.user, key_id=key.pk, network=where, now=now)
    place_label = place.label if place is not None else ""
    signature = api_key_signature(key.pk)
    label = f"API key “{key.name}”"[:160]
    _remember(user=key.user, signature=signature, network=where, label=label, place=place_label, now=now)
    if not new:
        return None
    return _notify(
        user=key.user,
        session=session,
        client=client,
        signature=signature,
        network=where,
        label=label,
        place=place_label,
        now=now,
        extra={"api_key_ref": f"{key.pk}:{key.name}"},
    )


def _remember(*, user: Any, signature: str, network: str, label: str, place: str, now: dt.datetime) -> None:
    """Insert or touch the (signature, network) pair. Logins of one user are serialised on the user
    row (`session_create`); a Bearer request is not, so a lost insert race becomes an update."""
    values = {"last_seen_at": now, "label": label[:160], "place": place[:200]}
    if KnownDevice.objects.filter(user=user, signature=signature, network=network).update(**values):
        return
    try:
        with transaction.atomic():
            KnownDevice.objects.create(
                user=user, signature=signature, network=network, first_seen_at=now, **values
            )
    except IntegrityError:
        KnownDevice.objects.filter(user=user, signature=signature, network=network).update(**values)


def _notify(
    *,
    user: Any,
    session: UserSession | None,
    client: Client,
    signature: str,
    network: str,
    label: str,
    place: str,
    now: dt.datetime,
    extra: dict[str, Any] | None = None,
) -> SignInNotice:
    address = (client.address or "")[:45]
    notice = SignInNotice.objects.create(
        user=user,
        session=session,
        signature=signature[:200],
        network=network[:64],
        device_label=label[:160],
        place=place[:200],
        address=address,
        created_at=now,
    )
    audit_record(
        event=AuditEvent.NEW_SIGN_IN,
        success=True,
        username=user.get_username(),
        session=session.public_id if session is not None else None,
        address=client.origin,
        event_data={
            "notice": notice.pk,
            "device": notice.device_label,
            "address": address,
            "place": notice.place,
            "network": notice.network,
            **(extra or {}),
        },
    )
    events.notices_changed(user_pk=user.pk)
    if user.email:
        link = _link_url(notice, client)
        transaction.on_commit(functools.partial(_send_email, notice.pk, link), robust=True)
    return notice


# --- the email -------------------------------------------------------------------------------------


def link_token(notice: SignInNotice) -> str:
    """The signed, timestamped token of ``notice``'s "This wasn't me" link."""
    return signing.TimestampSigner(salt=LINK_SALT).sign(str(notice.pk))


def _link_base(client: Client) -> str | None:
    base = str(conf.get("SESSIONS_BASE_URL") or "").rstrip("/")
    if base:
        return base
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]  # as Django's own get_host
    host = client.host or ""
    domain, _ = split_domain_port(host)
    if not domain or "*" in allowed or not validate_host(domain, allowed):
        return None
    return f"{'https' if client.secure else 'http'}://{host}"


def _link_url(notice: SignInNotice, client: Client) -> str | None:
    base = _link_base(client)
    if base is None:
        logger.warning(
            "new-sign-in notice %s: no trusted base URL for its link; set SESSIONS_BASE_URL", notice.pk
        )
        return None
    return base + reverse("sessions_app:notice-link", args=[link_token(notice)])


def notice_email(*, notice: SignInNotice, link: str | None) -> EmailMultiAlternatives:
    """The email of ``notice`` (text and HTML) to its user's address, with the link (None: without)."""
    user = notice.user
    context = {
        "username": user.get_username(),
        "notice": notice,
        "api_key": api_key_id(notice.signature) is not None,
        "link": link,
        "link_days": LINK_MAX_AGE.days,
        "when": timezone.localtime(notice.created_at),
    }
    text = render_to_string("sessions_app/email/new_sign_in.txt", context)
    html = render_to_string("sessions_app/email/new_sign_in.html", context)
    subject = "New use of your API key" if context["api_key"] else "New sign-in to your account"
    message = EmailMultiAlternatives(subject, text, settings.DEFAULT_FROM_EMAIL, [user.email])
    message.attach_alternative(html, "text/html")
    return message


def _send_email(notice_pk: int, link: str | None) -> None:
    """After the commit: send the notice's email and note when; a failure is logged, never raised,
    and the log names neither the link nor the address."""
    try:
        notice = SignInNotice.objects.select_related("user").get(pk=notice_pk)
        notice_email(notice=notice, link=link).send()
        SignInNotice.objects.filter(pk=notice_pk).update(emailed_at=timezone.now())
    except Exception as exc:
        logger.warning("new-sign-in notice %s: the email was not sent (%s)", notice_pk, type(exc).__name__)


# --- answers --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkCheck:
    """What a "This wasn't me" token is: ``state`` is ``valid``, ``invalid`` (tampered, unknown),
    ``expired`` or ``used``; ``notice`` is set when ``valid``."""

    state: str
    notice: SignInNotice | None = None


def notice_link_check(*, token: str) -> LinkCheck:
    """Check a link's token without using it."""
    signer = signing.TimestampSigner(salt=LINK_SALT)
    try:
        value = signer.unsign(token, max_age=LINK_MAX_AGE)
    except signing.SignatureExpired:
        return LinkCheck("expired")
    except signing.BadSignature:
        return LinkCheck("invalid")
    notice = (
        SignInNotice.objects.select_related("user").filter(pk=int(value)).first() if value.isdigit() else None
    )
    if notice is None:
        return LinkCheck("invalid")
    if notice.link_used_at is not None or notice.answer == DENIED:
        return LinkCheck("used")
    return LinkCheck("valid", notice)


def sign_in_notice_confirm(*, notice: SignInNotice, client: Client, session: UserSession) -> bool:
    """ "Yes, it was me" (the banner of ``session``): the pair is confirmed for good. Once per
    notice: False when it was already answered."""
    now = timezone.now()
    with transaction.atomic():
        if not SignInNotice.objects.filter(pk=notice.pk, answered_at__isnull=True).update(
            answered_at=now, answer=CONFIRMED
        ):
            return False
        pair = {"user_id": notice.user_id, "signature": notice.signature, "network": notice.network}
        if not KnownDevice.objects.filter(**pair).update(confirmed=True):
            KnownDevice.objects.create(
                **pair,
                label=notice.device_label,
                place=notice.place,
                first_seen_at=notice.created_at,
                last_seen_at=notice.created_at,
                confirmed=True,
            )
        _audit_answer(notice, "sign_in_notice.confirm", client, session, via="banner")
        events.notices_changed(user_pk=notice.user_id)
    return True


def sign_in_notice_deny(
    *, notice: SignInNotice, client: Client, via: str, session: UserSession | None = None
) -> int | None:
    """ "No -- end it" (``via`` ``banner``, from ``session``) or "This wasn't me" (``via`` ``email``,
    the link): see the module docstring. Once per notice and per link: None when the notice was
    already denied (or, by link, the link already used); else how many sessions ended."""
    now = timezone.now()
    user = notice.user
    with transaction.atomic():
        claim = SignInNotice.objects.filter(pk=notice.pk).exclude(answer=DENIED)
        if via == "email":
            claim = claim.filter(link_used_at__isnull=True)
            claimed = claim.update(answered_at=now, answer=DENIED, link_used_at=now)
        else:
            claimed = claim.filter(answered_at__isnull=True).update(answered_at=now, answer=DENIED)
        if not claimed:
            return None
        key_id = api_key_id(notice.signature)
        if key_id is not None:
            ended = _revoke_key(key_id, user, client)
        else:
            ended = sessions_end(
                sessions=_same_device_sessions(notice),
                reason=EndReason.TERMINATED,
                actor=user.get_username(),
                address=client.origin,
                now=now,
            )
            PasswordChangeDemand.objects.update_or_create(
                user=user, defaults={"reason": f"new sign-in #{notice.pk} denied ({via})", "created_at": now}
            )
        # Forgotten: the next login from this pair is a notice again.
        KnownDevice.objects.filter(user=user, signature=notice.signature, network=notice.network).delete()
        _audit_answer(notice, "sign_in_notice.deny", client, session, via=via, ended=ended)
        events.notices_changed(user_pk=notice.user_id)
    return ended


def _same_device_sessions(notice: SignInNotice) -> QuerySet[UserSession]:
    """The notice's session and every other active session of its user from the same device."""
    browser, _, rest = notice.signature.partition("|")
    system, _, family = rest.partition("|")
    same = Q()
    for column, value in (("device_browser", browser), ("device_os", system), ("device_family", family)):
        same &= Q(**{column: value}) if value else Q(**{f"{column}__isnull": True}) | Q(**{column: ""})
    sessions = UserSession.objects.filter(user_id=notice.user_id, ended_at__isnull=True, internal=False)
    sessions = sessions.exclude(credentials__in=_DEVICELESS)
    if notice.session_id is not None:
        return sessions.filter(same | Q(pk=notice.session_id))
    return sessions.filter(same)


def _revoke_key(key_id: int, user: Any, client: Client) -> int:
    key = ApiKey.objects.filter(pk=key_id, user=user).first()
    if key is None or key.revoked:
        return 0
    active = UserSession.objects.filter(api_key_id=key.pk, ended_at__isnull=True).count()
    api_key_revoke(
        key=key,
        reason="Its owner reported a use that was not theirs",
        actor=user.get_username(),
        address=client.origin,
    )
    return active


def _audit_answer(
    notice: SignInNotice, method: str, client: Client, session: UserSession | None, **data: Any
) -> None:
    audit_record(
        event=AuditEvent.METHOD_CALL,
        success=True,
        username=notice.user.get_username(),
        session=session.public_id if session is not None else None,
        address=client.origin,
        event_data={"method": method, "notice": notice.pk, "device": notice.device_label, **data},
    )


# --- known devices and password-change demands ---------------------------------------------------------


def known_device_forget(*, device: KnownDevice, actor: str | None, client: Client) -> None:
    """Forget a remembered device (its next login is a notice again, confirmed or not); audited."""
    with transaction.atomic():
        deleted = KnownDevice.objects.filter(pk=device.pk).delete()[0]
        if deleted:
            audit_record(
                event=AuditEvent.METHOD_CALL,
                success=True,
                username=actor,
                address=client.origin,
                event_data={
                    "method": "known_device.forget",
                    "target_username": device.user.get_username(),
                    "device": device.label,
                    "network": device.network,
                },
            )


def password_change_demand_clear(*, user: Any) -> None:
    """The user changed their password: a demand from a denied sign-in is met."""
    PasswordChangeDemand.objects.filter(user=user).delete()
