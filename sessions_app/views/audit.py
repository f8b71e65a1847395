"""The audit log page. See `sessions_app.views`."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from sessions_app import tables
from sessions_app.auth.roles import Role
from sessions_app.forms import (
    AuditFilterForm,
)
from sessions_app.views.base import _filtered_page, _render, _with_devices, page

# --- audit --------------------------------------------------------------------------------------------


@page(role=Role.AUDIT_READ)
def audit_list(request: HttpRequest) -> HttpResponse:
    """Audit records, newest first, with the same filter form idea as the dashboard."""
    form = AuditFilterForm(request.GET)
    result, status = _filtered_page(form, tables.audit_page)
    # A successful sign-in names the session it opened: its device and place are that session's.
    _with_devices(result)
    return _render(request, "auditrecord_list.html", {"form": form, "page": result}, status=status)
