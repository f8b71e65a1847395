"""The failure matrix of spec/scram.md: every way a SCRAM login can fail, in process over
``POST /api/current`` (and a few over the real WebSocket, plain and TLS).

Every refusal is exactly ``{"response_type": "AUTH_ERR"}`` (never ``EXPIRED``, ``DENIED`` or an
exception), after the failure delay, with one audit record (mechanism ``SCRAM``), and never counts
toward the owner's (or the presented) account name. A wrong proof counts toward the key's own lockout
counter (F7), as a wrong secret over ``API_KEY_PLAIN`` does; a right proof refused because the key is
revoked or expired counts exactly as ``API_KEY_PLAIN`` counts the right secret of such a key (not at
all: a right credential is no guess). A ``CLIENT_FINAL_MESSAGE`` with no exchange in progress is the
JSON-RPC error -32001 ``EINVAL``; malformed parameters (not strings) are -32602 naming the field.
"""

from __future__ import annotations

import base64
import datetime as dt
import errno
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.test import Client as DjangoClient
from django.utils import timezone

from sessions_app.auth import throttle
from sessions_app.auth.channel_binding import certificate_binding
from sessions_app.auth.clients import Client as Peer
from sessions_app.models import AccountLockout, ApiKey, AuditRecord, ScramExchange
from sessions_app.services.api_keys import api_key_create, api_key_revoke, verifier_open
from sessions_app.services.login import login_ex
from tests.conftest import PASSWORD, RPC, TEST_SCRAM_ITERATIONS
from tests.integration.servers import Server
from tests.scram.client import (
    AUTH_ERR,
    GS2_BOUND,
    ScramClient,
    b64,
    der_of,
    final_params,
    first_params,
    make_certificate,
)
from tests.scram.conftest import TLSServer
from tests.ws.helpers import TIMEOUT, RPCSocket, open_socket, settled, wss_connect

NOT_IN_PROGRESS = "SCRAM authentication is not in progress"
UNKNOWN_ID = 987_654


# --- helpers ------------------------------------------------------------------------------------------


def key_failures(key_id: int) -> int:
    """The failures counted toward API key ``key_id`` (its lockout row, F7)."""
    row = AccountLockout.objects.filter(username=throttle.api_key_lockout_name(key_id)).first()
    return row.failures if row is not None else 0


def scram_failures() -> list[AuditRecord]:
    """The records of failed SCRAM attempts (not those of the locks they caused)."""
    return [
        record
        for record in AuditRecord.objects.filter(event="AUTHENTICATION", success=False).order_by("id")
        if record.event_data.get("mechanism") == "SCRAM" and not record.event_data.get("lockout")
    ]


def login_call(client: RPC, **request: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda params: client.call("auth.login_ex", params, **request)


def assert_not_in_progress(error: dict[str, Any]) -> None:
    assert error["code"] == -32001, error
    assert (error["data"]["error"], error["data"]["errname"]) == (errno.EINVAL, "EINVAL"), error
    assert NOT_IN_PROGRESS in error["data"]["reason"], error


def invalid_fields(error: dict[str, Any]) -> list[str]:
    assert error["code"] == -32602, error
    return [attribute for attribute, _, _ in error["data"]["extra"]]


class Refusals:
    """Checks that a refused attempt left exactly the traces of one failure."""

    def __init__(self, delays: list[None]) -> None:
        self.delays = delays
        self.mark()

    def mark(self) -> None:
        self._audit = {record.pk for record in scram_failures()}
        self._delays = len(self.delays)
        self._counters = {row.username: row.failures for row in AccountLockout.objects.all()}

    def check(
        self,
        answer: Any,
        *,
        key_id: int | None,
        counted: bool,
        names: tuple[str, ...] = ("alice", "bob"),
        error: str | None = None,
    ) -> AuditRecord:
        assert answer == AUTH_ERR
        assert type(answer) is dict
        records = [record for record in scram_failures() if record.pk not in self._audit]
        assert len(records) == 1, [r.event_data for r in records]
        if error is not None:
            assert records[0].event_data["error"] == error, records[0].event_data
        assert len(self.delays) == self._delays + 1, "the failure delay was not applied once"
        if key_id is not None:
            before = self._counters.get(throttle.api_key_lockout_name(key_id), 0)
            assert key_failures(key_id) == before + (1 if counted else 0)
        for name in names:  # never toward an account name, the owner's or the one presented
            assert AccountLockout.objects.filter(username=name).first() is None, name
        self.mark()
        return records[0]


@pytest.fixture
def delays(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """Records every failure delay (`throttle.sleep_after_failure`; no time is spent in tests)."""
    calls: list[None] = []
    monkeypatch.setattr(throttle, "sleep_after_failure", lambda: calls.append(None))
    return calls


@pytest.fixture
def refusals(db: Any, delays: list[None]) -> Refusals:
    return Refusals(delays)


@pytest.fixture
def alice_key(make_user: Callable[..., Any]) -> tuple[ApiKey, str]:
    """alice (password PASSWORD) and her key ``"<id>-<secret>"``; bob exists too."""
    alice = make_user("alice")
    make_user("bob")
    return api_key_create(user=alice, name="ci")


@pytest.fixture
def binding_cert(settings: Any, certificate: tuple[Path, Path]) -> bytes:
    """The service binds to the package's certificate (ECDSA-SHA256); its binding."""
    settings.SESSIONS_TLS_BINDING_CERT = str(certificate[0])
    return hashlib.sha256(der_of(certificate[0])).digest()


def other_nonce(combined: str) -> str:
    raw = bytearray(base64.b64decode(combined))
    raw[-1] ^= 0x01  # the server's share, one bit off
    return b64(bytes(raw))


# --- at the final message: the proof, the key, the nonce, the binding ---------------------------------


@pytest.mark.parametrize("row", ["wrong secret", "key of another user", "unknown key id"])
def test_a_wrong_proof_is_auth_err_counted_toward_the_key(
    rpc: Callable[..., RPC], alice_key: tuple[ApiKey, str], refusals: Refusals, row: str
) -> None:
    key, text = alice_key
    if row == "wrong secret":
        scram, key_id = ScramClient("alice", f"{key.pk}-{'x' * 64}"), key.pk
    elif row == "key of another user":  # bob presents alice's key, right secret and all
        scram, key_id = ScramClient("bob", text), key.pk
    else:
        scram, key_id = ScramClient("alice", f"{UNKNOWN_ID}-{text.split('-', 1)[1]}"), UNKNOWN_ID
    client = rpc()
    server_first = scram.first(login_call(client))
    refusals.mark()
    answer = client.call("auth.login_ex", final_params(scram.client_final(server_first)))
    refusals.check(answer, key_id=key_id, counted=True)
    assert client.error("auth.me")["data"]["errname"] == "ENOTAUTHENTICATED"
    assert not ScramExchange.objects.exists()  # used up


def test_a_wrong_proof_is_audited_like_a_wrong_plain_key(
    rpc: Callable[..., RPC], alice_key: tuple[ApiKey, str], refusals: Refusals
) -> None:
    """spec §2: failures "are audited like any failed API-key login": the same account name and the
    same reference to the key that was tried, so that an administrator finds the attempts on key N."""
    key, text = alice_key
    wrong = f"{key.pk}-{'x' * 64}"
    rpc().call("auth.login_ex", {"mechanism": "API_KEY_PLAIN", "username": "alice", "api_key": wrong})
    [plain] = [
        r
        for r in AuditRecord.objects.filter(success=False)
        if r.event_data.get("mechanism") == "API_KEY_PLAIN"
    ]
    client, scram = rpc(), ScramClient("alice", wrong)
    server_first = scram.first(login_call(client))
    refusals.mark()
    answer = client.call("auth.login_ex", final_params(scram.client_final(server_first)))
    record = refusals.check(answer, key_id=key.pk, counted=True)
    assert record.username == plain.username == "alice"
    assert plain.event_data["api_key_ref"] == f"{key.pk}:ci"
    assert record.event_data["api_key_ref"] == plain.event_data["api_key_ref"]


def test_a_nonce_other_than_the_servers_is_auth_err(
    rpc: Callable[..., RPC], alice_key: tuple[ApiKey, str], refusals: Refusals
) -> None:
    key, text = alice_key
    client, scram = rpc(), ScramClient("alice", text)
    server_first = scram.first(login_call(client))
    combined = scram.parse_server_first(server_first).combined_nonce
    refusals.mark()
    answer = client.call(
        "auth.login_ex", final_params(scram.client_final(server_first, nonce=other_nonce(combined)))
    )
    refusals.check(answer, key_id=key.pk, counted=True, error="nonce mismatch")
    # RFC 5802's textual concatenation (client nonce text + server text) is not the TN nonce either.
    server_first = scram.first(login_call(client))
    combined = scram.parse_server_first(server_first).combined_nonce
    textual = b64(scram.nonce) + b64(base64.b64decode(combined)[32:])
    answer = client.call("auth.login_ex", final_params(scram.client_final(server_first, nonce=textual)))
    refusals.check(answer, key_id=key.pk, counted=True, error="nonce mismatch")


def test_an_unbound_exchange_with_another_c_is_auth_err(
    rpc: Callable[..., RPC], alice_key: tuple[ApiKey, str], refusals: Refusals
) -> None:
    key, text = alice_key
    client, scram = rpc(), ScramClient("alice", text)
    server_first = scram.first(login_call(client))
    refusals.mark()
    final = scram.client_final(server_first, channel_binding=b"y,,")
    refusals.check(client.call("auth.login_ex", final_params(final)), key_id=key.pk, counted=True)


@pytest.mark.parametrize("row", ["revoked", "expired", "owner inactive"])
def test_a_right_proof_for_an_unusable_key_is_auth_err_counted_like_api_key_plain(
    rpc: Callable[..., RPC], alice_key: tuple[ApiKey, str], refusals: Refusals, row: str
) -> None:
    key, text = alice_key
    if row == "revoked":
        api_key_revoke(key=key, reason="compromised", actor=None)
    elif row == "expired":
        ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    else:
        key.user.is_active = False
        key.user.save()
    client, scram = rpc(), ScramClient("alice", text)
    server_first = scram.first(login_call(client))
    refusals.mark()
    answer = client.call("auth.login_ex", final_params(scram.client_final(server_first)))
    plain_before = key_failures(key.pk)
    refusals.check(answer, key_id=key.pk, counted=False)  # never EXPIRED, never counted
    # API_KEY_PLAIN with the same right secret is not counted either (it answers EXPIRED for expired).
    plain = {"mechanism": "API_KEY_PLAIN", "username": "alice", "api_key": text}
    assert rpc().call("auth.login_ex", plain)["response_type"] in ("AUTH_ERR", "EXPIRED")
    assert key_failures(key.pk) == plain_before
    assert client.error("auth.me")["data"]["errname"] == "ENOTAUTHENTICATED"


# --- channel binding --------------------------------------------------------------------------------


def test_a_bound_exchange_over_https_logs_in_with_the_right_binding(
    rpc: Callable[..., RPC], alice_key: tuple[ApiKey, str], binding_cert: bytes
) -> None:
    _, text = alice_key
    client = rpc()
    ScramClient("alice", text, binding=binding_cert).login(login_call(client, secure=True))
    assert "SCRAM" in client.call("auth.me", secure=True)["account_attributes"]


@pytest.mark.parametrize("sent", ["another certificate", "c=biws", "the right one over plain http"])
def test_a_binding_mismatch_over_tls_is_auth_err(
    rpc: Callable[..., RPC],
    alice_key: tuple[ApiKey, str],
    binding_cert: bytes,
    refusals: Refusals,
    tmp_path: Path,
    sent: str,
) -> None:
    key, text = alice_key
    client = rpc()
    scram = ScramClient("alice", text, binding=binding_cert)
    server_first = scram.first(login_call(client, secure=True))
    refusals.mark()
    if sent == "another certificate":
        other = der_of(make_certificate(tmp_path)[0])
        final = scram.client_final(
            server_first, channel_binding=GS2_BOUND.encode() + hashlib.sha256(other).digest()
        )
    elif sent == "c=biws":
        final = scram.client_final(server_first, channel_binding=b"n,,")
    else:  # the exchange began over TLS; its final message came without
        final = scram.client_final(server_first)
    answer = client.call("auth.login_ex", final_params(final), secure=sent != "the right one over plain http")
    refusals.check(answer, key_id=key.pk, counted=True)


@pytest.mark.parametrize("transport", ["plain http", "https without a configured binding"])
def test_a_binding_the_request_cannot_have_is_auth_err_at_client_first(
    rpc: Callable[..., RPC],
    alice_key: tuple[ApiKey, str],
    certificate: tuple[Path, Path],
    settings: Any,
    refusals: Refusals,
    transport: str,
) -> None:
    _, text = alice_key
    if transport == "plain http":
        settings.SESSIONS_TLS_BINDING_CERT = str(certificate[0])
    scram = ScramClient("alice", text, binding=hashlib.sha256(der_of(certificate[0])).digest())
    answer = rpc().call("auth.login_ex", first_params(scram.client_first()), secure=transport != "plain http")
    refusals.check(answer, key_id=None, counted=False)
    assert not ScramExchange.objects.exists()


def test_a_binding_the_request_cannot_have_counts_toward_the_key(
    rpc: Callable[..., RPC], alice_key: tuple[ApiKey, str], binding_cert: bytes, refusals: Refusals
) -> None:
    """spec §2: "Every failure at either step is AUTH_ERR ... count toward the lockout policy"; a
    client-first naming key N with a binding this request cannot have is such a failure (F7: it
    counts toward key N), like a wrong proof."""
    key, text = alice_key
    scram = ScramClient("alice", text, binding=binding_cert)
    answer = rpc().call("auth.login_ex", first_params(scram.client_first()))  # plain http
    refusals.check(answer, key_id=key.pk, counted=True)


def test_y_is_refused_when_the_request_could_be_bound_and_accepted_when_not(
    rpc: Callable[..., RPC], alice_key: tuple[ApiKey, str], binding_cert: bytes, refusals: Refusals
) -> None:
    """``y,,`` (the client could bind, thinks the server cannot): a downgrade over TLS with a binding
    (RFC 5802 §6); over plain http it is a plain unbound exchange (``c=eSws``)."""
    _, text = alice_key
    scram = ScramClient("alice", text, gs2="y,,")
    refusals.check(
        rpc().call("auth.login_ex", first_params(scram.client_first()), secure=True),
        key_id=None,
        counted=False,
    )
    client = rpc()
    scram.login(login_call(client))
    assert client.call("auth.me")["pw_name"] == "alice"


# --- the exchange: missing, used, replayed, replaced, expired -----------------------------------------


def test_a_final_message_without_a_first_is_a_call_error(
    rpc: Callable[..., RPC], alice_key: tuple[ApiKey, str]
) -> None:
    _, text = alice_key
    scram = ScramClient("alice", text)
    server_first = "r=" + b64(scram.nonce + os.urandom(32)) + ",s=" + b64(os.urandom(16)) + ",i=4096"
    assert_not_in_progress(rpc().error("auth.login_ex", final_params(scram.client_final(server_first))))


def test_the_exchange_is_single_use(
    rpc: Callable[..., RPC], alice_key: tuple[ApiKey, str], refusals: Refusals
) -> None:
    key, text = alice_key
    client, scram = rpc(), ScramClient("alice", text)
    server_first = scram.first(login_call(client))
    final = final_params(scram.client_final(server_first))
    scram.check_server_final(client.call("auth.login_ex", final))
    assert_not_in_progress(client.error("auth.login_ex", final))  # a second final after success
    # After a failure too: the exchange is used up whatever the outcome.
    client = rpc()
    server_first = scram.first(login_call(client))
    refusals.mark()
    wrong = final_params(scram.client_final(server_first, secret="y" * 64))
    refusals.check(client.call("auth.login_ex", wrong), key_id=key.pk, counted=True)
    assert_not_in_progress(client.error("auth.login_ex", final_params(scram.client_final(server_first))))


def test_a_captured_final_message_replayed_in_a_new_exchange_fails(
    rpc: Callable[..., RPC], alice_key: tuple[ApiKey, str], refusals: Refusals
) -> None:
    key, text = alice_key
    victim, scram = rpc(), ScramClient("alice", text)
    server_first = scram.first(login_call(victim))
    captured = final_params(scram.client_final(server_first))
    scram.check_server_final(victim.call("auth.login_ex", captured))
    # The attacker replays the victim's client-first (same client nonce) and then the captured final.
    attacker = rpc(remote_addr="203.0.113.9")
    new_first = attacker.call("auth.login_ex", first_params(scram.client_first()))
    assert new_first["rfc_str"] != server_first  # another server nonce
    refusals.mark()
    refusals.check(
        attacker.call("auth.login_ex", captured), key_id=key.pk, counted=True, error="nonce mismatch"
    )
    assert attacker.error("auth.me")["data"]["errname"] == "ENOTAUTHENTICATED"


def test_a_new_client_first_replaces_the_exchange(
    rpc: Callable[..., RPC], alice_key: tuple[ApiKey, str], refusals: Refusals
) -> None:
    key, text = alice_key
    client = rpc()
    old, new = ScramClient("alice", text), ScramClient("alice", text)
    old.first(login_call(client))
    new_first = new.first(login_call(client))
    assert ScramExchange.objects.count() == 1
    new.check_server_final(client.call("auth.login_ex", final_params(new.client_final(new_first))))
    # And the replaced one is gone: its final message meets the newer exchange (or none).
    client = rpc()
    old_first = old.first(login_call(client))
    new.first(login_call(client))
    refusals.mark()
    answer = client.call("auth.login_ex", final_params(old.client_final(old_first)))
    refusals.check(answer, key_id=key.pk, counted=True, error="nonce mismatch")


@pytest.mark.parametrize("password", [PASSWORD, "wrong"])
def test_a_password_login_drops_the_exchange(
    rpc: Callable[..., RPC], alice_key: tuple[ApiKey, str], password: str
) -> None:
    _, text = alice_key
    client, scram = rpc(), ScramClient("alice", text)
    server_first = scram.first(login_call(client))
    client.call("auth.login_ex", {"mechanism": "PASSWORD_PLAIN", "username": "alice", "password": password})
    assert not ScramExchange.objects.exists()
    assert_not_in_progress(client.error("auth.login_ex", final_params(scram.client_final(server_first))))


@pytest.mark.parametrize("how", ["moved in the database", "short setting"])
def test_an_expired_exchange_is_not_in_progress(
    rpc: Callable[..., RPC], alice_key: tuple[ApiKey, str], settings: Any, how: str
) -> None:
    _, text = alice_key
    if how == "short setting":
        settings.SESSIONS_SCRAM_EXCHANGE_SECONDS = 0  # expires as it is made
    client, scram = rpc(), ScramClient("alice", text)
    server_first = scram.first(login_call(client))
    if how == "moved in the database":
        ScramExchange.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert_not_in_progress(client.error("auth.login_ex", final_params(scram.client_final(server_first))))
    assert client.error("auth.me")["data"]["errname"] == "ENOTAUTHENTICATED"


# --- malformed strings and parameters ----------------------------------------------------------------


def bad_client_firsts(key_id: int) -> list[str]:
    nonce = b64(os.urandom(32))
    return [
        "",
        f"n,,n=alice:{key_id}",
        f"n,,r={nonce}",
        f"n,,r={nonce},n=alice:{key_id}",
        f"n,,n=alice:{key_id},r={nonce},e=x",
        f"n,a=alice,n=alice:{key_id},r={nonce}",
        f"n,a=x,n=alice:{key_id},r={nonce}",
        f"x,,n=alice:{key_id},r={nonce}",
        f"N,,n=alice:{key_id},r={nonce}",
        f"p=tls-unique,,n=alice:{key_id},r={nonce}",
        f"n=alice:{key_id},r={nonce}",
        f"n,,n=alice,r={nonce}",
        f"n,,n=alice:,r={nonce}",
        f"n,,n=:{key_id},r={nonce}",
        f"n,,n=alice:0,r={nonce}",
        f"n,,n=alice:{2**31},r={nonce}",
        f"n,,n=alice:{2**64},r={nonce}",
        f"n,,n=alice:abc,r={nonce}",
        f"n,,n=alice:-1,r={nonce}",
        f"n,,n=alice:+1,r={nonce}",
        f"n,,n=alice: 1,r={nonce}",
        f"n,,n=alice:1e3,r={nonce}",
        f"n,,n=alice:\u0661,r={nonce}",  # ARABIC-INDIC DIGIT ONE
        f"n,,n=alice:{key_id},r=!!!!",
        f"n,,n=alice:{key_id},r={nonce.rstrip('=')}",
        f"n,,n=alice:{key_id},r={b64(os.urandom(8))}",
        f"n,,n=alice:{key_id},r={b64(os.urandom(200))}",
        f"n,,n=alice:{key_id},r=",
        f"n,,n=alice:{key_id},r={nonce}\x01",
        f"n,,n=alice:{key_id},r={nonce}\n",
        f"n,,n=alice:{key_id},r={nonce}" + "A" * 2000,
    ]


def test_malformed_client_first_messages_are_auth_err_at_once(
    rpc: Callable[..., RPC], alice_key: tuple[ApiKey, str], refusals: Refusals
) -> None:
    key, _ = alice_key
    for message in bad_client_firsts(key.pk):
        client = rpc()
        response = client.raw("auth.login_ex", first_params(message))
        assert response.status_code == 200, message
        refusals.check(response.json()["result"], key_id=None, counted=False)
        assert not ScramExchange.objects.exists(), message


def test_the_edges_of_the_key_id_are_well_formed(rpc: Callable[..., RPC], refusals: Refusals) -> None:
    """1 and 2^31-1 are key ids: answered like any key (a stand-in salt), failing at the end."""
    for key_id in (1, 2**31 - 1):
        client, scram = rpc(), ScramClient("alice", f"{key_id}-{'z' * 64}")
        server_first = scram.first(login_call(client))
        answer = client.call("auth.login_ex", final_params(scram.client_final(server_first)))
        refusals.check(answer, key_id=key_id, counted=True)


def bad_client_finals(good: str) -> list[str]:
    cbind, nonce, proof = good.split(",")
    return [
        "",
        f"{cbind},{nonce},p=" + "!" * 88,
        f"{cbind},{nonce},p={proof[2:].rstrip('=')}",
        f"{cbind},{nonce},p={b64(os.urandom(32))}",
        f"{cbind},{nonce},p={b64(os.urandom(65))}",
        f"{cbind},{nonce},p=",
        f"{cbind},{nonce}",
        f"{cbind},{proof}",
        f"{nonce},{proof}",
        f"{good},e=x",
        f"{nonce},{cbind},{proof}",
        f"c=biws!,{nonce},{proof}",
        f"c=,{nonce},{proof}",
        f"{cbind},{nonce},{proof}" + "A" * 1100,
        f"{cbind},{nonce},{proof}\x7f",
        f"{cbind},{nonce},{proof}\r\n",
    ]


def test_malformed_client_final_messages_are_auth_err_and_use_up_the_exchange(
    rpc: Callable[..., RPC], alice_key: tuple[ApiKey, str], refusals: Refusals
) -> None:
    key, text = alice_key
    scram = ScramClient("alice", text)
    for index in range(len(bad_client_finals("c=biws,r=x,p=y"))):
        client = rpc()
        server_first = scram.first(login_call(client))
        good = scram.client_final(server_first)
        message = bad_client_finals(good)[index]
        refusals.mark()
        response = client.raw("auth.login_ex", final_params(message))
        assert response.status_code == 200, message
        refusals.check(response.json()["result"], key_id=key.pk, counted=True)
        assert_not_in_progress(client.error("auth.login_ex", final_params(good)))
        AccountLockout.objects.all().delete()  # stay below the lockout threshold
        refusals.mark()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"username": "alice"}, "login_data.username"),
        ({"api_key": "1-x"}, "login_data.api_key"),
        ({"rfc_str": None}, "login_data.rfc_str"),
        ({"rfc_str": 5}, "login_data.rfc_str"),
        ({"rfc_str": ["n,,"]}, "login_data.rfc_str"),
        ({"rfc_str": "n,,n=alice:1,r=\x00"}, "login_data.rfc_str"),
        ({"scram_type": "SERVER_FIRST_RESPONSE"}, "login_data.scram_type"),
        ({"scram_type": "client_first_message"}, "login_data.scram_type"),
        ({"scram_type": None}, "login_data.scram_type"),
        ({"scram_type": 1}, "login_data.scram_type"),
        ({"login_options": {"admin": True}}, "login_data.login_options.admin"),
        ({"login_options": []}, "login_data.login_options"),
    ],
)
@pytest.mark.parametrize("scram_type", ["CLIENT_FIRST_MESSAGE", "CLIENT_FINAL_MESSAGE"])
def test_malformed_parameters_are_validation_errors_naming_the_field(
    rpc: Callable[..., RPC], db: Any, params: dict[str, Any], field: str, scram_type: str
) -> None:
    base = {
        "mechanism": "SCRAM",
        "scram_type": scram_type,
        "rfc_str": "n,,n=alice:1,r=" + b64(os.urandom(32)),
    }
    assert field in invalid_fields(rpc().error("auth.login_ex", {**base, **params}))


@pytest.mark.parametrize("missing", ["scram_type", "rfc_str"])
def test_missing_parameters_are_validation_errors_naming_the_field(
    rpc: Callable[..., RPC], db: Any, missing: str
) -> None:
    params = {"mechanism": "SCRAM", "scram_type": "CLIENT_FIRST_MESSAGE", "rfc_str": "n,,n=a:1,r=AAAA"}
    del params[missing]
    assert invalid_fields(rpc().error("auth.login_ex", params)) == [f"login_data.{missing}"]


def test_megabyte_strings_are_auth_err_or_refused_by_the_body_cap(
    rpc: Callable[..., RPC], alice_key: tuple[ApiKey, str], refusals: Refusals
) -> None:
    key, text = alice_key
    huge = "A" * 2**20
    # The service itself (as a WebSocket call after login could carry it): AUTH_ERR, both steps.
    peer = Peer(address="127.0.0.1", port=1)
    refusals.check(
        login_ex(params=first_params(f"n,,n=alice:{key.pk},r={huge}"), client=peer).response,
        key_id=None,
        counted=False,
    )
    scram = ScramClient("alice", text)
    started = login_ex(params=first_params(scram.client_first()), client=peer)
    refusals.mark()
    final = login_ex(params=final_params(huge), client=peer, pending_secret=started.pending_secret)
    refusals.check(final.response, key_id=key.pk, counted=True)
    # Over HTTP the body cap answers first: 413 JSON, never a 5xx, nothing audited.
    response = rpc().raw("auth.login_ex", first_params(huge))
    assert response.status_code == 413
    assert "error" in response.json()
    assert len(scram_failures()) == 2


# --- fresh answers, lockout, LEVEL_2 -------------------------------------------------------------------


def test_every_auth_err_is_a_fresh_dict(alice_key: tuple[ApiKey, str], delays: list[None]) -> None:
    """spec §2: "Return a fresh dict each time (the client pops keys from it)"."""
    key, text = alice_key
    peer = Peer(address="127.0.0.1", port=1)
    one = login_ex(params=first_params("garbage"), client=peer).response
    two = login_ex(params=first_params("garbage"), client=peer).response
    scram = ScramClient("alice", f"{key.pk}-{'w' * 64}")
    started = login_ex(params=first_params(scram.client_first()), client=peer)
    final = final_params(scram.client_final(started.response["rfc_str"]))
    three = login_ex(params=final, client=peer, pending_secret=started.pending_secret).response
    assert one == two == three == AUTH_ERR
    assert one is not two
    assert three is not one
    assert three is not two


def test_wrong_proofs_lock_the_key_not_the_owner(
    rpc: Callable[..., RPC], alice_key: tuple[ApiKey, str], settings: Any, refusals: Refusals
) -> None:
    settings.SESSIONS_LOCKOUT_THRESHOLD = 3
    key, text = alice_key
    for i in range(3):
        attacker, scram = rpc(remote_addr=f"198.51.100.{i + 1}"), ScramClient("alice", f"{key.pk}-{'g' * 64}")
        server_first = scram.first(login_call(attacker))
        refusals.mark()
        answer = attacker.call("auth.login_ex", final_params(scram.client_final(server_first)))
        refusals.check(answer, key_id=key.pk, counted=True)
    assert throttle.locked_until(username=throttle.api_key_lockout_name(key.pk)) is not None
    [lock] = AuditRecord.objects.filter(username=throttle.api_key_lockout_name(key.pk))
    assert lock.event_data["lockout"] is True
    assert lock.event_data["mechanism"] == "SCRAM"
    # The right proof now gets the same AUTH_ERR; the owner's password still works.
    client, scram = rpc(), ScramClient("alice", text)
    server_first = scram.first(login_call(client))
    answer = client.call("auth.login_ex", final_params(scram.client_final(server_first)))
    refusals.check(answer, key_id=key.pk, counted=False, error="locked key")
    assert rpc().login("alice")["response_type"] == "SUCCESS"
    throttle.unlock(username=throttle.api_key_lockout_name(key.pk), actor=None)
    ScramClient("alice", text).login(login_call(rpc()))


def test_level_2_refuses_scram(rpc: Callable[..., RPC], alice_key: tuple[ApiKey, str], settings: Any) -> None:
    _, text = alice_key
    choices = ["API_KEY_PLAIN", "TOKEN_PLAIN", "PASSWORD_PLAIN", "SCRAM"]
    assert rpc().call("auth.mechanism_choices") == choices
    client, scram = rpc(), ScramClient("alice", text)
    server_first = scram.first(login_call(client))  # begun at LEVEL_1 ...
    settings.SESSIONS_ASSURANCE_LEVEL = "LEVEL_2"
    assert rpc().call("auth.mechanism_choices") == ["PASSWORD_PLAIN"]
    for caller, params in (
        (rpc(), first_params(ScramClient("alice", text).client_first())),
        (client, final_params(scram.client_final(server_first))),  # ... and not finished at LEVEL_2
    ):
        error = caller.error("auth.login_ex", params)
        assert error["code"] == -32001
        assert (error["data"]["error"], error["data"]["errname"]) == (errno.EOPNOTSUPP, "EOPNOTSUPP")
    assert client.error("auth.me")["data"]["errname"] == "ENOTAUTHENTICATED"


# --- keys made before SCRAM -----------------------------------------------------------------------------


@pytest.mark.parametrize("first_use", ["API_KEY_PLAIN", "Bearer"])
def test_a_key_made_before_scram_gets_its_verifier_at_its_first_plain_use(
    rpc: Callable[..., RPC], alice_key: tuple[ApiKey, str], refusals: Refusals, first_use: str
) -> None:
    key, text = alice_key
    ApiKey.objects.filter(pk=key.pk).update(scram_verifier=None)
    client, scram = rpc(), ScramClient("alice", text)
    server_first = scram.first(login_call(client))  # answered like any key ...
    refusals.mark()
    answer = client.call("auth.login_ex", final_params(scram.client_final(server_first)))
    refusals.check(answer, key_id=key.pk, counted=True)  # ... but it has nothing to check a proof with
    if first_use == "API_KEY_PLAIN":
        plain = {"mechanism": "API_KEY_PLAIN", "username": "alice", "api_key": text}
        assert rpc().call("auth.login_ex", plain)["response_type"] == "SUCCESS"
    else:
        response = DjangoClient(REMOTE_ADDR="127.0.0.1").get(
            "/api/v2.0/auth/me", HTTP_AUTHORIZATION=f"Bearer {text}"
        )
        assert response.status_code == 200, response.content
    key.refresh_from_db()
    verifier = verifier_open(key)
    assert verifier is not None
    assert verifier.iterations == TEST_SCRAM_ITERATIONS
    client = rpc()
    ScramClient("alice", text).login(login_call(client))
    assert "SCRAM" in client.call("auth.me")["account_attributes"]


def test_unknown_ids_and_other_users_keys_look_like_real_keys_at_client_first(
    rpc: Callable[..., RPC], alice_key: tuple[ApiKey, str]
) -> None:
    key, text = alice_key
    principals = {
        "own": ("alice", key.pk),
        "another user's key": ("bob", key.pk),
        "unknown id": ("bob", UNKNOWN_ID),
        "unknown user": ("nobody", UNKNOWN_ID),
    }
    answers: dict[str, list[Any]] = {}
    for label, (name, key_id) in principals.items():
        answers[label] = []
        for _ in range(2):
            scram = ScramClient(name, f"{key_id}-{'q' * 64}")
            answers[label].append(scram.parse_server_first(scram.first(login_call(rpc()))))
    for label, (one, two) in answers.items():
        assert one.salt == two.salt, f"{label}: the salt changes between two asks"
        assert one.combined_nonce != two.combined_nonce
        assert one.iterations == TEST_SCRAM_ITERATIONS, label
    salts = {label: one.salt for label, (one, _) in answers.items()}
    assert len(set(salts.values())) == len(salts), "two principals share a salt"


# --- nothing secret goes out ----------------------------------------------------------------------------


def test_no_response_log_line_or_audit_record_holds_the_secret_or_the_verifier(
    rpc: Callable[..., RPC], alice_key: tuple[ApiKey, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key, text = alice_key
    ApiKey.objects.filter(pk=key.pk).update(scram_verifier=None)  # a backfill is part of the run
    bodies: list[bytes] = []

    def call(client: RPC) -> Callable[[dict[str, Any]], Any]:
        def send(params: dict[str, Any]) -> Any:
            response = client.raw("auth.login_ex", params)
            bodies.append(response.content)
            return response.json().get("result")

        return send

    scram = ScramClient("alice", text)
    client = rpc()
    server_first = scram.first(call(client))
    call(client)(final_params(scram.client_final(server_first)))  # no verifier yet: AUTH_ERR
    plain = {"mechanism": "API_KEY_PLAIN", "username": "alice", "api_key": text}
    call(rpc())(plain)
    client = rpc()
    scram.login(call(client))
    bodies.append(client.raw("auth.me").content)
    bodies.append(client.raw("api_key.query").content)
    wrong = ScramClient("alice", f"{key.pk}-{text.split('-', 1)[1][::-1]}")
    client = rpc()
    call(client)(final_params(wrong.client_final(wrong.first(call(client)))))
    key.refresh_from_db()
    verifier = verifier_open(key)
    assert verifier is not None
    assert key.scram_verifier
    secrets = {
        "the key": text,
        "its secret": text.split("-", 1)[1],
        "the sealed verifier": key.scram_verifier,
        "the stored key": b64(verifier.stored_key),
        "the server key": b64(verifier.server_key),
        "the stored key (hex)": verifier.stored_key.hex(),
        "the server key (hex)": verifier.server_key.hex(),
    }
    places = {
        "responses": b"\n".join(bodies).decode(),
        "logs": "\n".join(record.getMessage() for record in caplog.records) + caplog.text,
        "audit": "\n".join(
            json.dumps([r.username, r.address, r.event_data], default=str) for r in AuditRecord.objects.all()
        ),
    }
    leaks = [
        f"{what} in {where}"
        for what, value in secrets.items()
        for where, text_ in places.items()
        if value in text_
    ]
    assert not leaks
    assert len(scram_failures()) == 2


def test_verifiers_are_never_returned_nor_filterable(
    rpc: Callable[..., RPC], alice_key: tuple[ApiKey, str]
) -> None:
    key, text = alice_key
    sealed = ApiKey.objects.get(pk=key.pk).scram_verifier
    assert sealed
    client = rpc()
    client.login("alice")
    rows = client.call("api_key.query")
    queried = client.last
    assert [row["id"] for row in rows] == [key.pk]
    assert not [name for name in rows[0] if "scram" in name or "verifier" in name]
    created = client.raw("api_key.create", {"name": "second"})
    reset = client.raw("api_key.update", key.pk, {"reset": True})
    for response in (queried, created, reset):
        assert response.status_code == 200
        assert "verifier" not in response.content.decode()
    for filters, options in (
        ([["scram_verifier", "=", sealed]], {}),
        ([["scram_verifier", "^", "enc1:"]], {}),
        ([["scram_verifier", "!=", None]], {}),
        ([], {"order_by": ["scram_verifier"]}),
        ([], {"order_by": ["-scram_verifier"]}),
        ([], {"select": ["scram_verifier"]}),
    ):
        error = client.error("api_key.query", filters, options)
        assert error["code"] == -32602, (filters, options, error)
    rest = DjangoClient(
        REMOTE_ADDR="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {created.json()['result']['key']}"
    )
    listed = rest.get("/api/v2.0/api_key/")
    assert listed.status_code == 200
    assert "verifier" not in listed.content.decode()
    assert rest.get(f"/api/v2.0/api_key/{key.pk}/").status_code == 200
    assert "verifier" not in rest.get(f"/api/v2.0/api_key/{key.pk}/").content.decode()
    for query in (
        {"scram_verifier": "x"},
        {"scram_verifier__startswith": "enc1"},
        {"order_by": "scram_verifier"},
    ):
        response = rest.get("/api/v2.0/api_key/", query)
        assert response.status_code == 400, (query, response.content)


# --- over the real WebSocket ---------------------------------------------------------------------------


real_servers = pytest.mark.django_db(transaction=True)


def ws_first(ws: RPCSocket, scram: ScramClient) -> str:
    return scram.first(lambda params: ws.call("auth.login_ex", params))


@real_servers
def test_failures_over_ws_leave_the_socket_usable_and_anonymous(
    plain_server: Server, create_user: Callable[..., Any]
) -> None:
    key, text = api_key_create(user=create_user("alice"), name="ci")
    with open_socket(plain_server) as ws:
        # Final without first: a call error.
        scram = ScramClient("alice", text)
        fake_first = "r=" + b64(scram.nonce + os.urandom(32)) + ",s=" + b64(os.urandom(16)) + ",i=4096"
        assert_not_in_progress(ws.error("auth.login_ex", final_params(scram.client_final(fake_first))))
        # Wrong secret: AUTH_ERR, counted toward the key by the server, audited.
        wrong = ScramClient("alice", f"{key.pk}-{'x' * 64}")
        server_first = ws_first(ws, wrong)
        assert ws.call("auth.login_ex", final_params(wrong.client_final(server_first))) == AUTH_ERR
        assert key_failures(key.pk) == 1
        assert AccountLockout.objects.filter(username="alice").first() is None
        # p= over ws://: nothing to bind to.
        bound = ScramClient("alice", text, binding=os.urandom(32))
        assert ws.call("auth.login_ex", first_params(bound.client_first())) == AUTH_ERR
        assert ws.error("auth.me")["data"]["errname"] == "ENOTAUTHENTICATED"
        assert ws.call("core.ping") == "pong"
        # The socket logs in afterwards as if nothing had happened.
        scram.login(lambda params: ws.call("auth.login_ex", params))
        assert ws.call("auth.me")["pw_name"] == "alice"
    with open_socket(plain_server) as ws:
        # Long strings: AUTH_ERR while the message fits the 8 KiB cap before login; a megabyte closes
        # the socket (the cap's 1007, or uvicorn's frame limit, 1009), never an error of the server.
        assert ws.call("auth.login_ex", first_params(f"n,,n=alice:{key.pk},r=" + "A" * 4000)) == AUTH_ERR
        ws.request("auth.login_ex", first_params(f"n,,n=alice:{key.pk},r=" + "A" * 2**20))
        assert ws.closed(TIMEOUT) in (1007, 1009)
    assert len(scram_failures()) == 3
    assert "Traceback" not in plain_server.log.read_text(errors="replace")


@real_servers
def test_p_over_plain_ws_counts_toward_the_key(plain_server: Server, create_user: Callable[..., Any]) -> None:
    """As over plain HTTP (spec §2, F7): the server process counts the refused client-first."""
    key, text = api_key_create(user=create_user("alice"), name="ci")
    with open_socket(plain_server) as ws:
        bound = ScramClient("alice", text, binding=os.urandom(32))
        assert ws.call("auth.login_ex", first_params(bound.client_first())) == AUTH_ERR
    assert len(scram_failures()) == 1
    assert key_failures(key.pk) == 1


@real_servers
def test_wrong_binding_and_downgrade_over_wss_are_auth_err(
    tls_server: TLSServer, create_user: Callable[..., Any], tmp_path: Path
) -> None:
    key, text = api_key_create(user=create_user("alice"), name="ci")
    other = hashlib.sha256(der_of(make_certificate(tmp_path)[0])).digest()
    ws_conn = wss_connect(tls_server.wss_url, ssl=tls_server.context(), open_timeout=TIMEOUT, close_timeout=2)
    with settled(ws_conn) as ws:
        # A client that saw another certificate (a TLS interceptor's) binds to it: refused.
        scram = ScramClient("alice", text, binding=other)
        server_first = ws_first(ws, scram)
        assert ws.call("auth.login_ex", final_params(scram.client_final(server_first))) == AUTH_ERR
        # y,, where the server can bind: a downgrade, refused at client-first.
        downgraded = ScramClient("alice", text, gs2="y,,")
        assert ws.call("auth.login_ex", first_params(downgraded.client_first())) == AUTH_ERR
        assert ws.error("auth.me")["data"]["errname"] == "ENOTAUTHENTICATED"
        # The binding of the certificate actually presented logs in.
        binding = certificate_binding(ws_conn.socket.getpeercert(binary_form=True))
        ScramClient("alice", text, binding=binding).login(lambda params: ws.call("auth.login_ex", params))
    assert [r.event_data["error"] for r in scram_failures()][0] == "channel binding mismatch"
    assert key_failures(key.pk) == 0  # the successful login reset the key's counter
