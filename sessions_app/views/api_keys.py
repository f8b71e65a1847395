"""API key pages: list and create, update, reset, revoke, delete. See `sessions_app.views`."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone

from sessions_app import selectors
from sessions_app.auth.clients import client_from_request
from sessions_app.auth.request import RegistryRequest
from sessions_app.auth.roles import Role, has_role
from sessions_app.exceptions import InvalidParams
from sessions_app.forms import (
    ApiKeyCreateForm,
    ApiKeyRevokeForm,
    ApiKeyUpdateForm,
    ConfirmForm,
)
from sessions_app.models import ApiKey
from sessions_app.services import api_keys as api_key_services
from sessions_app.views.base import _render, _stepped_up, _stepup_form, page

# --- API keys -----------------------------------------------------------------------------------------


def _key_form_errors(form: ApiKeyCreateForm | ApiKeyUpdateForm | ConfirmForm, exc: InvalidParams) -> None:
    """The service's validation errors next to the form field they name (``api_key_create.name`` →
    ``name``); an error of the call as a whole (the key cap) above the form."""
    for attribute, message in exc.errors:
        field = attribute.rpartition(".")[2]
        form.add_error(field if "." in attribute and field in form.fields else None, message)


def _key_expired(key: ApiKey) -> bool:
    return key.expires_at is not None and key.expires_at <= timezone.now()


def _key_scope(request: HttpRequest, role: Role) -> Any:
    """None (every user's keys) with ``role``, else the caller: others' keys are then 404s."""
    return None if has_role(request.user, role) else request.user


@page(methods=("GET", "POST"))
def api_key_list(request: RegistryRequest) -> HttpResponse:
    """The caller's API keys (everyone's with ``API_KEY_READ`` and ``?all=1``); create one."""
    can_choose_user = has_role(request.user, Role.API_KEY_WRITE)
    form = ApiKeyCreateForm(request.POST or None, can_choose_user=can_choose_user)
    # A key is a new credential of the account: the password (and code) again first (F2).
    stepup_form = _stepup_form(request, submitted=request.method == "POST")
    stepup_ok = True
    if request.method == "POST" and form.is_valid():
        stepup_ok = _stepped_up(request, stepup_form, "api_key.create")
        if stepup_ok:
            stepup_form = None  # proven now: not asked again on this page
    if request.method == "POST" and form.is_valid() and stepup_ok:
        owner = request.user
        username = form.cleaned_data.get("username")
        if username and username != request.user.get_username():
            owner = selectors.user_get_by_username(username=username)
            if owner is None:
                form.add_error("username", "There is no user with this name.")
        if not form.errors:
            try:
                key, plaintext = api_key_services.api_key_create(
                    user=owner,
                    name=form.cleaned_data["name"],
                    expires_at=form.cleaned_data.get("expires_at"),
                    actor=request.user.get_username(),
                    address=client_from_request(request).origin,
                )
            except InvalidParams as exc:
                _key_form_errors(form, exc)
            else:
                return _render(request, "apikey_created.html", {"key": key, "plaintext": plaintext})
    show_all = request.GET.get("all") == "1" and has_role(request.user, Role.API_KEY_READ)
    rows = selectors.api_key_rows(user=None if show_all else request.user)
    status = 400 if form.errors or not stepup_ok else 200
    context = {
        "form": form,
        "stepup_form": stepup_form,
        "rows": rows,
        "show_all": show_all,
        "now": timezone.now(),
    }
    return _render(request, "apikey_list.html", context, status=status)


@page(methods=("GET", "POST"))
def api_key_update(request: HttpRequest, key_id: int) -> HttpResponse:
    """Rename a key or change its expiry."""
    key = selectors.api_key_get(key_id=key_id, user=_key_scope(request, Role.API_KEY_WRITE))
    if key is None:
        raise Http404("No such API key.")
    initial = {"name": key.name, "expires_at": key.expires_at}
    form = ApiKeyUpdateForm(request.POST or None, initial=initial, current_expiry=key.expires_at)
    if request.method == "POST" and form.is_valid():
        try:
            api_key_services.api_key_update(
                key=key,
                name=form.cleaned_data["name"],
                expires_at=form.cleaned_data["expires_at"],
                actor=request.user.get_username(),
                address=client_from_request(request).origin,
            )
        except InvalidParams as exc:
            _key_form_errors(form, exc)
        else:
            messages.success(request, f"API key “{key.name}” was updated.")
            return HttpResponseRedirect(reverse("sessions_app:api-key-list"))
    status = 400 if form.errors else 200
    return _render(request, "apikey_form.html", {"form": form, "key": key}, status=status)


@page(methods=("GET", "POST"))
def api_key_reset(request: RegistryRequest, key_id: int) -> HttpResponse:
    """Confirm (with the step-up, F2), then give a key a new secret (shown once); the old one stops
    working at once."""
    key = selectors.api_key_get(key_id=key_id, user=_key_scope(request, Role.API_KEY_WRITE))
    if key is None:
        raise Http404("No such API key.")
    form = ConfirmForm(request.POST if request.method == "POST" else None)
    # Bound once the confirmation is posted: the list's button only opens this page.
    submitted = request.method == "POST" and "confirm" in request.POST
    stepup_form = _stepup_form(request, submitted=submitted)
    expired = _key_expired(key)
    if submitted and form.is_valid() and expired:
        # Refused before the password is asked: a new secret for an expired key could never be used.
        form.add_error(None, "This key has expired: give it a later expiry (Edit) before resetting it.")
    elif submitted and form.is_valid() and _stepped_up(request, stepup_form, "api_key.reset"):
        try:
            key, plaintext = api_key_services.api_key_update(
                key=key,
                reset=True,
                actor=request.user.get_username(),
                address=client_from_request(request).origin,
            )
        except InvalidParams as exc:  # expired since the check above
            _key_form_errors(form, exc)
        else:
            context: dict[str, Any] = {"key": key, "plaintext": plaintext, "reset": True}
            return _render(request, "apikey_created.html", context)
    context = {"form": form, "stepup_form": stepup_form, "key": key, "action": "reset", "expired": expired}
    refused = submitted and bool(form.errors)  # a bare POST (the list's button) only asks
    status = 400 if refused or (stepup_form is not None and stepup_form.errors) else 200
    return _render(request, "apikey_confirm.html", context, status=status)


@page(methods=("GET", "POST"))
def api_key_revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    """Confirm, then revoke a key (it stays listed, and its sessions end)."""
    key = selectors.api_key_get(key_id=key_id, user=_key_scope(request, Role.API_KEY_WRITE))
    if key is None:
        raise Http404("No such API key.")
    form = ApiKeyRevokeForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        api_key_services.api_key_revoke(
            key=key,
            reason=form.cleaned_data["reason"],
            actor=request.user.get_username(),
            address=client_from_request(request).origin,
        )
        messages.success(request, f"API key “{key.name}” was revoked.")
        return HttpResponseRedirect(reverse("sessions_app:api-key-list"))
    status = 400 if form.errors and "reason" in form.errors else 200
    context = {"form": form, "key": key, "action": "revoke"}
    return _render(request, "apikey_confirm.html", context, status=status)


@page(methods=("GET", "POST"))
def api_key_delete(request: HttpRequest, key_id: int) -> HttpResponse:
    """Confirm, then delete a key (its sessions end)."""
    key = selectors.api_key_get(key_id=key_id, user=_key_scope(request, Role.API_KEY_WRITE))
    if key is None:
        raise Http404("No such API key.")
    form = ConfirmForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        name = key.name
        api_key_services.api_key_delete(
            key=key, actor=request.user.get_username(), address=client_from_request(request).origin
        )
        messages.success(request, f"API key “{name}” was deleted.")
        return HttpResponseRedirect(reverse("sessions_app:api-key-list"))
    return _render(request, "apikey_confirm.html", {"form": form, "key": key, "action": "delete"})
