"""Root URL configuration."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

from sessions_app.api.jsonrpc import jsonrpc_view

urlpatterns = [
    path("api/current", jsonrpc_view, name="jsonrpc"),
    path("admin/", admin.site.urls),
]
