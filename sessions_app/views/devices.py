"""Browser pages of known devices and new-sign-in notices (issue 16). Thin, like `sessions_app.views`:
a read through `devices.known`, one service of `services.notices` for a change.

* ``/me/devices/``: the caller's remembered devices (API keys' networks included), each with a
  "Forget" POST form; another user's device is a 404.
* ``/me/notices/``: the banner alone (``partials/notices.html``), fetched again by ``notices.js``
  when the notice stream says a notice changed; ``.../<id>/confirm/`` and ``.../<id>/deny/`` answer
  one, once, as POST forms. Only the sessions that show a notice in their banner may answer it
  (`devices.known.notice_list_open`): interactive sessions, not the notice's own session and not
  one from the same device signature. Another user's notice is a 404; an own notice answered
  already is a message.
* ``/sign-in-notices/<token>/``: the email's "This wasn't me" link, without login. GET shows what
  the email said and a button; the POST acts (a mail scanner's GET changes nothing). A tampered or
  unknown token is 400, an expired or used one 410, each with a page that says so and nothing more.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_http_methods

from sessions_app import conf
from sessions_app.auth.clients import client_from_request
from sessions_app.auth.request import RegistryRequest
from sessions_app.auth.roles import Role, user_roles
from sessions_app.devices import known
from sessions_app.models import SignInNotice
from sessions_app.services import notices as notice_services
from sessions_app.views.base import current_session, page

LINK_STATUS = {"invalid": 400, "expired": 410, "used": 410}


def _render(request: HttpRequest, template: str, context: dict[str, Any], status: int = 200) -> HttpResponse:
    roles = user_roles(request.user)
    context.setdefault("roles", {role.name: role in roles for role in Role})
    context.setdefault("now", timezone.now())
    return render(request, f"sessions_app/{template}", context, status=status)


def _next_url(request: HttpRequest, value: str | None) -> str:
    if not value or not url_has_allowed_host_and_scheme(
        value, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return reverse("sessions_app:home")
    return value


# --- known devices ------------------------------------------------------------------------------------


@page()
def known_device_list(request: HttpRequest) -> HttpResponse:
    """The caller's remembered devices, the most recently seen first."""
    context = {
        "devices": known.known_device_list(user=request.user),
        "notice_days": conf.get("SESSIONS_NOTICE_DAYS"),
    }
    return _render(request, "knowndevice_list.html", context)


@page(methods=("POST",))
def known_device_forget(request: HttpRequest, pk: int) -> HttpResponse:
    device = known.known_device_get(user=request.user, pk=pk)
    if device is None:
        raise Http404("No such device.")
    notice_services.known_device_forget(
        device=device, actor=request.user.get_username(), client=client_from_request(request)
    )
    messages.success(
        request, f"“{device.label or 'Unknown device'}” was forgotten: its next sign-in is reported."
    )
    return HttpResponseRedirect(reverse("sessions_app:known-device-list"))


# --- the banner ---------------------------------------------------------------------------------------


@page()
def notice_banner(request: HttpRequest) -> HttpResponse:
    """The banner alone, for the page that ``?next=`` names (its forms come back there)."""
    context = {"notices_next": _next_url(request, request.GET.get("next"))}
    return render(request, "sessions_app/partials/notices.html", context)


def _answerable(request: RegistryRequest, pk: int) -> SignInNotice | None:
    """The notice ``pk`` if this session may answer it; None if it is the caller's but not open here
    (answered already); 404 if it is not the caller's."""
    notice = known.notice_get_open(session=current_session(request), pk=pk)
    if notice is None and known.notice_get(user=request.user, pk=pk) is None:
        raise Http404("No such notice.")
    return notice


ALREADY_ANSWERED = "That sign-in was already answered."


@page(methods=("POST",))
def notice_confirm(request: RegistryRequest, pk: int) -> HttpResponse:
    """ "Yes, it was me": that device on that network is confirmed."""
    next_url = _next_url(request, request.POST.get("next"))
    notice = _answerable(request, pk)
    if notice is None or not notice_services.sign_in_notice_confirm(
        notice=notice,
        client=client_from_request(request),
        session=current_session(request),
    ):
        messages.info(request, ALREADY_ANSWERED)
        return HttpResponseRedirect(next_url)
    messages.success(request, f"Thanks. {notice.device_label} is now one of your confirmed devices.")
    return HttpResponseRedirect(next_url)


@page(methods=("POST",))
def notice_deny(request: RegistryRequest, pk: int) -> HttpResponse:
    """ "No -- end it": the sessions from that device end and a new password is asked for (an API
    key's notice: the key is revoked)."""
    next_url = _next_url(request, request.POST.get("next"))
    notice = _answerable(request, pk)
    ended = None
    if notice is not None:
        ended = notice_services.sign_in_notice_deny(
            notice=notice,
            client=client_from_request(request),
            via="banner",
            session=request.auth_session,
        )
    if notice is None or ended is None:  # (no notice: nothing ended)
        messages.info(request, ALREADY_ANSWERED)
        return HttpResponseRedirect(next_url)
    if known.api_key_id(notice.signature) is not None:
        messages.success(request, f"{notice.device_label} was revoked; its sessions have ended.")
        return HttpResponseRedirect(next_url)
    messages.warning(
        request,
        f"The sign-in from {notice.device_label} was ended ({ended} session{'s' if ended != 1 else ''} "
        "from that device). Whoever it was knew your password: choose a new one now.",
    )
    return HttpResponseRedirect(reverse("sessions_app:password-change"))


# --- the email's link --------------------------------------------------------------------------------


def notice_link(request: HttpRequest, token: str) -> HttpResponse:
    """ "This wasn't me", from the email: no login needed, acts once, on POST."""
    check = notice_services.notice_link_check(token=token)
    if check.notice is None:
        return _render(
            request, "signinnotice_link.html", {"state": check.state}, status=LINK_STATUS[check.state]
        )
    notice = check.notice
    context: dict[str, Any] = {
        "state": "confirm",
        "notice": notice,
        "api_key": known.api_key_id(notice.signature) is not None,
    }
    if request.method == "POST" and request.POST.get("confirm"):
        ended = notice_services.sign_in_notice_deny(
            notice=notice, client=client_from_request(request), via="email"
        )
        if ended is None:  # a concurrent click used it first
            return _render(request, "signinnotice_link.html", {"state": "used"}, status=410)
        context["state"] = "done"
    return _render(request, "signinnotice_link.html", context)


notice_link = never_cache(csrf_exempt(require_http_methods(["GET", "POST"])(csrf_protect(notice_link))))
