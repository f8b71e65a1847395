"""The Content-Security-Policy header of every response (security.md F13), from django-csp.

The policy is ``CONTENT_SECURITY_POLICY`` in the settings: scripts and styles only from this origin
or inline with the response's nonce (``request.csp_nonce``), never ``'unsafe-inline'``. django-csp
builds the header string anew for every response (about 80 µs, a fifth of an anonymous request
in-process), although almost every response -- JSON-RPC, REST, static files, the pages, none of which
has an inline script -- gets the same string: one with no nonce and no per-view override. This
middleware builds that string once per value of the setting; a response that used a nonce, a
django-csp decorator, a report-only policy or DEBUG goes through django-csp unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from csp.constants import HEADER
from csp.middleware import CheckableLazyObject, CSPMiddleware
from csp.utils import build_policy
from django.conf import settings
from django.http import HttpRequest
from django.http.response import HttpResponseBase

if TYPE_CHECKING:
    from sessions_app.auth.request import RegistryRequest


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's ``CSPMiddleware`` with the nonce-free policy built once per settings value."""

    _built: tuple[Any, str] | None = None

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if (
            getattr(request, "_csp_nonce", None) is not None
            or any(name.startswith("_csp_") for name in vars(response))
            or getattr(settings, "CONTENT_SECURITY_POLICY_REPORT_ONLY", None)
            or settings.DEBUG
        ):
            return super().process_response(request, response)
        config = getattr(settings, "CONTENT_SECURITY_POLICY", None)
        built = self._built
        if built is None or built[0] is not config:  # override_settings swaps the dict
            built = self._built = (config, build_policy())
        prefixes = tuple((config or {}).get("EXCLUDE_URL_PREFIXES") or ())
        if built[1] and HEADER not in response and not request.path_info.startswith(prefixes):
            response[HEADER] = built[1]
        # As django-csp does: a nonce asked for after the header was written would not be in it.
        # (django-csp's signature takes an HttpRequest; this is where csp_nonce is set on it.)
        cast("RegistryRequest", request).csp_nonce = CheckableLazyObject(self._csp_nonce_post_response)
        return response
