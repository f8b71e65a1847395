"""OpenAPI 3 description of the REST API (drf-spectacular): shared schemas, security, error answers.

Outputs are the selectors' rows, described here as plain schemas (components added by
`add_components_and_errors`), not by serializers. Every operation documents the error answers any
request can get (400 401 403 404 405 406 413 415 429 503, the same ``Error`` body), so generated
clients and schema-driven fuzzers (Schemathesis) see no undocumented answer.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiParameter

from sessions_app.models import Credentials, EndReason

if TYPE_CHECKING:
    from sessions_app.api.rest.filtersets import QueryFilterSet

REF = "#/components/schemas/"


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


EJSON_DATE: dict[str, Any] = {
    "type": "object",
    "description": "A datetime: milliseconds since the Unix epoch (UTC).",
    "properties": {"$date": {"type": "integer", "format": "int64"}},
    "required": ["$date"],
    "additionalProperties": False,
}
JSON_ARRAY_OR_NULL: dict[str, Any] = {
    "type": "array",
    "items": {},
    "nullable": True,
    "description": "query-filters (query-language.md §1); null or [] match everything.",
}
JSON_OBJECT_OR_NULL: dict[str, Any] = {
    "type": "object",
    "additionalProperties": True,
    "nullable": True,
    "description": "query-options (query-language.md §2).",
}
#: The ``extra`` switches of the session queries, for their operations' descriptions.
SESSION_QUERY_DESCRIPTION = (
    "query-options take two extra switches here: "
    '{"extra": {"history": true}} also lists ended sessions (with ended_at, end_reason, ended_by); '
    '{"extra": {"device": true}} adds the device and location objects (SessionDevice, '
    "SessionLocation) to each row, and lets filters, order_by and select name their fields "
    '(["device.os", "=", "iOS"], "order_by": ["device.browser"], "select": ["id", "device.os"]). '
    "Without a switch its fields are unknown fields (400). Any other extra key is a 400."
)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return {"allOf": [schema], "nullable": True}
    return {**schema, "nullable": True}


_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
_INT = {"type": "integer", "format": "int64"}
_DATE = ref("EJSONDate")

_USER_DATA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "username": _nullable(_STR),
        "login_at": _nullable(_DATE),
        "api_key": {
            "type": "object",
            "properties": {"id": _nullable(_INT), "name": _nullable(_STR)},
        },
    },
}

_DEVICE_OPTION = 'only with the query option {"extra": {"device": true}} (query parameter device=true)'

COMPONENTS: dict[str, dict[str, Any]] = {
    "EJSONDate": EJSON_DATE,
    "SessionDevice": {
        "type": "object",
        "description": (
            "The client that opened the session, from its User-Agent parsed at login; "
            f"{_DEVICE_OPTION}. A value is null when it was not recorded (no HTTP headers, e.g. the "
            "unix socket; sessions from before devices were kept)."
        ),
        "properties": {
            "label": {
                **_nullable(_STR),
                "description": 'In words, as pages show it: "Safari on iOS", "curl 8.5", "Unknown device".',
            },
            "browser": {**_nullable(_STR), "description": 'Browser or program family: "Safari", "curl".'},
            "os": {**_nullable(_STR), "description": 'Operating system family: "iOS", "Linux".'},
            "device": {**_nullable(_STR), "description": 'Device family: "iPhone"; null for most computers.'},
            "user_agent": {
                **_nullable(_STR),
                "maxLength": 512,
                "description": "The User-Agent header as kept (capped, control characters removed).",
            },
        },
        "required": ["label", "browser", "os", "device", "user_agent"],
        "additionalProperties": False,
    },
    "SessionLocation": {
        "type": "object",
        "description": (
            "Where the session's address is, looked up at login when SESSIONS_GEOIP_PATH names a "
            f'GeoIP database ("Local network" for private addresses); {_DEVICE_OPTION}. '
            "Null values without a database or for addresses it does not know."
        ),
        "properties": {"country": _nullable(_STR), "city": _nullable(_STR)},
        "required": ["country", "city"],
        "additionalProperties": False,
    },
    "Error": {
        "type": "object",
        "properties": {
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"attribute": _STR, "message": _STR, "errno": {"type": "integer"}},
                    "required": ["attribute", "message", "errno"],
                },
            },
            "request_id": _STR,
        },
        "required": ["errors"],
    },
    "SessionRow": {
        "type": "object",
        "description": (
            "An auth.sessions row (TrueNAS's shape); ended_at, end_reason and ended_by only with "
            "history, device and location only with device."
        ),
        "properties": {
            "id": _STR,
            "current": _BOOL,
            "internal": _BOOL,
            "origin": _STR,
            "credentials": {"type": "string", "enum": [c.value for c in Credentials]},
            "credentials_data": {
                "type": "object",
                "properties": {
                    **_USER_DATA["properties"],
                    "parent": {
                        "type": "object",
                        "properties": {"credentials": _nullable(_STR), "credentials_data": _USER_DATA},
                    },
                },
            },
            "created_at": _DATE,
            "secure_transport": _BOOL,
            "ended_at": _nullable(_DATE),
            # OpenAPI 3.0.3: ``nullable`` does not extend an ``enum``; null must be listed.
            "end_reason": {"type": "string", "enum": [*(r.value for r in EndReason), None], "nullable": True},
            "ended_by": _nullable(_STR),
            "device": ref("SessionDevice"),
            "location": ref("SessionLocation"),
        },
        "required": [
            "id",
            "current",
            "internal",
            "origin",
            "credentials",
            "credentials_data",
            "created_at",
            "secure_transport",
        ],
        "additionalProperties": False,
    },
    "ApiKeyRow": {
        "type": "object",
        "properties": {
            "id": _INT,
            "name": _STR,
            "username": _STR,
            "user_identifier": _STR,
            "keyhash": {"type": "string", "description": 'Always "********".'},
            "created_at": _DATE,
            "expires_at": _nullable(_DATE),
            "local": _BOOL,
            "revoked": _BOOL,
            "revoked_reason": _nullable(_STR),
            "last_used_at": _nullable(_DATE),
        },
        "required": [
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
        ],
        "additionalProperties": False,
    },
    "AuditRow": {
        "type": "object",
        "properties": {
            "audit_id": _STR,
            "timestamp": _DATE,
            "event": _STR,
            "username": _nullable(_STR),
            "session": _nullable(_STR),
            "address": _STR,
            "success": _BOOL,
            "event_data": {"type": "object", "additionalProperties": True, "nullable": True},
        },
        "required": ["audit_id", "timestamp", "event", "username", "session", "address", "success"],
        "additionalProperties": False,
    },
    "UserInfo": {
        "type": "object",
        "description": "A TrueNAS-like passwd entry of the caller (auth.me).",
        "properties": {
            "pw_name": _STR,
            "pw_gecos": _STR,
            "pw_dir": _STR,
            "pw_shell": _STR,
            "pw_uid": _INT,
            "pw_gid": _INT,
            "grouplist": {"type": "array", "items": {}},
            "sid": _nullable(_STR),
            "source": _STR,
            "local": _BOOL,
            "attributes": {"type": "object", "additionalProperties": True},
            "two_factor_config": {"type": "object", "additionalProperties": True},
            "privilege": {"type": "object", "additionalProperties": True},
            "account_attributes": {"type": "array", "items": _STR},
        },
        "required": ["pw_name", "pw_uid", "privilege"],
    },
    "LoginResponse": {
        "type": "object",
        "description": (
            "auth.login_ex's answer; SUCCESS (and SCRAM's SERVER_FINAL_RESPONSE) also sets the session "
            "and csrftoken cookies."
        ),
        "properties": {
            "response_type": {
                "type": "string",
                "enum": ["SUCCESS", "OTP_REQUIRED", "AUTH_ERR", "EXPIRED", "REDIRECT", "SCRAM_RESPONSE"],
            },
            "authenticator": _STR,
            "user_info": _nullable(ref("UserInfo")),
            "username": _STR,
            "scram_type": {"type": "string", "enum": ["SERVER_FIRST_RESPONSE", "SERVER_FINAL_RESPONSE"]},
            "rfc_str": _STR,
        },
        "required": ["response_type"],
    },
}


def _paginated(row: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "count": {"type": "integer"},
            "next": {"type": "string", "format": "uri", "nullable": True},
            "previous": {"type": "string", "format": "uri", "nullable": True},
            "results": {"type": "array", "items": ref(row)},
        },
        "required": ["count", "next", "previous", "results"],
    }


for _row in ("SessionRow", "ApiKeyRow", "AuditRow"):
    COMPONENTS[f"Paginated{_row}List"] = _paginated(_row)
COMPONENTS["ApiKeyCreated"] = copy.deepcopy(COMPONENTS["ApiKeyRow"])
COMPONENTS["ApiKeyCreated"]["properties"]["key"] = {
    "type": "string",
    "description": "The API key, shown only in this answer.",
}
COMPONENTS["ApiKeyCreated"]["required"].append("key")


def list_result(row: str) -> dict[str, Any]:
    """GET lists: the rows, ``count/next/previous/results`` with ``limit``, an integer with ``count``."""
    return {
        "oneOf": [
            {"type": "array", "items": ref(row)},
            ref(f"Paginated{row}List"),
            {"type": "integer", "description": "with count=true"},
        ]
    }


QUERY_RESULT: dict[str, Any] = {
    "description": "What the query method returns: rows (reshaped by select), one row (get), or a count.",
    "oneOf": [
        {"type": "array", "items": {"type": "object", "additionalProperties": True}},
        {"type": "object", "additionalProperties": True},
        {"type": "integer"},
    ],
}

ERROR_STATUSES: dict[str, str] = {
    "400": "Invalid input (body, query parameter or query language); malformed JSON.",
    "401": "Not authenticated.",
    "403": "Not authorized (role), or CSRF failed for a cookie-authenticated unsafe request.",
    "404": "Not found (also other users' objects).",
    "405": "Method not allowed (see the Allow header).",
    "406": "The Accept header names no available representation.",
    "413": "The request body is too large.",
    "414": "The request line (URL and query) is too long; answered by the HTTP server, not as JSON.",
    "415": "The request body is not application/json.",
    "429": "Too many login attempts or failed credentials from this address (see Retry-After).",
    "503": "The database cannot be reached (see Retry-After).",
}
#: Answers made by the HTTP server in front of Django (gunicorn's request-line limit): no JSON body.
_NOT_JSON = frozenset({"414"})
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}}


def add_components_and_errors(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: shared components and the error answers of every operation."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in COMPONENTS.items():
        schemas.setdefault(name, schema)
    error_body = {"application/json": {"schema": ref("Error")}}
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            for status, description in ERROR_STATUSES.items():
                if status not in responses:
                    answer: dict[str, Any] = {"description": description}
                    if status not in _NOT_JSON:
                        answer["content"] = error_body
                    if status in ("429", "503"):
                        answer["headers"] = _RETRY_AFTER
                    responses[status] = answer
    return result


class RegistryAuthenticationScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]  # drf-spectacular's registering __init_subclass__ is unannotated
    target_class = "sessions_app.api.rest.authentication.RegistryAuthentication"
    name = ["cookieAuth", "bearerAuth", "basicAuth"]

    def get_security_requirement(self, auto_schema: Any) -> list[dict[str, list[str]]]:
        return [{name: []} for name in self.name]  # any one of them (alternatives, not all together)

    def get_security_definition(self, auto_schema: Any) -> list[dict[str, Any]]:
        from sessions_app.middleware import session_cookie_name

        return [
            {
                "type": "apiKey",
                "in": "cookie",
                "name": session_cookie_name(),
                "description": "Session cookie of auth/login; unsafe methods also need X-CSRFToken.",
            },
            {"type": "http", "scheme": "bearer", "description": "An API key: <id>-<secret>."},
            {"type": "http", "scheme": "basic"},
        ]


def _value_schema(kind: str) -> dict[str, Any]:
    return {
        "string": {"type": "string"},
        "integer": {"type": "integer", "format": "int64"},
        "boolean": {"type": "boolean"},
        "datetime": {"type": "string", "format": "date-time"},
    }[kind]


def query_parameters(filterset_class: type[QueryFilterSet]) -> list[OpenApiParameter]:
    """One documented query parameter per filter of a `filtersets.QueryFilterSet` class."""
    from django_filters.filters import BaseCSVFilter

    from sessions_app.api.rest import filtersets

    out = []
    for name, parameter in filterset_class.base_filters.items():
        if isinstance(parameter, filtersets.LeafParameter):
            schema = _value_schema(parameter.kind.value)
            description = f'Filter ["{parameter.path}", "{parameter.operator}", value].'
            if isinstance(parameter, BaseCSVFilter):
                out.append(
                    OpenApiParameter(
                        name,
                        {"type": "array", "items": schema, "maxItems": 1000},
                        description=description + " Comma-separated values.",
                        style="form",
                        explode=False,
                    )
                )
                continue
        elif name == "order_by":
            out.append(
                OpenApiParameter(
                    name,
                    {"type": "array", "items": {"type": "string", "minLength": 1}},
                    description="Comma-separated fields; a - prefix sorts descending.",
                    style="form",
                    explode=False,
                )
            )
            continue
        elif name in ("limit", "offset"):
            schema = {"type": "integer", "minimum": 0, **({"maximum": 10000} if name == "limit" else {})}
            description = (
                "Rows per page (0: all); answers count/next/previous/results."
                if name == "limit"
                else "Rows to skip."
            )
        else:
            schema = {"type": "boolean"}
            description = {
                "count": "Answer the number of matching rows.",
                "history": "Also list ended sessions (with ended_at, end_reason, ended_by).",
                "device": (
                    "Add the device (label, browser, os, device, user_agent) and location (country, "
                    "city) objects to each row; their fields can then be filtered and ordered by "
                    "(device.os=iOS, order_by=device.browser). Without it, naming them is a 400."
                ),
            }.get(name, "")
        out.append(OpenApiParameter(name, schema, description=description))
    return out
