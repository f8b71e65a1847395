"""Browser pages. Thin: a form validates shape, one service decides, the page renders."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_http_methods, require_POST

from sessions_app import throttle
from sessions_app.clients import client_from_request
from sessions_app.forms import OtpForm, SignInForm
from sessions_app.middleware import PENDING_COOKIE, clear_session_cookie, set_session_cookie
from sessions_app.services.login import LoginResult, login_ex, login_ex_continue
from sessions_app.services.sessions import session_end, session_logout

GENERIC_ERROR = "The username or password is not correct, or the account cannot sign in right now."


def _next_url(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or "/admin/"
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return "/admin/"
    return target


def _finish(request: HttpRequest, result: LoginResult, next_url: str) -> HttpResponse:
    assert result.new_session is not None
    if request.auth_session is not None:  # type: ignore[attr-defined]
        session_end(session=request.auth_session, reason="LOGOUT", note="credential changed")  # type: ignore[attr-defined]
    response = HttpResponseRedirect(next_url)
    set_session_cookie(response, result.new_session.secret)
    response.delete_cookie(PENDING_COOKIE)
    return response


@never_cache
@csrf_protect
@require_http_methods(["GET", "POST"])
def sign_in(request: HttpRequest) -> HttpResponse:
    """Password, then the second factor when the account has one (``login_ex`` semantics)."""
    client = client_from_request(request)
    next_url = _next_url(request)
    form = SignInForm(request.POST or None)
    context: dict[str, Any] = {"form": form, "next": next_url}
    if request.method == "POST":
        retry_after = throttle.hit_rate_limit(method="web.sign_in", address=client.rate_key)
        if retry_after is not None:
            context["error"] = f"Too many attempts from your address. Try again in {retry_after} seconds."
            return render(
                request,
                "sessions_app/sign_in.html",
                context,
                status=429,
                headers={"Retry-After": str(retry_after)},
            )
        if form.is_valid():
            result = login_ex(
                params={"mechanism": "PASSWORD_PLAIN", **form.cleaned_data},
                client=client,
                pending_secret=request.COOKIES.get(PENDING_COOKIE),
            )
            if result.ok:
                return _finish(request, result, next_url)
            if result.pending_secret is not None:
                response = render(
                    request, "sessions_app/sign_in_otp.html", {"form": OtpForm(), "next": next_url}
                )
                response.set_cookie(
                    PENDING_COOKIE,
                    result.pending_secret,
                    max_age=300,
                    httponly=True,
                    samesite="Lax",
                    secure=request.is_secure() or None,
                )
                return response
            context["error"] = GENERIC_ERROR
            return render(request, "sessions_app/sign_in.html", context, status=401)
    return render(request, "sessions_app/sign_in.html", context)


@never_cache
@csrf_protect
@require_POST
def sign_in_otp(request: HttpRequest) -> HttpResponse:
    client = client_from_request(request)
    next_url = _next_url(request)
    form = OtpForm(request.POST)
    if form.is_valid():
        result = login_ex_continue(
            params={"mechanism": "OTP_TOKEN", **form.cleaned_data},
            client=client,
            pending_secret=request.COOKIES.get(PENDING_COOKIE),
        )
        if result.ok:
            return _finish(request, result, next_url)
        if result.pending_cleared or not request.COOKIES.get(PENDING_COOKIE):
            response = render(
                request,
                "sessions_app/sign_in.html",
                {"form": SignInForm(), "next": next_url, "error": GENERIC_ERROR},
                status=401,
            )
            response.delete_cookie(PENDING_COOKIE)
            return response
        form.add_error("otp_token", "That code is not valid. Try the current code.")
    return render(request, "sessions_app/sign_in_otp.html", {"form": form, "next": next_url}, status=401)


@never_cache
@csrf_protect
@require_POST
def sign_out(request: HttpRequest) -> HttpResponse:
    session = request.auth_session  # type: ignore[attr-defined]
    if session is not None:
        session_logout(session=session, client=client_from_request(request))
    response = HttpResponseRedirect("/sign-in/")
    clear_session_cookie(response)
    response["Clear-Site-Data"] = '"cache", "cookies", "storage"'
    return response


def admin_sign_in(request: HttpRequest, extra_context: Any = None) -> HttpResponse:
    """Django admin's login: the registry's own sign-in page (same policy, lockout and audit)."""
    target = request.GET.get("next", "/admin/")
    return HttpResponseRedirect(f"/sign-in/?next={target}" if target.startswith("/") else "/sign-in/")
