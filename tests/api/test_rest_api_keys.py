"""``/api/v2.0/api_key/``: the key is shown once, rows mask the hash, other users' keys are 404."""

from __future__ import annotations

from typing import Any

import pytest

from sessions_app.auth.roles import Role
from sessions_app.models import ApiKey
from tests.api.conftest import attributes, errors

ROW_KEYS = {
    "id",
    "name",
    "username",
    "user_identifier",
    "keyhash",
    "created_at",
    "expires_at",
    "local",
    "revoked",
    "revoked_reason",
    "last_used_at",
}


def test_create_returns_the_key_once(rest: Any, alice: Any) -> None:
    client = rest("alice")
    response = client.post("/api_key/", {"name": "backup"})
    assert response.status_code == 201
    created = response.json()
    assert set(created) == ROW_KEYS | {"key"}
    assert created["keyhash"] == "********"
    assert created["username"] == "alice"
    key = created["key"]
    assert key.startswith(f"{created['id']}-")
    assert len(key.split("-", 1)[1]) == 64
    listed = client.get("/api_key/").json()
    assert listed == [{k: v for k, v in created.items() if k != "key"}]
    assert client.get(f"/api_key/{created['id']}/").json() == listed[0]
    assert key not in client.get("/api_key/").content.decode()
    # The key works as a Bearer credential.
    assert rest().get("/auth/me", Authorization=f"Bearer {key}").json()["pw_name"] == "alice"


def test_create_validation(rest: Any, alice: Any) -> None:
    client = rest("alice")
    for body, attribute in (
        ({}, "name"),
        ({"name": 5}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "k", "expires_at": "tomorrow"}, "expires_at"),
        ({"name": "k", "expires_at": {"$date": "1"}}, "expires_at"),
        ({"name": "k", "expires_at": 1700000000}, "expires_at"),
        ({"name": "k", "user_id": 1}, "user_id"),
        ({"name": "k", "username": "nobody"}, ""),
    ):
        response = client.post("/api_key/", body)
        assert response.status_code in (400, 403), body
        if response.status_code == 400:
            assert attributes(response) == [attribute], body
    assert client.post("/api_key/", {"name": "dup"}).status_code == 201
    response = client.post("/api_key/", {"name": "dup"})
    assert response.status_code == 400
    assert "already exists" in errors(response)[0]["message"]


def test_expiry_in_both_wire_forms(rest: Any, alice: Any) -> None:
    client = rest("alice")
    iso = client.post("/api_key/", {"name": "a", "expires_at": "2099-01-01T00:00:00Z"}).json()
    ms = client.post("/api_key/", {"name": "b", "expires_at": {"$date": iso["expires_at"]["$date"]}}).json()
    assert iso["expires_at"] == ms["expires_at"] == {"$date": 4070908800000}
    none = client.patch(f"/api_key/{iso['id']}/", {"expires_at": None}).json()
    assert none["expires_at"] is None


def test_other_users_keys_are_404_without_api_key_read(rest: Any, alice: Any, bob: Any) -> None:
    key_id = rest("alice").post("/api_key/", {"name": "alices"}).json()["id"]
    client = rest("bob")
    assert client.get("/api_key/").json() == []
    assert client.get("/api_key/", {"count": "true"}).json() == 0
    for response in (
        client.get(f"/api_key/{key_id}/"),
        client.patch(f"/api_key/{key_id}/", {"name": "mine"}),
        client.delete(f"/api_key/{key_id}/"),
        client.post(f"/api_key/{key_id}/reset/"),
    ):
        assert response.status_code == 404
        assert errors(response)[0]["errno"] == 2
    assert ApiKey.objects.get().name == "alices"
    response = client.post("/api_key/", {"name": "for-alice", "username": "alice"})
    assert response.status_code == 403


def test_api_key_read_sees_all_but_changes_only_its_own(rest: Any, alice: Any, make_user: Any) -> None:
    make_user("auditor", roles=[Role.API_KEY_READ])
    key_id = rest("alice").post("/api_key/", {"name": "alices"}).json()["id"]
    client = rest("auditor")
    assert [r["id"] for r in client.get("/api_key/").json()] == [key_id]
    assert client.get(f"/api_key/{key_id}/").status_code == 200
    assert client.patch(f"/api_key/{key_id}/", {"name": "x"}).status_code == 403
    assert client.delete(f"/api_key/{key_id}/").status_code == 403
    assert client.post(f"/api_key/{key_id}/reset/").status_code == 403


def test_admin_manages_any_key(rest: Any, alice: Any, admin: Any) -> None:
    client = rest("admin")
    created = client.post("/api_key/", {"name": "for-alice", "username": "alice"})
    assert created.status_code == 201
    assert created.json()["username"] == "alice"
    key_id = created.json()["id"]
    assert client.patch(f"/api_key/{key_id}/", {"name": "renamed"}).json()["name"] == "renamed"
    assert client.delete(f"/api_key/{key_id}/").status_code == 204
    assert client.get(f"/api_key/{key_id}/").status_code == 404
    response = client.post("/api_key/", {"name": "k", "username": "nobody"})
    assert response.status_code == 400
    assert attributes(response) == ["username"]


def test_reset_replaces_the_key(rest: Any, alice: Any) -> None:
    client = rest("alice")
    created = client.post("/api_key/", {"name": "rotating"}).json()
    response = client.post(f"/api_key/{created['id']}/reset/")
    assert response.status_code == 200
    new_key = response.json()["key"]
    assert new_key != created["key"]
    assert set(response.json()) == ROW_KEYS | {"key"}
    assert rest().get("/auth/me", Authorization=f"Bearer {created['key']}").status_code == 401
    assert rest().get("/auth/me", Authorization=f"Bearer {new_key}").status_code == 200


def test_update_validation_and_methods(rest: Any, alice: Any) -> None:
    client = rest("alice")
    key_id = client.post("/api_key/", {"name": "k"}).json()["id"]
    for body, attribute in (
        ({"name": 1}, "name"),
        ({"reset": True}, "reset"),
        ({"key_hash": "x"}, "key_hash"),
    ):
        response = client.patch(f"/api_key/{key_id}/", body)
        assert response.status_code == 400
        assert attributes(response) == [attribute]
    response = client.send("PUT", f"/api_key/{key_id}/", {"name": "x"})
    assert response.status_code == 405
    assert set(response["Allow"].split(", ")) == {"GET", "PATCH", "DELETE", "HEAD"}
    assert client.send("GET", f"/api_key/{key_id}/reset/").status_code == 405


@pytest.mark.parametrize("path", ["abc", "-1", "1.5", "9" * 19, "0x10"])
def test_odd_key_ids_are_json_404(rest: Any, alice: Any, path: str) -> None:
    response = rest("alice").get(f"/api_key/{path}/")
    assert response.status_code == 404
    errors(response)


def test_list_filters_and_pagination(rest: Any, alice: Any) -> None:
    client = rest("alice")
    for name in ("a1", "a2", "b1"):
        client.post("/api_key/", {"name": name})
    assert [r["name"] for r in client.get("/api_key/", {"name__startswith": "a"}).json()] == ["a1", "a2"]
    page = client.get("/api_key/", {"limit": 2, "order_by": "-name"}).json()
    assert page["count"] == 3
    assert [r["name"] for r in page["results"]] == ["b1", "a2"]
    assert client.get("/api_key/", {"revoked": "false", "count": "true"}).json() == 3
    assert client.get("/api_key/", {"keyhash": "x"}).status_code == 400
    assert client.post("/api_key/?name=x", {"name": "z"}).status_code == 400
