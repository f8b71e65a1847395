"""``/api/v2.0/api_key/``: the caller's API keys (all keys with ``API_KEY_READ``), as the
``api_key.*`` JSON-RPC methods.

The key itself is answered once, by ``create`` and ``reset``; rows always show ``keyhash``
``"********"``. Keys of other users are a 404 unless the caller holds ``API_KEY_READ``; changing
them needs ``API_KEY_WRITE`` (403 otherwise). Creating a key for another user needs
``API_KEY_WRITE`` too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework.decorators import action
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.viewsets import ViewSet

from sessions_app import selectors
from sessions_app.api.rest.base import ApiViewMixin, authenticated_user, client_of, query_answer, validated
from sessions_app.api.rest.filtersets import ApiKeyFilterSet
from sessions_app.api.rest.schema import list_result, query_parameters, ref
from sessions_app.api.rest.serializers import ApiKeyCreateInputSerializer, ApiKeyUpdateInputSerializer
from sessions_app.auth.roles import Role, has_role
from sessions_app.exceptions import InvalidParams, NotAuthorized, NotFound
from sessions_app.models import ApiKey
from sessions_app.services import api_keys as api_key_services

if TYPE_CHECKING:
    from django.contrib.auth.models import User


class RowsSchema(AutoSchema):
    """The ``list`` action answers what `schema.list_result` documents (rows, a page or a count):
    drf-spectacular must not wrap that in one more array as it does for list actions."""

    def _is_list_view(self, serializer: Any = None) -> bool:
        return False


KEY_ID = OpenApiParameter(
    "id", {"type": "integer", "minimum": 0, "maximum": 10**18 - 1}, OpenApiParameter.PATH
)


@extend_schema_view(
    list=extend_schema(
        operation_id="api_key_list",
        summary="List API keys (api_key.query)",
        parameters=query_parameters(ApiKeyFilterSet),
        responses={200: list_result("ApiKeyRow")},
    ),
    create=extend_schema(
        operation_id="api_key_create",
        summary="Create an API key (api_key.create); the answer is the only time the key is shown",
        request=ApiKeyCreateInputSerializer,
        responses={201: ref("ApiKeyCreated")},
    ),
    retrieve=extend_schema(
        operation_id="api_key_retrieve",
        summary="One API key (api_key.get_instance)",
        parameters=[KEY_ID],
        responses={200: ref("ApiKeyRow")},
    ),
    partial_update=extend_schema(
        operation_id="api_key_partial_update",
        summary="Rename an API key or change its expiry (api_key.update)",
        parameters=[KEY_ID],
        request=ApiKeyUpdateInputSerializer,
        responses={200: ref("ApiKeyRow")},
    ),
    destroy=extend_schema(
        operation_id="api_key_destroy",
        summary="Delete an API key (api_key.delete); its sessions end",
        parameters=[KEY_ID],
        responses={204: OpenApiResponse(description="Deleted.")},
    ),
    reset=extend_schema(
        operation_id="api_key_reset",
        summary="Replace an API key's secret (api_key.update reset); the old key stops working",
        parameters=[KEY_ID],
        request=None,
        responses={200: ref("ApiKeyCreated")},
    ),
)
class ApiKeyViewSet(ApiViewMixin, ViewSet):
    """API keys: the caller's own, or everyone's with ``API_KEY_READ`` (changes: ``API_KEY_WRITE``)."""

    schema = RowsSchema()
    lookup_value_regex = "[0-9]{1,18}"
    filterset_class = ApiKeyFilterSet

    def takes_query_parameters(self, request: Request) -> bool:
        return request.method in SAFE_METHODS and getattr(self, "action", None) == "list"

    # --- scope ---

    @staticmethod
    def visible_to(user: User) -> User | None:
        """The user whose keys the caller sees (None: everyone's, with ``API_KEY_READ``)."""
        return None if has_role(user, Role.API_KEY_READ) else user

    def key_for_change(self, request: Request, pk: str) -> ApiKey:
        """The key to change: visible to the caller (404 otherwise) and theirs or ``API_KEY_WRITE`` (403)."""
        user = authenticated_user(request)
        keys = ApiKey.objects.select_related("user")
        owner = self.visible_to(user)
        if owner is not None:
            keys = keys.filter(user=owner)
        key = keys.filter(pk=int(pk)).first()
        if key is None:
            raise NotFound(f"API key {pk} does not exist")
        if key.user_id != user.pk and not has_role(user, Role.API_KEY_WRITE):
            raise NotAuthorized()
        return key

    def row(self, key_id: int) -> Any:
        return selectors.api_key_query(filters=[["id", "=", key_id]], options={"get": True})

    # --- actions ---

    def list(self, request: Request) -> Response:
        query = ApiKeyFilterSet(request.query_params, request=request).query()
        owner = self.visible_to(authenticated_user(request))
        return query_answer(
            request,
            query,
            lambda filters, options: selectors.api_key_query(filters=filters, options=options, user=owner),
        )

    def retrieve(self, request: Request, pk: str) -> Response:
        rows = selectors.api_key_query(
            filters=[["id", "=", int(pk)]], options={}, user=self.visible_to(authenticated_user(request))
        )
        if not rows:
            raise NotFound(f"API key {pk} does not exist")
        return Response(rows[0])

    def create(self, request: Request) -> Response:
        data = validated(ApiKeyCreateInputSerializer, request)
        caller = request.user
        owner = caller
        username = data.get("username")
        if username is not None and username != caller.get_username():
            if not has_role(caller, Role.API_KEY_WRITE):
                raise NotAuthorized()
            owner = selectors.user_get_by_username(username=username)
            if owner is None:
                raise InvalidParams.one("username", "no such user")
        key, plaintext = api_key_services.api_key_create(
            user=owner,
            name=data["name"],
            expires_at=data.get("expires_at"),
            actor=caller.get_username(),
            address=client_of(request).origin,
        )
        return Response({**self.row(key.pk), "key": plaintext}, status=201)

    def partial_update(self, request: Request, pk: str) -> Response:
        key = self.key_for_change(request, pk)
        data = validated(ApiKeyUpdateInputSerializer, request)
        api_key_services.api_key_update(
            key=key,
            name=data.get("name"),
            expires_at=data.get("expires_at", ...),
            actor=request.user.get_username(),
            address=client_of(request).origin,
        )
        return Response(self.row(key.pk))

    def destroy(self, request: Request, pk: str) -> Response:
        key = self.key_for_change(request, pk)
        api_key_services.api_key_delete(
            key=key, actor=request.user.get_username(), address=client_of(request).origin
        )
        return Response(status=204)

    @action(detail=True, methods=["post"])
    def reset(self, request: Request, pk: str) -> Response:
        key = self.key_for_change(request, pk)
        _, plaintext = api_key_services.api_key_update(
            key=key, reset=True, actor=request.user.get_username(), address=client_of(request).origin
        )
        return Response({**self.row(key.pk), "key": plaintext})
