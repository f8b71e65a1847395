"""The request as this app's middleware leaves it, for type checking.

Django creates plain `HttpRequest` objects; `SessionAuthenticationMiddleware` then sets who is
calling on each one (``auth_session``, ``api_key``, ``auth_refusal``, ``user``) and the CSP
middleware its nonce. Views, the API and the streams annotate their ``request`` as
`RegistryRequest` so that the type checker knows those attributes, instead of silencing
``attr-defined`` at every use. Typing only: nothing is ever instantiated from this class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.http import HttpRequest

if TYPE_CHECKING:
    from sessions_app.models import ApiKey, UserSession


class RegistryRequest(HttpRequest):
    #: The session the request's cookie or the unix socket's peer names; None when there is none.
    auth_session: UserSession | None
    #: The API key of an ``Authorization: Bearer`` header; None otherwise.
    api_key: ApiKey | None
    #: Why a per-request credential was refused, when the caller may be told (F8); else None.
    auth_refusal: str | None
    #: The response's CSP nonce (``sessions_app.server.csp``), rendered lazily into templates.
    csp_nonce: Any
