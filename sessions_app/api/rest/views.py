"""The REST views: validate the shape, call one service or selector, render.

Every view answers JSON (``{"$date": ms}`` datetimes), ``Cache-Control: no-store``, and errors as
``{"errors": [...]}`` (`exceptions`). Unsafe requests with a body must be ``application/json`` (415
otherwise, E2); cookie-authenticated unsafe requests need ``X-CSRFToken`` (`authentication`).
Query parameters are accepted only by the GET lists, which declare them in a `filtersets`
``FilterSet``; anywhere else a query parameter is a 400 (C21, B5).

Logins (``auth/login``, ``auth/login_continue``) are open to anonymous callers. Their CSRF defence is
the one JSON-RPC uses: the body must be ``application/json`` even when empty (an HTML form cannot
send it, and a cross-site ``fetch`` with it needs a CORS preflight this service never grants), and a
request whose ``Origin`` header names another site is refused with 403 (B16). A caller already
holding a session cookie also needs ``X-CSRFToken``, like any cookie-authenticated request.
Login calls share one rate limit per client address with every other login entrance (JSON-RPC,
the sign-in page, Basic), whatever the caller already presents (F4) → 429 with ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.middleware.csrf import get_token, rotate_token
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework import exceptions, serializers
from rest_framework.permissions import SAFE_METHODS, AllowAny
from rest_framework.renderers import BaseRenderer, BrowsableAPIRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param
from rest_framework.views import APIView

from sessions_app import selectors
from sessions_app.api.jsonrpc import audit_rate_limited
from sessions_app.api.rest.authentication import RegistryAuthentication
from sessions_app.api.rest.filtersets import AuditFilterSet, ParamQuery, QueryFilterSet, SessionFilterSet
from sessions_app.api.rest.parsers import StrictJSONParser
from sessions_app.api.rest.permissions import IsRegistryUser, audit_call, role_required
from sessions_app.api.rest.renderers import EJSONRenderer
from sessions_app.api.rest.schema import (
    QUERY_RESULT,
    SESSION_QUERY_DESCRIPTION,
    list_result,
    query_parameters,
    ref,
)
from sessions_app.api.rest.serializers import (
    LoginContinueInputSerializer,
    LoginInputSerializer,
    QueryInputSerializer,
    TokenInputSerializer,
)
from sessions_app.auth import throttle
from sessions_app.auth.clients import Client, client_from_request
from sessions_app.auth.roles import Role
from sessions_app.exceptions import Busy, NotAuthorized, NotFound
from sessions_app.middleware import (
    clear_pending_cookie,
    clear_session_cookie,
    pending_cookie,
    set_pending_cookie,
    set_session_cookie,
)
from sessions_app.query import MatchNotFound, QueryError
from sessions_app.services import sessions as session_services
from sessions_app.services.login import LoginResult, login_ex, login_ex_continue, user_info
from sessions_app.services.tokens import token_generate

SESSION_ID = OpenApiParameter(
    "session_id",
    str,
    OpenApiParameter.PATH,
    description="A session's public id.",
    pattern=r"^[A-Za-z0-9_-]{1,128}$",
)


# --- plumbing shared by every view ------------------------------------------------------------------


def client_of(request: Request) -> Client:
    return client_from_request(request._request)


def current_pk(request: Request) -> int | None:
    session = getattr(request._request, "auth_session", None)
    return session.pk if session is not None else None


def has_body(request: Request) -> bool:
    meta = request._request.META
    return bool(meta.get("HTTP_TRANSFER_ENCODING")) or (meta.get("CONTENT_LENGTH") or "0") not in ("", "0")


def validated(serializer_class: type[serializers.Serializer], request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


class ApiViewMixin:
    """Authentication, parsing, rendering, auditing and headers common to all REST views."""

    authentication_classes = [RegistryAuthentication]
    permission_classes: list[Any] = [IsRegistryUser]
    parser_classes = [StrictJSONParser]
    # No OPTIONS (no CORS, nothing to discover) and no TRACE: 405 with Allow (B14, E11).
    http_method_names = ["get", "post", "put", "patch", "delete", "head"]
    #: The FilterSet of the GET parameters; None: the view takes no query parameters.
    filterset_class: type[QueryFilterSet] | None = None
    #: JSON-RPC method name under which role-protected calls are audited.
    audit_name: str | None = None
    #: Callable by a one-time-password session that has not set its new password yet.
    before_password_change = False
    #: The body must be application/json even when empty (the login endpoints' CSRF defence).
    require_json = False
    #: Set once every permission passed (the call is then audited by `finalize_response`).
    permitted: bool | None = None

    request: Request

    def get_renderers(self) -> list[BaseRenderer]:
        renderers: list[BaseRenderer] = [EJSONRenderer()]
        request = getattr(self, "request", None)
        user = getattr(getattr(request, "_request", request), "user", None)
        if user is not None and user.is_authenticated and user.is_active and user.is_staff:
            renderers.append(BrowsableAPIRenderer())
        return renderers

    def takes_query_parameters(self, request: Request) -> bool:
        return self.filterset_class is not None and request.method in SAFE_METHODS

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        method = request.method.lower()
        if method not in self.http_method_names or not hasattr(self, method):
            return  # the view answers 405 (with Allow), whatever the body or the query string
        json_body = request.content_type.split(";")[0].strip().lower() == "application/json"
        if request.method not in SAFE_METHODS and (self.require_json or has_body(request)) and not json_body:
            raise exceptions.UnsupportedMediaType(request.content_type or "(none)")
        if request.query_params and not self.takes_query_parameters(request):
            raise exceptions.ValidationError(
                {name: ["unknown query parameter"] for name in request.query_params}
            )

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        if (
            self.audit_name
            and self.permitted
            and response.status_code < 500
            and hasattr(self, request.method.lower())
        ):
            audit_call(request, self.audit_name, response.status_code < 400)
        response["Cache-Control"] = "no-store"
        return response

    def check_permissions(self, request: Request) -> None:
        super().check_permissions(request)  # type: ignore[misc]
        self.permitted = True


class ApiView(ApiViewMixin, APIView):
    """A REST view (see `ApiViewMixin`)."""


def query_answer(request: Request, query: ParamQuery, run: Callable[[Any, Any], Any]) -> Response:
    """Run a GET list's query: the rows, or ``count/next/previous/results`` when ``limit`` is given."""
    try:
        result = run(query.filters, query.options)
        total = run(query.filters, query.count_options()) if query.paginated else None
    except MatchNotFound:
        raise
    except QueryError as exc:
        raise QueryError(query.parameter_for(exc.attribute), exc.message) from None
    if total is None:
        return Response(result)
    limit, offset = query.options["limit"], query.options.get("offset", 0)
    url = request.build_absolute_uri()
    following = (
        replace_query_param(url, "offset", offset + limit) if limit and offset + limit < total else None
    )
    previous = None
    if offset > 0:
        back = max(0, offset - limit) if limit else 0
        previous = replace_query_param(url, "offset", back) if back else remove_query_param(url, "offset")
    return Response({"count": total, "next": following, "previous": previous, "results": result})


# --- sessions ---------------------------------------------------------------------------------------


class SessionListView(ApiView):
    """``auth.sessions`` through query parameters (role ``AUTH_SESSIONS_READ``)."""

    permission_classes = [role_required(Role.AUTH_SESSIONS_READ)]
    audit_name = "auth.sessions"
    filterset_class = SessionFilterSet

    @extend_schema(
        operation_id="auth_sessions_list",
        summary="List sessions (auth.sessions)",
        parameters=query_parameters(SessionFilterSet),
        responses={200: list_result("SessionRow")},
    )
    def get(self, request: Request) -> Response:
        query = SessionFilterSet(request.query_params, request=request).query()
        return query_answer(
            request,
            query,
            lambda filters, options: selectors.session_query(
                filters=filters, options=options, current_pk=current_pk(request)
            ),
        )


class SessionQueryView(ApiView):
    """``auth.sessions`` with the full query language; answers exactly what ``auth.sessions`` does."""

    permission_classes = [role_required(Role.AUTH_SESSIONS_READ)]
    audit_name = "auth.sessions"

    @extend_schema(
        operation_id="auth_sessions_query",
        summary="Query sessions with query-filters / query-options (auth.sessions)",
        description=SESSION_QUERY_DESCRIPTION,
        request=QueryInputSerializer,
        responses={200: QUERY_RESULT},
    )
    def post(self, request: Request) -> Response:
        data = validated(QueryInputSerializer, request)
        return Response(
            selectors.session_query(
                filters=data.get("query-filters"),
                options=data.get("query-options"),
                current_pk=current_pk(request),
            )
        )


class MySessionListView(ApiView):
    """``auth.my_sessions`` through query parameters: the caller's own sessions."""

    filterset_class = SessionFilterSet

    @extend_schema(
        operation_id="auth_my_sessions_list",
        summary="List my sessions (auth.my_sessions)",
        parameters=query_parameters(SessionFilterSet),
        responses={200: list_result("SessionRow")},
    )
    def get(self, request: Request) -> Response:
        query = SessionFilterSet(request.query_params, request=request).query()
        return query_answer(
            request,
            query,
            lambda filters, options: selectors.session_query(
                filters=filters, options=options, user=request.user, current_pk=current_pk(request)
            ),
        )


class MySessionQueryView(ApiView):
    """``auth.my_sessions`` with the full query language: the caller's own sessions."""

    @extend_schema(
        operation_id="auth_my_sessions_query",
        summary="Query my sessions with query-filters / query-options (auth.my_sessions)",
        description=SESSION_QUERY_DESCRIPTION,
        request=QueryInputSerializer,
        responses={200: QUERY_RESULT},
    )
    def post(self, request: Request) -> Response:
        data = validated(QueryInputSerializer, request)
        return Response(
            selectors.session_query(
                filters=data.get("query-filters"),
                options=data.get("query-options"),
                user=request.user,
                current_pk=current_pk(request),
            )
        )


_TERMINATED = {
    "type": "object",
    "properties": {"id": {"type": "string"}, "terminated": {"type": "boolean"}},
    "required": ["id", "terminated"],
}
_TERMINATED_COUNT = {
    "type": "object",
    "properties": {"terminated": {"type": "integer", "description": "How many sessions ended."}},
    "required": ["terminated"],
}


class SessionTerminateView(ApiView):
    """``auth.terminate_session`` (role ``AUTH_SESSIONS_WRITE``): 404 unless the session is active."""

    permission_classes = [role_required(Role.AUTH_SESSIONS_WRITE)]
    audit_name = "auth.terminate_session"

    @extend_schema(
        operation_id="auth_sessions_terminate",
        summary="Terminate a session (auth.terminate_session)",
        request=None,
        parameters=[SESSION_ID],
        responses={200: _TERMINATED},
    )
    def post(self, request: Request, session_id: str) -> Response:
        if not session_services.session_terminate(
            public_id=session_id, actor=request._request.auth_session, client=client_of(request)
        ):
            raise NotFound("No active session has this id")
        return Response({"id": session_id, "terminated": True})


class MySessionTerminateView(ApiView):
    """``auth.terminate_my_session``: another user's session id is a 404, like an unknown one."""

    @extend_schema(
        operation_id="auth_my_sessions_terminate",
        summary="Terminate one of my sessions (auth.terminate_my_session)",
        request=None,
        parameters=[SESSION_ID],
        responses={200: _TERMINATED},
    )
    def post(self, request: Request, session_id: str) -> Response:
        own = selectors.session_query(
            filters=[["id", "=", session_id]], options={"count": True}, user=request.user
        )
        if not own or not session_services.session_terminate(
            public_id=session_id, actor=request._request.auth_session, client=client_of(request)
        ):
            raise NotFound("No active session of yours has this id")
        return Response({"id": session_id, "terminated": True})


def _session_or_403(request: Request, what: str) -> Any:
    session = request._request.auth_session
    if session is None:
        raise NotAuthorized(f"Per-request credentials {what}")
    return session


class SessionTerminateOthersView(ApiView):
    """``auth.terminate_other_sessions`` (role ``AUTH_SESSIONS_WRITE``): all but the caller's and
    internal ones."""

    permission_classes = [role_required(Role.AUTH_SESSIONS_WRITE)]
    audit_name = "auth.terminate_other_sessions"

    @extend_schema(
        operation_id="auth_sessions_terminate_others",
        summary="Terminate every other session (auth.terminate_other_sessions)",
        request=None,
        responses={200: _TERMINATED_COUNT},
    )
    def post(self, request: Request) -> Response:
        session = _session_or_403(request, "have no session to keep")
        count = session_services.session_terminate_others(current=session, client=client_of(request))
        return Response({"terminated": count})


class MySessionTerminateOthersView(ApiView):
    """The caller's own other sessions (the "My sessions" page's action); no role needed."""

    @extend_schema(
        operation_id="auth_my_sessions_terminate_others",
        summary="Terminate my other sessions",
        request=None,
        responses={200: _TERMINATED_COUNT},
    )
    def post(self, request: Request) -> Response:
        session = _session_or_403(request, "have no session to keep")
        count = session_services.session_terminate_others(
            current=session, client=client_of(request), own_only=True
        )
        return Response({"terminated": count})


# --- authentication ----------------------------------------------------------------------------------


class MeView(ApiView):
    """``auth.me``: the caller's passwd-like entry, with its roles."""

    before_password_change = True

    @extend_schema(operation_id="auth_me", summary="Who am I (auth.me)", responses={200: ref("UserInfo")})
    def get(self, request: Request) -> Response:
        return Response(user_info(request.user, getattr(request._request, "auth_session", None)))


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
        replaces=request._request.auth_session,
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


class LogoutView(ApiView):
    """``auth.logout``: ends the caller's session (if any) and clears its cookie."""

    before_password_change = True

    @extend_schema(
        operation_id="auth_logout",
        summary="Log out (auth.logout): end the caller's session and clear its cookie",
        request=None,
        responses={204: OpenApiResponse(description="Logged out.")},
    )
    def post(self, request: Request) -> Response:
        session = request._request.auth_session
        if session is not None:
            session_services.session_logout(session=session, client=client_of(request))
        response = Response(status=204)
        clear_session_cookie(response)
        return response


class GenerateTokenView(ApiView):
    """``auth.generate_token``: a token bound to the caller's session (403 for per-request credentials)."""

    before_password_change = True

    @extend_schema(
        operation_id="auth_generate_token",
        summary="Create a short-lived token (auth.generate_token)",
        request=TokenInputSerializer,
        responses={
            200: {
                "type": "object",
                "properties": {"token": {"type": "string", "minLength": 64, "maxLength": 64}},
                "required": ["token"],
            }
        },
    )
    def post(self, request: Request) -> Response:
        data = validated(TokenInputSerializer, request)
        session = _session_or_403(request, "cannot create tokens")
        token = token_generate(
            session=session,
            client=client_of(request),
            ttl=data.get("ttl"),
            attrs=data.get("attrs", {}),
            match_origin=data.get("match_origin", True),
            single_use=data.get("single_use", False),
        )
        return Response({"token": token})


class CsrfView(ApiView):
    """The CSRF token for cookie-authenticated writes (``X-CSRFToken``); also sets the cookie."""

    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="auth_csrf",
        summary="Get a CSRF token (also set as the csrftoken cookie) for cookie-authenticated writes",
        responses={
            200: {
                "type": "object",
                "properties": {"csrftoken": {"type": "string"}},
                "required": ["csrftoken"],
            }
        },
    )
    def get(self, request: Request) -> Response:
        return Response({"csrftoken": get_token(request._request)})


# --- audit --------------------------------------------------------------------------------------------


class AuditListView(ApiView):
    """``audit.query`` through query parameters (role ``AUDIT_READ``)."""

    permission_classes = [role_required(Role.AUDIT_READ)]
    audit_name = "audit.query"
    filterset_class = AuditFilterSet

    @extend_schema(
        operation_id="audit_list",
        summary="List audit records (audit.query)",
        parameters=query_parameters(AuditFilterSet),
        responses={200: list_result("AuditRow")},
    )
    def get(self, request: Request) -> Response:
        query = AuditFilterSet(request.query_params, request=request).query()
        return query_answer(
            request, query, lambda filters, options: selectors.audit_query(filters=filters, options=options)
        )


class AuditQueryView(ApiView):
    """``audit.query`` with the full query language (role ``AUDIT_READ``)."""

    permission_classes = [role_required(Role.AUDIT_READ)]
    audit_name = "audit.query"

    @extend_schema(
        operation_id="audit_query",
        summary="Query audit records with query-filters / query-options (audit.query)",
        request=QueryInputSerializer,
        responses={200: QUERY_RESULT},
    )
    def post(self, request: Request) -> Response:
        data = validated(QueryInputSerializer, request)
        return Response(
            selectors.audit_query(filters=data.get("query-filters"), options=data.get("query-options"))
        )


# --- OpenAPI ------------------------------------------------------------------------------------------


class SchemaView(SpectacularAPIView):
    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        response["Cache-Control"] = "no-store"
        return response


class DocsView(SpectacularSwaggerView):
    # drf-spectacular's page, with the CSP nonce on its inline initialiser and style (F13).
    template_name = "sessions_app/swagger_ui.html"

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        response["Cache-Control"] = "no-store"
        return response
