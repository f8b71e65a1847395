"""Browser pages (``app_name = "sessions_app"``); URL names are ``<model>-<action>``."""

from __future__ import annotations

from django.urls import path

from sessions_app.server import streams
from sessions_app.views import account, api_keys, audit, devices, sessions

app_name = "sessions_app"

urlpatterns = [
    path("", account.home, name="home"),
    path("sign-in/", account.sign_in, name="sign-in"),
    path("sign-in/otp/", account.sign_in_otp, name="sign-in-otp"),
    path("sign-out/", account.sign_out, name="sign-out"),
    path("password/", account.password_change, name="password-change"),
    path("sessions/", sessions.session_list, name="session-list"),
    path("sessions/history/", sessions.session_history, name="session-history"),
    path("sessions/events/", streams.session_events, name="session-events"),
    path(
        "sessions/terminate-others/", sessions.session_terminate_others_view, name="session-terminate-others"
    ),
    path(
        "sessions/terminate-matching/",
        sessions.session_terminate_matching,
        name="session-terminate-matching",
    ),
    path("sessions/<str:public_id>/terminate/", sessions.session_terminate_view, name="session-terminate"),
    path("me/sessions/", sessions.my_session_list, name="my-session-list"),
    path(
        "me/sessions/terminate-others/",
        sessions.my_session_terminate_others,
        name="my-session-terminate-others",
    ),
    path(
        "me/sessions/<str:public_id>/terminate/", sessions.my_session_terminate, name="my-session-terminate"
    ),
    path("me/devices/", devices.known_device_list, name="known-device-list"),
    path("me/devices/<int:pk>/forget/", devices.known_device_forget, name="known-device-forget"),
    path("me/notices/", devices.notice_banner, name="notice-banner"),
    path("me/notices/events/", streams.notice_events, name="notice-events"),
    path("me/notices/<int:pk>/confirm/", devices.notice_confirm, name="notice-confirm"),
    path("me/notices/<int:pk>/deny/", devices.notice_deny, name="notice-deny"),
    path("sign-in-notices/<str:token>/", devices.notice_link, name="notice-link"),
    path("api-keys/", api_keys.api_key_list, name="api-key-list"),
    path("api-keys/<int:key_id>/", api_keys.api_key_update, name="api-key-update"),
    path("api-keys/<int:key_id>/reset/", api_keys.api_key_reset, name="api-key-reset"),
    path("api-keys/<int:key_id>/revoke/", api_keys.api_key_revoke, name="api-key-revoke"),
    path("api-keys/<int:key_id>/delete/", api_keys.api_key_delete, name="api-key-delete"),
    path("audit/", audit.audit_list, name="audit-list"),
    path("two-factor/", account.totp_detail, name="totp-detail"),
    path("two-factor/enrol/", account.totp_enrol, name="totp-enrol"),
    path("two-factor/disable/", account.totp_disable, name="totp-disable"),
]
