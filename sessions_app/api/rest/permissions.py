"""Who may call what: authenticated callers, roles (spec §6), and the one-time-password gate.

Anonymous callers get 401 (DRF raises ``NotAuthenticated`` whenever no authenticator succeeded),
authenticated callers without the role 403 ``Not authorized``. A session opened with an admin-issued
one-time password may only call the views that set ``before_password_change`` until a new password
is set (as in JSON-RPC). A denied role is audited, like a role-protected JSON-RPC call; the view
audits granted calls once it has answered (`base.ApiView`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from sessions_app.audit import audit_record
from sessions_app.auth.clients import client_from_request
from sessions_app.auth.roles import Role, has_role
from sessions_app.models import AuditEvent

if TYPE_CHECKING:
    from rest_framework.views import APIView


def audit_call(request: Request, name: str, success: bool) -> None:
    """A ``METHOD_CALL`` audit record of a role-protected call (same shape as JSON-RPC's)."""
    django_request = request._request
    session = getattr(django_request, "auth_session", None)
    user = django_request.user
    with transaction.atomic():
        audit_record(
            event=AuditEvent.METHOD_CALL,
            success=success,
            username=user.get_username() if user.is_authenticated else None,
            session=session.public_id if session is not None else None,
            address=client_from_request(django_request).origin,
            event_data={"method": name},
        )


class IsRegistryUser(BasePermission):
    """Authenticated, and not held back by a pending password change."""

    message = "Not authorized"

    def has_permission(self, request: Request, view: APIView) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        session = getattr(request._request, "auth_session", None)
        if (
            session is not None
            and session.password_change_required
            and not getattr(view, "before_password_change", False)
        ):
            self.message = "A new password must be set first"
            return False
        return True


class HasRole(IsRegistryUser):
    """`IsRegistryUser` holding ``role`` (directly or implied); use `role_required`."""

    role: Role

    def has_permission(self, request: Request, view: APIView) -> bool:
        if not super().has_permission(request, view):
            return False
        granted = has_role(request.user, self.role)
        audit_name: str | None = getattr(view, "audit_name", None)
        if not granted and audit_name:
            audit_call(request, audit_name, False)
        return granted


def role_required(role: Role) -> type[HasRole]:
    return type(f"Has{role.value.title().replace('_', '')}", (HasRole,), {"role": role})
