"""Retake ``docs/images/dashboard.png``, the README's picture of the sessions dashboard.

    .venv/bin/python docs/images/screenshot.py            # writes docs/images/dashboard.png
    .venv/bin/python docs/images/screenshot.py --out /tmp/dashboard.png --sessions 5000

Why a script: the picture must show the pages as they are today, so it is made the way a user sees
them, and anyone can make it again after a change to the layout. Demo data (``seed_demo`` with a
fixed seed) on a throw-away SQLite database; the served configuration (gunicorn with the project's
uvicorn worker, as ``bin/serve`` runs it) on a free 127.0.0.1 port; Debian's Chromium through
Playwright (``/usr/bin/chromium`` or ``$CHROMIUM``; Playwright never downloads a browser) at
1440×900, signed in as an administrator. Of the working tree only ``var/static`` is written
(``collectstatic``, as ``bin/serve`` does). Chromium's PNG is kept as it is: about 140 KiB at this
size, and re-compressing it at zlib's highest level made it no smaller.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv" / "bin" / "python"
GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"
sys.path.insert(0, str(ROOT))
# The browser of the page tests, launched as they launch it: a headless, quiet Chromium.
from tests.browser.chromium import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

VIEWPORT = {"width": 1440, "height": 900}
USERNAME = "admin"
STARTUP_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([str(PYTHON), "manage.py", *args], cwd=ROOT, env=env, check=True)  # noqa: S603


def healthy(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


@contextlib.contextmanager
def served(env: dict[str, str], directory: Path) -> Iterator[str]:
    """gunicorn as ``bin/serve`` starts it, on a free port; its base URL once ``/healthz`` answers."""
    port = free_port()
    command = [
        str(GUNICORN),
        "project.asgi:application",
        "--worker-class",
        "sessions_app.server.asgi_worker.PeerCredUvicornWorker",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--control-socket",
        str(directory / "gunicorn.ctl"),
        "--log-level",
        "warning",
        "--graceful-timeout",
        "5",  # the page's event stream is still open when the picture is taken
    ]
    process = subprocess.Popen(command, cwd=ROOT, env=env)  # noqa: S603
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not healthy(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start (see its output above)")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def photograph(base_url: str, password: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                base_url=base_url, viewport=VIEWPORT, device_scale_factor=1, color_scheme="light"
            )
            page = context.new_page()
            page.goto("/sign-in/?next=/sessions/")
            page.get_by_label("Username").fill(USERNAME)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(lambda url: "/sessions/" in url and "/sign-in/" not in url)
            page.locator("table tbody tr").first.wait_for()
            # The event stream keeps a request open, so "network idle" never comes: wait for the
            # page's own images and fonts instead, then for nothing to be moving.
            page.wait_for_load_state("load")
            page.evaluate("document.fonts.ready")
            page.screenshot(path=str(out), full_page=False, animations="disabled")
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "dashboard.png")
    parser.add_argument("--sessions", type=int, default=3000, help="demo sessions (default 3000)")
    parser.add_argument("--seed", type=int, default=20, help="seed_demo's random seed (default 20)")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)")
    password = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="dashboard-shot-") as tmp:
        directory = Path(tmp)
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("DJANGO_", "SESSIONS_", "SQLITE_", "DATABASE_"))
        }
        env |= {
            "DATABASE_URL": f"sqlite:///{directory / 'db.sqlite3'}",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_SUPERUSER_PASSWORD": password,
        }
        manage(env, "migrate", "--noinput", "-v0")
        manage(env, "collectstatic", "--noinput", "-v0")
        manage(env, "seed_demo", "--sessions", str(args.sessions), "--seed", str(args.seed), "--no-progress")
        manage(env, "createsuperuser", "--noinput", "--username", USERNAME, "--email", "admin@example.org")
        with served(env, directory) as base_url:
            photograph(base_url, password, args.out)
    print(f"{args.out}: {args.out.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    sys.exit(main())
