"""``manage.py audit_export``: stream audit records to a file or stdout as JSON Lines or CSV.

Memory stays constant whatever the number of records: rows are fetched in chunks (a server-side
cursor on PostgreSQL) and written as they come (`reports.audit_rows_between`). With ``--output``
the file is written under a temporary name, readable by its owner only, and renamed into place when
complete, so a half-written export is never mistaken for a whole one.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from django.core.management.base import CommandError, CommandParser
from django.db import DatabaseError
from django.utils import timezone

from sessions_app.management.cli import RegistryCommand, database_error, parse_instant, quoted
from sessions_app.management.output import cell_text, csv_chunks, escape_control, progress_bar, to_json
from sessions_app.reports import audit_records_between, audit_rows_between

COLUMNS = ("audit_id", "timestamp", "event", "username", "session", "address", "success", "event_data")
FREE_TEXT = frozenset({"username", "address"})
CHUNK_ROWS = 1000


class Command(RegistryCommand):
    help = (
        "Stream audit records with since <= timestamp < until, oldest first, as JSON Lines (one "
        'audit.query row per line, datetimes as {"$date": ms}, sorted keys) or CSV (ISO-8601 UTC '
        "times, control characters escaped), in constant memory. --since/--until take a duration "
        "back from now (90d, 24h, 15m, 3600s) or an ISO-8601 date or date-time (UTC without an "
        "offset). A progress bar is shown on stderr when it is a terminal. Exit status 0 on success, "
        "1 with a one-line reason on stderr otherwise."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", required=True, metavar="WHEN", help="first instant (inclusive)")
        parser.add_argument("--until", metavar="WHEN", help="end instant (exclusive; default: now)")
        parser.add_argument(
            "--format", choices=("jsonl", "csv"), default="jsonl", help="output format (default: jsonl)"
        )
        parser.add_argument("--output", metavar="FILE", help="write to FILE (mode 0600) instead of stdout")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        since = parse_instant("--since", options["since"], now=now)
        until = parse_instant("--until", options["until"], now=now) if options["until"] else now
        if since >= until:
            raise CommandError("--since must be before --until")
        show = not options["no_progress"] and sys.stderr.isatty()
        try:
            total = audit_records_between(since=since, until=until).count() if show else None
            chunks = self._chunks(options["format"], since, until, total, show)
            if options["output"]:
                written = _write_file(Path(options["output"]), chunks)
            else:
                written = self._write_stdout(chunks)
        except DatabaseError as exc:
            raise database_error(exc) from None
        if options["output"] and options["verbosity"] >= 1:
            self.stderr.write(f"Exported {written:,} audit records to {escape_control(options['output'])}.")

    def _chunks(
        self, fmt: str, since: Any, until: Any, total: int | None, show: bool
    ) -> Iterator[tuple[str, int]]:
        """(text, rows in it) in chunks of `CHUNK_ROWS` rows, with the progress bar advanced."""
        rows = audit_rows_between(since=since, until=until)
        with progress_bar(total=total, unit="records", enabled=show) as bar:
            if fmt == "jsonl":
                lines: list[str] = []
                for row in rows:
                    lines.append(to_json(row, indent=None) + "\n")
                    if len(lines) >= CHUNK_ROWS:
                        yield "".join(lines), len(lines)
                        bar.update(len(lines))
                        lines = []
                yield "".join(lines), len(lines)
                bar.update(len(lines))
                return
            counted = 0

            def cells() -> Iterator[list[str]]:
                nonlocal counted
                for row in rows:
                    counted += 1
                    yield [cell_text(row[c]) for c in COLUMNS]

            before = 0
            for text in csv_chunks(COLUMNS, cells(), free_text=FREE_TEXT, chunk_rows=CHUNK_ROWS):
                yield text, counted - before
                bar.update(counted - before)
                before = counted

    def _write_stdout(self, chunks: Iterator[tuple[str, int]]) -> int:
        written = 0
        try:
            for text, n in chunks:
                self.stdout.write(text, ending="")
                written += n
            self.stdout.flush()
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, and keep Python from failing at exit.
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise CommandError("stdout was closed before the export finished") from None
        return written


def _write_file(path: Path, chunks: Iterator[tuple[str, int]]) -> int:
    partial = path.with_name(f".{path.name}.partial")
    try:
        # A new file, 0600 whatever the umask: a stale partial (mode unknown) is replaced, not reused.
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        os.fchmod(fd, 0o600)
    except OSError as exc:
        raise CommandError(f"--output: cannot write {quoted(str(path))}: {exc.strerror}") from None
    written = 0
    try:
        out: IO[str]
        with open(fd, "w", encoding="utf-8", newline="") as out:
            for text, n in chunks:
                out.write(text)
                written += n
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        if isinstance(exc, OSError):
            raise CommandError(f"--output: writing {quoted(str(path))} failed: {exc.strerror}") from None
        raise
    return written
