"""Routes of the REST API, mounted at ``/api/v2.0/`` by ``project/urls.py``.

Anything else under the prefix is a JSON 404 (never Django's HTML page).
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path, re_path, register_converter
from django.views.decorators.csrf import csrf_exempt
from rest_framework.routers import SimpleRouter

from sessions_app.api.rest import login, views
from sessions_app.api.rest.exceptions import ERRNO_BY_STATUS, error_body
from sessions_app.api.rest.viewsets import ApiKeyViewSet


class SessionIdConverter:
    """A session's public id: URL-safe characters only, so odd ids never reach the database (E10)."""

    regex = "[A-Za-z0-9_-]{1,128}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(SessionIdConverter, "session_id")

app_name = "rest_api"

router = SimpleRouter()
router.register("api_key", ApiKeyViewSet, basename="api-key")


@csrf_exempt
def not_found(request: HttpRequest, *args: object, **kwargs: object) -> JsonResponse:
    response = JsonResponse(error_body([("", "Not found.")], ERRNO_BY_STATUS[404]), status=404)
    response["Cache-Control"] = "no-store"
    return response


urlpatterns = [
    path("auth/sessions", views.SessionListView.as_view(), name="session-list"),
    path("auth/sessions/query", views.SessionQueryView.as_view(), name="session-query"),
    path(
        "auth/sessions/terminate_others",
        views.SessionTerminateOthersView.as_view(),
        name="session-terminate-others",
    ),
    path(
        "auth/sessions/<session_id:session_id>/terminate",
        views.SessionTerminateView.as_view(),
        name="session-terminate",
    ),
    path("auth/my_sessions", views.MySessionListView.as_view(), name="my-session-list"),
    path("auth/my_sessions/query", views.MySessionQueryView.as_view(), name="my-session-query"),
    path(
        "auth/my_sessions/terminate_others",
        views.MySessionTerminateOthersView.as_view(),
        name="my-session-terminate-others",
    ),
    path(
        "auth/my_sessions/<session_id:session_id>/terminate",
        views.MySessionTerminateView.as_view(),
        name="my-session-terminate",
    ),
    path("auth/me", views.MeView.as_view(), name="me"),
    path("auth/login", login.LoginView.as_view(), name="login"),
    path("auth/login_continue", login.LoginContinueView.as_view(), name="login-continue"),
    path("auth/logout", views.LogoutView.as_view(), name="logout"),
    path("auth/generate_token", views.GenerateTokenView.as_view(), name="generate-token"),
    path("auth/csrf", views.CsrfView.as_view(), name="csrf"),
    path("audit/", views.AuditListView.as_view(), name="audit-list"),
    path("audit/query", views.AuditQueryView.as_view(), name="audit-query"),
    *router.urls,
    path("schema/", views.SchemaView.as_view(), name="schema"),
    path("docs/", views.DocsView.as_view(url_name="rest_api:schema"), name="docs"),
    re_path(r"^[\s\S]*$", not_found),  # not ".*": a path holding a newline (%0A) is ours too
]
