"""API keys say what is wrong (issue 17, item 8): a past expiry is a field error on every interface,
the revoke reason is on the API keys page, and a Bearer request with the right secret of a revoked
or expired key is told so -- while a wrong or unknown key keeps the generic answer."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from sessions_app.exceptions import InvalidParams
from sessions_app.models import ApiKey
from sessions_app.services import api_keys as key_services
from tests.api.conftest import Rest
from tests.conftest import PASSWORD, RPC

PAST = dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
PAST_MS = int(PAST.timestamp() * 1000)
PASSED = "must be in the future (2020-01-02 03:04:05 UTC has passed)"
REVOKE_HINT = "; to stop the key now, revoke it"
RESET_EXPIRED = "this key expired at 2020-01-02 03:04:05 UTC; give it a later expiry (or none) to reset it"


def _expire(key: ApiKey) -> None:
    """Move a key's expiry into the past in the database (no interface can set one)."""
    ApiKey.objects.filter(pk=key.pk).update(expires_at=PAST)
    key.refresh_from_db()


def _future(days: int = 3) -> dt.datetime:
    return (timezone.now() + dt.timedelta(days=days)).replace(microsecond=0)


# --- a past expiry is refused ------------------------------------------------------------------------


def test_service_refuses_a_past_expiry_and_writes_nothing(make_user: Any) -> None:
    alice = make_user("alice")
    with pytest.raises(InvalidParams) as info:
        key_services.api_key_create(user=alice, name="dead", expires_at=PAST)
    assert info.value.errors == [("api_key_create.expires_at", PASSED)]
    now = timezone.now()
    with pytest.raises(InvalidParams):
        key_services.api_key_create(user=alice, name="now", expires_at=now)  # "now" has passed too
    assert not ApiKey.objects.exists()
    future = _future()
    key, _ = key_services.api_key_create(user=alice, name="k", expires_at=future)
    with pytest.raises(InvalidParams) as info:
        key_services.api_key_update(key=key, expires_at=PAST)
    assert info.value.errors == [("api_key_update.expires_at", PASSED + REVOKE_HINT)]
    assert ApiKey.objects.get(pk=key.pk).expires_at == future


def test_an_expired_key_can_be_renamed_with_its_expiry_unchanged(make_user: Any) -> None:
    key, _ = key_services.api_key_create(user=make_user("alice"), name="old")
    _expire(key)
    key_services.api_key_update(key=key, name="renamed", expires_at=PAST.replace(microsecond=0))
    key.refresh_from_db()
    assert (key.name, key.expires_at) == ("renamed", PAST)


def test_resetting_an_expired_key_needs_a_later_expiry(make_user: Any) -> None:
    key, _ = key_services.api_key_create(user=make_user("alice"), name="k")
    _expire(key)
    old_hash = key.key_hash
    for kwargs in ({}, {"expires_at": PAST}):
        with pytest.raises(InvalidParams) as info:
            key_services.api_key_update(key=key, reset=True, **kwargs)
        (attribute, message), *_ = info.value.errors
        assert attribute == "api_key_update.expires_at"
        assert message.startswith(RESET_EXPIRED)
    assert ApiKey.objects.get(pk=key.pk).key_hash == old_hash
    _, plaintext = key_services.api_key_update(key=key, reset=True, expires_at=None)
    assert plaintext is not None
    assert ApiKey.objects.get(pk=key.pk).expires_at is None


def test_jsonrpc_create_and_update_refuse_a_past_expiry(rpc: Callable[..., RPC], make_user: Any) -> None:
    make_user("alice")
    client = rpc()
    client.login()
    for expires in ({"$date": PAST_MS}, "2020-01-02T03:04:05Z"):
        error = client.error("api_key.create", {"name": "dead", "expires_at": expires})
        assert error["code"] == -32602
        assert error["data"]["extra"] == [["api_key_create.expires_at", PASSED, 22]]
    assert not ApiKey.objects.exists()
    created = client.call("api_key.create", {"name": "k"})
    error = client.error("api_key.update", created["id"], {"expires_at": {"$date": PAST_MS}})
    assert error["data"]["extra"] == [["api_key_update.expires_at", PASSED + REVOKE_HINT, 22]]
    assert ApiKey.objects.get().expires_at is None
    _expire(ApiKey.objects.get())
    error = client.error("api_key.update", created["id"], {"reset": True})
    [[attribute, message, errno]] = error["data"]["extra"]
    assert (attribute, errno) == ("api_key_update.expires_at", 22)
    assert message.startswith(RESET_EXPIRED)
    # A later expiry in the same call: the reset goes through.
    reset = client.call("api_key.update", created["id"], {"reset": True, "expires_at": None})
    assert reset["key"].startswith(f"{created['id']}-")


def test_rest_create_update_and_reset_refuse_a_past_expiry(make_user: Any) -> None:
    make_user("alice")
    client = Rest()
    client.login("alice")
    response = client.post("/api_key/", {"name": "dead", "expires_at": "2020-01-02T03:04:05Z"})
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"attribute": "api_key_create.expires_at", "message": PASSED, "errno": 22}
    ]
    assert not ApiKey.objects.exists()
    created = client.post("/api_key/", {"name": "k"}).json()
    response = client.patch(f"/api_key/{created['id']}/", {"expires_at": {"$date": PAST_MS}})
    assert response.status_code == 400
    assert response.json()["errors"][0]["message"] == PASSED + REVOKE_HINT
    _expire(ApiKey.objects.get())
    response = client.post(f"/api_key/{created['id']}/reset/")
    assert response.status_code == 400
    assert response.json()["errors"][0]["attribute"] == "api_key_update.expires_at"
    assert response.json()["errors"][0]["message"].startswith(RESET_EXPIRED)


def test_manage_py_refuses_a_past_expiry(make_user: Any) -> None:
    make_user("alice")
    with pytest.raises(CommandError, match=re.escape(f"--expires: {PASSED}")):
        call_command(
            "api_key", "create", "--user", "alice", "--name", "k", "--expires", "2020-01-02T03:04:05"
        )
    assert not ApiKey.objects.exists()
    out = StringIO()
    call_command("api_key", "create", "--user", "alice", "--name", "k", "--expires", "1h", stdout=out)
    assert out.getvalue().startswith(f"{ApiKey.objects.get().pk}-")


# --- the browser --------------------------------------------------------------------------------------


class Browser:
    """Signed in through the sign-in page, CSRF enforced (so the step-up is recent)."""

    def __init__(self, username: str) -> None:
        self.http = Client(enforce_csrf_checks=True, REMOTE_ADDR="127.0.0.1")
        self.http.get("/sign-in/")
        response = self.post("/sign-in/", {"username": username, "password": PASSWORD, "next": "/"})
        assert response.status_code == 302

    def get(self, path: str) -> Any:
        return self.http.get(path)

    def post(self, path: str, data: dict[str, Any]) -> Any:
        return self.http.post(path, {"csrfmiddlewaretoken": self.http.cookies["csrftoken"].value, **data})


def _field_error(response: Any, field: str) -> str:
    match = re.search(rf'id="id_{field}_error">(.*?)</ul>', response.content.decode(), re.S)
    return match.group(1) if match else ""


def test_browser_create_with_a_past_expiry_is_a_field_error_not_a_dead_key(make_user: Any) -> None:
    make_user("alice")
    browser = Browser("alice")
    response = browser.post("/api-keys/", {"name": "dead", "expires_at": "2020-01-02T03:04:05"})
    assert response.status_code == 400
    assert "Must be in the future (2020-01-02 03:04:05 UTC has passed)." in _field_error(
        response, "expires_at"
    )
    assert "Copy the key now" not in response.content.decode()
    assert not ApiKey.objects.exists()
    future = _future()
    response = browser.post("/api-keys/", {"name": "k", "expires_at": future.strftime("%Y-%m-%dT%H:%M:%S")})
    assert "Copy the key now" in response.content.decode()
    assert ApiKey.objects.get().expires_at == future


def test_browser_edit_refuses_a_new_past_expiry_but_renames_an_expired_key(make_user: Any) -> None:
    key, _ = key_services.api_key_create(user=make_user("alice"), name="k")
    browser = Browser("alice")
    response = browser.post(f"/api-keys/{key.pk}/", {"name": "k", "expires_at": "2020-01-02T03:04:05"})
    assert response.status_code == 400
    error = _field_error(response, "expires_at")
    assert (
        "Must be in the future (2020-01-02 03:04:05 UTC has passed). To stop the key now, revoke it." in error
    )
    assert ApiKey.objects.get().expires_at is None
    _expire(key)
    response = browser.post(f"/api-keys/{key.pk}/", {"name": "renamed", "expires_at": "2020-01-02T03:04:05"})
    assert response.status_code == 302
    assert ApiKey.objects.get().name == "renamed"


def test_browser_reset_of_an_expired_key_says_why_and_makes_no_key(make_user: Any) -> None:
    key, _ = key_services.api_key_create(user=make_user("alice"), name="k")
    _expire(key)
    browser = Browser("alice")
    page = browser.get(f"/api-keys/{key.pk}/reset/").content.decode()
    assert "This key expired on 2020-01-02 03:04 UTC: a new secret could never be used." in page
    response = browser.post(f"/api-keys/{key.pk}/reset/", {"confirm": "1"})
    assert response.status_code == 400
    body = response.content.decode()
    assert "This key has expired: give it a later expiry (Edit) before resetting it." in body
    assert 'id="new-key"' not in body
    assert ApiKey.objects.get().key_hash == key.key_hash


def test_the_revoke_reason_is_shown_escaped_on_the_api_keys_page(make_user: Any) -> None:
    alice = make_user("alice")
    key, _ = key_services.api_key_create(user=alice, name="k")
    key_services.api_key_revoke(key=key, reason='<b>laptop</b> lost & "found"', actor="alice")
    key_services.api_key_create(user=alice, name="plain")  # an active key shows no reason
    page = Browser("alice").get("/api-keys/").content.decode()
    assert "Reason: &lt;b&gt;laptop&lt;/b&gt; lost &amp; &quot;found&quot;</span>" in page
    assert "<b>laptop</b>" not in page
    assert page.count("Reason:") == 1


# --- Bearer with a revoked or expired key ----------------------------------------------------------------


def _rest_401(headers: dict[str, str], remote_addr: str = "127.0.0.1") -> tuple[str, str]:
    response = Client(REMOTE_ADDR=remote_addr).get("/api/v2.0/auth/me", headers=headers)
    assert response.status_code == 401
    return response.json()["errors"][0]["message"], response["WWW-Authenticate"]


def _rpc_reason(headers: dict[str, str]) -> str:
    error = RPC().error("auth.me", **{f"HTTP_{k.upper()}": v for k, v in headers.items()})
    assert error["code"] == -32001
    assert error["data"]["errname"] == "ENOTAUTHENTICATED"
    return str(error["data"]["reason"])


def _bearer(text: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {text}"}


@pytest.mark.parametrize(
    ("state", "reason"), [("revoked", "API key revoked"), ("expired", "API key expired")]
)
def test_bearer_with_a_revoked_or_expired_key_is_told_so(make_user: Any, state: str, reason: str) -> None:
    key, text = key_services.api_key_create(user=make_user("alice"), name="k")
    if state == "revoked":
        key_services.api_key_revoke(key=key, reason="laptop lost", actor="alice")
    else:
        _expire(key)
    message, challenge = _rest_401(_bearer(text))
    assert message == reason
    assert challenge == f'Bearer realm="api", error="invalid_token", error_description="{reason}"'
    assert reason in _rpc_reason(_bearer(text))
    assert "laptop lost" not in message  # the owner's note stays on the owner's page


def test_revoked_wins_over_expired(make_user: Any) -> None:
    key, text = key_services.api_key_create(user=make_user("alice"), name="k")
    key_services.api_key_revoke(key=key, reason="x", actor="alice")
    _expire(key)
    assert _rest_401(_bearer(text))[0] == "API key revoked"


def test_wrong_unknown_or_disabled_keys_keep_the_generic_answer(make_user: Any) -> None:
    alice = make_user("alice")
    revoked, revoked_text = key_services.api_key_create(user=alice, name="revoked")
    key_services.api_key_revoke(key=revoked, reason="x", actor="alice")
    expired, _ = key_services.api_key_create(user=alice, name="expired")
    _expire(expired)
    bob = make_user("bob")
    _, bobs_text = key_services.api_key_create(user=bob, name="bobs")
    bob.is_active = False
    bob.save(update_fields=["is_active"])
    generic = _rest_401({})
    assert generic[1] == 'Bearer realm="api"'
    generic_reason = _rpc_reason({})
    for case, text in {
        "wrong secret of a revoked key": f"{revoked.pk}-{'x' * 64}",
        "wrong secret of an expired key": f"{expired.pk}-{'y' * 64}",
        "unknown key": f"99999-{revoked_text.partition('-')[2]}",
        "malformed": "not-a-key",
        "disabled owner": bobs_text,
    }.items():
        assert _rest_401(_bearer(text)) == generic, case
        assert _rpc_reason(_bearer(text)) == generic_reason, case


def test_a_key_revoked_for_plain_http_says_so(make_user: Any) -> None:
    key, text = key_services.api_key_create(user=make_user("alice"), name="k")
    message, _ = _rest_401(_bearer(text), remote_addr="198.51.100.7")
    assert message == "API key revoked: it was sent over an insecure transport"
    key.refresh_from_db()
    assert key.revoked
    assert _rest_401(_bearer(text))[0] == "API key revoked"
