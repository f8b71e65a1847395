"""DRF authentication that adopts what `SessionAuthenticationMiddleware` already decided.

The middleware authenticates every request from the database (session cookie, unix socket, or a
per-request ``Authorization: Bearer <api key>`` / ``Basic`` header, which is then used alone: B17)
and sets ``request.user``, ``request.auth_session`` and ``request.api_key``. This class only hands
that to DRF, and for **cookie-authenticated** requests enforces Django's CSRF check exactly like
DRF's ``SessionAuthentication`` (unsafe methods need ``X-CSRFToken``, B16). Requests authenticated by
an ``Authorization`` header or by the unix socket carry no ambient browser credential and need no
token. ``request.auth`` is the `UserSession` (cookie, unix socket) or the `ApiKey` (Bearer).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, CSRFCheck
from rest_framework.request import Request

from sessions_app.auth.clients import client_from_request


def uses_cookie(request: HttpRequest) -> bool:
    """Whether the caller was authenticated by the session cookie (an ambient browser credential)."""
    return (
        getattr(request, "auth_session", None) is not None
        and not request.META.get("HTTP_AUTHORIZATION")
        and client_from_request(request).peer is None
    )


class RegistryAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        django_request = request._request
        user = getattr(django_request, "user", None)
        if user is None or not user.is_authenticated:
            refusal = getattr(django_request, "auth_refusal", None)
            if refusal:  # a right credential that cannot be used here: say why (F8), 401
                raise exceptions.AuthenticationFailed(refusal)
            return None
        if uses_cookie(django_request):
            self.enforce_csrf(django_request)
        auth = getattr(django_request, "auth_session", None) or getattr(django_request, "api_key", None)
        return user, auth

    def enforce_csrf(self, request: HttpRequest) -> None:
        """Django's CSRF view check on the plain request (as DRF's ``SessionAuthentication`` does).

        The plain Django request is checked, not DRF's: reading ``POST`` for the form token then
        never runs the API's JSON parser.
        """

        def not_called(request: HttpRequest) -> HttpResponse:  # pragma: no cover
            # The middleware only keeps it (no chain runs), and as the view it only reads a
            # ``csrf_exempt`` flag from it, which this function does not carry.
            raise AssertionError("CSRFCheck is used outside a middleware chain")

        check = CSRFCheck(not_called)
        check.process_request(request)
        reason = check.process_view(request, not_called, (), {})
        if reason:
            raise exceptions.PermissionDenied(f"CSRF Failed: {reason}")

    def authenticate_header(self, request: Request) -> str:
        """A 401 (not 403) for anonymous callers, with the scheme per-request clients use.

        A Bearer key refused with a reason (revoked, expired: the secret was right) adds RFC 6750's
        ``error="invalid_token"`` and the reason, which the JSON body says too; a wrong or unknown
        key gets the bare challenge, like no credential at all.
        """
        django_request = request._request
        refusal = getattr(django_request, "auth_refusal", None)
        scheme = django_request.META.get("HTTP_AUTHORIZATION", "").partition(" ")[0]
        if refusal and scheme.lower() == "bearer":
            description = refusal.replace("\\", "").replace('"', "")
            return f'Bearer realm="api", error="invalid_token", error_description="{description}"'
        return 'Bearer realm="api"'
