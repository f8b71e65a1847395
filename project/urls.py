"""Root URL configuration, and the project's plain views that belong to no area of the app."""

from __future__ import annotations

import logging

from django.contrib import admin
from django.db import connection
from django.http import HttpRequest, HttpResponsePermanentRedirect, JsonResponse
from django.templatetags.static import static
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

from sessions_app.api.jsonrpc import jsonrpc_view
from sessions_app.views import account

logger = logging.getLogger(__name__)

# The admin signs in and out through the registry's own pages (same lockout, delay and audit).
admin.site.login, admin.site.logout = account.admin_sign_in, account.sign_out  # type: ignore[method-assign,assignment]  # Django has no setting for these views: the default site's are replaced once, at import


def favicon(request: HttpRequest) -> HttpResponsePermanentRedirect:
    """Browsers ask for /favicon.ico on every site, whatever a page links (issue 17: it was a 404)."""
    return HttpResponsePermanentRedirect(static("sessions_app/favicon.svg"))


@csrf_exempt  # GET and HEAD only; a load balancer has no token, and a POST gets 405, not a CSRF page
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """``GET /healthz`` for load balancers and service managers: 200 ``{"status": "ok"}`` when this
    process can run a query, else 503 ``{"status": "unavailable", ...}`` (issue 20).

    Every request is checked in the database, so a process that cannot reach it can serve nothing:
    taking it out of rotation is right. One ``SELECT 1`` on the connection requests use (the pool's,
    on PostgreSQL), nothing else: no authentication, no session, no audit record, no count toward the
    address limits. The answer never carries the error (addresses, driver messages); the log does.
    """
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception:  # whatever stops the query (down, refused, pool exhausted) is "unavailable"
        logger.warning("health check: the database cannot be reached", exc_info=True)
        response = JsonResponse({"status": "unavailable", "reason": "database unreachable"}, status=503)
    else:
        response = JsonResponse({"status": "ok"})
    response["Cache-Control"] = "no-store"
    return response


urlpatterns = [
    path("api/current", jsonrpc_view, name="jsonrpc"),
    path("api/v2.0/", include("sessions_app.api.rest.urls")),
    path("admin/", admin.site.urls),
    path("favicon.ico", favicon),
    path("healthz", healthz, name="healthz"),
    path("", include("sessions_app.urls")),
]
