"""Root URL configuration."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.urls import include, path

from sessions_app.api.jsonrpc import jsonrpc_view
from sessions_app.views import account

# The admin signs in and out through the registry's own pages (same lockout, delay and audit).
admin.site.login = account.admin_sign_in  # type: ignore[method-assign]
admin.site.logout = account.sign_out  # type: ignore[method-assign]


def favicon(request: HttpRequest) -> HttpResponsePermanentRedirect:
    """Browsers ask for /favicon.ico on every site, whatever a page links (issue 17: it was a 404)."""
    return HttpResponsePermanentRedirect(static("sessions_app/favicon.svg"))


urlpatterns = [
    path("api/current", jsonrpc_view, name="jsonrpc"),
    path("api/v2.0/", include("sessions_app.api.rest.urls")),
    path("admin/", admin.site.urls),
    path("favicon.ico", favicon),
    path("", include("sessions_app.urls")),
]
