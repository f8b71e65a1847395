"""Template context of every page rendered with a request."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from sessions_app.auth.roles import Role, user_roles
from sessions_app.devices.known import BANNER_LIMIT, notice_list_open


def sign_in_notices(request: HttpRequest) -> dict[str, Any]:
    """``sign_in_notices``: the new-sign-in notices the banner of this session shows (``base.html``
    includes ``partials/notices.html``). Lazy: queried (once, by an index) only by a page that shows
    the banner, never by the admin, JSON or error pages."""
    session = getattr(request, "auth_session", None)
    if session is None:
        return {}
    return {
        "sign_in_notices": SimpleLazyObject(lambda: list(notice_list_open(session=session)[:BANNER_LIMIT]))
    }


def roles(request: HttpRequest) -> dict[str, Any]:
    """``roles``: which roles the signed-in user holds, by name, for the navigation -- on every page,
    the 404 and 403 pages included (they are rendered by Django's handlers, not `views.base._render`,
    and lost the Sessions and Audit links; issue 17). Lazy: computed only by a page that asks."""
    if getattr(request, "auth_session", None) is None:
        return {}

    def held() -> dict[str, bool]:
        mine = user_roles(request.user)
        return {role.name: role in mine for role in Role}

    return {"roles": SimpleLazyObject(held)}
