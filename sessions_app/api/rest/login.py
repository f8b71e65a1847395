"""The REST login steps (``auth/login``, ``auth/login_continue``): open to anonymous callers.

Their CSRF defence is the one JSON-RPC uses: the body must be ``application/json`` even when empty
(an HTML form cannot send it, and a cross-site ``fetch`` with it needs a CORS preflight this service
never grants), and a request whose ``Origin`` header names another site is refused with 403 (B16). A
caller already holding a session cookie also needs ``X-CSRFToken``, like any cookie-authenticated
request. Login calls share one rate limit per client address with every other login entrance
(JSON-RPC, the sign-in page, Basic), whatever the caller already presents (F4) → 429 with
``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.middleware.csrf import rotate_token
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from sessions_app.api.jsonrpc import audit_rate_limited
from sessions_app.api.rest.base import ApiView, client_of, registry_request
from sessions_app.api.rest.schema import ref
from sessions_app.api.rest.serializers import LoginContinueInputSerializer, LoginInputSerializer
from sessions_app.auth import throttle
from sessions_app.exceptions import Busy
from sessions_app.middleware import (
    clear_pending_cookie,
    pending_cookie,
    set_pending_cookie,
    set_session_cookie,
)
from sessions_app.services.login import login_ex
from sessions_app.services.login_results import LoginResult
from sessions_app.services.totp_login import login_ex_continue


def refuse_cross_origin(request: Request) -> None:
    """403 for a browser request sent by another site (its ``Origin`` is not this service's)."""
    origin = request._request.META.get("HTTP_ORIGIN")
    if origin is None:
        return
    own = f"{request._request.scheme}://{request._request.get_host()}"
    if origin != own and origin not in settings.CSRF_TRUSTED_ORIGINS:
        raise exceptions.PermissionDenied("Cross-origin login requests are refused.")


def rate_limit(request: Request, method: str, params: Any) -> None:
    """The login limit shared with every login entrance, whatever the caller already presents (F4):
    429 + Retry-After beyond it (audited)."""
    client = client_of(request)
    retry_after = throttle.hit_login_limit(address=client.rate_key)
    if retry_after is not None:
        audit_rate_limited(method, [params], client)
        raise Busy(retry_after)


def finish_login(request: Request, response: Response, result: LoginResult) -> None:
    """Cookies of a login answer: the pending second factor, or a new session (+ a new CSRF token).

    A new session replaces the caller's previous one, which the login service ended in the same
    transaction (``replaces``; B2: no fixation).
    """
    if result.pending_secret is not None:
        set_pending_cookie(response, result.pending_secret, max_age=300)
    elif result.pending_cleared or (result.new_session is not None and pending_cookie(request) is not None):
        clear_pending_cookie(response)
    if result.new_session is not None:
        set_session_cookie(response, result.new_session.secret)
        rotate_token(request._request)


def login_step(request: Request, method_name: str, service: Callable[..., LoginResult]) -> Response:
    """One login step (``login_ex`` or ``login_ex_continue``) of a REST view: same-origin check,
    per-address rate limit, the service (ending the caller's previous session on success), cookies."""
    refuse_cross_origin(request)
    params = request.data
    rate_limit(request, method_name, params)
    result = service(
        params=params,
        client=client_of(request),
        pending_secret=pending_cookie(request),
        replaces=registry_request(request).auth_session,
    )
    response = Response(result.response)
    finish_login(request, response, result)
    return response


class LoginView(ApiView):
    """``auth.login_ex``: the body is its parameters (validated by the login service)."""

    permission_classes = [AllowAny]
    require_json = True

    @extend_schema(
        operation_id="auth_login",
        summary="Log in (auth.login_ex); SUCCESS sets the session and csrftoken cookies",
        request=LoginInputSerializer,
        responses={200: ref("LoginResponse")},
    )
    def post(self, request: Request) -> Response:
        return login_step(request, "auth.login_ex", login_ex)


class LoginContinueView(ApiView):
    """``auth.login_ex_continue``: the second factor of a login that answered ``OTP_REQUIRED``."""

    permission_classes = [AllowAny]
    require_json = True

    @extend_schema(
        operation_id="auth_login_continue",
        summary="Second login step (auth.login_ex_continue)",
        request=LoginContinueInputSerializer,
        responses={200: ref("LoginResponse")},
    )
    def post(self, request: Request) -> Response:
        return login_step(request, "auth.login_ex_continue", login_ex_continue)
