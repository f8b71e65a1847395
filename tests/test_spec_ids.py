"""tests/README.md maps every ID of security.md groups A–F to the tests named after it: each test it
names exists, and every ID but the two the table explains (an optional one, a benchmark) has one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "tests" / "README.md"
#: IDs whose row explains why no test is named after them.
WITHOUT_TEST = {"B28": "optional in the spec", "D18": "a benchmark: bench/load_bench.py"}


def _rows() -> dict[str, list[tuple[str, str]]]:
    rows: dict[str, list[tuple[str, str]]] = {}
    for line in TABLE.read_text().splitlines():
        match = re.match(r"\| ([A-F]\d+) \|", line)
        if match:
            rows[match.group(1)] = re.findall(r"`(tests/[^`:]+)::(test_\w+)`", line)
    return rows


def test_every_group_is_in_the_table() -> None:
    rows = _rows()
    for group, last in (("A", 31), ("B", 28), ("C", 21), ("D", 18), ("E", 16), ("F", 14)):
        assert {f"{group}{n}" for n in range(1, last + 1)} <= set(rows), group


def test_every_id_names_tests_that_exist() -> None:
    missing = []
    for ident, tests in _rows().items():
        if not tests and ident not in WITHOUT_TEST:
            missing.append(f"{ident}: no test")
        for path, name in tests:
            source = (ROOT / path).read_text()
            if not re.search(rf"^(?:async )?def {name}\(", source, re.M):
                missing.append(f"{ident}: {path}::{name} does not exist")
    assert missing == []
