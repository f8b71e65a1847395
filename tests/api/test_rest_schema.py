"""The OpenAPI schema, Swagger UI from local static files, the browsable API for staff only."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from django.contrib.staticfiles import finders
from drf_spectacular.validation import validate_schema

from sessions_app.api.rest.filtersets import SessionFilterSet

OPENAPI_JSON = "application/vnd.oai.openapi+json"


def _schema(rest: Any) -> dict[str, Any]:
    response = rest().get("/schema/", HTTP_ACCEPT=OPENAPI_JSON, Accept=OPENAPI_JSON)
    assert response.status_code == 200
    return json.loads(response.content)


def test_schema_is_valid_openapi(rest: Any) -> None:
    schema = _schema(rest)
    validate_schema(schema)
    assert schema["openapi"].startswith("3.")
    yaml_schema = yaml.safe_load(rest().get("/schema/").content)
    assert yaml_schema["paths"].keys() == schema["paths"].keys()


def test_schema_covers_every_endpoint_and_error(rest: Any) -> None:
    schema = _schema(rest)
    operations = {
        (method.upper(), path.removeprefix("/api/v2.0"))
        for path, item in schema["paths"].items()
        for method in item
    }
    assert operations == {
        ("GET", "/auth/sessions"),
        ("POST", "/auth/sessions/query"),
        ("POST", "/auth/sessions/{session_id}/terminate"),
        ("POST", "/auth/sessions/terminate_others"),
        ("GET", "/auth/my_sessions"),
        ("POST", "/auth/my_sessions/query"),
        ("POST", "/auth/my_sessions/{session_id}/terminate"),
        ("POST", "/auth/my_sessions/terminate_others"),
        ("GET", "/auth/me"),
        ("POST", "/auth/login"),
        ("POST", "/auth/login_continue"),
        ("POST", "/auth/logout"),
        ("POST", "/auth/generate_token"),
        ("GET", "/auth/csrf"),
        ("GET", "/api_key/"),
        ("POST", "/api_key/"),
        ("GET", "/api_key/{id}/"),
        ("PATCH", "/api_key/{id}/"),
        ("DELETE", "/api_key/{id}/"),
        ("POST", "/api_key/{id}/reset/"),
        ("GET", "/audit/"),
        ("POST", "/audit/query"),
    }
    for item in schema["paths"].values():
        for operation in item.values():
            for status in ("400", "401", "403", "404", "405", "413", "415", "429", "503"):
                assert operation["responses"][status]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"
                }
            # Any one credential (alternatives), or none for the open endpoints.
            assert {"cookieAuth": []} in operation["security"]
            assert {"bearerAuth": []} in operation["security"]
    listing = schema["paths"]["/api/v2.0/auth/sessions"]["get"]
    assert {p["name"] for p in listing["parameters"]} == set(SessionFilterSet.base_filters)
    assert schema["components"]["schemas"]["SessionRow"]["additionalProperties"] is False


def test_docs_are_served_without_external_urls(rest: Any) -> None:
    response = rest().get("/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "SwaggerUIBundle" in html
    hosts = set(re.findall(r"""(?:https?:)?//([A-Za-z0-9.-]+)""", html))
    assert hosts <= {"testserver"}, hosts
    assets = re.findall(r"""(?:src|href)="(/static/[^"]+)\"""", html)
    assert assets
    for asset in assets:
        assert finders.find(asset.removeprefix("/static/")), asset


def test_browsable_api_only_for_staff(rest: Any, admin: Any, alice: Any) -> None:
    staff = rest("admin").get("/auth/me", Accept="text/html")
    assert staff.status_code == 200
    assert staff["Content-Type"].startswith("text/html")
    user = rest("alice").get("/auth/me", Accept="text/html")
    assert user.status_code == 406
    assert rest("alice").get("/auth/me", Accept="text/html,*/*;q=0.8")["Content-Type"] == "application/json"
    assert rest().get("/auth/me", Accept="text/html").status_code in (401, 406)
