"""The browser every page test and the README's screenshot (docs/images/screenshot.py) use: Debian's
Chromium (``/usr/bin/chromium`` or ``$CHROMIUM``; Playwright never downloads a browser), launched
headless and quiet with these arguments."""

from __future__ import annotations

import os

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
