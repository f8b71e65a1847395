"""Writing audit records. Callers run inside the transaction of the change they record."""

from __future__ import annotations

from typing import Any

from sessions_app.models import AuditRecord

#: Keys whose values are never stored in an audit record, whatever the caller passes.
SECRET_KEYS = frozenset(
    {
        "password",
        "passwd",
        "passwrod",
        "otp_token",
        "otp",
        "api_key",
        "key",
        "token",
        "secret",
        "new_password",
    }
)


def _scrub(value: Any) -> Any:
    """Mask every string stored under a secret-looking key (misspellings included), recursively."""
    if isinstance(value, dict):
        return {
            k: ("********" if _looks_secret(k) and isinstance(v, str) else _scrub(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _looks_secret(key: object) -> bool:
    if not isinstance(key, str):
        return False
    lowered = key.lower()
    return lowered in SECRET_KEYS or any(
        part in lowered for part in ("pass", "pwd", "secret", "token", "otp")
    )


def audit_record(
    *,
    event: str,
    success: bool,
    username: str | None = None,
    session: str | None = None,
    address: str = "",
    event_data: dict[str, Any] | None = None,
) -> AuditRecord:
    """Write one audit record. Values under secret-looking keys are masked, recursively.

    Must be called inside the same ``transaction.atomic()`` block as the change it records, so that
    the change and its record commit together or not at all.
    """
    return AuditRecord.objects.create(
        event=event,
        success=success,
        username=username,
        session=session,
        address=address,
        event_data=_scrub(event_data or {}),
    )
