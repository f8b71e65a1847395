"""Rotation of the field key: every value sealed at rest moved under the current key (security.md F6).

A rotation, as documented in docs/operations.md ("Rotating the field key"): set ``SESSIONS_FIELD_KEY`` to the new key and
``SESSIONS_FIELD_KEY_PREVIOUS`` to the old one(s) on every host, restart, run
``manage.py rotate_field_key`` (this service), then drop the previous keys. Until the last step,
values under an old key keep opening, so the service never stops accepting codes.

All or nothing: the rows are locked and rewritten in one transaction, with its audit record; when
any value cannot be opened with the configured keys nothing is changed and the error lists them.
The sealed columns are the TOTP seeds and the SCRAM verifiers of API keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app.audit import audit_record
from sessions_app.auth import fieldcrypt
from sessions_app.auth.totp_seeds import seal_seed
from sessions_app.models import ApiKey, AuditEvent
from sessions_app.services.api_keys import verifier_aad

BATCH = 500


@dataclass
class ColumnRotation:
    """What a rotation did (or, with ``check_only``, would do) to one sealed column."""

    column: str
    resealed: int = 0  # sealed under a previous key, now under the current one
    sealed: int = 0  # found in plain text (written before sealing existed), now sealed
    current: int = 0  # already under the current key: unchanged
    unreadable: list[int] = field(default_factory=list)  # row ids no configured key opens

    @property
    def changes(self) -> int:
        return self.resealed + self.sealed


class FieldKeyRotationError(Exception):
    """Some sealed values cannot be opened with the configured keys; nothing was changed."""

    def __init__(self, report: list[ColumnRotation]) -> None:
        self.report = report
        super().__init__(
            "; ".join(f"{len(r.unreadable)} {r.column} cannot be opened" for r in report if r.unreadable)
        )


def _rotate_totp_seeds(*, check_only: bool) -> ColumnRotation:
    report = ColumnRotation(column="TOTP seeds")
    changed = []
    devices = TOTPDevice.objects.select_for_update().only("pk", "user_id", "key").order_by("pk")
    for device in devices:
        try:
            was_sealed, was_current = fieldcrypt.is_sealed(device.key), fieldcrypt.is_current(device.key)
            value = seal_seed(device.key, user_id=device.user_id)
        except (fieldcrypt.FieldKeyError, ValueError):  # ValueError: a plain value that is not hex
            report.unreadable.append(device.pk)
            continue
        if was_current:
            report.current += 1
            continue
        if was_sealed:
            report.resealed += 1
        else:
            report.sealed += 1
        device.key = value
        changed.append(device)
    if not check_only and not report.unreadable:
        TOTPDevice.objects.bulk_update(changed, ["key"], batch_size=BATCH)
    return report


def _rotate_scram_verifiers(*, check_only: bool) -> ColumnRotation:
    report = ColumnRotation(column="SCRAM verifiers")
    changed = []
    rows = (
        ApiKey.objects.select_for_update().filter(scram_verifier__isnull=False).only("pk", "scram_verifier")
    )
    for key in rows.order_by("pk"):
        value = key.scram_verifier or ""
        try:
            was_current = fieldcrypt.is_current(value)
            resealed = fieldcrypt.reseal(value, aad=verifier_aad(key.pk))
        except (fieldcrypt.FieldKeyError, ValueError):
            report.unreadable.append(key.pk)
            continue
        if was_current:
            report.current += 1
            continue
        report.resealed += 1
        key.scram_verifier = resealed
        changed.append(key)
    if not check_only and not report.unreadable:
        ApiKey.objects.bulk_update(changed, ["scram_verifier"], batch_size=BATCH)
    return report


def field_key_rotate(*, check_only: bool = False, actor: str | None = None) -> list[ColumnRotation]:
    """Re-seal every sealed value under the current field key (and seal any left in plain text).

    ``check_only`` changes nothing and reports what a rotation would do. Raises
    `FieldKeyRotationError` (nothing changed) when a value opens with none of the configured keys.
    """
    with transaction.atomic():
        report = [_rotate_totp_seeds(check_only=check_only), _rotate_scram_verifiers(check_only=check_only)]
        if any(r.unreadable for r in report):
            raise FieldKeyRotationError(report)
        if not check_only:
            audit_record(
                event=AuditEvent.METHOD_CALL,
                success=True,
                username=actor,
                event_data={
                    "method": "field_key.rotate",
                    "resealed": sum(r.resealed for r in report),
                    "sealed": sum(r.sealed for r in report),
                },
            )
    return report
