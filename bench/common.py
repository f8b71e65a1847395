"""What every benchmark script shares: the machine line and its own section of RESULTS.md."""

from __future__ import annotations

import os
import platform
import re
import sqlite3
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"


def machine() -> str:
    """Cores, CPU model, Python, SQLite and kernel of this machine, for the results' header."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"nproc {os.cpu_count()} ({cpu}), Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {platform.system()} {platform.release()}"
    )


def write_section(name: str, text: str) -> None:
    """Replace the ``<!-- name:start -->`` … ``<!-- name:end -->`` section of RESULTS.md (or append it)."""
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->", re.S)
    if pattern.search(current):
        current = pattern.sub(lambda _: text, current)
    else:
        current = current.rstrip() + "\n\n" + text
    RESULTS.write_text(current.rstrip() + "\n")
