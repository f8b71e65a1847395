"""Sign in and out, the password page and two-factor setup. See `sessions_app.views`."""

from __future__ import annotations

import base64
import math
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.cache import never_cache
from django.views.defaults import permission_denied

from sessions_app import charts, selectors
from sessions_app.auth import throttle
from sessions_app.auth.clients import Client, client_from_request
from sessions_app.auth.request import RegistryRequest
from sessions_app.auth.roles import Role, has_role
from sessions_app.exceptions import InvalidParams
from sessions_app.forms import (
    OtpForm,
    PasswordChangeForm,
    PasswordConfirmForm,
    SignInForm,
    TotpConfirmForm,
)
from sessions_app.middleware import (
    clear_pending_cookie,
    clear_session_cookie,
    pending_cookie,
    set_pending_cookie,
    set_session_cookie,
)
from sessions_app.services import stepup
from sessions_app.services import totp as totp_services
from sessions_app.services.login import login_ex
from sessions_app.services.login_results import LoginResult
from sessions_app.services.session_ending import session_logout
from sessions_app.services.totp_login import login_ex_continue
from sessions_app.services.users import user_change_password
from sessions_app.views.base import (
    GENERIC_ERROR,
    STEPUP_ERROR,
    _browser_view,
    _local_url,
    _next_url,
    _render,
    _sentence,
    _stepped_up,
    _stepup_form,
    current_session,
    page,
)

# --- sign in / out --------------------------------------------------------------------------------------


def _finish(request: HttpRequest, result: LoginResult, next_url: str) -> HttpResponse:
    assert result.new_session is not None  # the login ended the browser's previous session (replaces=)
    if result.new_session.session.password_change_required:
        next_url = reverse("sessions_app:password-change")
    response = HttpResponseRedirect(next_url)
    set_session_cookie(response, result.new_session.secret)
    clear_pending_cookie(response)
    return response


def _wait_message(seconds: float) -> str:
    if seconds > 90:
        return f"about {math.ceil(seconds / 60)} minutes"
    whole = max(1, math.ceil(seconds))
    return f"{whole} second{'s' if whole != 1 else ''}"


def _failure_message(username: str) -> str:
    """The generic error, or the wait when the account name is locked (names are locked whether the
    account exists or not, so this reveals nothing about accounts)."""
    until = throttle.locked_until(username=username[:150]) if username else None
    if until is None:
        return GENERIC_ERROR
    wait = _wait_message((until - timezone.now()).total_seconds())
    return f"Too many failed attempts for this account. Try again in {wait}."


def _login_limited(request: HttpRequest, client: Client, context: dict[str, Any]) -> HttpResponse | None:
    """The sign-in page with 429 when the address is over the login limit that every login entrance
    shares (security.md F4); None when this attempt may go on (it is counted)."""
    retry_after = throttle.hit_login_limit(address=client.rate_key)
    if retry_after is None:
        return None
    context["error"] = f"Too many attempts from your address. Try again in {_wait_message(retry_after)}."
    response = _render(request, "sign_in.html", context, status=429)
    response["Retry-After"] = str(retry_after)
    return response


def sign_in(request: RegistryRequest) -> HttpResponse:
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
                replaces=request.auth_session,
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


def sign_in_otp(request: RegistryRequest) -> HttpResponse:
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
            replaces=request.auth_session,
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


def sign_out(request: RegistryRequest) -> HttpResponse:
    session = request.auth_session
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
    if session is not None and admin.site.has_permission(request):
        return HttpResponseRedirect(_local_url(request, request.GET.get("next"), reverse("admin:index")))
    if session is not None:
        # Signed in, but the admin said no (not staff): a sign-in form under a header that says
        # "signed in as ..." would ask for credentials the user already gave (issue 17). Say why.
        return never_cache(permission_denied)(
            request,
            PermissionDenied(
                f"The admin site is for staff accounts; {request.user.get_username()} is not one. "
                "Ask an administrator for staff access, or use the pages above."
            ),
        )
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
def password_change(request: RegistryRequest) -> HttpResponse:
    """Set a new password; forced (without the current one) after a one-time-password sign-in.

    The session survives with a new secret (the cookie is re-set); every other session ends.
    """
    session = current_session(request)
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


# --- two-factor ---------------------------------------------------------------------------------------


def _grouped(secret: str) -> str:
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


SECOND_FACTOR_SESSION_ONLY = (
    "Two-factor sign-in can only be changed in a session that was signed in with your password. "
    "Sign out, then sign in with your password."
)


def _second_factor_refused(request: RegistryRequest) -> HttpResponse | None:
    """403 for a session that did not start with the password (API key, token, one-time password)."""
    if stepup.second_factor_change_allowed(session=request.auth_session):
        return None
    return permission_denied(request, PermissionDenied(SECOND_FACTOR_SESSION_ONLY))


@page(methods=("GET", "POST"))
def totp_detail(request: RegistryRequest) -> HttpResponse:
    """Whether two-factor sign-in is on; POST starts an enrolment (a new unconfirmed device) after
    the step-up (the password again, unless it was proven in this session within the window)."""
    confirmed = selectors.totp_device_get(user=request.user)
    allowed = stepup.second_factor_change_allowed(session=request.auth_session)
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
                session=request.auth_session,
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
def totp_enrol(request: RegistryRequest) -> HttpResponse:
    """The QR code and secret of the unconfirmed device, and the code that confirms it. Shown only
    within the step-up window of a password session: the secret is the second factor."""
    refused = _second_factor_refused(request)
    if refused is not None:
        return refused
    if selectors.totp_device_get(user=request.user) is not None:
        return HttpResponseRedirect(reverse("sessions_app:totp-detail"))
    device = selectors.totp_device_get(user=request.user, confirmed=False)
    if device is None or not stepup.stepup_recent(session=request.auth_session):
        if device is not None:
            messages.info(request, "Enter your password again to continue setting up the app.")
        return HttpResponseRedirect(reverse("sessions_app:totp-detail"))
    form = TotpConfirmForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        confirmed = totp_services.totp_device_confirm(
            device=device,
            session=request.auth_session,
            code=form.cleaned_data["otp_token"],
            client=client_from_request(request),
        )
        if confirmed:
            messages.success(request, "Two-factor sign-in is on. Next time, you will be asked for a code.")
            return HttpResponseRedirect(reverse("sessions_app:totp-detail"))
        if confirmed.retry_after is not None:
            # The throttle, not the code: the right code sent a second after a wrong one lands here.
            form.add_error(
                "otp_token",
                f"Too many wrong codes in a row: wait {_wait_message(confirmed.retry_after)}, then enter "
                "the code your app shows now.",
            )
        else:
            form.add_error(
                "otp_token", "That code is not valid. Check the time on your device and try again."
            )
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
def totp_disable(request: RegistryRequest) -> HttpResponse:
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
            session=request.auth_session,
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
