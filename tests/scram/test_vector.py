"""The deterministic test vector of spec/scram.md §9, byte for byte, unbound and bound: through the
protocol module (`sessions_app.auth.scram`), through the test's own RFC 5802 client, and end to end
through ``auth.login_ex`` over ``POST /api/current`` with the vector's key stored as API key 1 of
``root``. The server nonce generator is forced to ``bytes(range(32, 64))``, as the spec says.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import pytest

from sessions_app.auth import keys, scram
from sessions_app.models import ApiKey
from sessions_app.services import scram_login
from sessions_app.services.api_keys import api_key_pepper, verifier_seal
from tests.conftest import RPC
from tests.scram.client import AUTH_ERR, ScramClient, final_params, first_params

API_KEY = "1-uz8DhKHFhRIUQIvjzabPYtpy5wf1DJ3ZBLlDgNVhRAFT7Y6pJGUlm0n3apwxWEU4"
SECRET = API_KEY.split("-", 1)[1]
SALT = b"AbCdEfGhIjKl./09"
ITERATIONS = 500_000
STORED_KEY = "/VS5e/sCUJpuZe/6+7W6poltarTvLyt+70elaZHto1Sr+TEkN7WWEm8A5fA4Vwg5DHCTeQ4THLjGcy7SubBllA=="
SERVER_KEY = "szQ+Ffw9Q6wtUciIrGSx3axjpdE0iCjrsGBSMhPPY7DOxiae/Znhe7PTHqMGZIYyiKDtbGhbbsDS/5lHlUtq7Q=="
CLIENT_NONCE = bytes(range(32))
SERVER_NONCE = bytes(range(32, 64))
COMBINED = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw=="

CLIENT_FIRST = "n,,n=root:1,r=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
SERVER_FIRST = f"r={COMBINED},s=QWJDZEVmR2hJaktsLi8wOQ==,i=500000"
CLIENT_FINAL = (
    f"c=biws,r={COMBINED},"
    "p=QziI9VFJI3+a2Ir2GHq3QGHLObzMMjT6jYMaaJFzAdLO34TCB5iHqehXfa9G1wFAT7Gwk/ReCX3tn9M874vq8w=="
)
SERVER_FINAL = "v=DTNVkt6OBFydPBlAwXuiDxgBP9HzyoGhWTcLMY+xkUJbx8kcVB4ggPkBFItjRTOtHw1fL2Xjp2DCIG+xFm7mOw=="

BINDING = bytes.fromhex("ca99f0a27c89a259826d94640a18ffabe26154fe5d23ffa3d2dfdbc07fa87f5b")
BOUND_CLIENT_FIRST = "p=tls-server-end-point,,n=root:1,r=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
BOUND_CLIENT_FINAL = (
    "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCwsypnwonyJolmCbZRkChj/q+JhVP5dI/+j0t/bwH+of1s=,"
    f"r={COMBINED},"
    "p=BnbBt/udYOqTgxZUIbl/khrAC02cVKNIYEVrU7MybjQxkHtBu/eul7hzwp3mndV2kDR/0GJ5Wqm+eORF68Ubeg=="
)
BOUND_SERVER_FINAL = (
    "v=IOu/5SPfIZHkiZpQ6zkqtxeB4xDjfPj211vZJwC1l0L7ttXF96JNQahi8uG82mUVAKQQWOeH2vxr9JOYuxKF5g=="
)

UNBOUND = (CLIENT_FIRST, CLIENT_FINAL, SERVER_FINAL)
BOUND = (BOUND_CLIENT_FIRST, BOUND_CLIENT_FINAL, BOUND_SERVER_FINAL)


@lru_cache(maxsize=1)
def vector_verifier() -> scram.Verifier:
    """The vector's verifier (500 000 rounds: computed once for the module)."""
    return scram.derive_verifier(SECRET, iterations=ITERATIONS, salt=SALT)


@pytest.fixture
def fixed_server_nonce(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scram, "new_server_nonce", lambda: SERVER_NONCE)


@pytest.fixture
def vector_key(make_user: Callable[..., Any]) -> ApiKey:
    """API key 1 of ``root``: the vector's secret, its salt and iterations as the stored verifier."""
    root = make_user("root")
    return ApiKey.objects.create(
        pk=1,
        user=root,
        name="vector",
        key_hash=keys.api_key_hash(SECRET, pepper=api_key_pepper()),
        scram_verifier=verifier_seal(vector_verifier(), key_id=1),
    )


def test_the_verifier_of_the_vector_is_the_spec_one() -> None:
    verifier = vector_verifier()
    assert (verifier.salt, verifier.iterations) == (SALT, ITERATIONS)
    assert base64.b64encode(verifier.stored_key).decode() == STORED_KEY
    assert base64.b64encode(verifier.server_key).decode() == SERVER_KEY
    assert scram.Verifier.from_bytes(verifier.to_bytes()) == verifier


@pytest.mark.parametrize(
    ("client_first", "client_final", "server_final", "binding"), [(*UNBOUND, None), (*BOUND, BINDING)]
)
@pytest.mark.usefixtures("fixed_server_nonce")
def test_the_protocol_module_reproduces_the_vector(
    client_first: str, client_final: str, server_final: str, binding: bytes | None
) -> None:
    first = scram.parse_client_first(client_first)
    assert (first.username, first.key_id, first.nonce) == ("root", 1, CLIENT_NONCE)
    assert first.bound is (binding is not None)
    message, combined = scram.server_first(first, salt=SALT, iterations=ITERATIONS)
    assert (message, combined) == (SERVER_FIRST, COMBINED)
    final = scram.parse_client_final(client_final)
    assert final.channel_binding == scram.expected_channel_binding(first, binding)
    assert final.nonce == COMBINED
    answer = scram.verify(
        verifier=vector_verifier(), client_first_bare=first.bare, server_first_message=message, final=final
    )
    assert answer == server_final


@pytest.mark.parametrize(
    ("client_first", "client_final", "server_final", "binding"), [(*UNBOUND, None), (*BOUND, BINDING)]
)
def test_the_test_client_reproduces_the_vector(
    client_first: str, client_final: str, server_final: str, binding: bytes | None
) -> None:
    """The RFC 5802 client of these tests (tests/scram/client.py) is itself right: same strings."""
    client = ScramClient("root", API_KEY, binding=binding, nonce=CLIENT_NONCE)
    assert client.client_first() == client_first
    assert client.client_final(SERVER_FIRST) == client_final
    assert client.expected_server_final == server_final


@pytest.mark.usefixtures("fixed_server_nonce", "vector_key")
def test_login_ex_reproduces_the_unbound_vector_over_http(rpc: Callable[..., RPC]) -> None:
    client = rpc()
    first = client.call("auth.login_ex", first_params(CLIENT_FIRST))
    assert first == {
        "response_type": "SCRAM_RESPONSE",
        "scram_type": "SERVER_FIRST_RESPONSE",
        "rfc_str": SERVER_FIRST,
        "user_info": None,
    }
    final = client.call("auth.login_ex", final_params(CLIENT_FINAL))
    assert set(final) == {"response_type", "scram_type", "rfc_str", "user_info"}
    assert (final["response_type"], final["scram_type"]) == ("SCRAM_RESPONSE", "SERVER_FINAL_RESPONSE")
    assert final["rfc_str"] == SERVER_FINAL
    # Logged in before the reply: the next call is root's, and user_info is what auth.me returns.
    me = client.call("auth.me")
    assert final["user_info"] == me
    assert me["pw_name"] == "root"
    assert {"API_KEY", "SCRAM"} <= set(me["account_attributes"])


@pytest.mark.usefixtures("fixed_server_nonce", "vector_key")
def test_login_ex_reproduces_the_bound_vector_over_https(
    rpc: Callable[..., RPC], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scram_login, "server_binding", lambda: BINDING)
    client = rpc()  # every call below over https (Django's test client: secure=True)
    first = client.call("auth.login_ex", first_params(BOUND_CLIENT_FIRST), secure=True)
    assert first["rfc_str"] == SERVER_FIRST
    final = client.call("auth.login_ex", final_params(BOUND_CLIENT_FINAL), secure=True)
    assert (final["scram_type"], final["rfc_str"]) == ("SERVER_FINAL_RESPONSE", BOUND_SERVER_FINAL)
    assert client.call("auth.me", secure=True)["pw_name"] == "root"


@pytest.mark.usefixtures("fixed_server_nonce", "vector_key")
def test_the_bound_vector_over_plain_http_is_refused_at_client_first(
    rpc: Callable[..., RPC], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server knows the binding, but this request did not come over TLS: nothing to bind to."""
    monkeypatch.setattr(scram_login, "server_binding", lambda: BINDING)
    client = rpc()
    assert client.call("auth.login_ex", first_params(BOUND_CLIENT_FIRST)) == AUTH_ERR
