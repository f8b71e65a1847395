"""WSGI entry point: ``gunicorn project.wsgi``.

gunicorn's sync workers write ``Server: gunicorn`` ahead of the application's headers, and no setting
turns it off. A server banner only tells an attacker which software to look up (F13), so when this
module is loaded by gunicorn its response class leaves that line out. (bin/serve runs the ASGI
application on uvicorn workers, whose banner `sessions_app.server.asgi_worker` turns off.)
"""

from __future__ import annotations

import os
import sys
from typing import Any

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")


def _without_server_banner() -> None:
    if "gunicorn" not in sys.modules:  # runserver, a test client, another WSGI server
        return
    from gunicorn.http import wsgi as gunicorn_wsgi

    default_headers = gunicorn_wsgi.Response.default_headers
    if getattr(default_headers, "without_server_banner", False):
        return

    def without_server(self: Any) -> list[str]:
        return [line for line in default_headers(self) if not line.lower().startswith("server:")]

    without_server.without_server_banner = True  # type: ignore[attr-defined]  # a marker on the function, so that it is wrapped once
    gunicorn_wsgi.Response.default_headers = without_server


_without_server_banner()
application = get_wsgi_application()
