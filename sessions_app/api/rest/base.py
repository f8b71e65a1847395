"""The plumbing every REST view and viewset shares: `ApiViewMixin` (authentication, parsing,
rendering, auditing, headers), the GET lists' `query_answer`, and small request helpers.

Every view answers JSON (``{"$date": ms}`` datetimes), ``Cache-Control: no-store``, and errors as
``{"errors": [...]}`` (`exceptions`). Unsafe requests with a body must be ``application/json`` (415
otherwise, E2); cookie-authenticated unsafe requests need ``X-CSRFToken`` (`authentication`).
Query parameters are accepted only by the GET lists, which declare them in a `filtersets`
``FilterSet``; anywhere else a query parameter is a 400 (C21, B5).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from django.contrib.auth.models import AnonymousUser
from rest_framework import exceptions, serializers
from rest_framework.permissions import SAFE_METHODS
from rest_framework.renderers import BaseRenderer, BrowsableAPIRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param
from rest_framework.views import APIView

from sessions_app.api.rest.authentication import RegistryAuthentication
from sessions_app.api.rest.filtersets import ParamQuery, QueryFilterSet
from sessions_app.api.rest.parsers import StrictJSONParser
from sessions_app.api.rest.permissions import IsRegistryUser, audit_call
from sessions_app.api.rest.renderers import EJSONRenderer
from sessions_app.auth.clients import Client, client_from_request
from sessions_app.auth.request import RegistryRequest
from sessions_app.models import UserSession
from sessions_app.query import MatchNotFound, QueryError

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def registry_request(request: Request) -> RegistryRequest:
    """The Django request under a DRF one, as the registry middleware left it."""
    # SessionAuthenticationMiddleware runs on every request and sets the attributes RegistryRequest
    # declares before any view; the class itself is never instantiated (typing only).
    return cast(RegistryRequest, request._request)


def authenticated_user(request: Request) -> User:
    """The user of a view that lets authenticated callers only in (`IsRegistryUser`)."""
    user = request.user
    assert not isinstance(user, AnonymousUser)
    return user


def client_of(request: Request) -> Client:
    return client_from_request(request._request)


def current_pk(request: Request) -> int | None:
    session: UserSession | None = getattr(request._request, "auth_session", None)
    return session.pk if session is not None else None


def has_body(request: Request) -> bool:
    meta = request._request.META
    return bool(meta.get("HTTP_TRANSFER_ENCODING")) or (meta.get("CONTENT_LENGTH") or "0") not in ("", "0")


def validated(serializer_class: type[serializers.Serializer[Any]], request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


class ApiViewMixin(APIView):
    """Authentication, parsing, rendering, auditing and headers common to all REST views."""

    authentication_classes = [RegistryAuthentication]
    permission_classes = [IsRegistryUser]
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
        super().initial(request, *args, **kwargs)
        method = (request.method or "").lower()
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
        response = super().finalize_response(request, response, *args, **kwargs)
        if (
            self.audit_name
            and self.permitted
            and response.status_code < 500
            and hasattr(self, (request.method or "").lower())
        ):
            audit_call(request, self.audit_name, response.status_code < 400)
        response["Cache-Control"] = "no-store"
        return response

    def check_permissions(self, request: Request) -> None:
        super().check_permissions(request)
        self.permitted = True


class ApiView(ApiViewMixin, APIView):
    """A REST view (see `ApiViewMixin`)."""


def query_answer(
    request: Request, query: ParamQuery, run: Callable[[list[list[Any]], dict[str, Any]], Any]
) -> Response:
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
