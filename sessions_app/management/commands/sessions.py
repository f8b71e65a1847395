"""``manage.py sessions ACTION``: the ``auth.sessions`` methods from a shell, as an administrator.

Each action is a sub-command with its own arguments: ``add_<action>_arguments`` declares them and
``handle_<action>`` runs them:

* ``list``: the ``auth.sessions`` query;
* ``terminate``: end sessions chosen by id, by user or by query-filters (`maintenance.sessions_terminate`);
* ``purge``: the expiry sweep and the deletion of history past retention (`maintenance.history_purge`).

Errors are one line on stderr and a non-zero exit status: 1 for bad input or a failed query, 2 for
usage errors (argparse). Who ran a write is recorded as ``manage.py:<OS user>`` (`cli.operator_name`).
"""

from __future__ import annotations

import datetime as dt
import itertools
import shutil
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import DatabaseError

from sessions_app import conf
from sessions_app.management.cli import (
    RegistryCommand,
    database_error,
    operator_name,
    parse_duration,
    parse_json,
    parse_text,
    quoted,
    unknown,
)
from sessions_app.management.output import (
    cell_text,
    columns_of,
    csv_chunks,
    escape_control,
    flatten,
    json_list_chunks,
    progress_bar,
    render_table,
    to_json,
)
from sessions_app.query.errors import MatchNotFound, QueryError
from sessions_app.selectors import session_query, user_get_by_username
from sessions_app.services.maintenance import (
    DEFAULT_BATCH_SIZE,
    history_purge,
    purge_plan,
    sessions_terminate,
)
from sessions_app.targets import (
    session_pks_by_public_ids,
    session_pks_for_user,
    session_pks_matching,
    session_summaries,
)

FORMATS = ("table", "json", "csv")
# The table's columns for full rows (ids are printed whole unless the terminal is too narrow).
TABLE_COLUMNS = (
    "id",
    "credentials",
    "credentials_data.username",
    "origin",
    "internal",
    "secure_transport",
    "created_at",
)
HISTORY_COLUMNS = ("ended_at", "end_reason", "ended_by")
# Every field of a row, flattened: the fixed CSV header (the history ones with --history), and the
# column order of selected rows.
ROW_ORDER = (
    "id",
    "current",
    "internal",
    "origin",
    "credentials",
    "credentials_data.username",
    "credentials_data.login_at",
    "credentials_data.api_key.id",
    "credentials_data.api_key.name",
    "credentials_data.parent.credentials",
    "credentials_data.parent.credentials_data.username",
    "credentials_data.parent.credentials_data.login_at",
    "credentials_data.parent.credentials_data.api_key.id",
    "credentials_data.parent.credentials_data.api_key.name",
    "created_at",
    "secure_transport",
    *HISTORY_COLUMNS,
)
# Values people choose (usernames, key names): guarded against spreadsheet formulas in CSV.
FREE_TEXT = frozenset(
    {
        "credentials_data.username",
        "credentials_data.api_key.name",
        "credentials_data.parent.credentials_data.username",
        "credentials_data.parent.credentials_data.api_key.name",
        "ended_by",
    }
)
HEADERS = {"credentials_data.username": "username"}
# How far a column may shrink to fit the terminal (timestamps never do; ids and names give way first).
MIN_WIDTHS = {
    "id": 12,
    "credentials": 11,
    "username": 10,
    "origin": 10,
    "created_at": 20,
    "ended_at": 20,
    "end_reason": 10,
}


class Command(RegistryCommand):
    help = (
        "Query, end and purge authentication sessions from a shell: list (the auth.sessions query), "
        "terminate (end sessions, audited), purge (expiry sweep and retention). Exit status 0 on "
        "success, 1 with a one-line reason on stderr, 2 for usage errors."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
        self.add_list_arguments(
            actions.add_parser(
                "list",
                help="list sessions (auth.sessions query-filters / query-options)",
                description=(
                    "Run the auth.sessions query as an administrator (every user's sessions; no session "
                    'is `current`). Datetimes in filters are {"$date": ms}, as in --format json output.'
                ),
            )
        )
        self.add_terminate_arguments(
            actions.add_parser(
                "terminate",
                help="end sessions by id, by user or by query-filters (audited)",
                description=(
                    "End active sessions (end_reason TERMINATED) chosen by their auth.sessions ids, by "
                    "user, or by query-filters as in `sessions list`. Every session ends with its "
                    "cascades (tokens, derived TOKEN sessions) and its own audit record; the ids are "
                    "resolved first, then ended in short batches. The audit trail records who "
                    "(manage.py:<OS user>) and why (--reason)."
                ),
            )
        )
        self.add_purge_arguments(
            actions.add_parser(
                "purge",
                help="end overdue sessions, delete history and audit records past retention",
                description=(
                    "First end (not delete) sessions still marked active past their absolute or idle "
                    "limit (EXPIRED / IDLE). Then delete, in short batches, sessions ended before the "
                    "retention window, expired tokens, pending second factors and one-time passwords, "
                    "old node nonces, stale throttle counters, and audit records older than the window. "
                    "One audit record summarises the run. Safe to run from cron while the service runs."
                ),
            )
        )

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        try:
            getattr(self, f"handle_{action}")(**options)
        except DatabaseError as exc:
            raise database_error(exc) from None

    # -- list -------------------------------------------------------------------------------------

    def add_list_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--filters", metavar="JSON", help='query-filters, e.g. \'[["credentials", "=", "API_KEY"]]\''
        )
        parser.add_argument(
            "--options", metavar="JSON", help='query-options, e.g. \'{"order_by": ["-created_at"]}\''
        )
        parser.add_argument(
            "--format", choices=FORMATS, default="table", help="output format (default: table)"
        )
        parser.add_argument(
            "--history", action="store_true", help="include ended sessions (sets options.extra.history)"
        )

    def handle_list(self, **options: Any) -> None:
        filters = parse_json("--filters", options["filters"])
        query_options = parse_json("--options", options["options"])
        if options["history"]:
            query_options = self._with_history(query_options)
        try:
            result = session_query(filters=filters, options=query_options)
        except MatchNotFound:
            raise CommandError("no session matches (options.get)") from None
        except QueryError as exc:
            raise CommandError(escape_control(str(exc))) from None
        history = (
            isinstance(query_options, dict) and (query_options.get("extra") or {}).get("history") is True
        )
        self._print_result(result, options["format"], selected=_selects(query_options), history=history)

    @staticmethod
    def _with_history(query_options: Any) -> dict[str, Any]:
        if query_options is None:
            query_options = {}
        if not isinstance(query_options, dict):
            raise CommandError("--options: must be a JSON object to combine with --history")
        extra = query_options.get("extra", {})
        if not isinstance(extra, dict):
            raise CommandError("--options: extra must be a JSON object to combine with --history")
        return {**query_options, "extra": {**extra, "history": True}}

    def _print_result(
        self, result: list[dict[str, Any]] | dict[str, Any] | int, fmt: str, *, selected: bool, history: bool
    ) -> None:
        if isinstance(result, int):  # options.count
            self.stdout.write(str(result))
            return
        if fmt == "json":
            chunks = [to_json(result), "\n"] if isinstance(result, dict) else json_list_chunks(result)
            for chunk in chunks:
                self.stdout.write(chunk, ending="")
            return
        rows = [result] if isinstance(result, dict) else result
        if fmt == "csv":
            # Full rows have a fixed set of columns; selected ones take two passes over the rows
            # rather than a flattened copy of all of them.
            if selected:
                columns = columns_of((flatten(row) for row in rows), ROW_ORDER)
            else:
                columns = [c for c in ROW_ORDER if history or c not in HISTORY_COLUMNS]
            body = ([cell_text(flat.get(c)) for c in columns] for flat in map(flatten, rows))
            for chunk in csv_chunks(columns, body, free_text=FREE_TEXT):
                self.stdout.write(chunk, ending="")
            return
        if selected:
            columns = columns_of((flatten(row) for row in rows), ROW_ORDER)
        else:
            columns = [*TABLE_COLUMNS, *(HISTORY_COLUMNS if history else ())]
        cells = [
            [cell_text(flat.get(c), timespec="seconds", none="-") for c in columns]
            for flat in map(flatten, rows)
        ]
        headers = [HEADERS.get(c, c) for c in columns]
        width = shutil.get_terminal_size(fallback=(0, 0)).columns  # 0: not a terminal, no limit
        lines, shortened = render_table(headers, cells, width=width, min_widths=MIN_WIDTHS)
        while chunk := "".join(itertools.islice(lines, 1000)):
            self.stdout.write(chunk, ending="")
        if shortened:
            self.stderr.write(
                f"(values ending in … were shortened to fit {width} columns; use --format json for full values)"
            )

    # -- terminate --------------------------------------------------------------------------------

    def add_terminate_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "ids",
            nargs="*",
            metavar="ID",
            help="auth.sessions ids of the sessions to end (put them after -- : an id may begin with '-')",
        )
        parser.add_argument("--user", metavar="NAME", help="end every active session of this user")
        parser.add_argument(
            "--filters",
            metavar="JSON",
            help='end the active sessions matching these query-filters, e.g. \'[["origin", "^", "10.9."]]\'',
        )
        parser.add_argument(
            "--reason", metavar="TEXT", help="why, recorded in the audit trail (at most 200 characters)"
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="show what would be ended and change nothing"
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=1000,
            metavar="N",
            help="at most N sessions per transaction (default 1000; batches also stay near 0.1 s)",
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    def handle_terminate(self, **options: Any) -> None:
        ids: list[str] = options["ids"]
        chosen = [bool(ids), options["user"] is not None, options["filters"] is not None]
        if sum(chosen) != 1:
            raise CommandError(
                "choose the sessions with exactly one of: ID…, --user NAME, --filters JSON", returncode=2
            )
        reason = parse_text("--reason", options["reason"], max_length=200)
        batch_size = _batch_size(options["batch_size"])
        selection: dict[str, Any]
        if ids:
            lookup = session_pks_by_public_ids(public_ids=ids)
            if lookup.unknown:
                raise unknown("session id", lookup.unknown[0])
            if lookup.ended:
                raise CommandError(f"session {quoted(lookup.ended[0])} is not active")
            pks, selection = lookup.pks, {"ids": list(dict.fromkeys(ids))}
        elif options["user"] is not None:
            user = user_get_by_username(username=options["user"])
            if user is None:
                raise unknown("user", options["user"])
            pks, selection = session_pks_for_user(user=user), {"user": user.get_username()}
        else:
            filters = parse_json("--filters", options["filters"])
            try:
                pks = session_pks_matching(filters=filters)
            except QueryError as exc:
                raise CommandError(f"--filters: {escape_control(str(exc))}") from None
            selection = {"filters": filters}
        if options["dry_run"]:
            self._print_dry_run(pks)
            return
        if not pks:
            self.stdout.write("No active session matches; nothing to end.")
            return
        with progress_bar(total=len(pks), unit="sessions", enabled=not options["no_progress"]) as bar:
            ended = sessions_terminate(
                pks=pks,
                actor=operator_name(),
                reason=reason,
                selection=selection,
                batch_size=batch_size,
                progress=bar.update,
            )
        skipped = len(pks) - ended
        note = (
            f"; {skipped} other selected sessions had ended meanwhile (e.g. with their parent)"
            if skipped
            else ""
        )
        self.stdout.write(f"Ended {ended} session{'s' if ended != 1 else ''}{note}.")

    def _print_dry_run(self, pks: list[int], limit: int = 50) -> None:
        rows = session_summaries(pks=pks, limit=limit)
        columns = ["id", "credentials", "username", "origin", "created_at"]
        if rows:
            body = [[cell_text(row[c], timespec="seconds", none="-") for c in columns] for row in rows]
            width = shutil.get_terminal_size(fallback=(0, 0)).columns
            lines, _ = render_table(columns, body, width=width, min_widths=MIN_WIDTHS)
            for line in lines:
                self.stdout.write(line, ending="")
        more = f" (the first {limit} shown)" if len(pks) > limit else ""
        self.stdout.write(
            f"Dry run: would end {len(pks)} session{'s' if len(pks) != 1 else ''}{more}; nothing changed."
        )

    # -- purge ------------------------------------------------------------------------------------

    def add_purge_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            metavar="DURATION",
            help="retention window, e.g. 90d, 24h, 15m, 3600s (default: SESSIONS_HISTORY_DAYS days)",
        )
        parser.add_argument("--dry-run", action="store_true", help="count what would go and change nothing")
        parser.add_argument(
            "--batch-size",
            type=int,
            default=DEFAULT_BATCH_SIZE,
            metavar="N",
            help=f"at most N rows per transaction (default {DEFAULT_BATCH_SIZE}; batches also stay near 0.1 s)",
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    def handle_purge(self, **options: Any) -> None:
        if options["older_than"] is not None:
            older_than = parse_duration("--older-than", options["older_than"])
        else:
            older_than = dt.timedelta(days=int(conf.get("SESSIONS_HISTORY_DAYS")))
        batch_size = _batch_size(options["batch_size"])
        plan = purge_plan(older_than=older_than)
        if options["dry_run"]:
            self._print_purge(plan.counts(), plan.cutoff, dry_run=True)
            return
        total = sum(v for k, v in plan.counts().items() if k != "throttle_counters")
        with progress_bar(total=total, unit="rows", enabled=not options["no_progress"]) as bar:
            result = history_purge(
                older_than=older_than, actor=operator_name(), batch_size=batch_size, progress=bar.update
            )
        self._print_purge(result.counts(), result.cutoff, dry_run=False, seconds=result.seconds)

    def _print_purge(
        self, counts: dict[str, int], cutoff: dt.datetime, *, dry_run: bool, seconds: float | None = None
    ) -> None:
        labels = {
            "ended_expired": "active sessions past their absolute limit, ended (EXPIRED)",
            "ended_idle": "active sessions past their idle limit, ended (IDLE)",
            "tokens": "expired tokens deleted",
            "pending_logins": "expired pending second factors deleted",
            "scram_exchanges": "abandoned SCRAM exchanges deleted",
            "onetime_passwords": "used or expired one-time passwords deleted",
            "node_nonces": "node nonces past the replay window deleted",
            "sessions": "ended sessions deleted (ended before the cutoff)",
            "throttle_counters": "stale throttle counters deleted",
            "audit_records": "audit records deleted (older than the cutoff)",
            "sign_in_notices": "new-sign-in notices deleted (older than the cutoff)",
            "known_devices": "remembered devices deleted (unused since the cutoff)",
        }
        body = [[f"{counts[name]:,}", label] for name, label in labels.items()]
        lines, _ = render_table(["would" if dry_run else "count", "what"], body)
        header = f"Cutoff {cell_text(cutoff, timespec='seconds')}"
        if dry_run:
            header += " (dry run: nothing changed)"
        elif seconds is not None:
            header += f"; done in {seconds:.1f} s"
        self.stdout.write(header + ".")
        for line in lines:
            self.stdout.write(line, ending="")


def _batch_size(value: int) -> int:
    if not 1 <= value <= 10_000:
        raise CommandError("--batch-size: must be between 1 and 10000")
    return value


def _selects(query_options: Any) -> bool:
    return isinstance(query_options, dict) and bool(query_options.get("select"))
