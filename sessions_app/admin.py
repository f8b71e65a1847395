"""Django admin: sessions, API keys and audit records, read-mostly.

Nothing here writes a row itself: the change forms are read-only, rows cannot be added or deleted
from the admin (that would skip the cascades and audit records of the services), and the bulk
actions call the same services as the APIs, under the same roles. Secret columns (``secret_hash``,
``user_auth_hash``, ``key_hash``, and the TOTP device key) are never displayed.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app.clients import client_from_request
from sessions_app.models import ApiKey, AuditRecord, UserSession
from sessions_app.roles import Role, has_role
from sessions_app.services.api_keys import api_key_revoke
from sessions_app.services.sessions import session_terminate

_site_has_permission = admin.site.has_permission


def _admin_has_permission(request: HttpRequest) -> bool:
    """The admin is for browser sessions (not per-request API keys), and not for a one-time-password
    session before it has set a new password (the sign-in page sends that one to the password page)."""
    session = getattr(request, "auth_session", None)
    if session is None or session.password_change_required:
        return False
    return bool(_site_has_permission(request))


admin.site.has_permission = _admin_has_permission  # type: ignore[method-assign]


class ReadOnlyAdmin(admin.ModelAdmin):
    """Viewable, searchable, filterable; never added, edited or deleted through the admin."""

    show_full_result_count = False  # no second COUNT(*) over a million rows per page

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class SessionStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "Active"), ("ended", "Ended")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "active":
            return queryset.filter(ended_at__isnull=True)
        if self.value() == "ended":
            return queryset.filter(ended_at__isnull=False)
        return queryset


@admin.register(UserSession)
class UserSessionAdmin(ReadOnlyAdmin):
    list_display = [
        "short_id",
        "username",
        "credentials",
        "origin",
        "secure_transport",
        "internal",
        "created_at",
        "last_seen_at",
        "ended_at",
        "end_reason",
        "ended_by",
    ]
    list_filter = [SessionStatusFilter, "credentials", "internal", "secure_transport", "end_reason"]
    search_fields = ["=public_id", "^username", "^origin", "^api_key_name"]
    ordering = ["-created_at", "-id"]
    list_select_related = False
    fields = [
        "public_id",
        "user",
        "username",
        "credentials",
        "login_at",
        "api_key_id",
        "api_key_name",
        "parent_id",
        "root_credentials",
        "root_username",
        "root_api_key_name",
        "origin",
        "internal",
        "secure_transport",
        "created_at",
        "last_seen_at",
        "expires_at",
        "idle_timeout",
        "password_change_required",
        "ended_at",
        "end_reason",
        "ended_by",
    ]
    readonly_fields = fields
    actions = ["terminate_sessions"]

    @admin.display(description="id")
    def short_id(self, obj: UserSession) -> str:
        return f"{obj.public_id[:10]}…"

    def has_terminate_permission(self, request: HttpRequest) -> bool:
        return has_role(request.user, Role.AUTH_SESSIONS_WRITE)

    @admin.action(description="Terminate selected sessions", permissions=["terminate"])
    def terminate_sessions(self, request: HttpRequest, queryset: QuerySet[UserSession]) -> None:
        client = client_from_request(request)
        actor = getattr(request, "auth_session", None)
        ended = sum(
            session_terminate(public_id=public_id, actor=actor, client=client)
            for public_id in queryset.filter(ended_at__isnull=True).values_list("public_id", flat=True)
        )
        self.message_user(request, f"{ended} session(s) terminated.", messages.SUCCESS)


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyAdmin):
    list_display = ["name", "id", "user", "created_at", "expires_at", "last_used_at", "revoked"]
    list_filter = ["revoked"]
    search_fields = ["name", "user__username"]
    ordering = ["-created_at"]
    list_select_related = ["user"]
    fields = ["name", "user", "created_at", "expires_at", "last_used_at", "revoked", "revoked_reason"]
    readonly_fields = fields
    actions = ["revoke_keys"]

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return has_role(request.user, Role.API_KEY_WRITE)

    @admin.action(description="Revoke selected API keys", permissions=["revoke"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        address = client_from_request(request).origin
        keys = list(queryset.filter(revoked=False))
        for key in keys:
            api_key_revoke(
                key=key, reason="Revoked in the admin", actor=request.user.get_username(), address=address
            )
        self.message_user(request, f"{len(keys)} API key(s) revoked.", messages.SUCCESS)


@admin.register(AuditRecord)
class AuditRecordAdmin(ReadOnlyAdmin):
    list_display = ["timestamp", "event", "username", "success", "address", "session"]
    list_filter = ["event", "success"]
    search_fields = ["^username", "^address", "=session", "=audit_id"]
    ordering = ["-timestamp", "-id"]
    fields = ["audit_id", "timestamp", "event", "username", "session", "address", "success", "event_data"]
    readonly_fields = fields


# django-otp's own TOTPDevice admin shows the device key and a QR code of it; this one never does.
if admin.site.is_registered(TOTPDevice):
    admin.site.unregister(TOTPDevice)


@admin.register(TOTPDevice)
class TOTPDeviceAdmin(admin.ModelAdmin):
    """Second-factor devices: viewable and removable (removing one ends its user's sessions)."""

    list_display = ["user", "name", "confirmed", "created_at", "last_used_at"]
    list_filter = ["confirmed"]
    search_fields = ["user__username", "name"]
    list_select_related = ["user"]
    fields = ["user", "name", "confirmed", "created_at", "last_used_at", "digits", "step"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
