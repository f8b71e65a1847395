"""Declared fields of the query methods and how they map onto the models.

``auth.sessions`` rows are built here from `UserSession` columns (see `sessions_app.models` for why
``credentials_data`` is denormalised). The same `build_session_row` serves the SQL path, the
in-memory engine in tests and benchmarks, and every interface, so a row looks the same everywhere.
Secret columns (``secret_hash``, ``key_hash``, ``token_hash``) are not declared: naming one in a
query is an "unknown field", exactly like a field that does not exist.

``options.extra`` switches of ``auth.sessions`` / ``auth.my_sessions`` (anything else is the
validation error ``options.extra.<key>: unknown option``; values must be booleans):

* ``history``: ended sessions too, with ``ended_at``, ``end_reason`` and ``ended_by``;
* ``device``: two more objects per row, parsed once at login (`sessions_app.devices`)::

      "device": {"label": "Safari on iOS", "browser": "Safari", "os": "iOS", "device": "iPhone",
                 "user_agent": "Mozilla/5.0 (iPhone; ...)"},
      "location": {"country": "Germany", "city": "Berlin"}

  Both objects are on every row with the switch, with every key; a value is null when it was not
  recorded (sessions without HTTP headers -- unix socket, node peers --, rows from before devices
  were kept, no ``SESSIONS_GEOIP_PATH``). ``label`` is the words the pages show. The keys are
  declared nullable strings, so filters, ``order_by`` and ``select`` on them run in SQL like any
  other column (code-point order, nulls last ascending); ``C`` operators run in Python after the SQL
  prefilter (there is no casefolded copy of these columns).

A switch's fields exist only with the switch. Without it, naming one (``["device.os", "=", "iOS"]``,
``order_by: ["device.browser"]``, ``select: ["device"]``) is the error any undeclared field gives,
``'device.os': unknown field`` (JSON-RPC ``-32602``, HTTP 400) -- the rule ``history``'s fields
already follow. TrueNAS filters the rows as returned, where the key is missing, so such a filter
silently matches no row (and ``nin`` / ``!=`` too); a declared method here never answers a
misspelled or switched-off name with an empty list. Without ``device`` the row is TrueNAS's
``auth.sessions`` row, and the device columns are not even read (`QuerySpec.extra_row_fields`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db.models import Q

from sessions_app.models import ApiKey, AuditEvent, AuditRecord, Credentials, EndReason, UserSession
from sessions_app.query.ast import QueryOptions
from sessions_app.query.compiler import FALSE, Column, Cond, QuerySpec
from sessions_app.query.schema import Field, FieldType, Schema

STR, INT, BOOL, DT, OBJ = (
    FieldType.STRING,
    FieldType.INTEGER,
    FieldType.BOOLEAN,
    FieldType.DATETIME,
    FieldType.OBJECT,
)

_NODE, _TOKEN, _API_KEY = Credentials.TRUENAS_NODE, Credentials.TOKEN, Credentials.API_KEY
CREDENTIALS = tuple(c.value for c in Credentials)
ROOT_CREDENTIALS = tuple(c for c in CREDENTIALS if c != _TOKEN)
END_REASONS = tuple(r.value for r in EndReason)

_SESSION_FIELDS: dict[str, Field] = {
    "id": Field(STR),
    "current": Field(BOOL),
    "internal": Field(BOOL),
    "origin": Field(STR),
    "credentials": Field(STR),
    "credentials_data": Field(OBJ, orderable=False),
    "credentials_data.username": Field(STR, nullable=True),
    "credentials_data.login_at": Field(DT, nullable=True),
    "credentials_data.api_key": Field(OBJ, orderable=False),
    "credentials_data.api_key.id": Field(INT, nullable=True),
    "credentials_data.api_key.name": Field(STR, nullable=True),
    "credentials_data.parent": Field(OBJ, orderable=False),
    "credentials_data.parent.credentials": Field(STR, nullable=True),
    "credentials_data.parent.credentials_data": Field(OBJ, orderable=False),
    "credentials_data.parent.credentials_data.username": Field(STR, nullable=True),
    "credentials_data.parent.credentials_data.login_at": Field(DT, nullable=True),
    "credentials_data.parent.credentials_data.api_key": Field(OBJ, orderable=False),
    "credentials_data.parent.credentials_data.api_key.id": Field(INT, nullable=True),
    "credentials_data.parent.credentials_data.api_key.name": Field(STR, nullable=True),
    "created_at": Field(DT),
    "secure_transport": Field(BOOL),
}
_HISTORY_FIELDS: dict[str, Field] = {
    "ended_at": Field(DT, nullable=True),
    "ended_by": Field(STR, nullable=True),
    "end_reason": Field(STR, nullable=True),
}

_DEVICE_FIELDS: dict[str, Field] = {
    "device": Field(OBJ, orderable=False),
    "device.label": Field(STR, nullable=True),
    "device.browser": Field(STR, nullable=True),
    "device.os": Field(STR, nullable=True),
    "device.device": Field(STR, nullable=True),
    "device.user_agent": Field(STR, nullable=True),
    "location": Field(OBJ, orderable=False),
    "location.country": Field(STR, nullable=True),
    "location.city": Field(STR, nullable=True),
}

SESSION_SCHEMA = Schema.build(_SESSION_FIELDS, extra={"history": bool, "device": bool})
SESSION_HISTORY_SCHEMA = SESSION_SCHEMA.with_fields(_HISTORY_FIELDS)
SESSION_DEVICE_SCHEMA = SESSION_SCHEMA.with_fields(_DEVICE_FIELDS)
SESSION_HISTORY_DEVICE_SCHEMA = SESSION_HISTORY_SCHEMA.with_fields(_DEVICE_FIELDS)

_USER_DATA = ~Q(credentials__in=[_NODE, _TOKEN])
_HAS_USERNAME = ~Q(credentials=_NODE)
_IS_API_KEY = Q(credentials=_API_KEY)
_IS_TOKEN = Q(credentials=_TOKEN)
_ROOT_USER = _IS_TOKEN & ~Q(root_credentials=_NODE)
_ROOT_API_KEY = _IS_TOKEN & Q(root_credentials=_API_KEY)


def _current(context: Mapping[str, Any]) -> Cond:
    """The caller's own session; a caller without one (Bearer, Basic) has no current row: `FALSE`."""
    pk = context.get("current_pk")
    return Q(pk=pk) if pk is not None else FALSE


_SESSION_COLUMNS: dict[tuple[str, ...], Column] = {
    tuple(k.split(".")): v
    for k, v in {
        "id": Column("public_id"),
        "current": Column(condition=_current),
        "internal": Column("internal"),
        "origin": Column("origin"),
        "credentials": Column("credentials", domain=CREDENTIALS),
        "credentials_data": Column(),
        "credentials_data.username": Column("username", present=_HAS_USERNAME, folded="username_folded"),
        "credentials_data.login_at": Column("login_at", present=_USER_DATA),
        "credentials_data.api_key": Column(present=_IS_API_KEY),
        "credentials_data.api_key.id": Column("api_key_id", present=_IS_API_KEY),
        "credentials_data.api_key.name": Column("api_key_name", present=_IS_API_KEY),
        "credentials_data.parent": Column(present=_IS_TOKEN),
        "credentials_data.parent.credentials": Column(
            "root_credentials", present=_IS_TOKEN, domain=ROOT_CREDENTIALS
        ),
        "credentials_data.parent.credentials_data": Column(present=_IS_TOKEN),
        "credentials_data.parent.credentials_data.username": Column("root_username", present=_ROOT_USER),
        "credentials_data.parent.credentials_data.login_at": Column("root_login_at", present=_ROOT_USER),
        "credentials_data.parent.credentials_data.api_key": Column(present=_ROOT_API_KEY),
        "credentials_data.parent.credentials_data.api_key.id": Column(
            "root_api_key_id", present=_ROOT_API_KEY
        ),
        "credentials_data.parent.credentials_data.api_key.name": Column(
            "root_api_key_name", present=_ROOT_API_KEY
        ),
        "created_at": Column("created_at"),
        "secure_transport": Column("secure_transport"),
        "ended_at": Column("ended_at"),
        "ended_by": Column("ended_by"),
        "end_reason": Column("end_reason", domain=END_REASONS),
        "device": Column(),
        "device.label": Column("device_label"),
        "device.browser": Column("device_browser"),
        "device.os": Column("device_os"),
        "device.device": Column("device_family"),
        "device.user_agent": Column("user_agent"),
        "location": Column(),
        "location.country": Column("location_country"),
        "location.city": Column("location_city"),
    }.items()
}

SESSION_ROW_FIELDS = (
    "pk",
    "public_id",
    "internal",
    "origin",
    "credentials",
    "username",
    "login_at",
    "api_key_id",
    "api_key_name",
    "root_credentials",
    "root_username",
    "root_login_at",
    "root_api_key_id",
    "root_api_key_name",
    "created_at",
    "secure_transport",
    "ended_at",
    "end_reason",
    "ended_by",
)
#: Read after `SESSION_ROW_FIELDS` only with ``extra.device`` (the context's ``device``).
SESSION_DEVICE_ROW_FIELDS = (
    "device_label",
    "device_browser",
    "device_os",
    "device_family",
    "user_agent",
    "location_country",
    "location_city",
)
_BASE = len(SESSION_ROW_FIELDS)


def _user_data(
    credentials: str | None, username: str | None, login_at: Any, key_id: int | None, key_name: str | None
) -> dict[str, Any]:
    if credentials == _NODE:
        return {}
    data: dict[str, Any] = {"username": username, "login_at": login_at}
    if credentials == _API_KEY:
        data["api_key"] = {"id": key_id, "name": key_name}
    return data


def build_session_row(values: tuple[Any, ...], context: Mapping[str, Any]) -> dict[str, Any]:
    """Turn one `SESSION_ROW_FIELDS` tuple into an ``auth.sessions`` row (datetimes stay datetimes).

    With ``context["history"]`` the row has the ended keys; with ``context["device"]`` the tuple
    goes on with the `SESSION_DEVICE_ROW_FIELDS` values and the row has ``device`` and ``location``.
    """
    (
        pk,
        public_id,
        internal,
        origin,
        credentials,
        username,
        login_at,
        key_id,
        key_name,
        root_credentials,
        root_username,
        root_login_at,
        root_key_id,
        root_key_name,
        created_at,
        secure_transport,
        ended_at,
        end_reason,
        ended_by,
    ) = values[:_BASE]
    if credentials == _TOKEN:
        credentials_data: dict[str, Any] = {
            "parent": {
                "credentials": root_credentials,
                "credentials_data": _user_data(
                    root_credentials, root_username, root_login_at, root_key_id, root_key_name
                ),
            },
            "username": username,
        }
    else:
        credentials_data = _user_data(credentials, username, login_at, key_id, key_name)
    row = {
        "id": public_id,
        "current": pk == context.get("current_pk"),
        "internal": internal,
        "origin": origin,
        "credentials": credentials,
        "credentials_data": credentials_data,
        "created_at": created_at,
        "secure_transport": secure_transport,
    }
    if context.get("history"):
        row["ended_at"] = ended_at
        row["end_reason"] = end_reason
        row["ended_by"] = ended_by
    if context.get("device"):
        label, browser, os_name, family, user_agent, country, city = values[_BASE:]
        row["device"] = {
            "label": label,
            "browser": browser,
            "os": os_name,
            "device": family,
            "user_agent": user_agent,
        }
        row["location"] = {"country": country, "city": city}
    return row


_SESSION_SCHEMAS = {
    (False, False): SESSION_SCHEMA,
    (True, False): SESSION_HISTORY_SCHEMA,
    (False, True): SESSION_DEVICE_SCHEMA,
    (True, True): SESSION_HISTORY_DEVICE_SCHEMA,
}


def _session_schema(options: QueryOptions) -> Schema:
    extra = options.extra
    return _SESSION_SCHEMAS[extra.get("history") is True, extra.get("device") is True]


SESSION_SPEC = QuerySpec(
    schema=SESSION_SCHEMA,
    columns=_SESSION_COLUMNS,
    default_order=("created_at", "id"),
    row_fields=SESSION_ROW_FIELDS,
    build_row=build_session_row,
    extra_schema=_session_schema,
    extra_row_fields={"device": SESSION_DEVICE_ROW_FIELDS},
    model=UserSession,
)


# --- api_key.query ----------------------------------------------------------------------------------

API_KEY_SCHEMA = Schema.build(
    {
        "id": Field(INT),
        "name": Field(STR),
        "username": Field(STR),
        "user_identifier": Field(STR),
        "created_at": Field(DT),
        "expires_at": Field(DT, nullable=True),
        "local": Field(BOOL),
        "revoked": Field(BOOL),
        "revoked_reason": Field(STR, nullable=True),
        "last_used_at": Field(DT, nullable=True),
    }
)
API_KEY_ROW_FIELDS = (
    "id",
    "name",
    "user__username",
    "user_id",
    "created_at",
    "expires_at",
    "revoked",
    "revoked_reason",
    "last_used_at",
)


def build_api_key_row(values: tuple[Any, ...], context: Mapping[str, Any]) -> dict[str, Any]:
    """An ``api_key.query`` row. The hash is never shown: ``keyhash`` is a fixed mask."""
    key_id, name, username, user_id, created_at, expires_at, revoked, revoked_reason, last_used_at = values
    return {
        "id": key_id,
        "name": name,
        "username": username,
        "user_identifier": str(user_id),
        "keyhash": "********",
        "created_at": created_at,
        "expires_at": expires_at,
        "local": True,
        "revoked": revoked,
        "revoked_reason": revoked_reason,
        "last_used_at": last_used_at,
    }


API_KEY_SPEC = QuerySpec(
    schema=API_KEY_SCHEMA,
    columns={
        ("id",): Column("id"),
        ("name",): Column("name"),
        ("username",): Column("user__username"),
        ("user_identifier",): Column("user_identifier"),
        ("created_at",): Column("created_at"),
        ("expires_at",): Column("expires_at"),
        ("local",): Column(domain=(True,), constant=True),
        ("revoked",): Column("revoked"),
        ("revoked_reason",): Column("revoked_reason"),
        ("last_used_at",): Column("last_used_at"),
    },
    default_order=("id",),
    row_fields=API_KEY_ROW_FIELDS,
    build_row=build_api_key_row,
    model=ApiKey,
)


# --- audit.query -------------------------------------------------------------------------------------

AUDIT_SCHEMA = Schema.build(
    {
        "audit_id": Field(STR),
        "timestamp": Field(DT),
        "event": Field(STR),
        "username": Field(STR, nullable=True),
        "session": Field(STR, nullable=True),
        "address": Field(STR),
        "success": Field(BOOL),
        "event_data": Field(OBJ, orderable=False, open=True),
    }
)
AUDIT_ROW_FIELDS = (
    "id",
    "audit_id",
    "timestamp",
    "event",
    "username",
    "session",
    "address",
    "success",
    "event_data",
)


def build_audit_row(values: tuple[Any, ...], context: Mapping[str, Any]) -> dict[str, Any]:
    """An ``audit.query`` row (TrueNAS audit entry shape, restricted to what this service records)."""
    _pk, audit_id, timestamp, event, username, session, address, success, event_data = values
    return {
        "audit_id": str(audit_id),
        "timestamp": timestamp,
        "event": event,
        "username": username,
        "session": session,
        "address": address,
        "success": success,
        "event_data": event_data,
    }


AUDIT_SPEC = QuerySpec(
    schema=AUDIT_SCHEMA,
    columns={
        ("audit_id",): Column("audit_id"),
        ("timestamp",): Column("timestamp"),
        ("event",): Column("event", domain=tuple(e.value for e in AuditEvent)),
        ("username",): Column("username"),
        ("session",): Column("session"),
        ("address",): Column("address"),
        ("success",): Column("success"),
        ("event_data",): Column(),
    },
    default_order=("timestamp", "id"),
    row_fields=AUDIT_ROW_FIELDS,
    build_row=build_audit_row,
    model=AuditRecord,
)
