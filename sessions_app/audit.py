"""Writing audit records. Callers run inside the transaction of the change they record."""

from __future__ import annotations

import functools
import os
import signal
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


#: Masked values read like this in ``event_data``.
MASK = "********"
#: Names that misspelled keys are measured against (case and ``_`` / ``-`` ignored): ``pasword``,
#: ``api_kye`` or ``secert`` are secrets too (TrueNAS ``test_typo_in_secret_credential_name``).
_SECRET_NAMES = ("password", "passwd", "otptoken", "apikey", "token", "secret", "newpassword")


def _scrub(value: Any, secret: bool = False) -> Any:
    """Mask every string stored under a secret-looking key (misspellings included), recursively.

    Strings in a list under such a key are masked too; numbers and booleans are kept (ids and counts
    such as ``token_id``); an object under such a key is scrubbed key by key (``api_key: {id, name}``).
    """
    if isinstance(value, dict):
        return {k: _scrub(v, _looks_secret(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v, secret) for v in value]
    if secret and isinstance(value, str):
        return MASK
    return value


def _looks_secret(key: object) -> bool:
    if not isinstance(key, str):
        return False
    return _secret_name(key)


@functools.lru_cache(maxsize=1024)
def _secret_name(key: str) -> bool:
    """``key`` names a secret: a known name, a name containing one, or a misspelling of one (at most
    one edit for 4–6 characters, two from 7; separators and case ignored). Cached: keys come from a
    small vocabulary, so the edit distance is computed once per key and process."""
    lowered = key.lower()
    if lowered in SECRET_KEYS or any(part in lowered for part in ("pass", "pwd", "secret", "token", "otp")):
        return True
    name = lowered.replace("_", "").replace("-", "")
    if len(name) < 4:
        return False
    limit = 1 if len(name) <= 6 else 2
    return any(
        abs(len(name) - len(known)) <= limit and _edit_distance(name, known) <= limit
        for known in _SECRET_NAMES
    )


def _edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance: insertions, deletions, substitutions, adjacent swaps."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[-1]


def masked(event_data: dict[str, Any]) -> dict[str, Any]:
    """``event_data`` with the values under secret-looking keys masked, recursively, as
    `audit_record` stores it (for records written in bulk)."""
    scrubbed: dict[str, Any] = _scrub(event_data)
    return scrubbed


def fault_point(point: str) -> None:
    """The atomicity test's fault injection (security.md D10): with the environment variable
    ``SESSIONS_FAULT_INJECT`` equal to ``point`` the process kills itself with ``SIGKILL`` (``kill
    -9``: no cleanup, no rollback by Python). Writers of audit records call it with
    ``before_audit`` after the change they record and before the record, and ``after_audit`` after
    the record and before the commit; either way the database must end up with neither. For test
    servers only: it must never be set in production."""
    if os.environ.get("SESSIONS_FAULT_INJECT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


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

    The fault points of the atomicity test (`fault_point`) surround the write.
    """
    fault_point("before_audit")
    record = AuditRecord.objects.create(
        event=event,
        success=success,
        username=username,
        session=session,
        address=address,
        event_data=masked(event_data or {}),
    )
    fault_point("after_audit")
    return record
