"""JSON-RPC 2.0 over HTTP at ``POST /api/current``: TrueNAS wire compatibility.

The view validates the envelope, authenticates (the middleware already did), applies the body caps
(8 KiB before authentication, 64 KiB after) and the unauthenticated rate limit, then calls one
method of `sessions_app.api.methods`, which calls one service or selector. Errors have TrueNAS's
shapes: ``-32700`` parse error, ``-32600`` invalid request, ``-32601`` ``Method does not exist``,
``-32602`` ``Invalid params`` (``data.extra`` triples) and ``-32001`` ``Method call error`` with all of
``error``, ``errname``, ``reason``, ``trace`` and ``extra``. A value the database refuses
(``DataError``) is ``-32602``; any other database error is HTTP 503; an unexpected exception is
logged with a request id and answered HTTP 500 with a generic ``-32001`` (``EFAULT``) naming only
that id (``data.request_id``, ``X-Request-ID``), never a traceback (E14).

``Content-Type: application/json`` is mandatory (415 otherwise): with no permissive CORS, a
cross-site page cannot send it without a preflight, so it is this endpoint's CSRF defence and
cookie-authenticated calls need no CSRF token (interfaces.md §1).
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, DataError, transaction
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from sessions_app.api.methods import METHODS, CallContext, Method
from sessions_app.audit import audit_record
from sessions_app.auth import throttle
from sessions_app.auth.clients import Client, client_from_request
from sessions_app.auth.request import RegistryRequest
from sessions_app.exceptions import Busy, CallError, InvalidParams, NotAuthenticated, QueryTimeout
from sessions_app.middleware import clear_session_cookie, pending_cookie, set_session_cookie
from sessions_app.models import AuditEvent
from sessions_app.query import MatchNotFound, QueryError

logger = logging.getLogger(__name__)

UNAUTHENTICATED_BODY_LIMIT = 8 * 1024
AUTHENTICATED_BODY_LIMIT = 64 * 1024
MAX_JSON_DEPTH = 64
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class BadJSON(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise BadJSON(f"{name} is not valid JSON")


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > 20:
        raise BadJSON("integer too large")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise BadJSON("number out of range")
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object; a key given twice is refused (parameter pollution: Python would keep the last
    value silently, where a proxy or a firewall in front may have read the first)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BadJSON(f"duplicate key {key[:64]!r}")
            seen.add(key)
    return obj


#: A ``\uD800``-``\uDFFF`` escape: the only way a JSON text decoded from UTF-8 can hold a surrogate.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _lone_surrogate(value: Any) -> bool:
    """Whether a string anywhere in ``value`` holds an unpaired surrogate (not Unicode text: no
    database can store or compare it, and encoding it later raises instead of answering 400)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
    return False


def _depth_ok(body: bytes) -> bool:
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                return False
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return True


def loads(body: bytes) -> Any:
    """Strict JSON: UTF-8 without BOM, no NaN/Infinity, bounded integers and nesting, no key twice in
    an object, no unpaired surrogate escapes."""
    if not _depth_ok(body):
        raise BadJSON(f"nesting deeper than {MAX_JSON_DEPTH} levels")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadJSON("the body is not valid UTF-8") from None
    if text.startswith("\ufeff"):
        raise BadJSON("byte order mark not allowed")
    try:
        value = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
            parse_float=_parse_float,
            object_pairs_hook=_object,
        )
    except (ValueError, RecursionError) as exc:
        raise BadJSON(str(exc) or "invalid JSON") from None
    if _SURROGATE_ESCAPE.search(text) and _lone_surrogate(value):
        raise BadJSON("strings must not contain unpaired surrogates (\\ud800-\\udfff)")
    return value


def ejson_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return {"$date": (value - EPOCH) // dt.timedelta(milliseconds=1)}
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def dumps(payload: Any) -> str:
    return json.dumps(payload, default=ejson_default, ensure_ascii=False, allow_nan=False)


def _reply(payload: Any, status: int = 200) -> HttpResponse:
    response = HttpResponse(dumps(payload), status=status, content_type="application/json")
    response["Cache-Control"] = "no-store"
    return response


def _error(request_id: Any, code: int, message: str, data: Any = None, status: int = 200) -> HttpResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return _reply({"jsonrpc": "2.0", "id": request_id, "error": error}, status=status)


def invalid_params_data(errors: list[tuple[str, str]]) -> dict[str, Any]:
    reason = "".join(f"[EINVAL] {attribute}: {message}\n" for attribute, message in errors)
    return {
        "error": 22,
        "errname": "EINVAL",
        "reason": reason,
        "trace": None,
        "extra": [[attribute, message, 22] for attribute, message in errors],
    }


def error_data(errname: str, reason: str, code: int | None = None, **more: Any) -> dict[str, Any]:
    """The ``data`` of a ``-32001`` error, as TrueNAS shapes it (``code`` defaults to errno's)."""
    return {
        "error": getattr(errno, errname) if code is None else code,
        "errname": errname,
        "reason": f"[{errname}] {reason}",
        "trace": None,
        "extra": None,
        **more,
    }


def call_error_data(exc: CallError) -> dict[str, Any]:
    return error_data(exc.errname, exc.reason, exc.errno)


UNAVAILABLE = "service unavailable: the database cannot be reached"


def internal_error_data(error_id: str) -> dict[str, Any]:
    """An unexpected exception's ``data``: only the request id under which the log has the traceback."""
    return error_data("EFAULT", f"Internal error (request id {error_id})", request_id=error_id)


def audit_rate_limited(method_name: str, params: list[Any], client: Client) -> None:
    """A refused login attempt is still an authentication attempt: audit it (A9)."""
    first = params[0] if params else None
    username = (
        first.get("username") if isinstance(first, dict) else first if method_name == "auth.login" else None
    )
    with transaction.atomic():
        audit_record(
            event=AuditEvent.AUTHENTICATION,
            success=False,
            username=username[:150] if isinstance(username, str) and username else None,
            address=client.origin,
            event_data={"method": method_name, "error": "rate limited"},
        )


def http_error(status: int, detail: str, **headers: str) -> JsonResponse:
    response = JsonResponse({"error": detail}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    response["Cache-Control"] = "no-store"
    return response


@dataclass
class Envelope:
    """A valid JSON-RPC request: its id (``notification`` when it had none), method and params."""

    request_id: Any
    notification: bool
    method_name: str
    params: list[Any]


@dataclass
class Outcome:
    """What one message produced: the JSON-RPC reply (None: send nothing) and, for HTTP, its status,
    headers and (503) a plain error body instead of the JSON-RPC one."""

    reply: dict[str, Any] | None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    http_body: dict[str, Any] | None = None


def error_reply(request_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def parse_envelope(message: Any) -> Envelope | Outcome:
    """Validate the JSON-RPC 2.0 envelope of one decoded message (batches are refused)."""
    if isinstance(message, list):
        return Outcome(error_reply(None, -32700, "Parse error: batches are not supported"), 400)
    if not isinstance(message, dict):
        return Outcome(error_reply(None, -32600, "Invalid Request: not an object"), 400)
    request_id = message.get("id")
    if not isinstance(request_id, (str, int, type(None))) or isinstance(request_id, bool):
        return Outcome(
            error_reply(None, -32600, "Invalid Request: id must be a string, a number or null"), 400
        )
    if message.get("jsonrpc") != "2.0":
        return Outcome(error_reply(request_id, -32600, 'Invalid Request: jsonrpc must be "2.0"'), 400)
    method_name = message.get("method")
    if not isinstance(method_name, str):
        return Outcome(error_reply(request_id, -32600, "Invalid Request: method must be a string"), 400)
    params = message.get("params", [])
    if not isinstance(params, list):
        return Outcome(error_reply(request_id, -32600, "Invalid Request: params must be an array"), 400)
    return Envelope(request_id, "id" not in message, method_name, params)


def execute(envelope: Envelope, context: CallContext, methods: dict[str, Method] | None = None) -> Outcome:
    """Run one call for any transport: authentication gate, rate limit, the method, error mapping.

    ``methods`` (default `METHODS`) lets a transport add methods of its own (the WebSocket's
    ``core.subscribe``). A notification's outcome has no reply.
    """
    request_id, method_name = envelope.request_id, envelope.method_name
    method = (methods or METHODS).get(method_name)
    if method is None:
        # A notification gets no reply, not even an error (JSON-RPC 2.0 §4.1).
        return Outcome(
            None if envelope.notification else error_reply(request_id, -32601, "Method does not exist")
        )
    outcome = _call(method, envelope, context)
    if envelope.notification and outcome.status == 200:
        outcome.reply = None
    return outcome


def _call(method: Method, envelope: Envelope, context: CallContext) -> Outcome:
    request_id, method_name, params = envelope.request_id, envelope.method_name, envelope.params
    client = context.client
    try:
        if method.auth_required and (context.user is None or not context.user.is_authenticated):
            # The reason a right per-request credential was refused, if any (F8: Basic and a second factor).
            raise NotAuthenticated(getattr(context.request, "auth_refusal", None))
        if method.rate_limited:
            # A login: counted per address whatever the caller already presents, one limit shared by
            # every login entrance (F4).
            retry_after = throttle.hit_login_limit(address=client.rate_key)
            if retry_after is not None:
                audit_rate_limited(method_name, params, client)
                raise Busy(retry_after)
        result = method(context, params)
    except InvalidParams as exc:
        return Outcome(error_reply(request_id, -32602, "Invalid params", invalid_params_data(exc.errors)))
    except MatchNotFound:
        data = {"error": 22, "errname": "EINVAL", "reason": "MatchNotFound()", "trace": None, "extra": None}
        return Outcome(error_reply(request_id, -32001, "Method call error", data))
    except QueryError as exc:
        return Outcome(
            error_reply(
                request_id, -32602, "Invalid params", invalid_params_data([(exc.attribute, exc.message)])
            )
        )
    except Busy as exc:
        return Outcome(
            error_reply(request_id, -32001, "Method call error", call_error_data(exc)),
            429,
            {"Retry-After": str(exc.retry_after)},
        )
    except QueryTimeout as exc:  # the database cancelled the query (C20): 503, like a busy database
        return Outcome(
            error_reply(request_id, -32001, "Method call error", call_error_data(exc)),
            503,
            {"Retry-After": str(exc.retry_after)},
        )
    except CallError as exc:
        return Outcome(error_reply(request_id, -32001, "Method call error", call_error_data(exc)))
    except DataError:
        # A value the database cannot store or compare (PostgreSQL: NUL in text, a number out of a
        # column's range): the client's input, not an outage (E7).
        logger.warning("the database refused a value in %s", method_name, exc_info=True)
        data = invalid_params_data([("params", "a value cannot be stored or compared by the database")])
        return Outcome(error_reply(request_id, -32602, "Invalid params", data))
    except DatabaseError:
        logger.exception("database error in %s", method_name)
        return Outcome(
            error_reply(request_id, -32001, "Method call error", error_data("EAGAIN", UNAVAILABLE)),
            503,
            {"Retry-After": "5"},
            http_body={"error": UNAVAILABLE},
        )
    except Exception:
        # Never Django's HTML page or a traceback (E14): a generic -32001 naming a request id, and the
        # full traceback in the server log under that id.
        error_id = uuid.uuid4().hex
        logger.exception("unhandled exception in %s (request id %s)", method_name, error_id)
        return Outcome(
            error_reply(request_id, -32001, "Method call error", internal_error_data(error_id)),
            500,
            {"X-Request-ID": error_id},
        )
    return Outcome({"jsonrpc": "2.0", "id": request_id, "result": result})


@csrf_exempt
def jsonrpc_view(request: RegistryRequest) -> HttpResponse:
    if request.method != "POST":
        response: HttpResponse = http_error(405, "method not allowed: use POST")
        response["Allow"] = "POST"
        return response
    if request.content_type != "application/json":
        return http_error(415, "Content-Type must be application/json")
    authenticated = request.user.is_authenticated
    limit = AUTHENTICATED_BODY_LIMIT if authenticated else UNAUTHENTICATED_BODY_LIMIT
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return http_error(400, "invalid Content-Length")
    if declared > limit:
        return http_error(413, f"request body larger than {limit} bytes")
    body = request.read(limit + 1)
    if len(body) > limit:
        return http_error(413, f"request body larger than {limit} bytes")
    try:
        message = loads(body)
    except BadJSON as exc:
        return _error(None, -32700, f"Parse error: {exc}", status=400)
    envelope = parse_envelope(message)
    if isinstance(envelope, Outcome):
        return _reply(envelope.reply, status=envelope.status)
    context = CallContext(
        request=request,
        client=client_from_request(request),
        user=request.user,
        session=request.auth_session,
        pending_secret=pending_cookie(request),
    )
    outcome = execute(envelope, context)
    if outcome.http_body is not None:
        response = http_error(outcome.status, outcome.http_body["error"])
    elif outcome.reply is None:
        response = HttpResponse(status=204)
    else:
        response = _reply(outcome.reply, status=outcome.status)
    for name, value in outcome.headers.items():
        response[name] = value
    if outcome.status < 500:
        for action in context.cookie_actions:
            action(response)
    return response


__all__ = ["clear_session_cookie", "jsonrpc_view", "loads", "set_session_cookie"]
