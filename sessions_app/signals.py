"""Cascades from account changes made anywhere (services, Django admin, shell).

Thin receivers that call the session services: a changed password, a disabled or deleted user and
a removed TOTP device end the user's sessions at once; a changed password also meets a pending
demand for one (a denied new sign-in, `services.notices`). Each request also re-checks the user's state
(`services.sessions.session_check`), so a change that bypasses signals (``QuerySet.update``) still
ends the sessions on their next request.

A role lost (a group or permission taken from a user, a permission taken from a group, a group
deleted, the superuser flag or the account turned off) writes a ``roles`` outbox event in the same
transaction, so that every process ends the live streams the role allowed before it delivers the
next event (security.md F3); the hub's periodic check covers changes that bypass signals.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save
from django.dispatch import receiver
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app.events import roles_changed
from sessions_app.models import EndReason
from sessions_app.services.notices import password_change_demand_clear
from sessions_app.services.session_ending import sessions_end_for_user


@receiver(pre_save, sender=settings.AUTH_USER_MODEL)
def _remember_previous_state(sender: Any, instance: Any, **kwargs: Any) -> None:
    if instance.pk is None:
        return
    previous = (
        sender._default_manager.filter(pk=instance.pk).values("password", "is_active", "is_superuser").first()
    )
    instance._sessions_previous = previous


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
def _end_sessions_on_account_change(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    previous = getattr(instance, "_sessions_previous", None)
    instance._sessions_previous = None
    if created or previous is None:
        return
    keep = getattr(instance, "_sessions_keep", None)
    instance._sessions_keep = None
    if (previous["is_active"] and not instance.is_active) or (
        previous["is_superuser"] and not instance.is_superuser
    ):
        roles_changed(users=[instance.pk])
    if previous["is_active"] and not instance.is_active:
        sessions_end_for_user(user=instance, reason=EndReason.USER_DISABLED)
    elif previous["password"] != instance.password:
        sessions_end_for_user(user=instance, reason=EndReason.PASSWORD_CHANGED, keep=keep)
        # A denied new sign-in asked for a new password: a new one set anywhere (set_password: the
        # form, the admin, manage.py changepassword) meets that. Not Django's re-hash of the same
        # password at login, which saves without it (``_password`` is already None then).
        if getattr(instance, "_password", None) is not None:
            password_change_demand_clear(user=instance)


@receiver(pre_delete, sender=settings.AUTH_USER_MODEL)
def _end_sessions_on_user_delete(sender: Any, instance: Any, **kwargs: Any) -> None:
    sessions_end_for_user(user=instance, reason=EndReason.USER_DISABLED)


@receiver(post_delete, sender=TOTPDevice)
def _end_sessions_on_device_removal(sender: Any, instance: Any, **kwargs: Any) -> None:
    if instance.user_id is not None and instance.confirmed:
        sessions_end_for_user(user=instance.user_id, reason=EndReason.CREDENTIAL_REVOKED)


def _membership_lost(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any, **kwargs: Any
) -> None:
    # user.groups / user.user_permissions: ``instance`` is the user. group.user_set /
    # permission.user_set: ``pk_set`` holds the users (None after a clear: anyone).
    if action in ("post_remove", "post_clear"):
        roles_changed(users=[instance.pk] if not reverse else pk_set)


def _group_permissions_lost(action: str, **kwargs: Any) -> None:
    if action in ("post_remove", "post_clear"):
        roles_changed(users=None)  # every member of the group(s): re-checked together


_User = get_user_model()
m2m_changed.connect(_membership_lost, sender=_User.groups.through, dispatch_uid="sessions_roles_groups")
m2m_changed.connect(
    _membership_lost, sender=_User.user_permissions.through, dispatch_uid="sessions_roles_user_perms"
)
m2m_changed.connect(
    _group_permissions_lost, sender=Group.permissions.through, dispatch_uid="sessions_roles_group_perms"
)


@receiver(post_delete, sender=Group)
@receiver(post_delete, sender=Permission)
def _grant_deleted(sender: Any, **kwargs: Any) -> None:
    roles_changed(users=None)
