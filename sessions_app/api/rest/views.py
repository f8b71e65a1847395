"""The REST views over sessions, the caller, audit records and the schema: validate the shape,
call one service or selector, render.

Their common plumbing (JSON only, ``no-store``, the query-parameter rule, auditing) is
`base.ApiViewMixin`'s; the login steps and their CSRF defence are in `login`.
"""

from __future__ import annotations

from typing import Any

from django.middleware.csrf import get_token
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from sessions_app import selectors
from sessions_app.api.rest.base import (
    ApiView,
    client_of,
    current_pk,
    query_answer,
    registry_request,
    validated,
)
from sessions_app.api.rest.filtersets import AuditFilterSet, SessionFilterSet
from sessions_app.api.rest.permissions import role_required
from sessions_app.api.rest.schema import (
    QUERY_RESULT,
    SESSION_QUERY_DESCRIPTION,
    list_result,
    query_parameters,
    ref,
)
from sessions_app.api.rest.serializers import QueryInputSerializer, TokenInputSerializer
from sessions_app.auth.roles import Role
from sessions_app.exceptions import NotAuthorized, NotFound
from sessions_app.middleware import clear_session_cookie
from sessions_app.models import UserSession
from sessions_app.services import session_ending as session_services
from sessions_app.services.login_results import user_info
from sessions_app.services.tokens import token_generate

SESSION_ID = OpenApiParameter(
    "session_id",
    str,
    OpenApiParameter.PATH,
    description="A session's public id.",
    pattern=r"^[A-Za-z0-9_-]{1,128}$",
)


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
            public_id=session_id, actor=registry_request(request).auth_session, client=client_of(request)
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
            public_id=session_id, actor=registry_request(request).auth_session, client=client_of(request)
        ):
            raise NotFound("No active session of yours has this id")
        return Response({"id": session_id, "terminated": True})


def _session_or_403(request: Request, what: str) -> UserSession:
    session = registry_request(request).auth_session
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
        session = registry_request(request).auth_session
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
