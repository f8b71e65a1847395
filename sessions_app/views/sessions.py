"""Sessions pages: the dashboard (active, history), my sessions, terminating. See `sessions_app.views`."""

from __future__ import annotations

import functools
from typing import Any

from django.contrib import messages
from django.core.cache import cache
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone

from sessions_app import charts, selectors
from sessions_app.clients import client_from_request
from sessions_app.forms import (
    ConfirmForm,
    SessionFilterForm,
    SessionHistoryFilterForm,
    SessionTerminateForm,
)
from sessions_app.roles import Role, has_role
from sessions_app.services.sessions import (
    session_terminate,
    session_terminate_others,
)
from sessions_app.views.base import _filtered_page, _local_url, _render, page

# --- sessions -----------------------------------------------------------------------------------------


CHARTS_TTL = 30  # seconds


def _dashboard_charts() -> dict[str, Any]:
    """The three charts, drawn from aggregates at most `CHARTS_TTL` seconds old.

    Counting 700,000 active sessions by type takes 200-400 ms on PostgreSQL whatever the index; the
    table below the charts is always live, the charts say when they were computed.
    """

    def compute() -> dict[str, Any]:
        types = selectors.session_counts_by_credentials()
        hours = selectors.audit_logins_per_hour()
        return {
            "chart_types": charts.bar_chart(
                types, title="Active sessions by credential type", chart_id="chart-types"
            ),
            "chart_logins": charts.logins_chart(
                hours, title="Successful logins per hour, last 24 hours", chart_id="chart-logins"
            ),
            "chart_failures": charts.failures_chart(
                hours, title="Failed logins per hour, last 24 hours", chart_id="chart-failures"
            ),
            "active_total": sum(count for _, count in types),
            "logins_total": sum(ok for _, ok, _ in hours),
            "failures_total": sum(failed for _, _, failed in hours),
            "charts_at": timezone.now(),
        }

    return cache.get_or_set("sessions_app:dashboard-charts", compute, CHARTS_TTL)  # type: ignore[no-any-return]


@page(role=Role.AUTH_SESSIONS_READ)
def session_list(request: HttpRequest) -> HttpResponse:
    """The sessions dashboard: active sessions, filters, keyset pages and the three charts."""
    current = request.auth_session  # type: ignore[attr-defined]
    form = SessionFilterForm(request.GET)
    result, status = _filtered_page(
        form, functools.partial(selectors.session_page, current_pk=current.pk, device=True)
    )
    context = {
        "form": form,
        "page": result,
        "tab": "active",
        "can_terminate": has_role(request.user, Role.AUTH_SESSIONS_WRITE),
        **_dashboard_charts(),
    }
    return _render(request, "session_list.html", context, status=status)


@page(role=Role.AUTH_SESSIONS_READ)
def session_history(request: HttpRequest) -> HttpResponse:
    """Ended sessions: when, why (end reason) and by whom."""
    form = SessionHistoryFilterForm(request.GET)
    result, status = _filtered_page(
        form, functools.partial(selectors.session_page, history=True, device=True)
    )
    return _render(
        request, "session_history.html", {"form": form, "page": result, "tab": "history"}, status=status
    )


@page(role=Role.AUTH_SESSIONS_WRITE, methods=("GET", "POST"))
def session_terminate_view(request: HttpRequest, public_id: str) -> HttpResponse:
    """Confirm, then end any active session (``auth.terminate_session``)."""
    return _terminate(request, public_id, owner=None, back=reverse("sessions_app:session-list"))


@page(methods=("GET", "POST"))
def my_session_terminate(request: HttpRequest, public_id: str) -> HttpResponse:
    """Confirm, then end one of the caller's own sessions; another user's id is a 404."""
    return _terminate(request, public_id, owner=request.user, back=reverse("sessions_app:my-session-list"))


def _terminate(request: HttpRequest, public_id: str, *, owner: Any, back: str) -> HttpResponse:
    target = selectors.session_get_active(public_id=public_id, user=owner)
    if target is None:
        raise Http404("No active session has this id.")
    form = SessionTerminateForm(request.POST if request.method == "POST" else None)
    next_url = _local_url(request, request.POST.get("next") or request.GET.get("next"), back)
    if request.method == "POST" and form.is_valid():
        ended = session_terminate(
            public_id=public_id, actor=request.auth_session, client=client_from_request(request)
        )
        if ended:
            messages.success(
                request, f"Session {public_id[:12]}… of {target.username or '—'} was terminated."
            )
        else:
            messages.info(request, "That session had already ended.")
        return HttpResponseRedirect(next_url)
    context = {
        "target": target,
        "form": form,
        "next": next_url,
        "is_current": target.pk == request.auth_session.pk,  # type: ignore[attr-defined]
        "action": request.path,
    }
    return _render(request, "session_confirm_terminate.html", context)


@page(role=Role.AUTH_SESSIONS_WRITE, methods=("GET", "POST"))
def session_terminate_others_view(request: HttpRequest) -> HttpResponse:
    """Confirm, then end every other active session but internal ones (``auth.terminate_other_sessions``)."""
    return _terminate_others(request, own_only=False, back=reverse("sessions_app:session-list"))


@page(methods=("GET", "POST"))
def my_session_terminate_others(request: HttpRequest) -> HttpResponse:
    """Confirm, then end the caller's other sessions."""
    return _terminate_others(request, own_only=True, back=reverse("sessions_app:my-session-list"))


def _terminate_others(request: HttpRequest, *, own_only: bool, back: str) -> HttpResponse:
    form = ConfirmForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        count = session_terminate_others(
            current=request.auth_session,  # type: ignore[attr-defined]
            client=client_from_request(request),
            own_only=own_only,
        )
        messages.success(request, f"{count} other session{'s' if count != 1 else ''} terminated.")
        return HttpResponseRedirect(back)
    context = {"form": form, "own_only": own_only, "back": back, "action": request.path}
    return _render(request, "session_confirm_terminate_others.html", context)


@page()
def my_session_list(request: HttpRequest) -> HttpResponse:
    """The caller's own active sessions, the current one marked."""
    current = request.auth_session  # type: ignore[attr-defined]
    form = SessionFilterForm(request.GET)
    result, status = _filtered_page(
        form, functools.partial(selectors.session_page, user=request.user, current_pk=current.pk, device=True)
    )
    return _render(request, "session_list_mine.html", {"form": form, "page": result}, status=status)
