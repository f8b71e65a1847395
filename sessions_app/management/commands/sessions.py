"""``manage.py sessions ACTION``: the ``auth.sessions`` methods from a shell, as an administrator.

Each action is a sub-command with its own arguments: ``add_<action>_arguments`` declares them and
``handle_<action>`` runs them (only ``list`` exists so far; ``terminate`` and ``purge`` slot in the
same way). Errors are one line on stderr and a non-zero exit status: 1 for bad input or a failed
query, 2 for usage errors (argparse).
"""

from __future__ import annotations

import itertools
import json
import shutil
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from sessions_app.management.output import (
    cell_text,
    columns_of,
    csv_chunks,
    escape_control,
    flatten,
    json_list_chunks,
    render_table,
    to_json,
)
from sessions_app.query.errors import MatchNotFound, QueryError
from sessions_app.selectors import session_query

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


def _json_argument(option: str, text: str | None) -> Any:
    """Parse a JSON option strictly: no NaN/Infinity, no absurd nesting; errors name the option."""

    def reject_constant(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    if text is None:
        return None
    try:
        return json.loads(text, parse_constant=reject_constant)
    except RecursionError:
        raise CommandError(f"{option}: JSON nested too deeply") from None
    except ValueError as exc:  # json.JSONDecodeError, huge integers, NaN/Infinity
        raise CommandError(f"{option}: invalid JSON: {escape_control(str(exc))}") from None


class Command(BaseCommand):
    help = "Query (and later end) authentication sessions: the auth.sessions API from a shell."

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

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        getattr(self, f"handle_{action}")(**options)

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
        filters = _json_argument("--filters", options["filters"])
        query_options = _json_argument("--options", options["options"])
        if options["history"]:
            query_options = self._with_history(query_options)
        try:
            result = session_query(filters=filters, options=query_options)
        except MatchNotFound:
            raise CommandError("no session matches (options.get)") from None
        except QueryError as exc:
            raise CommandError(escape_control(str(exc))) from None
        except DatabaseError as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CommandError(f"database error: {escape_control(first_line)}") from None
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
        body = [
            [cell_text(flat.get(c), timespec="seconds", none="-") for c in columns]
            for flat in map(flatten, rows)
        ]
        headers = [HEADERS.get(c, c) for c in columns]
        width = shutil.get_terminal_size(fallback=(0, 0)).columns  # 0: not a terminal, no limit
        lines, shortened = render_table(headers, body, width=width, min_widths=MIN_WIDTHS)
        while chunk := "".join(itertools.islice(lines, 1000)):
            self.stdout.write(chunk, ending="")
        if shortened:
            self.stderr.write(
                f"(values ending in … were shortened to fit {width} columns; use --format json for full values)"
            )


def _selects(query_options: Any) -> bool:
    return isinstance(query_options, dict) and bool(query_options.get("select"))
