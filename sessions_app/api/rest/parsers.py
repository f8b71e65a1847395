"""The one request-body parser of the REST API: strict JSON under the JSON-RPC body caps.

Bodies are parsed by `sessions_app.api.jsonrpc.loads` (UTF-8 without BOM, no ``NaN``/``Infinity``,
integers of at most 20 digits, nesting of at most 64 levels, no key twice in an object, no unpaired
surrogate escapes), so both interfaces accept exactly the same JSON. A body is refused with 413 beyond 8 KiB before authentication and 64 KiB after (and never
beyond ``DATA_UPLOAD_MAX_MEMORY_SIZE``), judged from ``Content-Length`` first and then from what is
actually read, which is never more than the cap plus one byte.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from django.http import HttpRequest
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from sessions_app.api.jsonrpc import AUTHENTICATED_BODY_LIMIT, UNAUTHENTICATED_BODY_LIMIT, BadJSON, loads
from sessions_app.api.rest.exceptions import PayloadTooLarge


def body_limit(request: HttpRequest) -> int:
    """The largest body accepted from this request's caller, in bytes."""
    user = getattr(request, "user", None)
    limit = (
        AUTHENTICATED_BODY_LIMIT if user is not None and user.is_authenticated else UNAUTHENTICATED_BODY_LIMIT
    )
    ceiling = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return min(limit, ceiling) if ceiling is not None else limit


class StrictJSONParser(BaseParser):
    media_type = "application/json"

    def parse(
        self,
        stream: IO[bytes],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        request = (parser_context or {})["request"]
        django_request = getattr(request, "_request", request)
        limit = body_limit(django_request)
        too_large = PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        try:
            declared = int(django_request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise ParseError("Invalid Content-Length.") from None
        if declared > limit:
            raise too_large
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise too_large
        try:
            return loads(body)
        except BadJSON as exc:
            raise ParseError(f"JSON parse error: {exc}") from None
