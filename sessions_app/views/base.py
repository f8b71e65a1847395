"""What every browser page shares: the `page` decorator, the sign-in redirect, rendering."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, cast

from django.contrib import messages
from django.contrib.messages.storage.base import BaseStorage
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_http_methods
from django.views.defaults import page_not_found, permission_denied

from sessions_app import tables
from sessions_app.auth.clients import client_from_request
from sessions_app.auth.request import RegistryRequest
from sessions_app.auth.roles import Role, has_role
from sessions_app.exceptions import QueryTimeout
from sessions_app.forms import (
    PasswordConfirmForm,
    QueryFilterForm,
)
from sessions_app.middleware import (
    EndedSession,
    ended_session,
)
from sessions_app.models import AuditEvent, EndReason, UserSession
from sessions_app.query import QueryError
from sessions_app.services import stepup
from sessions_app.services.login_results import has_totp

GENERIC_ERROR = "The username or password is not correct, or the account cannot sign in right now."
PAGE_SIZE = 50
STEPUP_ERROR = "That password (or code) is not correct, or the account cannot sign in right now."

View = Callable[..., HttpResponse]


def _local_url(request: HttpRequest, target: str | None, default: str) -> str:
    if not target or not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return default
    return target


def _next_url(request: HttpRequest) -> str:
    return _local_url(request, request.POST.get("next") or request.GET.get("next"), "/")


def _browser_view(view: View, methods: tuple[str, ...]) -> View:
    """no-store; a method the page does not serve is a 405 with ``Allow`` before any CSRF check
    (the CSRF middleware is skipped for the method check only, then applied by `csrf_protect`)."""
    return never_cache(csrf_exempt(require_http_methods(list(methods))(csrf_protect(view))))


def page(
    *, role: Role | None = None, methods: tuple[str, ...] = ("GET",), before_password_change: bool = False
) -> Callable[[View], View]:
    """A signed-in browser page: no-store, CSRF, allowed methods, session, password change, role."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def wrapper(request: RegistryRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            session = request.auth_session
            if session is None:
                return _to_sign_in(request)
            if session.password_change_required and not before_password_change:
                return HttpResponseRedirect(reverse("sessions_app:password-change"))
            # 403 and 404 are answered here, so that they are no-store like every page.
            if role is not None and not has_role(request.user, role):
                return permission_denied(request, PermissionDenied(f"This page needs the {role} role."))
            try:
                return view(request, *args, **kwargs)
            except Http404 as exc:
                return page_not_found(request, exc)

        return _browser_view(wrapper, methods)

    return decorate


def current_session(request: RegistryRequest) -> UserSession:
    """The caller's session, in a view that `page` wraps: the decorator sends a request without one
    to the sign-in page before the view runs, so there always is one here."""
    session = request.auth_session
    if session is None:
        raise RuntimeError("current_session() outside a @page view: the request has no session")
    return session


#: Why a session ended, in words, for the one who held it (the sign-in page's message).
_ENDED_BECAUSE: dict[str, str] = {
    EndReason.LOGOUT: "signed out",
    EndReason.EXPIRED: "it reached its time limit",
    EndReason.IDLE: "inactive for too long",
    EndReason.PASSWORD_CHANGED: "the password was changed",
    EndReason.USER_DISABLED: "the account was disabled",
    EndReason.CREDENTIAL_REVOKED: "its credential was revoked",
    EndReason.PARENT_ENDED: "the session it came from ended",
    EndReason.EVICTED: "too many sessions were open",
}


def _ended_message(ended: EndedSession) -> str:
    because = _ENDED_BECAUSE.get(ended.reason or "", "")
    if ended.reason == EndReason.TERMINATED:
        because = "terminated"
        if ended.by_owner:
            because = "terminated from another session"
        elif ended.by_other:
            because = "terminated by an administrator"
    return f"Your session was ended ({because})." if because else "Your session was ended."


def _to_sign_in(request: HttpRequest) -> HttpResponse:
    """The sign-in page (coming back here after it). A browser whose cookie names a session that has
    ended is told so, and why, on every page it opens until it signs in again (which replaces the
    cookie): the cookie is kept, so that a live page's own reload and the user's next click both
    say it -- whichever comes first does not take the message from the other. Only the holder of
    that cookie is told: a value that names no session (forged, mistyped, purged) is answered like
    no cookie at all. The dashboard's background refresh (``fetch``, not a navigation) leaves the
    message to the reload that follows it."""
    response = HttpResponseRedirect(f"{reverse('sessions_app:sign-in')}?{urlencode({'next': request.path})}")
    if request.headers.get("Sec-Fetch-Mode", "navigate") != "navigate":
        return response
    ended = ended_session(request)
    if ended is not None:
        text = _ended_message(ended)
        # A list only without MessageMiddleware, which settings.MIDDLEWARE always installs.
        queued = cast(BaseStorage, messages.get_messages(request))
        already = any(str(message) == text for message in queued)
        queued.used = False  # looking is not showing: the queued messages stay for the page
        if not already:  # two redirects before a page shows (a live reload, then a click): once
            messages.info(request, text)
    return response


def _render(request: HttpRequest, template: str, context: dict[str, Any], status: int = 200) -> HttpResponse:
    """A page of this app; ``roles`` comes from `sessions_app.context_processors.roles` (every page,
    the error pages too)."""
    context.setdefault("now", timezone.now())
    return render(request, f"sessions_app/{template}", context, status=status)


def _sentence(message: str) -> str:
    """A service message as a form error: capitalised, with a full stop."""
    message = message[:1].upper() + message[1:]
    return message if message.endswith(".") else f"{message}."


def _stepup_form(
    request: RegistryRequest, *, submitted: bool, second_factor: bool | None = None
) -> PasswordConfirmForm | None:
    """The password (and code) fields a form needs when the session has not proven the password
    within the step-up window (security.md F2), or None when it has; bound when ``submitted``.
    With ``second_factor`` None the code is asked when the account has a second factor (a query
    made only when the fields are needed)."""
    if stepup.stepup_recent(session=request.auth_session):
        return None
    if second_factor is None:
        second_factor = has_totp(request.user)
    data = request.POST if submitted else None
    return PasswordConfirmForm(data, prefix="stepup", second_factor=second_factor)


def _stepped_up(request: RegistryRequest, form: PasswordConfirmForm | None, purpose: str) -> bool:
    """Check a step-up form (None: not needed); a wrong answer is an error on its fields."""
    if form is None:
        return True
    if not form.is_valid():
        return False
    if stepup.stepup_verify(
        user=request.user,
        session=request.auth_session,
        client=client_from_request(request),
        password=form.cleaned_data["password"],
        otp_token=form.cleaned_data.get("otp_token"),
        purpose=purpose,
    ):
        return True
    form.add_error(None, STEPUP_ERROR)
    return False


def _page_arguments(form: QueryFilterForm) -> dict[str, Any]:
    data = form.cleaned_data
    return {
        "sort": data["sort"],
        "descending": form.descending(),
        "cursor": data.get("cursor") or None,
        "backwards": bool(data.get("back")),
        "limit": PAGE_SIZE,
        "count": True,  # "1,234 matching" above the table (`tables.Page.matches`)
    }


def _filtered_page(form: QueryFilterForm, select: Callable[..., tables.Page]) -> tuple[Any, int]:
    """The page of the table that ``form`` filters, with its match count (`tables.Page.matches`),
    and the status: 400 with the mistakes on the form's fields, 503 when the database gave up."""
    if not form.is_valid():
        return None, 400
    try:
        return select(filters=form.filters(), **_page_arguments(form)), 200
    except QueryError as exc:
        form.add_query_error(exc)
        return None, 400
    except QueryTimeout as exc:  # the database cancelled it (security.md C20)
        form.add_error(None, _sentence(exc.reason))
        return None, 503


def _with_devices(result: tables.Page | None) -> None:
    """Give the audit records of a page that opened a session (a successful sign-in names it) the
    ``device`` and ``location`` objects of that session, read in one query for the page."""
    records = [
        r for r in (result.rows if result is not None else ()) if r.get("session") and _opened_a_session(r)
    ]
    found = tables.session_devices(public_ids={r["session"] for r in records})
    for record in records:
        record.update(found.get(record["session"], {}))


def _opened_a_session(record: dict[str, Any]) -> bool:
    return bool(record["event"] == AuditEvent.AUTHENTICATION and record["success"])
