"""The REST API's error answers: one JSON body for every error status.

``{"errors": [{"attribute": "...", "message": "...", "errno": 22}]}``: ``attribute`` names the
offending input (a body field such as ``name``, a query parameter such as ``limit``, a query-language
path such as ``filters[0][2]``, ``body`` for the body as a whole, or ``""``), ``errno`` is the
TrueNAS errno of the failure. DRF exceptions, the domain errors of `sessions_app.exceptions`,
`QueryError` / `MatchNotFound`, Django's request errors (``RequestDataTooBig`` → 413, other
``SuspiciousOperation`` → 400, ``ValidationError`` → 400), ``DataError`` (a value the database
refuses → 400) and any other ``DatabaseError`` (503 with ``Retry-After``) are all mapped here, so
no client input produces a 500. With DEBUG off, anything else is logged with a request id and
answered by a generic 500 naming only that id (E14).
"""

from __future__ import annotations

import errno as _errno
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError, DataError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from sessions_app.exceptions import ENOTAUTHENTICATED, Busy, CallError, InvalidParams, QueryTimeout
from sessions_app.query import MatchNotFound, QueryError

logger = logging.getLogger(__name__)

RETRY_AFTER_UNAVAILABLE = 5

#: errno of an answer that carries no more specific one.
ERRNO_BY_STATUS: Mapping[int, int] = {
    400: _errno.EINVAL,
    401: ENOTAUTHENTICATED,
    403: _errno.EACCES,
    404: _errno.ENOENT,
    405: _errno.EOPNOTSUPP,
    406: _errno.EINVAL,
    413: _errno.E2BIG,
    415: _errno.EINVAL,
    429: _errno.EBUSY,
    500: _errno.EFAULT,
    503: _errno.EAGAIN,
}


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Service unavailable: the database cannot be reached; retry shortly."
    default_code = "service_unavailable"


#: The attribute of errors about the request as a whole rather than one field.
_ATTRIBUTE_BY_EXCEPTION: tuple[tuple[type[exceptions.APIException], str], ...] = (
    (exceptions.ParseError, "body"),
    (exceptions.UnsupportedMediaType, "content_type"),
    (exceptions.NotAcceptable, "accept"),
    (PayloadTooLarge, "body"),
)


def error_body(errors: Sequence[tuple[str, str]], errno: int) -> dict[str, Any]:
    return {"errors": [{"attribute": a, "message": m, "errno": errno} for a, m in errors]}


def error_response(
    status_code: int,
    errors: Sequence[tuple[str, str]],
    *,
    errno: int | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    errno = ERRNO_BY_STATUS.get(status_code, _errno.EINVAL) if errno is None else errno
    return Response(error_body(errors, errno), status=status_code, headers=headers or None)


def flatten(detail: Any, prefix: str = "") -> list[tuple[str, str]]:
    """DRF ``ValidationError.detail`` (nested dicts and lists) as ``(attribute, message)`` pairs.

    Keys join with ``.``, list positions become ``[i]``; ``non_field_errors`` is the object itself.
    """
    if isinstance(detail, Mapping):
        out = []
        for key, value in detail.items():
            if key in ("non_field_errors", "__all__"):
                out += flatten(value, prefix)
            else:
                out += flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(detail, list):
        if all(not isinstance(item, Mapping | list) for item in detail):
            return [(prefix, str(item)) for item in detail]
        out = []
        for index, item in enumerate(detail):
            if isinstance(item, Mapping | list) and item:
                out += flatten(item, f"{prefix}[{index}]")
        return out
    return [(prefix, str(detail))]


def _message(exc: exceptions.APIException) -> str:
    detail = exc.detail
    if isinstance(detail, list | dict):
        return "; ".join(message for _, message in flatten(detail))
    return str(detail)


def api_exception_handler(exc: Exception, context: Mapping[str, Any]) -> Response | None:
    """``REST_FRAMEWORK["EXCEPTION_HANDLER"]``: every exception a view raises, as one error body."""
    response = _handle(exc)
    if response is None:
        if settings.DEBUG:
            return None  # Django's debug page
        request_id = uuid.uuid4().hex
        view = context.get("view")
        logger.error(
            "unhandled exception in %s (request id %s)",
            type(view).__name__ if view is not None else "view",
            request_id,
            exc_info=exc,
        )
        response = error_response(500, [("", f"Internal server error (request id {request_id})")])
        response.data["request_id"] = request_id
        response["X-Request-ID"] = request_id
    set_rollback()
    return response


def _handle(exc: Exception) -> Response | None:
    if isinstance(exc, InvalidParams):
        return error_response(400, exc.errors)
    if isinstance(exc, MatchNotFound):
        return error_response(404, [("", "MatchNotFound()")])
    if isinstance(exc, QueryError):
        return error_response(400, [(exc.attribute, exc.message)], errno=exc.errno)
    if isinstance(exc, Busy):
        return error_response(
            429, [("", exc.reason)], errno=exc.errno, headers={"Retry-After": str(exc.retry_after)}
        )
    if isinstance(exc, QueryTimeout):  # the database cancelled the query (C20)
        return error_response(
            503, [("", exc.reason)], errno=exc.errno, headers={"Retry-After": str(exc.retry_after)}
        )
    if isinstance(exc, CallError):
        return error_response(exc.http_status, [("", exc.reason)], errno=exc.errno)
    if isinstance(exc, RequestDataTooBig):
        return error_response(413, [("body", "The request body is too large.")])
    if isinstance(exc, SuspiciousOperation):
        return error_response(400, [("", "Bad request.")])
    if isinstance(exc, DjangoValidationError):
        return error_response(400, [("", message) for message in exc.messages])
    if isinstance(exc, DataError):
        # A value the database cannot store or compare (NUL in PostgreSQL text...): client input.
        logger.warning("the database refused a value in a REST call", exc_info=exc)
        return error_response(400, [("", "A value cannot be stored or compared by the database.")])
    if isinstance(exc, DatabaseError):
        logger.exception("database error in a REST call")
        return error_response(
            503,
            [("", str(ServiceUnavailable.default_detail))],
            headers={"Retry-After": str(RETRY_AFTER_UNAVAILABLE)},
        )
    if isinstance(exc, Http404):
        return error_response(404, [("", "Not found.")])
    if isinstance(exc, DjangoPermissionDenied):
        return error_response(403, [("", str(exc) or "Not authorized")])
    if isinstance(exc, exceptions.ValidationError):
        return error_response(400, flatten(exc.detail) or [("", "Invalid input.")])
    if isinstance(exc, exceptions.APIException):
        return _api_exception(exc)
    return None


def _api_exception(exc: exceptions.APIException) -> Response:
    headers: dict[str, str] = {}
    auth_header = getattr(exc, "auth_header", None)
    if auth_header:
        headers["WWW-Authenticate"] = auth_header
    wait = getattr(exc, "wait", None)
    if wait:
        headers["Retry-After"] = f"{int(wait)}"
    if isinstance(exc, ServiceUnavailable):
        headers["Retry-After"] = str(RETRY_AFTER_UNAVAILABLE)
    attribute = next((name for cls, name in _ATTRIBUTE_BY_EXCEPTION if isinstance(exc, cls)), "")
    return error_response(exc.status_code, [(attribute, _message(exc))], headers=headers)
