"""Domain errors. Services raise them; the interfaces map them to JSON-RPC / HTTP answers."""

from __future__ import annotations

import errno as _errno

ENOTAUTHENTICATED = 207


class CallError(Exception):
    """A method call failed (JSON-RPC ``-32001 Method call error``)."""

    errno = _errno.EFAULT
    errname = "EFAULT"
    http_status = 400

    def __init__(self, reason: str | None = None) -> None:
        self.reason = reason or self.default_reason
        super().__init__(self.reason)

    default_reason = "Method call error"


class NotAuthenticated(CallError):
    errno, errname, http_status, default_reason = (
        ENOTAUTHENTICATED,
        "ENOTAUTHENTICATED",
        401,
        "Not authenticated",
    )


class NotAuthorized(CallError):
    errno, errname, http_status, default_reason = _errno.EACCES, "EACCES", 403, "Not authorized"


class NotSupported(CallError):
    errno, errname, http_status, default_reason = (
        _errno.EOPNOTSUPP,
        "EOPNOTSUPP",
        403,
        "Operation not supported",
    )


class NotFound(CallError):
    errno, errname, http_status, default_reason = _errno.ENOENT, "ENOENT", 404, "Not found"


class QueryTimeout(CallError):
    """A query ran past its statement budget (``SESSIONS_QUERY_TIMEOUT``): HTTP 503 with
    ``Retry-After``, JSON-RPC ``ETIMEDOUT`` -- the database cancelled it; no worker is held."""

    errno, errname, http_status = _errno.ETIMEDOUT, "ETIMEDOUT", 503
    retry_after = 5

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"the query ran longer than its budget of {seconds:g} s and was cancelled; "
            "narrow the filters or lower the limit, or retry later"
        )


class Busy(CallError):
    """Rate limited; ``retry_after`` seconds until the window ends."""

    errno, errname, http_status, default_reason = _errno.EBUSY, "EBUSY", 429, "Rate limit exceeded"

    def __init__(self, retry_after: int, reason: str | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(reason)


class InvalidParams(ValueError):
    """Validation errors: a list of ``(attribute, message)`` (JSON-RPC ``-32602``, HTTP 400)."""

    errno = _errno.EINVAL

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{a}: {m}" for a, m in errors))

    @classmethod
    def one(cls, attribute: str, message: str) -> InvalidParams:
        return cls([(attribute, message)])
