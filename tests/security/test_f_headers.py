"""F13: response headers of the browser pages, the served configuration and the static files.

Every HTML page -- the registry's own, the Django admin, the Swagger UI and the error pages --
carries a Content-Security-Policy whose scripts need a nonce (no ``'unsafe-inline'``, no
``'unsafe-eval'``), and every inline ``<script>`` / ``<style>`` in it carries that nonce; no
response of the served configuration names the server software; static files are not shared with
every origin (no ``Access-Control-Allow-Origin: *``). The browser side (no CSP violation in
Chromium, the pages still work) is tests/browser/test_csp.py.
"""

from __future__ import annotations

import http.client
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from csp.utils import build_policy
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path

from project.urls import urlpatterns as project_urlpatterns
from sessions_app import charts
from sessions_app.auth.clients import Client as Peer
from sessions_app.auth.roles import Role
from sessions_app.models import Credentials, EndReason
from sessions_app.services.session_ending import session_end
from sessions_app.services.sessions import session_create
from tests.conftest import PASSWORD
from tests.integration.servers import Server, create_user, free_port, running_servers


def _boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("forced failure (F13 test)")


#: This module is also the URLconf of the tests marked ``urls``: the project's routes and a view that
#: fails, for the 500 page.
urlpatterns = [path("f13-boom/", _boom), *project_urlpatterns]

CSP = "Content-Security-Policy"


def directives(header: str) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            parsed[words[0].lower()] = words[1:]
    return parsed


def assert_strict_csp(response: Any, label: str) -> None:
    """The CSP of an HTML ``response``: scripts (and styles) only from 'self' or with this response's
    nonce; every inline ``<script>`` / ``<style>`` carries the nonce; no inline handler or style
    attribute that the policy would block."""
    assert CSP in response, f"{label}: no {CSP} header"
    policy = directives(response[CSP])
    default = policy.get("default-src")
    assert default == ["'self'"] or default == ["'none'"], f"{label}: default-src {default}"
    for name in ("script-src", "script-src-elem", "script-src-attr", "style-src", "style-src-attr"):
        sources = policy.get(name, [])
        for forbidden in ("'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'", "*", "data:", "http:"):
            assert forbidden not in sources, f"{label}: {name} allows {forbidden}: {response[CSP]}"
    assert policy.get("object-src") == ["'none'"], label
    assert policy.get("base-uri") == ["'none'"], label
    assert policy.get("frame-ancestors") == ["'none'"], label
    nonces = {s[len("'nonce-") : -1] for s in policy.get("script-src", []) if s.startswith("'nonce-")}
    html = response.content.decode()
    inline = re.findall(r"<(script|style)\b([^>]*)>", html, flags=re.IGNORECASE)
    for tag, attributes in inline:
        if tag.lower() == "script" and re.search(r"\bsrc\s*=", attributes):
            continue
        found = re.search(r'\bnonce="([^"]+)"', attributes)
        assert found, f"{label}: inline <{tag}{attributes}> has no nonce"
        assert found.group(1) in nonces, f"{label}: <{tag}> nonce is not the header's"
        assert f"'nonce-{found.group(1)}'" in policy.get("style-src" if tag == "style" else "script-src", [])
    assert not re.search(r"<[^>]+\son[a-z]+\s*=", html, flags=re.IGNORECASE), f"{label}: inline handler"
    assert not re.search(r"<[^>]+\sstyle\s*=", html, flags=re.IGNORECASE), f"{label}: style attribute"
    assert "javascript:" not in html.lower(), f"{label}: javascript: URL"


def sign_in(client: Client, username: str) -> None:
    client.get("/sign-in/")
    token = client.cookies["csrftoken"].value
    response = client.post(
        "/sign-in/", {"username": username, "password": PASSWORD, "next": "/", "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302, response.content[:300]


@pytest.fixture
def admin_client(make_user: Any) -> Client:
    make_user("root", superuser=True, roles=[Role.AUTH_SESSIONS_READ, Role.AUDIT_READ])
    client = Client(enforce_csrf_checks=True, REMOTE_ADDR="127.0.0.1")
    sign_in(client, "root")
    return client


#: Every kind of HTML page a signed-in administrator reaches with GET (status 200).
PAGES = [
    "/sessions/",
    "/sessions/history/",
    "/me/sessions/",
    "/api-keys/",
    "/audit/",
    "/two-factor/",
    "/password/",
    "/admin/",
    "/admin/sessions_app/usersession/",
    "/admin/sessions_app/auditrecord/",
    "/admin/auth/user/",
    "/admin/auth/user/add/",
    "/admin/otp_totp/totpdevice/",
    "/api/v2.0/docs/",
]


@pytest.mark.django_db
def test_f13_every_html_page_sends_a_strict_csp(admin_client: Client, django_user_model: Any) -> None:
    root = django_user_model.objects.get(username="root")
    # Rows and charts on the dashboard, the history and the audit page.
    for port in (4000, 4001):
        session = session_create(
            credentials=Credentials.LOGIN_PASSWORD, client=Peer(address="10.1.2.3", port=port), user=root
        ).session
    session_end(session=session, reason=EndReason.LOGOUT)
    for url in [*PAGES, f"/admin/auth/user/{root.pk}/change/"]:
        response = admin_client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        assert response["Content-Type"].startswith("text/html"), url
        assert_strict_csp(response, url)


@pytest.mark.django_db
def test_f13_every_response_gets_the_policy_of_the_settings(settings: Any) -> None:
    """Responses without a nonce (JSON-RPC, REST) get the policy django-csp builds from the setting,
    also after the setting changes (the middleware keeps the built string per setting value)."""
    client = Client(REMOTE_ADDR="127.0.0.1")
    ping = '{"jsonrpc":"2.0","id":1,"method":"core.ping"}'
    for _ in range(2):
        response = client.post("/api/current", ping, content_type="application/json")
        assert response[CSP] == build_policy()
        assert "nonce" not in response[CSP]
    assert client.get("/api/v2.0/auth/me")[CSP] == build_policy()
    settings.CONTENT_SECURITY_POLICY = {"DIRECTIVES": {"default-src": ["'none'"]}}
    assert client.post("/api/current", ping, content_type="application/json")[CSP] == "default-src 'none'"
    settings.CONTENT_SECURITY_POLICY = {
        **settings.CONTENT_SECURITY_POLICY,
        "EXCLUDE_URL_PREFIXES": ["/api/"],
    }
    assert CSP not in client.post("/api/current", ping, content_type="application/json")


def test_f13_qr_code_markup_needs_no_inline_style_or_script() -> None:
    """The two-factor enrolment page's QR code is inline SVG: nothing in it that the policy blocks."""
    svg = str(charts.qr_code("otpauth://totp/registry:alice?secret=JBSWY3DPEHPK3PXP", title="QR"))
    assert svg.startswith("<svg")
    assert not re.search(r"<(script|style)\b|\sstyle\s*=|\son[a-z]+\s*=", svg, flags=re.IGNORECASE), svg


@pytest.mark.django_db
def test_f13_swagger_ui_script_and_style_carry_the_nonce(admin_client: Client) -> None:
    response = admin_client.get("/api/v2.0/docs/")
    html = response.content.decode()
    nonce = re.search(r"'nonce-([^']+)'", response[CSP])
    assert nonce, response[CSP]
    assert f'<script nonce="{nonce.group(1)}">' in html
    assert "SwaggerUIBundle(" in html  # the initialiser is still there, now under the nonce
    again = admin_client.get("/api/v2.0/docs/")
    assert directives(again[CSP])["script-src"] != directives(response[CSP])["script-src"]  # per response


@pytest.mark.django_db
def test_f13_sign_in_pages_send_a_strict_csp(make_user: Any) -> None:
    client = Client(enforce_csrf_checks=True, REMOTE_ADDR="127.0.0.1")
    response = client.get("/sign-in/")
    assert_strict_csp(response, "/sign-in/")
    token = client.cookies["csrftoken"].value
    response = client.post("/sign-in/", {"username": "x", "password": "y", "csrfmiddlewaretoken": token})
    assert_strict_csp(response, "/sign-in/ (error)")
    assert client.get("/admin/login/").status_code == 302  # the admin signs in through /sign-in/


@pytest.mark.django_db
@pytest.mark.urls(__name__)
def test_f13_error_pages_send_a_strict_csp(make_user: Any) -> None:
    make_user("plain")
    client = Client(enforce_csrf_checks=True, REMOTE_ADDR="127.0.0.1", raise_request_exception=False)
    sign_in(client, "plain")
    pages = {
        403: client.get("/sessions/"),
        404: client.get("/no-such-page/"),
        500: client.get("/f13-boom/"),
        400: client.get("/sign-in/", HTTP_HOST="elsewhere.example"),
    }
    for status, response in pages.items():
        assert response.status_code == status, (status, response.status_code)
        assert_strict_csp(response, f"{status} page")
    csrf = Client(enforce_csrf_checks=True, REMOTE_ADDR="127.0.0.1").post(
        "/sign-in/", {"username": "plain", "password": PASSWORD}
    )
    assert csrf.status_code == 403
    assert_strict_csp(csrf, "CSRF failure page")


# --- the served configuration (gunicorn as bin/serve starts it) -----------------------------------------


@pytest.fixture(scope="module")
def collected_static(django_db_setup: Any) -> None:
    from django.core.management import call_command

    call_command("collectstatic", interactive=False, verbosity=0)


@pytest.fixture(params=["asgi", "wsgi"])
def served(request: pytest.FixtureRequest, collected_static: None, tmp_path: Path) -> Iterator[Server]:
    """gunicorn with the uvicorn worker (bin/serve) and, as bench/ and older tests run it, with sync
    workers on ``project.wsgi``."""
    bind = f"127.0.0.1:{free_port()}"
    with running_servers([[bind]], tmp_path, asgi=request.param == "asgi") as (server,):
        yield server


def fetch(server: Server, method: str, url: str, body: bytes | None = None, **headers: str) -> Any:
    connection: http.client.HTTPConnection = server.connect()
    try:
        connection.request(method, url, body, headers)
        response = connection.getresponse()
        response.read()
        return response
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_f13_served_responses_name_no_server_software(served: Server) -> None:
    create_user("root", superuser=True)
    rpc = b'{"jsonrpc":"2.0","id":1,"method":"core.ping"}'
    replies = {
        "sign-in": fetch(served, "GET", "/sign-in/"),
        "404": fetch(served, "GET", "/no-such-page/"),
        "static": fetch(served, "GET", "/static/sessions_app/registry.css"),
        "json-rpc": fetch(served, "POST", "/api/current", rpc, **{"Content-Type": "application/json"}),
        "rest": fetch(served, "GET", "/api/v2.0/auth/me"),
        "docs": fetch(served, "GET", "/api/v2.0/docs/"),
        "bad request": fetch(served, "GET", "/sign-in/", Host="elsewhere.example"),
    }
    for label, response in replies.items():
        server_headers = response.msg.get_all("Server") or []
        assert server_headers == [], (label, server_headers)
        powered = response.msg.get_all("X-Powered-By") or []
        assert powered == [], (label, powered)
    assert replies["sign-in"].status == 200
    assert CSP in replies["sign-in"].msg
    assert replies["static"].status == 200


@pytest.mark.django_db(transaction=True)
def test_f13_static_files_are_not_shared_with_every_origin(served: Server) -> None:
    for url in (
        "/static/sessions_app/registry.css",
        "/static/sessions_app/registry.js",
        "/static/admin/css/base.css",
        "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js",
    ):
        response = fetch(served, "GET", url, Origin="https://evil.example")
        assert response.status == 200, url
        assert response.getheader("Access-Control-Allow-Origin") is None, url
        assert response.getheader("X-Content-Type-Options") == "nosniff", url
