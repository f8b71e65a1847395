"""Sessions pages: the dashboard (active, history), my sessions, terminating. See `sessions_app.views`."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from typing import Any, cast

from django.contrib import messages
from django.core import signing
from django.core.cache import cache
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.timesince import timesince

from sessions_app import charts, selectors, tables, targets
from sessions_app.auth.clients import client_from_request
from sessions_app.auth.request import RegistryRequest
from sessions_app.auth.roles import Role, has_role
from sessions_app.forms import (
    MAX_STEP_SIZE,
    TYPE_THE_NUMBER_ABOVE,
    BulkStepForm,
    BulkTerminateForm,
    SessionFilterForm,
    SessionHistoryFilterForm,
    SessionTerminateForm,
)
from sessions_app.models import EndReason, UserSession
from sessions_app.query import QueryError
from sessions_app.services.maintenance import BulkState, sessions_terminate_selection
from sessions_app.services.session_ending import session_terminate
from sessions_app.views.base import _filtered_page, _local_url, _render, current_session, page

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

    # Only `compute` fills this key, and get_or_set returns its value when the key is missing.
    return cast("dict[str, Any]", cache.get_or_set("sessions_app:dashboard-charts", compute, CHARTS_TTL))


@page(role=Role.AUTH_SESSIONS_READ)
def session_list(request: RegistryRequest) -> HttpResponse:
    """The sessions dashboard: active sessions, filters, keyset pages and the three charts."""
    current = current_session(request)
    form = SessionFilterForm(request.GET)
    result, status = _filtered_page(
        form, functools.partial(tables.session_page, current_pk=current.pk, device=True)
    )
    context = {
        "form": form,
        "page": result,
        "tab": "active",
        "can_terminate": has_role(request.user, Role.AUTH_SESSIONS_WRITE),
        # The filters alone (no sort, no page): "Terminate the sessions matching these filters…".
        "bulk_query": urlencode(_filter_params(form, request.GET))
        if result is not None and form.filters()
        else "",
        **_dashboard_charts(),
    }
    return _render(request, "session_list.html", context, status=status)


@page(role=Role.AUTH_SESSIONS_READ)
def session_history(request: RegistryRequest) -> HttpResponse:
    """Ended sessions: when, why (end reason) and by whom."""
    form = SessionHistoryFilterForm(request.GET)
    result, status = _filtered_page(form, functools.partial(tables.session_page, history=True, device=True))
    return _render(
        request, "session_history.html", {"form": form, "page": result, "tab": "history"}, status=status
    )


@page(role=Role.AUTH_SESSIONS_WRITE, methods=("GET", "POST"))
def session_terminate_view(request: RegistryRequest, public_id: str) -> HttpResponse:
    """Confirm, then end any active session (``auth.terminate_session``)."""
    return _terminate(request, public_id, owner=None, back=reverse("sessions_app:session-list"))


@page(methods=("GET", "POST"))
def my_session_terminate(request: RegistryRequest, public_id: str) -> HttpResponse:
    """Confirm, then end one of the caller's own sessions; another user's id is a 404."""
    return _terminate(request, public_id, owner=request.user, back=reverse("sessions_app:my-session-list"))


#: Why a session ended, in a few words, for the one who tried to end it again.
_ENDED_AS: dict[str, str] = {
    EndReason.LOGOUT: "signed out",
    EndReason.TERMINATED: "terminated",
    EndReason.EXPIRED: "expired",
    EndReason.IDLE: "inactive for too long",
    EndReason.CREDENTIAL_REVOKED: "its credential was revoked",
    EndReason.USER_DISABLED: "the account was disabled",
    EndReason.PASSWORD_CHANGED: "the password was changed",
    EndReason.PARENT_ENDED: "the session it came from ended",
    EndReason.EVICTED: "too many sessions were open",
}


def _ago(moment: dt.datetime) -> str:
    if timezone.now() - moment < dt.timedelta(minutes=1):
        return "just now"
    return f"{timesince(moment, depth=1).replace(chr(0xA0), ' ')} ago"


def _already_ended(row: UserSession) -> str:
    """The message "That session had already ended (why, when, by whom)." -- also for one past its
    lifetime that no request has ended yet (it is ended, in effect: no request can use it)."""
    if row.ended_at is None:
        return f"That session had already ended (expired, {_ago(row.expires_at)})."
    parts = [_ENDED_AS.get(row.end_reason or "", row.end_reason or "ended"), _ago(row.ended_at)]
    if row.ended_by:
        parts.append(f"by {row.ended_by}")
    return f"That session had already ended ({', '.join(parts)})."


def _terminate(request: RegistryRequest, public_id: str, *, owner: Any, back: str) -> HttpResponse:
    next_url = _local_url(request, request.POST.get("next") or request.GET.get("next"), back)
    target = selectors.session_get_active(public_id=public_id, user=owner)
    if target is None:
        # Ended already (a stale row, a second click): say so where the click came from. An id that
        # never existed -- or, on My sessions, is another user's -- is a 404.
        known = targets.session_get_any(public_id=public_id, user=owner)
        if known is None:
            raise Http404("No session has this id.")
        messages.info(request, _already_ended(known))
        return HttpResponseRedirect(next_url)
    form = SessionTerminateForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        ended = session_terminate(
            public_id=public_id, actor=request.auth_session, client=client_from_request(request)
        )
        if ended:
            messages.success(
                request, f"Session {public_id[:12]}… of {target.username or '—'} was terminated."
            )
        else:  # ended between the page and the click
            known = targets.session_get_any(public_id=public_id, user=owner)
            messages.info(
                request, _already_ended(known) if known is not None else "That session had already ended."
            )
        return HttpResponseRedirect(next_url)
    context = {
        "target": target,
        "form": form,
        "next": next_url,
        "is_current": target.pk == current_session(request).pk,
        "action": request.path,
    }
    return _render(request, "session_confirm_terminate.html", context)


# --- bulk terminations (issue 17): see `_bulk` --------------------------------------------------------

#: Work per batch request of the JavaScript mode (seconds, roughly).
STEP_SECONDS = 1.0
BULK_SALT = "sessions_app.views.sessions.bulk-terminate"
#: How long a batch request's ``state`` stays valid (a page left open, then submitted).
STATE_MAX_AGE = 6 * 3600
#: GET parameters of the dashboard that are not filters (sort order, page).
_NOT_FILTERS = frozenset({"sort", "dir", "cursor", "back"})


def _filter_params(form: SessionFilterForm, data: Any) -> list[tuple[str, str]]:
    """The filter fields' values in ``data`` (no sort, no page), to carry into the confirmation form."""
    return [
        (name, value)
        for name in form.fields
        if name not in _NOT_FILTERS
        for value in data.getlist(name)
        if value != ""
    ]


def _jsonable(value: Any) -> Any:
    """Query-filters as JSON values (datetimes as ISO strings), for the audit record and the key."""
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


@page(role=Role.AUTH_SESSIONS_WRITE, methods=("GET", "POST"))
def session_terminate_matching(request: RegistryRequest) -> HttpResponse:
    """Confirm, then end every active session matching the dashboard's filters (not the caller's)."""
    data = request.POST if request.method == "POST" else request.GET
    filter_form = SessionFilterForm(data)
    params = _filter_params(filter_form, data)
    dashboard = reverse("sessions_app:session-list")
    back = f"{dashboard}?{urlencode(params)}" if params else dashboard
    if not filter_form.is_valid():  # the dashboard shows what is wrong, next to the field
        return HttpResponseRedirect(back)
    filters = filter_form.filters()
    if not filters:
        messages.info(
            request, "Set a filter first. To end every other session, use “Terminate other sessions”."
        )
        return HttpResponseRedirect(dashboard)
    return _bulk(
        request,
        kind="matching",
        filters=filters,
        back=back,
        extra={"params": params, "filters_json": json.dumps(_jsonable(filters))},
    )


@page(role=Role.AUTH_SESSIONS_WRITE, methods=("GET", "POST"))
def session_terminate_others_view(request: RegistryRequest) -> HttpResponse:
    """Confirm, then end every other active session but internal ones (``auth.terminate_other_sessions``)."""
    return _bulk(request, kind="others", back=reverse("sessions_app:session-list"))


@page(methods=("GET", "POST"))
def my_session_terminate_others(request: RegistryRequest) -> HttpResponse:
    """Confirm, then end the caller's other sessions."""
    return _bulk(request, kind="mine", back=reverse("sessions_app:my-session-list"))


def _selection(
    request: RegistryRequest, *, kind: str, filters: list[Any] | None, upto: int
) -> targets.SessionSelection:
    current = current_session(request)
    if kind == "matching":
        return targets.SessionSelection(upto=upto, keep=current.pk, filters=filters)
    return targets.SessionSelection(
        upto=upto, keep=current.pk, others=True, user_id=current.user_id if kind == "mine" else None
    )


def _describe(kind: str, filters: list[Any] | None) -> dict[str, Any]:
    """What was selected, for the summary audit record."""
    if kind == "matching":
        return {"page": "dashboard", "filters": _jsonable(filters)}
    return {"page": "my sessions" if kind == "mine" else "dashboard", "others": True}


def _result_message(state: BulkState, *, kind: str) -> str:
    """The result, e.g. "10,760 other sessions terminated, and 2,837 token sessions that came from them." """
    others = "other " if kind != "matching" else ""
    verb = "ended" if kind == "mine" else "terminated"
    if not state.ended and not state.cascaded:
        return f"No {others}session was active any more: nothing was {verb}."
    text = f"{state.ended:,} {others}session{'s' if state.ended != 1 else ''} {verb}"
    if state.cascaded:
        text += (
            f", and {state.cascaded:,} token session{'s' if state.cascaded != 1 else ''} that came "
            f"from {'them' if state.ended != 1 else 'it'}"
        )
    return f"{text}."


def _bulk(
    request: RegistryRequest,
    *,
    kind: str,
    back: str,
    filters: list[Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> HttpResponse:
    """A bulk termination: "Terminate the sessions matching these filters" and "Terminate other
    sessions" (dashboard), "Sign out everywhere else" (My sessions) -- the confirmation page (GET),
    the whole run (a plain POST) or one batch of it (``batch=1``).

    The confirmation page counts the selection exactly (`targets.selection_plan`: the sessions, those
    that end as terminated, the token sessions that end with them) and fixes it: the form carries the
    filters and ``upto``, the newest session's key when the page was shown, so sessions created
    after it are never ended. Above 100 sessions their number must be typed; the server checks it
    against the number shown and against a fresh count (`BulkTerminateForm.check_count`).

    Progress, across several workers and without JavaScript (the decision): the work is always a
    walk of the selection in primary-key order, in short transactions
    (`maintenance.sessions_terminate_selection`), which can stop after a slice and go on from the
    key it reached. Without JavaScript the form's POST runs the whole walk in that one request and
    redirects to the result (the browser shows its own "loading"; a second click walks alongside the
    first, and each session still ends once, audited once). With JavaScript (sessions_app/static/sessions_app/bulk.js) the
    page disables the button and posts the same form batch by batch (``batch=1``): each request ends
    at most ``size`` sessions or about `STEP_SECONDS` of work and answers JSON ``{ended, cascaded,
    total_ended, total_cascaded, remaining, done, state, redirect}``; the page shows a <progress>
    and goes to ``redirect`` at the end. Nothing is kept between requests on the server -- no
    process-local job table that another worker could not see, no polling of a long request: the
    walk's position and running totals travel in ``state``, signed (`signing`) and bound to the
    selection, so any worker can take the next request and the final message's totals cannot be
    forged; the selection is re-derived from the form each time. Closing the page stops the walk
    after the current batch; what ended stays ended (one audit record and one event per session,
    whichever request ended it) and opening the page again offers the rest. The summary audit
    record (``sessions.terminate``) is written when the walk ends.
    """
    posted = request.method == "POST"
    form = BulkTerminateForm(request.POST if posted else None)
    stepping = posted and request.POST.get("batch") == "1"
    upto = None
    if posted and form.is_valid():
        upto = form.cleaned_data["upto"]
        if upto is None:  # a form without it (an older page, a script): the set as of now
            upto = targets.session_newest_pk()
        selection = _selection(request, kind=kind, filters=filters, upto=upto)
        try:
            step = functools.partial(
                _bulk_step, request, kind=kind, selection=selection, filters=filters, back=back
            )
            if stepping and request.POST.get("state"):  # a later batch: checked at the first one
                return step(selected=None)
            if form.check_count(targets.selection_count(selection=selection)):
                if stepping:
                    return step(selected=form.cleaned_data["expected"])
                state = sessions_terminate_selection(
                    selection=selection,
                    actor=request.user.get_username(),
                    address=client_from_request(request).origin,
                    describe=_describe(kind, filters),
                    selected=form.cleaned_data["expected"],
                )
                messages.success(request, _result_message(state, kind=kind))
                return HttpResponseRedirect(back)
        except QueryError:  # the filters passed when the page was shown: the dashboard says why not now
            if stepping:
                return JsonResponse({"errors": {"query": [{"message": "invalid filters"}]}}, status=400)
            return HttpResponseRedirect(back)
    if stepping:  # the page's script then submits the form normally, which shows these errors
        return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
    # The confirmation page, also again after an error (typed number, missing confirmation): the
    # same set (``upto``), counted again -- the number to type is the one shown now.
    if upto is None and posted:
        upto = form.cleaned_data.get("upto")
    if upto is None:
        upto = targets.session_newest_pk()
    try:
        plan = targets.selection_plan(selection=_selection(request, kind=kind, filters=filters, upto=upto))
    except QueryError:
        return HttpResponseRedirect(back)
    context = {
        "kind": kind,
        "own_only": kind == "mine",
        "plan": plan,
        "upto": upto,
        "form": form,
        "needs_typing": plan.count > TYPE_THE_NUMBER_ABOVE,
        "max_step": MAX_STEP_SIZE,
        "back": back,
        "action": request.path,
        **(extra or {}),
    }
    template = {"matching": "session_confirm_terminate_matching.html"}.get(
        kind, "session_confirm_terminate_others.html"
    )
    return _render(request, template, context, status=400 if posted else 200)


def _bulk_step(
    request: RegistryRequest,
    *,
    kind: str,
    selection: targets.SessionSelection,
    filters: list[Any] | None,
    selected: int | None,
    back: str,
) -> HttpResponse:
    """One batch request of the JavaScript mode: JSON, or 400 JSON with ``errors``. The first one
    (no ``state``) comes after the form's checks; the later ones carry its signed ``state``, bound to
    this selection (and to the number confirmed, ``selected``, for the summary record)."""
    step = BulkStepForm(request.POST)
    if not step.is_valid():
        return JsonResponse({"errors": step.errors.get_json_data()}, status=400)
    key = hashlib.sha256(
        json.dumps([kind, _jsonable(filters), selection.upto, selection.keep]).encode()
    ).hexdigest()
    state = BulkState()
    if step.cleaned_data["state"]:
        try:
            carried = signing.loads(step.cleaned_data["state"], salt=BULK_SALT, max_age=STATE_MAX_AGE)
        except signing.BadSignature:
            carried = None
        if not isinstance(carried, dict) or carried.get("key") != key:
            message = "This page's progress is no longer valid: open the page again."
            return JsonResponse({"errors": {"state": [{"message": message}]}}, status=400)
        state = BulkState(**carried["state"])
        selected = carried["selected"]
    selected = selected or 0
    before = (state.ended, state.cascaded)
    state = sessions_terminate_selection(
        selection=selection,
        actor=request.user.get_username(),
        address=client_from_request(request).origin,
        describe=_describe(kind, filters),
        selected=selected,
        state=state,
        max_rows=step.cleaned_data["size"] or MAX_STEP_SIZE,
        max_seconds=STEP_SECONDS,
    )
    if state.done:
        messages.success(request, _result_message(state, kind=kind))
    return JsonResponse(
        {
            "ended": state.ended - before[0],
            "cascaded": state.cascaded - before[1],
            "total_ended": state.ended,
            "total_cascaded": state.cascaded,
            "remaining": 0 if state.done else targets.selection_count(selection=selection, after=state.after),
            "done": state.done,
            "state": signing.dumps(
                {"key": key, "selected": selected, "state": state.carried()}, salt=BULK_SALT
            ),
            "redirect": back if state.done else None,
        }
    )


@page()
def my_session_list(request: RegistryRequest) -> HttpResponse:
    """The caller's own active sessions, the current one marked."""
    current = current_session(request)
    form = SessionFilterForm(request.GET)
    result, status = _filtered_page(
        form, functools.partial(tables.session_page, user=request.user, current_pk=current.pk, device=True)
    )
    return _render(request, "session_list_mine.html", {"form": form, "page": result}, status=status)
