"""``/api/v2.0/audit/``: audit.query through query parameters or the full language (AUDIT_READ)."""

from __future__ import annotations

from typing import Any

from sessions_app.auth.roles import Role
from tests.api.conftest import attributes

AUDIT_KEYS = {"audit_id", "timestamp", "event", "username", "session", "address", "success", "event_data"}


def test_audit_needs_audit_read(rest: Any, alice: Any, make_user: Any) -> None:
    assert rest().get("/audit/").status_code == 401
    assert rest("alice").get("/audit/").status_code == 403
    assert rest("alice").post("/audit/query", {}).status_code == 403
    make_user("auditor", roles=[Role.AUDIT_READ])
    rows = rest("auditor").get("/audit/").json()
    assert rows
    assert all(set(row) == AUDIT_KEYS for row in rows)


def test_audit_filters(rest: Any, alice: Any, make_user: Any) -> None:
    make_user("auditor", roles=[Role.AUDIT_READ])
    rest().post("/auth/login", {"mechanism": "PASSWORD_PLAIN", "username": "alice", "password": "wrong"})
    client = rest("auditor")
    failed = client.get("/audit/", {"event": "AUTHENTICATION", "success": "false"}).json()
    assert [(r["username"], r["event_data"]["error"]) for r in failed] == [("alice", "wrong password")]
    body = {"query-filters": [["event_data.error", "=", "wrong password"]], "query-options": {"count": True}}
    assert client.post("/audit/query", body).json() == 1
    page = client.get("/audit/", {"limit": 1, "order_by": "-timestamp"}).json()
    assert page["count"] >= 3
    assert len(page["results"]) == 1
    response = client.get("/audit/", {"event_data": "x"})
    assert response.status_code == 400
    assert attributes(response) == ["event_data"]
    response = client.get("/audit/", {"timestamp__gt": "soon"})
    assert response.status_code == 400
    assert attributes(response) == ["timestamp__gt"]
