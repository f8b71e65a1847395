"""F5: the Django admin never lets a secret be probed (security.md group F).

Every registered ModelAdmin × every secret column reachable from its model (its own, and through a
relation: ``user__password``, ``api_key__key_hash``, ``totpdevice__key`` …) is refused as a filter,
an ordering or a ``_to_field`` with HTTP 400, like Django's own ``?password__startswith=``; search
never matches a secret; no secret is ever part of a changelist or a change page.

Which columns are secret is decided here independently of the application (by name: ``…hash``,
``…secret``, ``…key``, ``password``, ``token``, ``nonce``, ``salt``, ``seed``, ``verifier``), so that
the test still catches a secret column the application forgot to classify.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.core import checks
from django.db import models
from django.test import Client, RequestFactory
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app.auth.clients import Client as Peer
from sessions_app.models import ApiKey, Credentials, UserSession
from sessions_app.services.api_keys import api_key_create
from sessions_app.services.sessions import session_create
from tests.conftest import PASSWORD

SECRET_NAME = re.compile(r"(?:^|_)(?:hash|secret|key|password|token|nonce|salt|seed|verifier)$")
#: Every way of naming a column in a changelist query string.
LOOKUPS = ["", "__exact", "__iexact", "__startswith", "__istartswith", "__regex", "__iregex", "__in", "__gte"]


def _secret_columns(model: type[models.Model]) -> list[str]:
    return [f.name for f in model._meta.concrete_fields if not f.is_relation and SECRET_NAME.search(f.name)]


def _secret_paths(model: type[models.Model], depth: int = 2, prefix: str = "") -> Iterator[str]:
    """Lookup paths from ``model`` to a secret column, through up to ``depth`` relations."""
    for name in _secret_columns(model):
        yield prefix + name
    if depth == 0:
        return
    for field in model._meta.get_fields():
        if field.is_relation and field.related_model is not None and not isinstance(field.related_model, str):
            yield from _secret_paths(field.related_model, depth - 1, f"{prefix}{field.name}__")


def _registry() -> list[tuple[type[models.Model], admin.ModelAdmin[Any]]]:
    return sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label)


def _changelist(model: type[models.Model]) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def _sign_in(username: str) -> Client:
    """A browser signed in through the sign-in page (the admin needs a registry session)."""
    browser = Client(REMOTE_ADDR="127.0.0.1", HTTP_HOST="127.0.0.1")
    response = browser.post("/sign-in/", {"username": username, "password": PASSWORD, "next": "/"})
    assert response.status_code == 302, response.content[:300]
    return browser


@pytest.fixture
def secrets_everywhere(make_user: Any) -> dict[str, Any]:
    """One row of every model that holds a secret: alice's password, TOTP seed, API key, session."""
    alice = make_user("alice")
    device = TOTPDevice.objects.create(user=alice, name="phone", confirmed=True)
    key, plaintext = api_key_create(user=alice, name="alices")
    session = session_create(
        credentials=Credentials.API_KEY, client=Peer(address="10.1.2.3", port=4000), user=alice, api_key=key
    ).session
    values = [
        alice.password,
        device.key,
        base64.b32encode(device.bin_key).decode().rstrip("="),
        key.key_hash,
        plaintext,
        session.secret_hash,
        session.user_auth_hash,
    ]
    return {
        "alice": alice,
        "device": device,
        "key": key,
        "session": session,
        "values": [v for v in values if v],
    }


@pytest.fixture
def root(make_user: Any) -> Client:
    make_user("root", superuser=True)
    return _sign_in("root")


def test_f05_the_enumeration_covers_the_secrets_of_the_issue() -> None:
    """The test's own list of secret paths includes every probe of the issue's reproduction."""
    registered = dict(_registry())
    assert {TOTPDevice, UserSession, ApiKey} <= set(registered)
    assert {"key", "user__password"} <= set(_secret_paths(TOTPDevice))
    assert {"secret_hash", "user_auth_hash", "api_key__key_hash", "user__password"} <= set(
        _secret_paths(UserSession)
    )
    assert {"key_hash", "user__password", "sessions__secret_hash"} <= set(_secret_paths(ApiKey))


def test_f05_every_admin_refuses_lookups_on_secret_fields(root: Client, secrets_everywhere: Any) -> None:
    """Every registered admin × every secret reachable from its model × every lookup → 400."""
    tried = 0
    for model, model_admin in _registry():
        url = _changelist(model)
        assert root.get(url).status_code == 200, url
        for path in _secret_paths(model, depth=1):
            for lookup in LOOKUPS:
                response = root.get(url, {path + lookup: "a"})
                assert response.status_code == 400, (url, path + lookup, response.status_code)
                tried += 1
            for order in (path, f"-{path}", f"1.{path}"):
                response = root.get(url, {"o": order})
                assert response.status_code == 400, (url, "o=" + order, response.status_code)
            response = root.get(url, {"_to_field": path, "_popup": "1"})
            assert response.status_code == 400, (url, "_to_field=" + path)
        # Two relations away: the same answer, checked on the admin itself (hundreds of paths).
        request = root.get(url).wsgi_request
        for path in _secret_paths(model, depth=2):
            for lookup in ("", "__startswith", "__regex"):
                assert not model_admin.lookup_allowed(path + lookup, "a", request), (model, path + lookup)
    assert tried > 100


def test_f05_the_issue_reproduction_view_only_staff_cannot_rebuild_a_totp_seed(
    make_user: Any, secrets_everywhere: Any
) -> None:
    """A staff user with only "Can view TOTP device" probes another user's seed: 400 every time."""
    staff = make_user("staff")
    staff.is_staff = True
    staff.save(update_fields=["is_staff"])
    staff.user_permissions.add(Permission.objects.get(codename="view_totpdevice"))
    browser = _sign_in("staff")
    url = _changelist(TOTPDevice)
    alice, seed = secrets_everywhere["alice"], secrets_everywhere["device"].key
    assert browser.get(url, {"user": alice.pk}).status_code == 200
    for probe in (
        {"user": alice.pk, "key__regex": f"^{seed[0]}"},
        {"user": alice.pk, "key__startswith": seed[0]},
        {"user": alice.pk, "key": seed},
        {"user": alice.pk, "key__gte": "8"},
        {"user__password__startswith": alice.password[:3]},
        {"o": "key"},
    ):
        assert browser.get(url, probe).status_code == 400, probe


def _named(entries: Any) -> set[str]:
    """The field paths named by admin option entries (``"-key"``, ``"^name"``, ``("user", Filter)``)."""
    names = set()
    for entry in entries:
        name = entry[0] if isinstance(entry, (tuple, list)) else entry
        if isinstance(name, str):
            names.add(name.lstrip("^=@-"))
    return names


def test_f05_search_and_ordering_never_reach_a_secret(root: Client, secrets_everywhere: Any) -> None:
    """Search fields, list filters, list columns and orderings of every admin name no secret; a search
    for a secret's value (or its prefix) finds nothing; every offered ordering column works."""
    values = secrets_everywhere["values"]
    for model, model_admin in _registry():
        url = _changelist(model)
        request = root.get(url).wsgi_request
        secret = set(_secret_paths(model, depth=2))
        assert not _named(model_admin.get_search_fields(request)) & secret, model
        assert not _named(model_admin.get_list_filter(request)) & secret, model
        assert not _named(model_admin.get_list_display(request)) & secret, model
        assert not _named(model_admin.get_ordering(request) or ()) & secret, model
        assert not _named(model_admin.get_sortable_by(request)) & secret, model
        for column in range(len(model_admin.get_list_display(request))):
            assert root.get(url, {"o": str(column)}).status_code == 200, (url, column)
        for value in values:
            for term in (value, value[:8]):
                assert root.get(url, {"q": term}).status_code == 200, url
                found, _ = model_admin.get_search_results(request, model._default_manager.all(), term)
                assert not found.exists(), url  # never print the term: it is a secret


def test_f05_secrets_are_never_displayed(root: Client, secrets_everywhere: Any) -> None:
    """No changelist and no change page of any registered admin carries a secret's value."""
    values = secrets_everywhere["values"]
    for model, _model_admin in _registry():
        pages = [_changelist(model)]
        for pk in model._default_manager.values_list("pk", flat=True)[:5]:
            name = f"admin:{model._meta.app_label}_{model._meta.model_name}_change"
            pages.append(reverse(name, args=[pk]))
        for page in pages:
            response = root.get(page)
            assert response.status_code == 200, page
            body = response.content.decode()
            leaked = [i for i, value in enumerate(values) if value in body]
            assert not leaked, (page, leaked)  # indexes only: never print a secret


def test_f05_system_check_passes_for_the_project() -> None:
    from sessions_app.admin import check_admin_secrets

    assert check_admin_secrets(app_configs=None) == []


def test_f05_system_check_reports_an_admin_that_exposes_a_secret() -> None:
    from sessions_app.admin import check_admin_secrets

    class Careless(admin.ModelAdmin):  # type: ignore[type-arg]
        list_display = ["name", "key_hash"]
        search_fields = ["user__password"]
        ordering = ["-key_hash"]

    site = admin.AdminSite(name="careless")
    site.register(ApiKey, Careless)
    errors = check_admin_secrets(app_configs=None, site=site)
    assert errors
    assert all(isinstance(e, checks.Error) for e in errors)
    assert {e.id for e in errors} == {"sessions_app.E101"}
    text = " ".join(e.msg for e in errors)
    assert "key_hash" in text
    assert "user__password" in text


def test_f05_any_admin_registered_later_is_protected_with_its_inlines() -> None:
    """An admin that shows every field by default (and an inline doing the same) fails the check;
    `hide_secret_fields` gives it the project's behaviour and the check then passes."""
    from django.contrib.auth import get_user_model

    from sessions_app.admin import check_admin_secrets, hide_secret_fields

    class Devices(admin.TabularInline):  # type: ignore[type-arg]
        model = TOTPDevice

    class Users(admin.ModelAdmin):  # type: ignore[type-arg]
        inlines = [Devices]

    user_model = get_user_model()
    site = admin.AdminSite(name="later")
    site.register(user_model, Users)
    site.register(TOTPDevice)
    problems = " ".join(e.msg for e in check_admin_secrets(app_configs=None, site=site))
    assert "inline Devices change form (every field by default): key" in problems
    assert "lookup allowed: password__startswith" in problems
    assert "lookup allowed: key__regex" in problems

    hide_secret_fields(site)
    assert check_admin_secrets(app_configs=None, site=site) == []
    request = RequestFactory().get("/")
    request.user = SimpleNamespace(has_perm=lambda perm, obj=None: True)
    device_admin = site._registry[TOTPDevice]
    assert "key" not in device_admin.get_fields(request)
    assert "key" not in device_admin.get_form(request)().fields
    inline = site._registry[user_model].get_inline_instances(request)[0]
    assert "key" not in inline.get_formset(request).form.base_fields
    assert not site._registry[user_model].lookup_allowed("totpdevice__key__startswith", "a", request)
