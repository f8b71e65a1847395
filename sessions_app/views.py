"""Browser pages. Thin: a form validates shape, one service decides (or selectors read), the page
renders.

Every page is ``Cache-Control: no-store`` (`never_cache`), CSRF-protected, and refuses methods it
does not serve with 405 and ``Allow``. Pages other than the sign-in ones need a browser session (the
``__Host-sid`` cookie; per-request credentials are for the APIs); a one-time-password session is sent
to the password page until it sets a new password. Role checks come before anything else, so a
caller without the role gets 403 whatever it posts. Destructive actions are POST forms reached
through a confirmation page that works without JavaScript; a POST without the confirmation field
only shows that page.
"""

from __future__ import annotations

import base64
import functools
import math
from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.core.cache import cache
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

from sessions_app import charts, selectors, throttle
from sessions_app.clients import client_from_request
from sessions_app.exceptions import InvalidParams, QueryTimeout
from sessions_app.forms import (
    ApiKeyCreateForm,
    ApiKeyRevokeForm,
    ApiKeyUpdateForm,
    AuditFilterForm,
    ConfirmForm,
    OtpForm,
    PasswordChangeForm,
    PasswordConfirmForm,
    QueryFilterForm,
    SessionFilterForm,
    SessionHistoryFilterForm,
    SessionTerminateForm,
    SignInForm,
    TotpConfirmForm,
)
from sessions_app.middleware import (
    EndedSession,
    clear_pending_cookie,
    clear_session_cookie,
    ended_session,
    pending_cookie,
    set_pending_cookie,
    set_session_cookie,
)
from sessions_app.models import AuditEvent, EndReason
from sessions_app.query import QueryError
from sessions_app.roles import Role, has_role, user_roles
from sessions_app.services import api_keys as api_key_services
from sessions_app.services import stepup
from sessions_app.services import totp as totp_services
from sessions_app.services.login import LoginResult, has_totp, login_ex, login_ex_continue
from sessions_app.services.sessions import (
    session_logout,
    session_terminate,
    session_terminate_others,
)
from sessions_app.services.users import user_change_password

GENERIC_ERROR = "The username or password is not correct, or the account cannot sign in right now."
PAGE_SIZE = 50

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
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            session = request.auth_session  # type: ignore[attr-defined]
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


#: Why a session ended, in words, for the one who held it (the sign-in page's message).
_ENDED_BECAUSE = {
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
        queued = messages.get_messages(request)
        already = any(str(message) == text for message in queued)
        queued.used = False  # looking is not showing: the queued messages stay for the page
        if not already:  # two redirects before a page shows (a live reload, then a click): once
            messages.info(request, text)
    return response


def _render(request: HttpRequest, template: str, context: dict[str, Any], status: int = 200) -> HttpResponse:
    roles = user_roles(request.user)
    context.setdefault("roles", {role.name: role in roles for role in Role})
    context.setdefault("now", timezone.now())
    return render(request, f"sessions_app/{template}", context, status=status)


# --- sign in / out --------------------------------------------------------------------------------------


def _finish(request: HttpRequest, result: LoginResult, next_url: str) -> HttpResponse:
    assert result.new_session is not None  # the login ended the browser's previous session (replaces=)
    if result.new_session.session.password_change_required:
        next_url = reverse("sessions_app:password-change")
    response = HttpResponseRedirect(next_url)
    set_session_cookie(response, result.new_session.secret)
    clear_pending_cookie(response)
    return response


def _sentence(message: str) -> str:
    """A service message as a form error: capitalised, with a full stop."""
    message = message[:1].upper() + message[1:]
    return message if message.endswith(".") else f"{message}."


def _wait_message(seconds: float) -> str:
    if seconds > 90:
        return f"about {math.ceil(seconds / 60)} minutes"
    return f"{max(1, math.ceil(seconds))} seconds"


def _failure_message(username: str) -> str:
    """The generic error, or the wait when the account name is locked (names are locked whether the
    account exists or not, so this reveals nothing about accounts)."""
    until = throttle.locked_until(username=username[:150]) if username else None
    if until is None:
        return GENERIC_ERROR
    wait = _wait_message((until - timezone.now()).total_seconds())
    return f"Too many failed attempts for this account. Try again in {wait}."


def _login_limited(request: HttpRequest, client: Any, context: dict[str, Any]) -> HttpResponse | None:
    """The sign-in page with 429 when the address is over the login limit that every login entrance
    shares (security.md F4); None when this attempt may go on (it is counted)."""
    retry_after = throttle.hit_login_limit(address=client.rate_key)
    if retry_after is None:
        return None
    context["error"] = f"Too many attempts from your address. Try again in {_wait_message(retry_after)}."
    response = _render(request, "sign_in.html", context, status=429)
    response["Retry-After"] = str(retry_after)
    return response


def sign_in(request: HttpRequest) -> HttpResponse:
    """Password, then the second factor when the account has one (``login_ex`` semantics)."""
    client = client_from_request(request)
    next_url = _next_url(request)
    form = SignInForm(request.POST or None)
    context: dict[str, Any] = {"form": form, "next": next_url}
    if request.method == "POST":
        limited = _login_limited(request, client, context)
        if limited is not None:
            return limited
        if form.is_valid():
            result = login_ex(
                params={"mechanism": "PASSWORD_PLAIN", **form.cleaned_data},
                client=client,
                pending_secret=pending_cookie(request),
                replaces=request.auth_session,  # type: ignore[attr-defined]
            )
            if result.ok:
                return _finish(request, result, next_url)
            if result.pending_secret is not None:
                response = _render(request, "sign_in_otp.html", {"form": OtpForm(), "next": next_url})
                set_pending_cookie(response, result.pending_secret, max_age=300)
                return response
            context["error"] = _failure_message(form.cleaned_data["username"])
            return _render(request, "sign_in.html", context, status=401)
    return _render(request, "sign_in.html", context)


def sign_in_otp(request: HttpRequest) -> HttpResponse:
    client = client_from_request(request)
    next_url = _next_url(request)
    limited = _login_limited(request, client, {"form": SignInForm(), "next": next_url})
    if limited is not None:
        return limited
    form = OtpForm(request.POST)
    if form.is_valid():
        result = login_ex_continue(
            params={"mechanism": "OTP_TOKEN", **form.cleaned_data},
            client=client,
            pending_secret=pending_cookie(request),
            replaces=request.auth_session,  # type: ignore[attr-defined]
        )
        if result.ok:
            return _finish(request, result, next_url)
        if result.pending_cleared or not pending_cookie(request):
            response = _render(
                request,
                "sign_in.html",
                {"form": SignInForm(), "next": next_url, "error": GENERIC_ERROR},
                status=401,
            )
            clear_pending_cookie(response)
            return response
        form.add_error("otp_token", "That code is not valid. Try the current code.")
    return _render(request, "sign_in_otp.html", {"form": form, "next": next_url}, status=401)


def sign_out(request: HttpRequest) -> HttpResponse:
    session = request.auth_session  # type: ignore[attr-defined]
    if session is not None:
        session_logout(session=session, client=client_from_request(request))
    response = HttpResponseRedirect(reverse("sessions_app:sign-in"))
    clear_session_cookie(response)
    response["Clear-Site-Data"] = '"cache", "cookies", "storage"'
    return response


sign_in = _browser_view(sign_in, ("GET", "POST"))
sign_in_otp = _browser_view(sign_in_otp, ("POST",))
sign_out = _browser_view(sign_out, ("POST",))


def admin_sign_in(request: HttpRequest, extra_context: Any = None) -> HttpResponse:
    """Django admin's login: the registry's own sign-in page (same policy, lockout and audit)."""
    session = getattr(request, "auth_session", None)
    if session is not None and session.password_change_required:
        return HttpResponseRedirect(reverse("sessions_app:password-change"))
    target = request.GET.get("next", "/admin/")
    if not target.startswith("/") or target.startswith("//"):
        return HttpResponseRedirect(reverse("sessions_app:sign-in"))
    return HttpResponseRedirect(f"{reverse('sessions_app:sign-in')}?{urlencode({'next': target})}")


@page()
def home(request: HttpRequest) -> HttpResponse:
    if has_role(request.user, Role.AUTH_SESSIONS_READ):
        return HttpResponseRedirect(reverse("sessions_app:session-list"))
    return HttpResponseRedirect(reverse("sessions_app:my-session-list"))


@page(methods=("GET", "POST"), before_password_change=True)
def password_change(request: HttpRequest) -> HttpResponse:
    """Set a new password; forced (without the current one) after a one-time-password sign-in.

    The session survives with a new secret (the cookie is re-set); every other session ends.
    """
    session = request.auth_session  # type: ignore[attr-defined]
    forced = session.password_change_required
    form = PasswordChangeForm(request.POST or None, current=not forced)
    if request.method == "POST" and form.is_valid():
        fields = {
            "current_password": "current_password",
            "new_password_again": "new_password2",
            "new_password": "new_password1",
        }
        try:
            secret = user_change_password(
                user=request.user,
                session=session,
                client=client_from_request(request),
                current_password=form.cleaned_data.get("current_password"),
                new_password=form.cleaned_data["new_password1"],
                new_password_again=form.cleaned_data["new_password2"],
                purpose="web.password_change",
            )
        except InvalidParams as exc:
            for field, message in exc.errors:
                form.add_error(fields[field], _sentence(message))
        else:
            response = HttpResponseRedirect(reverse("sessions_app:home"))
            assert secret is not None
            set_session_cookie(response, secret)
            messages.success(request, "Your password was changed. Your other sessions have ended.")
            return response
    status = 400 if request.method == "POST" else 200
    return _render(request, "user_password_form.html", {"form": form, "forced": forced}, status=status)


# --- sessions -----------------------------------------------------------------------------------------


def _page_arguments(form: QueryFilterForm) -> dict[str, Any]:
    data = form.cleaned_data
    return {
        "sort": data["sort"],
        "descending": form.descending(),
        "cursor": data.get("cursor") or None,
        "backwards": bool(data.get("back")),
        "limit": PAGE_SIZE,
    }


def _filtered_page(form: QueryFilterForm, select: Callable[..., selectors.Page]) -> tuple[Any, int]:
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


def _with_devices(result: selectors.Page | None) -> None:
    """Give the audit records of a page that opened a session (a successful sign-in names it) the
    ``device`` and ``location`` objects of that session, read in one query for the page."""
    records = [
        r for r in (result.rows if result is not None else ()) if r.get("session") and _opened_a_session(r)
    ]
    found = selectors.session_devices(public_ids={r["session"] for r in records})
    for record in records:
        record.update(found.get(record["session"], {}))


CHARTS_TTL = 30  # seconds


def _dashboard_charts() -> dict[str, Any]:
    """The three charts, drawn from aggregates at most `CHARTS_TTL` seconds old.

    Counting 700,000 active sessions by type takes 200-400 ms on PostgreSQL whatever the index; the
    table below the charts is always live, the charts say when they were computed.
    """

    def compute() -> dict[str, Any]:
        types = selectors.session_counts_by_credentials()
        hours = selectors.audit_logins_per_hour()
        return {
            "chart_types": charts.bar_chart(
                types, title="Active sessions by credential type", chart_id="chart-types"
            ),
            "chart_logins": charts.logins_chart(
                hours, title="Successful logins per hour, last 24 hours", chart_id="chart-logins"
            ),
            "chart_failures": charts.failures_chart(
                hours, title="Failed logins per hour, last 24 hours", chart_id="chart-failures"
            ),
            "active_total": sum(count for _, count in types),
            "logins_total": sum(ok for _, ok, _ in hours),
            "failures_total": sum(failed for _, _, failed in hours),
            "charts_at": timezone.now(),
        }

    return cache.get_or_set("sessions_app:dashboard-charts", compute, CHARTS_TTL)  # type: ignore[no-any-return]


@page(role=Role.AUTH_SESSIONS_READ)
def session_list(request: HttpRequest) -> HttpResponse:
    """The sessions dashboard: active sessions, filters, keyset pages and the three charts."""
    current = request.auth_session  # type: ignore[attr-defined]
    form = SessionFilterForm(request.GET)
    result, status = _filtered_page(
        form, functools.partial(selectors.session_page, current_pk=current.pk, device=True)
    )
    context = {
        "form": form,
        "page": result,
        "tab": "active",
        "can_terminate": has_role(request.user, Role.AUTH_SESSIONS_WRITE),
        **_dashboard_charts(),
    }
    return _render(request, "session_list.html", context, status=status)


@page(role=Role.AUTH_SESSIONS_READ)
def session_history(request: HttpRequest) -> HttpResponse:
    """Ended sessions: when, why (end reason) and by whom."""
    form = SessionHistoryFilterForm(request.GET)
    result, status = _filtered_page(
        form, functools.partial(selectors.session_page, history=True, device=True)
    )
    return _render(
        request, "session_history.html", {"form": form, "page": result, "tab": "history"}, status=status
    )


@page(role=Role.AUTH_SESSIONS_WRITE, methods=("GET", "POST"))
def session_terminate_view(request: HttpRequest, public_id: str) -> HttpResponse:
    """Confirm, then end any active session (``auth.terminate_session``)."""
    return _terminate(request, public_id, owner=None, back=reverse("sessions_app:session-list"))


@page(methods=("GET", "POST"))
def my_session_terminate(request: HttpRequest, public_id: str) -> HttpResponse:
    """Confirm, then end one of the caller's own sessions; another user's id is a 404."""
    return _terminate(request, public_id, owner=request.user, back=reverse("sessions_app:my-session-list"))


def _terminate(request: HttpRequest, public_id: str, *, owner: Any, back: str) -> HttpResponse:
    target = selectors.session_get_active(public_id=public_id, user=owner)
    if target is None:
        raise Http404("No active session has this id.")
    form = SessionTerminateForm(request.POST if request.method == "POST" else None)
    next_url = _local_url(request, request.POST.get("next") or request.GET.get("next"), back)
    if request.method == "POST" and form.is_valid():
        ended = session_terminate(
            public_id=public_id, actor=request.auth_session, client=client_from_request(request)
        )
        if ended:
            messages.success(
                request, f"Session {public_id[:12]}… of {target.username or '—'} was terminated."
            )
        else:
            messages.info(request, "That session had already ended.")
        return HttpResponseRedirect(next_url)
    context = {
        "target": target,
        "form": form,
        "next": next_url,
        "is_current": target.pk == request.auth_session.pk,  # type: ignore[attr-defined]
        "action": request.path,
    }
    return _render(request, "session_confirm_terminate.html", context)


@page(role=Role.AUTH_SESSIONS_WRITE, methods=("GET", "POST"))
def session_terminate_others_view(request: HttpRequest) -> HttpResponse:
    """Confirm, then end every other active session but internal ones (``auth.terminate_other_sessions``)."""
    return _terminate_others(request, own_only=False, back=reverse("sessions_app:session-list"))


@page(methods=("GET", "POST"))
def my_session_terminate_others(request: HttpRequest) -> HttpResponse:
    """Confirm, then end the caller's other sessions."""
    return _terminate_others(request, own_only=True, back=reverse("sessions_app:my-session-list"))


def _terminate_others(request: HttpRequest, *, own_only: bool, back: str) -> HttpResponse:
    form = ConfirmForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        count = session_terminate_others(
            current=request.auth_session,  # type: ignore[attr-defined]
            client=client_from_request(request),
            own_only=own_only,
        )
        messages.success(request, f"{count} other session{'s' if count != 1 else ''} terminated.")
        return HttpResponseRedirect(back)
    context = {"form": form, "own_only": own_only, "back": back, "action": request.path}
    return _render(request, "session_confirm_terminate_others.html", context)


@page()
def my_session_list(request: HttpRequest) -> HttpResponse:
    """The caller's own active sessions, the current one marked."""
    current = request.auth_session  # type: ignore[attr-defined]
    form = SessionFilterForm(request.GET)
    result, status = _filtered_page(
        form, functools.partial(selectors.session_page, user=request.user, current_pk=current.pk, device=True)
    )
    return _render(request, "session_list_mine.html", {"form": form, "page": result}, status=status)


# --- API keys -----------------------------------------------------------------------------------------


def _key_form_errors(form: ApiKeyCreateForm | ApiKeyUpdateForm | ConfirmForm, exc: InvalidParams) -> None:
    """The service's validation errors next to the form field they name (``api_key_create.name`` →
    ``name``); an error of the call as a whole (the key cap) above the form."""
    for attribute, message in exc.errors:
        field = attribute.rpartition(".")[2]
        form.add_error(field if "." in attribute and field in form.fields else None, message)


def _key_expired(key: Any) -> bool:
    return key.expires_at is not None and key.expires_at <= timezone.now()


def _key_scope(request: HttpRequest, role: Role) -> Any:
    """None (every user's keys) with ``role``, else the caller: others' keys are then 404s."""
    return None if has_role(request.user, role) else request.user


@page(methods=("GET", "POST"))
def api_key_list(request: HttpRequest) -> HttpResponse:
    """The caller's API keys (everyone's with ``API_KEY_READ`` and ``?all=1``); create one."""
    can_choose_user = has_role(request.user, Role.API_KEY_WRITE)
    form = ApiKeyCreateForm(request.POST or None, can_choose_user=can_choose_user)
    # A key is a new credential of the account: the password (and code) again first (F2).
    stepup_form = _stepup_form(request, submitted=request.method == "POST")
    stepup_ok = True
    if request.method == "POST" and form.is_valid():
        stepup_ok = _stepped_up(request, stepup_form, "api_key.create")
        if stepup_ok:
            stepup_form = None  # proven now: not asked again on this page
    if request.method == "POST" and form.is_valid() and stepup_ok:
        owner = request.user
        username = form.cleaned_data.get("username")
        if username and username != request.user.get_username():
            owner = selectors.user_get_by_username(username=username)
            if owner is None:
                form.add_error("username", "There is no user with this name.")
        if not form.errors:
            try:
                key, plaintext = api_key_services.api_key_create(
                    user=owner,
                    name=form.cleaned_data["name"],
                    expires_at=form.cleaned_data.get("expires_at"),
                    actor=request.user.get_username(),
                    address=client_from_request(request).origin,
                )
            except InvalidParams as exc:
                _key_form_errors(form, exc)
            else:
                return _render(request, "apikey_created.html", {"key": key, "plaintext": plaintext})
    show_all = request.GET.get("all") == "1" and has_role(request.user, Role.API_KEY_READ)
    rows = selectors.api_key_rows(user=None if show_all else request.user)
    status = 400 if form.errors or not stepup_ok else 200
    context = {
        "form": form,
        "stepup_form": stepup_form,
        "rows": rows,
        "show_all": show_all,
        "now": timezone.now(),
    }
    return _render(request, "apikey_list.html", context, status=status)


@page(methods=("GET", "POST"))
def api_key_update(request: HttpRequest, key_id: int) -> HttpResponse:
    """Rename a key or change its expiry."""
    key = selectors.api_key_get(key_id=key_id, user=_key_scope(request, Role.API_KEY_WRITE))
    if key is None:
        raise Http404("No such API key.")
    initial = {"name": key.name, "expires_at": key.expires_at}
    form = ApiKeyUpdateForm(request.POST or None, initial=initial, current_expiry=key.expires_at)
    if request.method == "POST" and form.is_valid():
        try:
            api_key_services.api_key_update(
                key=key,
                name=form.cleaned_data["name"],
                expires_at=form.cleaned_data["expires_at"],
                actor=request.user.get_username(),
                address=client_from_request(request).origin,
            )
        except InvalidParams as exc:
            _key_form_errors(form, exc)
        else:
            messages.success(request, f"API key “{key.name}” was updated.")
            return HttpResponseRedirect(reverse("sessions_app:api-key-list"))
    status = 400 if form.errors else 200
    return _render(request, "apikey_form.html", {"form": form, "key": key}, status=status)


@page(methods=("GET", "POST"))
def api_key_reset(request: HttpRequest, key_id: int) -> HttpResponse:
    """Confirm (with the step-up, F2), then give a key a new secret (shown once); the old one stops
    working at once."""
    key = selectors.api_key_get(key_id=key_id, user=_key_scope(request, Role.API_KEY_WRITE))
    if key is None:
        raise Http404("No such API key.")
    form = ConfirmForm(request.POST if request.method == "POST" else None)
    # Bound once the confirmation is posted: the list's button only opens this page.
    submitted = request.method == "POST" and "confirm" in request.POST
    stepup_form = _stepup_form(request, submitted=submitted)
    expired = _key_expired(key)
    if submitted and form.is_valid() and expired:
        # Refused before the password is asked: a new secret for an expired key could never be used.
        form.add_error(None, "This key has expired: give it a later expiry (Edit) before resetting it.")
    elif submitted and form.is_valid() and _stepped_up(request, stepup_form, "api_key.reset"):
        try:
            key, plaintext = api_key_services.api_key_update(
                key=key,
                reset=True,
                actor=request.user.get_username(),
                address=client_from_request(request).origin,
            )
        except InvalidParams as exc:  # expired since the check above
            _key_form_errors(form, exc)
        else:
            context = {"key": key, "plaintext": plaintext, "reset": True}
            return _render(request, "apikey_created.html", context)
    context = {"form": form, "stepup_form": stepup_form, "key": key, "action": "reset", "expired": expired}
    refused = submitted and bool(form.errors)  # a bare POST (the list's button) only asks
    status = 400 if refused or (stepup_form is not None and stepup_form.errors) else 200
    return _render(request, "apikey_confirm.html", context, status=status)


@page(methods=("GET", "POST"))
def api_key_revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    """Confirm, then revoke a key (it stays listed, and its sessions end)."""
    key = selectors.api_key_get(key_id=key_id, user=_key_scope(request, Role.API_KEY_WRITE))
    if key is None:
        raise Http404("No such API key.")
    form = ApiKeyRevokeForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        api_key_services.api_key_revoke(
            key=key,
            reason=form.cleaned_data["reason"],
            actor=request.user.get_username(),
            address=client_from_request(request).origin,
        )
        messages.success(request, f"API key “{key.name}” was revoked.")
        return HttpResponseRedirect(reverse("sessions_app:api-key-list"))
    status = 400 if form.errors and "reason" in form.errors else 200
    context = {"form": form, "key": key, "action": "revoke"}
    return _render(request, "apikey_confirm.html", context, status=status)


@page(methods=("GET", "POST"))
def api_key_delete(request: HttpRequest, key_id: int) -> HttpResponse:
    """Confirm, then delete a key (its sessions end)."""
    key = selectors.api_key_get(key_id=key_id, user=_key_scope(request, Role.API_KEY_WRITE))
    if key is None:
        raise Http404("No such API key.")
    form = ConfirmForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        name = key.name
        api_key_services.api_key_delete(
            key=key, actor=request.user.get_username(), address=client_from_request(request).origin
        )
        messages.success(request, f"API key “{name}” was deleted.")
        return HttpResponseRedirect(reverse("sessions_app:api-key-list"))
    return _render(request, "apikey_confirm.html", {"form": form, "key": key, "action": "delete"})


# --- audit --------------------------------------------------------------------------------------------


def _opened_a_session(record: dict[str, Any]) -> bool:
    return bool(record["event"] == AuditEvent.AUTHENTICATION and record["success"])


@page(role=Role.AUDIT_READ)
def audit_list(request: HttpRequest) -> HttpResponse:
    """Audit records, newest first, with the same filter form idea as the dashboard."""
    form = AuditFilterForm(request.GET)
    result, status = _filtered_page(form, selectors.audit_page)
    # A successful sign-in names the session it opened: its device and place are that session's.
    _with_devices(result)
    return _render(request, "auditrecord_list.html", {"form": form, "page": result}, status=status)


# --- two-factor ---------------------------------------------------------------------------------------


def _grouped(secret: str) -> str:
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def _stepup_form(
    request: HttpRequest, *, submitted: bool, second_factor: bool | None = None
) -> PasswordConfirmForm | None:
    """The password (and code) fields a form needs when the session has not proven the password
    within the step-up window (security.md F2), or None when it has; bound when ``submitted``.
    With ``second_factor`` None the code is asked when the account has a second factor (a query
    made only when the fields are needed)."""
    if stepup.stepup_recent(session=request.auth_session):  # type: ignore[attr-defined]
        return None
    if second_factor is None:
        second_factor = has_totp(request.user)
    data = request.POST if submitted else None
    return PasswordConfirmForm(data, prefix="stepup", second_factor=second_factor)


def _stepped_up(request: HttpRequest, form: PasswordConfirmForm | None, purpose: str) -> bool:
    """Check a step-up form (None: not needed); a wrong answer is an error on its fields."""
    if form is None:
        return True
    if not form.is_valid():
        return False
    if stepup.stepup_verify(
        user=request.user,
        session=request.auth_session,  # type: ignore[attr-defined]
        client=client_from_request(request),
        password=form.cleaned_data["password"],
        otp_token=form.cleaned_data.get("otp_token"),
        purpose=purpose,
    ):
        return True
    form.add_error(None, STEPUP_ERROR)
    return False


STEPUP_ERROR = "That password (or code) is not correct, or the account cannot sign in right now."
SECOND_FACTOR_SESSION_ONLY = (
    "Two-factor sign-in can only be changed in a session that was signed in with your password. "
    "Sign out, then sign in with your password."
)


def _second_factor_refused(request: HttpRequest) -> HttpResponse | None:
    """403 for a session that did not start with the password (API key, token, one-time password)."""
    if stepup.second_factor_change_allowed(session=request.auth_session):  # type: ignore[attr-defined]
        return None
    return permission_denied(request, PermissionDenied(SECOND_FACTOR_SESSION_ONLY))


@page(methods=("GET", "POST"))
def totp_detail(request: HttpRequest) -> HttpResponse:
    """Whether two-factor sign-in is on; POST starts an enrolment (a new unconfirmed device) after
    the step-up (the password again, unless it was proven in this session within the window)."""
    confirmed = selectors.totp_device_get(user=request.user)
    allowed = stepup.second_factor_change_allowed(session=request.auth_session)  # type: ignore[attr-defined]
    submitted = request.method == "POST"
    start_form = (
        _stepup_form(request, submitted=submitted, second_factor=False) if confirmed is None else None
    )
    status = 200
    if request.method == "POST":
        refused = _second_factor_refused(request)
        if refused is not None:
            return refused
        if confirmed is not None:
            return HttpResponseRedirect(reverse("sessions_app:totp-detail"))
        if _stepped_up(request, start_form, "two_factor.start"):
            totp_services.totp_device_start(
                user=request.user,
                session=request.auth_session,  # type: ignore[attr-defined]
                client=client_from_request(request),
            )
            return HttpResponseRedirect(reverse("sessions_app:totp-enrol"))
        status = 400
    context = {
        "device": confirmed,
        "allowed": allowed,
        "form": PasswordConfirmForm(second_factor=True),
        "start_form": start_form,
    }
    return _render(request, "totpdevice_detail.html", context, status=status)


@page(methods=("GET", "POST"))
def totp_enrol(request: HttpRequest) -> HttpResponse:
    """The QR code and secret of the unconfirmed device, and the code that confirms it. Shown only
    within the step-up window of a password session: the secret is the second factor."""
    refused = _second_factor_refused(request)
    if refused is not None:
        return refused
    if selectors.totp_device_get(user=request.user) is not None:
        return HttpResponseRedirect(reverse("sessions_app:totp-detail"))
    device = selectors.totp_device_get(user=request.user, confirmed=False)
    if device is None or not stepup.stepup_recent(session=request.auth_session):  # type: ignore[attr-defined]
        if device is not None:
            messages.info(request, "Enter your password again to continue setting up the app.")
        return HttpResponseRedirect(reverse("sessions_app:totp-detail"))
    form = TotpConfirmForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if totp_services.totp_device_confirm(
            device=device,
            session=request.auth_session,  # type: ignore[attr-defined]
            code=form.cleaned_data["otp_token"],
            client=client_from_request(request),
        ):
            messages.success(request, "Two-factor sign-in is on. Next time, you will be asked for a code.")
            return HttpResponseRedirect(reverse("sessions_app:totp-detail"))
        form.add_error("otp_token", "That code is not valid. Check the time on your device and try again.")
    secret = base64.b32encode(device.bin_key).decode().rstrip("=")
    context = {
        "form": form,
        "qr": charts.qr_code(device.config_url, title="QR code for your authenticator app"),
        "secret": _grouped(secret),
        "secret_raw": secret,
        "digits": device.digits,
        "step": device.step,
    }
    return _render(request, "totpdevice_enrol.html", context, status=400 if form.errors else 200)


@page(methods=("POST",))
def totp_disable(request: HttpRequest) -> HttpResponse:
    """Turn two-factor sign-in off after the password and a current code are entered again; every
    session ends. Only a session that signed in with the password may do it."""
    refused = _second_factor_refused(request)
    if refused is not None:
        return refused
    device = selectors.totp_device_get(user=request.user)
    form = PasswordConfirmForm(request.POST, second_factor=True)
    if device is not None and form.is_valid():
        if totp_services.totp_device_disable(
            user=request.user,
            session=request.auth_session,  # type: ignore[attr-defined]
            password=form.cleaned_data["password"],
            otp_token=form.cleaned_data["otp_token"],
            client=client_from_request(request),
        ):
            # Removing the device ended the user's sessions (this one too): sign in again.
            response = HttpResponseRedirect(reverse("sessions_app:sign-in"))
            clear_session_cookie(response)
            messages.success(request, "Two-factor sign-in is off. Sign in again with your password.")
            return response
        form.add_error(None, STEPUP_ERROR)
    if device is None:
        return HttpResponseRedirect(reverse("sessions_app:totp-detail"))
    context = {"device": device, "allowed": True, "form": form}
    return _render(request, "totpdevice_detail.html", context, status=400)
