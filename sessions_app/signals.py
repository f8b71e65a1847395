"""Cascades from account changes made anywhere (services, Django admin, shell).

Thin receivers that call the session services: a changed password, a disabled or deleted user and
a removed TOTP device end the user's sessions at once. Each request also re-checks the user's state
(`services.sessions.session_check`), so a change that bypasses signals (``QuerySet.update``) still
ends the sessions on their next request.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models.signals import post_delete, post_save, pre_delete, pre_save
from django.dispatch import receiver
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app.models import EndReason
from sessions_app.services.sessions import sessions_end_for_user


@receiver(pre_save, sender=settings.AUTH_USER_MODEL)
def _remember_previous_state(sender: Any, instance: Any, **kwargs: Any) -> None:
    if instance.pk is None:
        return
    previous = sender._default_manager.filter(pk=instance.pk).values("password", "is_active").first()
    instance._sessions_previous = previous


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
def _end_sessions_on_account_change(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    previous = getattr(instance, "_sessions_previous", None)
    instance._sessions_previous = None
    if created or previous is None:
        return
    keep = getattr(instance, "_sessions_keep", None)
    instance._sessions_keep = None
    if previous["is_active"] and not instance.is_active:
        sessions_end_for_user(user=instance, reason=EndReason.USER_DISABLED)
    elif previous["password"] != instance.password:
        sessions_end_for_user(user=instance, reason=EndReason.PASSWORD_CHANGED, keep=keep)


@receiver(pre_delete, sender=settings.AUTH_USER_MODEL)
def _end_sessions_on_user_delete(sender: Any, instance: Any, **kwargs: Any) -> None:
    sessions_end_for_user(user=instance, reason=EndReason.USER_DISABLED)


@receiver(post_delete, sender=TOTPDevice)
def _end_sessions_on_device_removal(sender: Any, instance: Any, **kwargs: Any) -> None:
    if instance.user_id is not None and instance.confirmed:
        sessions_end_for_user(user=instance.user_id, reason=EndReason.CREDENTIAL_REVOKED)
