"""The roles of spec §6 as Django permissions, granted through groups.

Each role except ``FULL_ADMIN`` is one permission on `sessions_app.UserSession` (its codename is the
role name in lower case, see ``UserSession.Meta.permissions``) and one group named exactly after the
role that holds it together with the permissions of the roles it implies (migration
``0003_role_groups``). ``FULL_ADMIN`` is ``is_superuser``. So the Django admin manages roles with
its ordinary user, group and permission screens, and a permission granted to a user directly counts
as well.

Implications: ``FULL_ADMIN`` ⊃ everything; ``READONLY_ADMIN`` ⊃ every ``*_READ``;
``AUTH_SESSIONS_WRITE`` ⊃ ``AUTH_SESSIONS_READ``; ``API_KEY_WRITE`` ⊃ ``API_KEY_READ``. `user_roles`
expands them, so holding the bare ``readonly_admin`` permission is enough for every ``*_READ``.
Inactive and anonymous users hold no role.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models import Exists, OuterRef, Q

from sessions_app.models import UserSession

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser, PermissionsMixin


class Role(StrEnum):
    FULL_ADMIN = "FULL_ADMIN"
    READONLY_ADMIN = "READONLY_ADMIN"
    AUTH_SESSIONS_READ = "AUTH_SESSIONS_READ"
    AUTH_SESSIONS_WRITE = "AUTH_SESSIONS_WRITE"
    API_KEY_READ = "API_KEY_READ"
    API_KEY_WRITE = "API_KEY_WRITE"
    AUDIT_READ = "AUDIT_READ"

    @property
    def codename(self) -> str | None:
        """The permission codename on `UserSession`; None for ``FULL_ADMIN`` (``is_superuser``)."""
        return None if self is Role.FULL_ADMIN else self.value.lower()

    @property
    def perm(self) -> str | None:
        """The ``app_label.codename`` form that ``user.has_perm`` takes; None for ``FULL_ADMIN``."""
        return None if self.codename is None else f"{UserSession._meta.app_label}.{self.codename}"


_READ_ROLES = frozenset(role for role in Role if role.value.endswith("_READ"))

#: Direct implications; `implied_roles` takes the closure.
IMPLIES: Mapping[Role, frozenset[Role]] = MappingProxyType(
    {
        Role.FULL_ADMIN: frozenset(Role),
        Role.READONLY_ADMIN: _READ_ROLES,
        Role.AUTH_SESSIONS_WRITE: frozenset({Role.AUTH_SESSIONS_READ}),
        Role.API_KEY_WRITE: frozenset({Role.API_KEY_READ}),
    }
)


def implied_roles(role: Role) -> frozenset[Role]:
    """``role`` and every role it implies, transitively."""
    found = {role}
    pending = [role]
    while pending:
        for implied in IMPLIES.get(pending.pop(), frozenset()):
            if implied not in found:
                found.add(implied)
                pending.append(implied)
    return frozenset(found)


def role_codenames(role: Role) -> frozenset[str]:
    """The permission codenames the group of ``role`` holds: its own and those of implied roles."""
    return frozenset(r.codename for r in implied_roles(role) if r.codename is not None)


def user_roles(user: AbstractBaseUser | AnonymousUser | None) -> frozenset[Role]:
    """Every role ``user`` holds, implications expanded.

    Superusers hold all roles; anonymous, missing and inactive users hold none. Other users hold
    the roles whose permission they have, directly or through a group (Django's permission cache
    on the user object applies; `grant` and `revoke` clear it).
    """
    if user is None or not user.is_authenticated or not getattr(user, "is_active", False):
        return frozenset()
    if getattr(user, "is_superuser", False):
        return frozenset(Role)
    get_all_permissions = getattr(user, "get_all_permissions", None)
    if get_all_permissions is None:
        return frozenset()
    perms = get_all_permissions()
    held: set[Role] = set()
    for role in Role:
        if role.perm is not None and role.perm in perms:
            held |= implied_roles(role)
    return frozenset(held)


def has_role(user: AbstractBaseUser | AnonymousUser | None, role: Role) -> bool:
    """Whether ``user`` holds ``role``, directly or by implication (see `user_roles`)."""
    return role in user_roles(user)


def holders_q(role: Role, *, prefix: str = "") -> Q:
    """The users who hold ``role`` as `user_roles` decides it, as one condition for a query.

    On the user model, or (``prefix="user__"``) on a model that points at it, so that a query over
    many rows reads their roles in the same statement (the hub's check of its open sockets,
    `sessions_app.server.live`). Flags, direct permissions and group permissions are read as they are in
    the database now: no permission cache applies.
    """
    granting = [r for r in Role if role in implied_roles(r)]
    user = OuterRef(f"{prefix}pk")
    perms = Permission.objects.filter(
        content_type__app_label=UserSession._meta.app_label,
        codename__in=sorted(r.codename for r in granting if r.codename is not None),
    )
    held = Q(Exists(perms.filter(user=user))) | Q(Exists(perms.filter(group__user=user)))
    if Role.FULL_ADMIN in granting:
        held |= Q(**{f"{prefix}is_superuser": True})
    return Q(**{f"{prefix}is_active": True}) & held


def role_holders(role: Role, users: Iterable[int | None]) -> set[int]:
    """Which of the users with pks ``users`` hold ``role`` now (one query, no permission cache)."""
    pks = [pk for pk in users if pk is not None]
    if not pks:
        return set()
    found = get_user_model()._default_manager.filter(holders_q(role), pk__in=pks)
    return set(found.values_list("pk", flat=True))


def role_group(role: Role) -> Group:
    """The group of ``role``, created with its permissions if it is missing.

    Migration ``0003_role_groups`` creates the groups; this recreates one that was deleted (or
    flushed by a test). An existing group is returned as the admin left it.
    """
    if role is Role.FULL_ADMIN:
        raise ValueError("FULL_ADMIN is is_superuser, not a group")
    with transaction.atomic():
        group, created = Group.objects.get_or_create(name=role.value)
        if created:
            content_type = ContentType.objects.get_for_model(UserSession)
            names = dict(UserSession._meta.permissions)
            group.permissions.add(
                *(
                    Permission.objects.get_or_create(
                        content_type=content_type, codename=codename, defaults={"name": names[codename]}
                    )[0]
                    for codename in sorted(role_codenames(role))
                )
            )
    return group


def _forget_cached_permissions(user: PermissionsMixin) -> None:
    # ModelBackend caches permissions on the user object; drop them so the change shows at once.
    for attr in ("_perm_cache", "_user_perm_cache", "_group_perm_cache"):
        user.__dict__.pop(attr, None)


def grant(user: PermissionsMixin, role: Role) -> None:
    """Give ``user`` ``role``: add them to its group (``FULL_ADMIN``: set ``is_superuser``).

    For tests, management commands and the admin; callers that must audit the change do so.
    """
    if role is Role.FULL_ADMIN:
        user.is_superuser = True
        user.save(update_fields=["is_superuser"])
    else:
        user.groups.add(role_group(role))
    _forget_cached_permissions(user)


def revoke(user: PermissionsMixin, role: Role) -> None:
    """Take ``role``'s group from ``user`` (``FULL_ADMIN``: clear ``is_superuser``).

    Roles still implied by another role the user holds, or granted as a direct permission, stay.
    """
    if role is Role.FULL_ADMIN:
        with transaction.atomic():  # with the outbox event that ends the streams it allowed
            user.is_superuser = False
            user.save(update_fields=["is_superuser"])
    else:
        user.groups.remove(*Group.objects.filter(name=role.value))
    _forget_cached_permissions(user)
