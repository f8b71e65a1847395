"""Template context of every page rendered with a request."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

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
