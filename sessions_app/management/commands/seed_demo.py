"""``manage.py seed_demo``: fill a database with realistic demo users, API keys and sessions."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from django.core.management.base import CommandError, CommandParser
from tqdm import tqdm

from sessions_app.management.cli import RegistryCommand
from sessions_app.management.demo.population import DEMO_PREFIX
from sessions_app.management.demo.seed import DemoDataExists, demo_seed


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _positive(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1]: {text!r}")
    return value


class Command(RegistryCommand):
    help = (
        "Fill the database with realistic demo data for demos and benchmarks: users, API keys and "
        "sessions of every credential type, a fraction of them ended (history), and the audit records "
        "of the last two days (logins, failed attempts, logouts) that the dashboard charts. Demo users "
        f"and keys are named {DEMO_PREFIX}*; their passwords are unusable and the keys have no secret. "
        "The planner statistics of the tables filled are refreshed at the end (ANALYZE)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--sessions", type=_count, default=1000, help="sessions to create (default 1000)")
        parser.add_argument(
            "--users",
            type=_positive,
            help="demo users (default: one per 20 sessions, >= 10; none for 0 sessions)",
        )
        parser.add_argument("--api-keys", type=_count, help="API keys (default: one per 10 users, >= 3)")
        parser.add_argument(
            "--ended-fraction", type=_fraction, default=0.3, help="share of ended sessions (default 0.3)"
        )
        parser.add_argument("--seed", type=int, help="random seed: the same seed gives the same data")
        parser.add_argument(
            "--batch-size", type=_positive, default=5000, help="rows per INSERT transaction (default 5000)"
        )
        parser.add_argument(
            "--clear", action="store_true", help=f"delete previous demo data ({DEMO_PREFIX}*) first"
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    def handle(self, *args: Any, **options: Any) -> None:
        total = options["sessions"]
        verbose = options["verbosity"] >= 1
        if options["clear"] and verbose:
            self.stdout.write(f"Deleting previous demo data ({DEMO_PREFIX}*)…")
        # disable=None: no bar when stderr is not a terminal (cron, CI, pipes).
        bar = tqdm(
            total=total,
            unit=" sessions",
            unit_scale=True,
            file=sys.stderr,
            disable=True if options["no_progress"] else None,
            delay=0.5,
        )
        started = time.perf_counter()
        try:
            result = demo_seed(
                sessions=total,
                users=options["users"],
                api_keys=options["api_keys"],
                ended_fraction=options["ended_fraction"],
                seed=options["seed"],
                batch_size=options["batch_size"],
                clear=options["clear"],
                progress=bar.update,
            )
        except DemoDataExists as exc:
            raise CommandError(f"{exc} (rerun with --clear)") from None
        finally:
            bar.close()
        if not verbose:
            return
        if result.cleared:
            removed = ", ".join(
                f"{n} {kind.replace('api_keys', 'API keys').replace('_', ' ')}"
                for kind, n in result.cleared.items()
            )
            cleared_in = time.perf_counter() - started - result.seconds
            self.stdout.write(f"Deleted {removed} in {cleared_in:.1f} s.")
        if not (result.users or result.sessions):
            return
        rate = result.sessions / result.seconds if result.seconds > 0 else 0.0
        self.stdout.write(
            f"Created {result.users} users, {result.api_keys} API keys, {result.sessions} sessions "
            f"({result.ended} ended) and {result.audit_records} audit records in {result.seconds:.1f} s "
            f"({rate:,.0f} sessions/s)."
        )
        if result.by_credentials:
            breakdown = ", ".join(f"{cred} {n}" for cred, n in sorted(result.by_credentials.items()))
            self.stdout.write(f"By credentials: {breakdown}.")
        if result.statistics:
            self.stdout.write(f"Planner statistics refreshed: {', '.join(result.statistics)}.")
