"""Browser pages (``app_name = "sessions_app"``); URL names are ``<model>-<action>``."""

from __future__ import annotations

from django.urls import path

from sessions_app import device_views, streams, views

app_name = "sessions_app"

urlpatterns = [
    path("", views.home, name="home"),
    path("sign-in/", views.sign_in, name="sign-in"),
    path("sign-in/otp/", views.sign_in_otp, name="sign-in-otp"),
    path("sign-out/", views.sign_out, name="sign-out"),
    path("password/", views.password_change, name="password-change"),
    path("sessions/", views.session_list, name="session-list"),
    path("sessions/history/", views.session_history, name="session-history"),
    path("sessions/events/", streams.session_events, name="session-events"),
    path("sessions/terminate-others/", views.session_terminate_others_view, name="session-terminate-others"),
    path("sessions/<str:public_id>/terminate/", views.session_terminate_view, name="session-terminate"),
    path("me/sessions/", views.my_session_list, name="my-session-list"),
    path(
        "me/sessions/terminate-others/",
        views.my_session_terminate_others,
        name="my-session-terminate-others",
    ),
    path("me/sessions/<str:public_id>/terminate/", views.my_session_terminate, name="my-session-terminate"),
    path("me/devices/", device_views.known_device_list, name="known-device-list"),
    path("me/devices/<int:pk>/forget/", device_views.known_device_forget, name="known-device-forget"),
    path("me/notices/", device_views.notice_banner, name="notice-banner"),
    path("me/notices/events/", streams.notice_events, name="notice-events"),
    path("me/notices/<int:pk>/confirm/", device_views.notice_confirm, name="notice-confirm"),
    path("me/notices/<int:pk>/deny/", device_views.notice_deny, name="notice-deny"),
    path("sign-in-notices/<str:token>/", device_views.notice_link, name="notice-link"),
    path("api-keys/", views.api_key_list, name="api-key-list"),
    path("api-keys/<int:key_id>/", views.api_key_update, name="api-key-update"),
    path("api-keys/<int:key_id>/reset/", views.api_key_reset, name="api-key-reset"),
    path("api-keys/<int:key_id>/revoke/", views.api_key_revoke, name="api-key-revoke"),
    path("api-keys/<int:key_id>/delete/", views.api_key_delete, name="api-key-delete"),
    path("audit/", views.audit_list, name="audit-list"),
    path("two-factor/", views.totp_detail, name="totp-detail"),
    path("two-factor/enrol/", views.totp_enrol, name="totp-enrol"),
    path("two-factor/disable/", views.totp_disable, name="totp-disable"),
]
