"""TOTP seeds sealed at rest in django-otp's ``TOTPDevice.key`` (security.md F6).

The column keeps its type (80 characters) and holds a `fieldcrypt` envelope, ``enc1:…``, with the
device's owner in the associated data. Two hooks, installed by `install` from ``AppConfig.ready``,
make every user of the model work with sealed storage:

* **writing**: a ``pre_save`` receiver seals the key of every saved device (a plain hex seed, as
  django-otp's ``default_key`` and the admin produce, or a value under a previous key), so whatever
  creates or saves a device -- the enrolment service, django-otp itself, a test -- stores ciphertext.
  ``bulk_create`` and ``QuerySet.update`` send no signal: callers seal with `seal_seed`.
* **verifying**: ``TOTPDevice.verify_token`` refuses every code of a device whose seed no
  configured key opens (and logs why), so a wrong or lost field key fails closed, never as a 500.
* **reading**: ``TOTPDevice.bin_key`` -- the one accessor through which django-otp reads the seed
  (``verify_token``, ``config_url``, its admin's QR code) -- opens the envelope. A plain hex value is
  still read (rows written by the previous release during a rollout, or before migration 0010); the
  next save seals it, and ``manage.py rotate_field_key`` seals them all.

``device.key`` itself is the stored envelope: it is never the seed, so displaying or logging it by
mistake shows nothing usable.
"""

from __future__ import annotations

import logging
from binascii import unhexlify
from typing import Any

from django.db.models.signals import pre_save
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app.auth import fieldcrypt

logger = logging.getLogger(__name__)

#: The largest seed whose envelope fits the 80-character column.
MAX_SEED_BYTES = 24


def seed_aad(user_id: int) -> bytes:
    """Associated data of a device's seed: the column and the owner (a seed moved to another user's
    device does not open)."""
    return b"otp_totp.totpdevice.key|user:%d" % user_id


def open_seed(value: str, *, user_id: int) -> bytes:
    """The seed stored as ``value`` (sealed, or legacy plain hex)."""
    if fieldcrypt.is_sealed(value):
        return fieldcrypt.unseal(value, aad=seed_aad(user_id))
    return unhexlify(value.encode())


def seal_seed(value: str, *, user_id: int) -> str:
    """``value`` (plain hex, or sealed under any configured key) sealed under the current key."""
    if fieldcrypt.is_sealed(value):
        return fieldcrypt.reseal(value, aad=seed_aad(user_id))
    seed = unhexlify(value.encode())
    if len(seed) > MAX_SEED_BYTES:
        raise ValueError(
            f"a TOTP seed of more than {MAX_SEED_BYTES} bytes does not fit the key column sealed"
        )
    return fieldcrypt.seal(seed, aad=seed_aad(user_id))


def _bin_key(device: TOTPDevice) -> bytes:
    return open_seed(device.key, user_id=device.user_id)


def _seal_on_save(sender: Any, instance: TOTPDevice, update_fields: Any = None, **kwargs: Any) -> None:
    if update_fields is not None and "key" not in update_fields:
        return  # e.g. django-otp's throttling counters: the key column is not written
    try:
        instance.key = seal_seed(instance.key, user_id=instance.user_id)
    except fieldcrypt.FieldKeyError:
        # The device changed owner (an admin's edit): open under the stored owner, seal for the new one.
        stored = TOTPDevice.objects.filter(pk=instance.pk).values_list("user_id", flat=True).first()
        if instance.pk is None or stored is None or stored == instance.user_id:
            raise
        seed = open_seed(instance.key, user_id=stored)
        instance.key = fieldcrypt.seal(seed, aad=seed_aad(instance.user_id))


def _verify_token_or_refuse(device: TOTPDevice, token: Any) -> bool:
    """django-otp's ``verify_token``, failing closed when the seed cannot be opened (a wrong or lost
    ``SESSIONS_FIELD_KEY``): the code is refused like a wrong one and the cause is logged, instead of
    an error answer to the client."""
    try:
        return bool(_django_otp_verify_token(device, token))
    except fieldcrypt.FieldKeyError:
        logger.error(
            "TOTP device %s: no configured field key opens its seed (SESSIONS_FIELD_KEY / "
            "SESSIONS_FIELD_KEY_PREVIOUS); its codes are refused",
            device.pk,
        )
        return False


_django_otp_verify_token = TOTPDevice.verify_token


def install() -> None:
    """Route django-otp's seed reads and writes through the sealing above (idempotent)."""
    TOTPDevice.bin_key = property(_bin_key, doc="The seed, opened from the sealed key column.")
    TOTPDevice.verify_token = _verify_token_or_refuse
    pre_save.connect(_seal_on_save, sender=TOTPDevice, dispatch_uid="sessions_app.totp_seeds.seal")
