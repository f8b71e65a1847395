"""The OpenAPI schema, Swagger UI from local static files, the browsable API for staff only."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
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


def _json_schema(node: Any, components: dict[str, Any]) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema: ``$ref`` inlined, ``nullable`` as a null type."""
    if isinstance(node, list):
        return [_json_schema(item, components) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _json_schema(components[node["$ref"].rsplit("/", 1)[1]], components)
    out = {key: _json_schema(value, components) for key, value in node.items() if key != "nullable"}
    if node.get("nullable"):
        out = {**out, "type": [out["type"], "null"]} if "type" in out else {"anyOf": [out, {"type": "null"}]}
    return out


def test_schema_documents_the_device_option_and_objects(rest: Any, admin: Any) -> None:
    schema = _schema(rest)
    components = schema["components"]["schemas"]
    row = components["SessionRow"]
    assert row["properties"]["device"] == {"$ref": "#/components/schemas/SessionDevice"}
    assert row["properties"]["location"] == {"$ref": "#/components/schemas/SessionLocation"}
    # Only with the option:
    assert "device" not in row["required"]
    assert "location" not in row["required"]
    assert set(components["SessionDevice"]["properties"]) == {
        "label",
        "browser",
        "os",
        "device",
        "user_agent",
    }
    assert set(components["SessionLocation"]["properties"]) == {"country", "city"}
    assert 'extra": {"device": true}' in components["SessionDevice"]["description"]
    for path in ("/api/v2.0/auth/sessions", "/api/v2.0/auth/my_sessions"):
        parameters = {p["name"]: p for p in schema["paths"][path]["get"]["parameters"]}
        assert parameters["device"]["schema"] == {"type": "boolean"}
        assert "location" in parameters["device"]["description"]
        assert parameters["device.os"]["schema"] == {"type": "string"}
        assert parameters["location.country__in"]["schema"]["type"] == "array"
    for path in ("/api/v2.0/auth/sessions/query", "/api/v2.0/auth/my_sessions/query"):
        assert '{"extra": {"device": true}}' in schema["paths"][path]["post"]["description"]


def test_session_rows_match_their_documented_schema(rest: Any, admin: Any) -> None:
    """What the lists answer, with and without device and history, is what the schema says."""
    import jsonschema

    schema = _schema(rest)
    row_schema = _json_schema({"$ref": "#/components/schemas/SessionRow"}, schema["components"]["schemas"])
    client = rest("admin", HTTP_USER_AGENT="curl/8.5.0")
    client.post("/auth/logout")
    client = rest("admin", HTTP_USER_AGENT="Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)")
    for params in ({}, {"device": "true"}, {"history": "true"}, {"history": "true", "device": "true"}):
        rows = client.get("/auth/sessions", params).json()
        assert rows
        for row in rows:
            jsonschema.validate(row, row_schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**rows[0], "device": {**rows[0]["device"], "extra": 1}}, row_schema)
