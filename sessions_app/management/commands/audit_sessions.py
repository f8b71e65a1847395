"""``manage.py audit_sessions``: a report on sessions, API keys and failed logins an auditor can act on.

The figures come from `reports.audit_sessions_report`; this command only validates the options and
prints the report as aligned tables or as JSON. The exit status tells cron whether to alert: 0 when
every check is clean, 3 when at least one needs attention (`EXIT_ATTENTION`), 1 on error.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import DatabaseError
from django.utils import timezone

from sessions_app.management.cli import RegistryCommand, database_error, parse_instant
from sessions_app.management.output import cell_text, render_table, to_json
from sessions_app.reports import CHECKS, ReportSettings, audit_sessions_report

EXIT_ATTENTION = 3
# Columns of each finding's rows in the table format (JSON has every key).
FINDING_COLUMNS: Mapping[str, Sequence[str]] = {
    "over_limit_sessions": ("id", "reason", "credentials", "username", "last_seen_at", "expires_at"),
    "dormant_api_keys": ("id", "name", "username", "created_at", "last_used_at", "expires_at"),
    "expiring_api_keys": ("id", "name", "username", "expires_at", "last_used_at"),
    "password_logins_without_totp": ("username", "logins", "last_login"),
    "failed_logins_by_address": ("address", "failures", "accounts", "first", "last"),
    "failed_logins_by_account": ("username", "failures", "addresses", "first", "last"),
    "deep_token_chains": ("id", "username", "depth", "root_credentials", "created_at"),
}
MIN_WIDTHS = {"id": 12, "name": 10, "username": 10, "address": 15}


class Command(RegistryCommand):
    help = (
        "Report on authentication sessions: active sessions by credential type, user and origin "
        "network (/24, /64, unix socket); then the checks -- sessions past their idle or absolute "
        "limit still marked active (expected 0), API keys unused for --unused-days (never used since "
        "an older creation included) or expiring within --expiring-days, users with password logins "
        "in the window and no TOTP device, failed-login bursts (>= --burst failures in the window) by "
        "client address and by account, token chains deeper than --max-token-depth. Exit status: 0 "
        "when every check is clean, 3 when a check needs attention (for cron alerts), 1 on error."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--since",
            default="24h",
            metavar="WHEN",
            help="start of the window: a duration back from now (24h, 7d) or an ISO-8601 date (default 24h)",
        )
        parser.add_argument(
            "--format", choices=("table", "json"), default="table", help="output format (default: table)"
        )
        parser.add_argument(
            "--unused-days", type=int, default=90, metavar="N", help="API keys unused for N days (default 90)"
        )
        parser.add_argument(
            "--expiring-days",
            type=int,
            default=14,
            metavar="N",
            help="API keys expiring within N days (default 14)",
        )
        parser.add_argument(
            "--burst",
            type=int,
            default=5,
            metavar="N",
            help="failed logins in the window that make a burst (default 5)",
        )
        parser.add_argument(
            "--max-token-depth",
            type=int,
            default=3,
            metavar="N",
            help="token chains deeper than N are reported (default 3)",
        )
        parser.add_argument(
            "--top", type=int, default=10, metavar="N", help="rows of each ranking (default 10)"
        )
        parser.add_argument(
            "--max-rows", type=int, default=100, metavar="N", help="rows listed per check (default 100)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        since = parse_instant("--since", options["since"], now=now)
        if since >= now:
            raise CommandError("--since must be in the past")
        for option, low in (
            ("unused_days", 1),
            ("expiring_days", 1),
            ("burst", 1),
            ("max_token_depth", 1),
            ("top", 1),
            ("max_rows", 0),
        ):
            if not low <= options[option] <= 100_000:
                raise CommandError(f"--{option.replace('_', '-')}: must be between {low} and 100000")
        settings = ReportSettings(
            since=since,
            until=now,
            unused_days=options["unused_days"],
            expiring_days=options["expiring_days"],
            burst_threshold=options["burst"],
            max_token_depth=options["max_token_depth"],
            top=options["top"],
            max_rows=options["max_rows"],
        )
        try:
            report = audit_sessions_report(settings=settings, now=now)
        except DatabaseError as exc:
            raise database_error(exc) from None
        if options["format"] == "json":
            self.stdout.write(to_json(report))
        else:
            self._print_table(report)
        attention = [f for f in report["findings"] if f["count"]]
        if attention:
            summary = ", ".join(f"{f['check']} {f['count']}" for f in attention)
            raise CommandError(
                f"{len(attention)} check{'s need' if len(attention) != 1 else ' needs'} attention: {summary}",
                returncode=EXIT_ATTENTION,
            )

    # -- table ----------------------------------------------------------------------------------------

    def _table(self, headers: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
        body = [[cell_text(row.get(h), timespec="seconds", none="-") for h in headers] for row in rows]
        width = shutil.get_terminal_size(fallback=(0, 0)).columns
        lines, _ = render_table(list(headers), body, width=width, min_widths=MIN_WIDTHS)
        for line in lines:
            self.stdout.write("  " + line, ending="")

    def _print_table(self, report: dict[str, Any]) -> None:
        def when(value: Any) -> str:
            return cell_text(value, timespec="seconds")

        write = self.stdout.write
        write(
            f"Sessions audit at {when(report['generated_at'])}; window {when(report['since'])} to "
            f"{when(report['until'])}"
        )
        active = report["active_sessions"]
        write(f"\nActive sessions: {active['total']:,}")
        top = report["settings"]["top"]
        for title, key, column in (
            ("by credential type", "by_credentials", "credentials"),
            (f"by user (top {top})", "by_user", "username"),
            (f"by origin network (top {top})", "by_network", "network"),
        ):
            write(f"\n{title}")
            if active[key]:
                self._table((column, "count"), active[key])
            else:
                write("  (none)")
        write("\nChecks")
        settings = report["settings"]
        details = {
            "over_limit_sessions": "(expected 0; `manage.py sessions purge` ends them)",
            "dormant_api_keys": f"(no use for {settings['unused_days']} days)",
            "expiring_api_keys": f"(within {settings['expiring_days']} days)",
            "failed_logins_by_address": f"(>= {settings['burst_threshold']} failures)",
            "failed_logins_by_account": f"(>= {settings['burst_threshold']} failures)",
            "deep_token_chains": f"(> {settings['max_token_depth']} links)",
        }
        summary = [
            {
                "status": "ATTENTION" if f["count"] else "ok",
                "count": f["count"],
                "check": f"{CHECKS[f['check']]} {details.get(f['check'], '')}".rstrip(),
            }
            for f in report["findings"]
        ]
        self._table(("status", "count", "check"), summary)
        for finding in report["findings"]:
            name = finding["check"]
            section = report[name]
            if not finding["count"]:
                continue
            shown = len(section["rows"])
            more = f", the first {shown} listed" if shown < finding["count"] else ""
            title = CHECKS[name]
            write(f"\n{title[0].upper()}{title[1:]}: {finding['count']:,}{more}")
            if name == "over_limit_sessions":
                write(
                    f"  past the absolute limit: {section['expired']:,}; past the idle limit: {section['idle']:,}"
                )
            if section["rows"]:
                self._table(FINDING_COLUMNS[name], section["rows"])
        attention = sum(1 for f in report["findings"] if f["count"])
        write(
            f"\nChecks needing attention: {attention} (exit status 3)."
            if attention
            else "\nAll checks clean."
        )
