#!/usr/bin/env python
"""The in-memory engine next to TrueNAS's C engine (``truenas_pyfilter``), on the same rows.

Issue 18 asks the pure-Python ``filter_list`` to stay within a small factor of TrueNAS's compiled
filter engine on five queries over a million ``auth.sessions`` rows. This script times both engines
in one process, on the same list of row dicts, query by query, alternating the engines so that a
noisy machine slows both alike, and checks that they return the same rows (the same objects, in the
same order) or the same count.

Two steps, because the rows come from Django while TrueNAS's extension needs Python >= 3.13::

    # 1. seed a SQLite database with seed_demo (kept under bench/data/) and dump its rows
    .venv/bin/python bench/engine_bench.py dump --size 1000000
    # 2. time the engines (TrueNAS's is skipped, and said so, when it cannot be imported)
    python3.13 bench/engine_bench.py run --size 1000000 --write

``run`` needs only the standard library, ``regex`` and this project's ``sessions_app.query`` (pure
Python). ``--engine label=FILE.py`` adds any other ``filter_list``-compatible module (e.g. an older
version of the engine saved outside the tree) as another column, ``--note`` a sentence to the
results. ``--write`` replaces its section of bench/RESULTS.md. TrueNAS's engine is no part of this project
(nothing of it is vendored or built here): it is timed when an installed ``truenas_pyfilter`` (from
TrueNAS's ``truenas_pyos``) can be imported, and skipped otherwise, as in CI.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import gc
import importlib.util
import json
import os
import pickle
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"
RESULTS = ROOT / "bench" / "RESULTS.md"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from common import machine  # noqa: E402

Engine = Callable[[list[Any], list[Any], dict[str, Any]], Any]


def rows_file(size: int) -> Path:
    return DATA / f"engine-rows-{size}.pickle"


# --- step 1: rows from seed_demo -----------------------------------------------------------------


def dump(size: int, database: str | None, out: Path) -> None:
    """Seed (if needed) and dump every ``auth.sessions`` row, ended ones too, oldest first."""
    DATA.mkdir(parents=True, exist_ok=True)
    os.environ["DATABASE_URL"] = database or f"sqlite:///{DATA / f'engine-{size}.sqlite3'}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "benchmark-only")
    import django

    django.setup()
    from django.core.management import call_command

    from sessions_app.models import UserSession
    from sessions_app.selectors import session_rows

    call_command("migrate", verbosity=0)
    if UserSession.objects.count() != size:
        call_command("seed_demo", sessions=size, clear=True, seed=1, verbosity=0, no_progress=True)
    rows = session_rows(history=True)
    with out.open("wb") as handle:
        pickle.dump(rows, handle, protocol=pickle.HIGHEST_PROTOCOL)
    print(f"{len(rows):,} rows -> {out}")


# --- step 2: the engines side by side ------------------------------------------------------------


def queries(username: str) -> list[tuple[str, list[Any], dict[str, Any]]]:
    """The five queries of issue 18 (those of bench/query_bench.py that TrueNAS's engine can run)."""
    return [
        ("50 newest non-internal", [["internal", "=", False]], {"order_by": ["-created_at"], "limit": 50}),
        ("one user's sessions", [["credentials_data.username", "=", username]], {}),
        ("count by credential type", [["credentials", "=", "API_KEY"]], {"count": True}),
        ('origin ^ "10.12."', [["origin", "^", "10.12."]], {}),
        (
            "OR of two",
            [["OR", [["credentials_data.username", "=", username], ["origin", "^", "10.12.1"]]]],
            {},
        ),
    ]


def busy_user(rows: list[dict[str, Any]]) -> tuple[str, int]:
    """The user whose session count is closest to len(rows) / 1000 (query_bench's choice)."""
    counts = collections.Counter(
        data.get("username") for row in rows if isinstance(data := row.get("credentials_data"), dict)
    )
    counts.pop(None, None)
    target = max(10, len(rows) // 1000)
    return min(counts.most_common(2000), key=lambda item: abs(item[1] - target))


def truenas_engine() -> Engine | None:
    """TrueNAS's ``filter_list`` minus middleware (compile filters and options, ``tnfilter``)."""
    try:
        import truenas_pyfilter as tf
    except ImportError:
        return None

    def run(rows: list[Any], filters: list[Any], options: dict[str, Any]) -> Any:
        compiled = tf.compile_filters(filters)
        result = tf.tnfilter(rows, filters=compiled, options=tf.compile_options(**options))
        return result[0] if options.get("get") else result

    return run


def module_engine(path: str) -> Engine:
    spec = importlib.util.spec_from_file_location(f"engine_bench_{Path(path).stem}", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.filter_list  # type: ignore[no-any-return]


def same(ours: Any, theirs: Any) -> bool:
    if isinstance(ours, list) and isinstance(theirs, list):
        return len(ours) == len(theirs) and all(a is b for a, b in zip(ours, theirs, strict=True))
    return bool(ours == theirs)


def measure(
    rows: list[Any], engines: dict[str, Engine], repeat: int
) -> tuple[list[dict[str, Any]], str, int]:
    username, user_rows = busy_user(rows)
    table = []
    for name, filters, options in queries(username):
        results = {label: engine(rows, filters, options) for label, engine in engines.items()}  # warm-up
        reference = results["this engine"]
        agree = {label: same(reference, result) for label, result in results.items()}
        times: dict[str, list[float]] = {label: [] for label in engines}
        for _ in range(repeat):
            for label, engine in engines.items():  # alternate: noise hits every engine alike
                started = time.perf_counter()
                engine(rows, filters, options)
                times[label].append((time.perf_counter() - started) * 1000)
        table.append(
            {
                "query": name,
                "filters": filters,
                "options": options,
                "result": reference if isinstance(reference, int) else len(reference),
                "agree": agree,
                "median_ms": {label: statistics.median(values) for label, values in times.items()},
                "min_ms": {label: min(values) for label, values in times.items()},
            }
        )
        print(name, {label: f"{statistics.median(values):.0f} ms" for label, values in times.items()})
    return table, username, user_rows


def render(table: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    labels = list(table[0]["median_ms"])
    others = [label for label in labels if label != "this engine"]
    lines = [
        "# In-memory engine vs TrueNAS's C engine",
        "",
        "Written by `bench/engine_bench.py` (issue 18). Both engines run in one process on the same "
        f"{meta['rows']:,} `auth.sessions` row dicts (`seed_demo --seed 1`, ended sessions included, "
        "oldest first), each query timed "
        f"{meta['repeat']} times after a warm-up, the engines alternating; medians (and minimums). "
        "TrueNAS's engine is called as its `filter_list` calls it: `compile_filters`, `compile_options`, "
        "`tnfilter`. *same* means the same row objects in the same order (or the same count).",
        "",
        f"Machine: {meta['machine']}. Run {meta['when']}. 1-minute load average at start / end: "
        f"{meta['load'][0]:.2f} / {meta['load'][1]:.2f} -- the machine is shared and noisy, so read the "
        "ratios, which compare runs made side by side, rather than the absolute times.",
        "",
        f"The user of the one-user queries: `{meta['user']}` ({meta['user_rows']} sessions).",
        "",
    ]
    if not meta["truenas"]:
        lines += ["TrueNAS's engine (`truenas_pyfilter`) could not be imported: its column is absent.", ""]
    lines += [*(f"* {note}" for note in meta["notes"]), *([""] if meta["notes"] else [])]
    columns = [
        "query",
        "result",
        "this engine ms",
        *(f"{label} ms" for label in others),
        *(f"this / {label}" for label in others),
        "same",
    ]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table:
        med, low = row["median_ms"], row["min_ms"]
        cells = [
            row["query"],
            f"{row['result']:,}",
            f"{med['this engine']:.0f} ({low['this engine']:.0f})",
            *(f"{med[label]:.0f} ({low[label]:.0f})" for label in others),
            *(f"{med['this engine'] / med[label]:.2f}" for label in others),
            "yes"
            if all(row["agree"].values())
            else "NO: " + ", ".join(k for k, v in row["agree"].items() if not v),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Queries (filters, options):", ""]
    lines += [
        f"* {row['query']}: `{json.dumps(row['filters'])}` `{json.dumps(row['options'])}`" for row in table
    ]
    return "\n".join(lines) + "\n"


def run(rows_path: Path, repeat: int, extra: list[str], notes: list[str], write: bool) -> None:
    from sessions_app.query import filter_list

    if not rows_path.exists():
        raise SystemExit(f"{rows_path} is missing: run `engine_bench.py dump` with the project's venv first")
    load_start = os.getloadavg()[0]
    with rows_path.open("rb") as handle:
        rows = pickle.load(handle)  # noqa: S301 - the file `dump` wrote
    gc.freeze()  # a million long-lived dicts: keep the collector from rescanning them mid-query
    engines: dict[str, Engine] = {"this engine": filter_list}
    truenas = truenas_engine()
    if truenas is not None:
        engines["TrueNAS C"] = truenas
    else:
        print("truenas_pyfilter is not importable: timing this engine only")
    for item in extra:
        label, _, path = item.partition("=")
        engines[label] = module_engine(path)
    table, username, user_rows = measure(rows, engines, repeat)
    meta = {
        "rows": len(rows),
        "repeat": repeat,
        "machine": machine(),  # cores, CPU, this interpreter
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load": [load_start, os.getloadavg()[0]],
        "user": username,
        "user_rows": user_rows,
        "truenas": truenas is not None,
        "notes": notes,
    }
    text = render(table, meta)
    print(text)
    if write:
        write_section(text)


def write_section(text: str) -> None:
    """Replace the ``engine_bench`` section of bench/RESULTS.md (or append it). Written here, not with
    bench/common.py: this script also runs in a venv without Django (TrueNAS's engine beside it)."""
    section = (
        "<!-- engine_bench:start -->\n" + text.replace("# ", "## ", 1).strip() + "\n<!-- engine_bench:end -->"
    )
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(r"<!-- engine_bench:start -->.*?<!-- engine_bench:end -->", re.S)
    if pattern.search(current):
        current = pattern.sub(lambda _: section, current)
    else:
        current = current.rstrip() + "\n\n" + section
    RESULTS.write_text(current.rstrip() + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    dumping = commands.add_parser("dump", help="seed with seed_demo and dump the rows (needs Django)")
    dumping.add_argument("--size", type=int, default=1_000_000)
    dumping.add_argument("--database", help="DATABASE_URL (default: a SQLite file under bench/data/)")
    dumping.add_argument("--out", type=Path, help="rows file (default: bench/data/engine-rows-SIZE.pickle)")
    running = commands.add_parser("run", help="time the engines side by side")
    running.add_argument("--size", type=int, default=1_000_000)
    running.add_argument("--rows", type=Path, help="rows file (default: bench/data/engine-rows-SIZE.pickle)")
    running.add_argument("--repeat", type=int, default=7)
    running.add_argument("--engine", action="append", default=[], help="label=FILE.py: another filter_list")
    running.add_argument("--note", action="append", default=[], help="a sentence for the results")
    running.add_argument("--write", action="store_true", help="replace its section of bench/RESULTS.md")
    args = parser.parse_args()
    if args.command == "dump":
        dump(args.size, args.database, args.out or rows_file(args.size))
    else:
        run(args.rows or rows_file(args.size), args.repeat, args.engine, args.note, args.write)


if __name__ == "__main__":
    main()
