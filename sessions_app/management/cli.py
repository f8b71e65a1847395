"""What the operations commands share: argument types, the operator's name and one-line errors.

Every bad value is a `CommandError` whose message is one line naming the option (exit status 1);
values quoted in it are escaped (`output.escape_control`), so hostile input cannot forge lines on the
operator's terminal or in cron mail. Usage errors (unknown option, missing argument) stay argparse's
(exit status 2).

Durations are ``<integer><unit>`` with the unit ``s``, ``m``, ``h``, ``d`` or ``w`` (``90d``,
``24h``, ``15m``, ``3600s``). Instants are such a duration, counted back from now (``--since 24h``)
or forward (``--expires 30d``), or an ISO-8601 date or date-time; one without a UTC offset is UTC.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import re
from typing import Any, Literal, NoReturn

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from sessions_app.management.output import escape_control

_DURATION = re.compile(r"(\d{1,9})([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
MAX_DURATION = dt.timedelta(days=100 * 366)
DURATION_EXAMPLES = "e.g. 90d, 24h, 15m, 3600s"


def quoted(text: str, limit: int = 80) -> str:
    """``text`` for a one-line message: control characters escaped, cut at ``limit``, in quotes."""
    shown = text if len(text) <= limit else text[: limit - 1] + "…"
    return f"'{escape_control(shown)}'"


def parse_duration(option: str, text: str) -> dt.timedelta:
    """``text`` (``90d``, ``24h``, ``15m``, ``3600s``, ``2w``) as a positive timedelta of at most a century.

    Raises `CommandError` (one line, naming ``option``) for anything else.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise CommandError(f"{option}: {quoted(text)} is not a duration ({DURATION_EXAMPLES})")
    value = dt.timedelta(seconds=int(match[1]) * _UNITS[match[2]])
    if value <= dt.timedelta(0):
        raise CommandError(f"{option}: the duration must be greater than zero")
    if value > MAX_DURATION:
        raise CommandError(f"{option}: {quoted(text)} is longer than a century")
    return value


def parse_instant(
    option: str, text: str, *, now: dt.datetime, direction: Literal["past", "future"] = "past"
) -> dt.datetime:
    """An aware datetime from a duration relative to ``now`` (back for ``past``, ahead for ``future``)
    or an ISO-8601 date / date-time (``2026-05-01``, ``2026-05-01T12:00``, ``…Z``, ``…+02:00``).

    A value without an offset is UTC; a date alone is its midnight UTC. Raises `CommandError`.
    """
    text = text.strip()
    if _DURATION.fullmatch(text):
        delta = parse_duration(option, text)
        return now - delta if direction == "past" else now + delta
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(
            f"{option}: {quoted(text)} is neither a duration ({DURATION_EXAMPLES}) nor an ISO-8601 "
            "date (e.g. 2026-05-01 or 2026-05-01T12:00:00Z)"
        ) from None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def parse_json(option: str, text: str | None) -> Any:
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


def parse_text(option: str, text: str | None, *, max_length: int) -> str | None:
    """A free-text option (a reason, a name): at most ``max_length`` characters and no NUL."""
    if text is None:
        return None
    if "\x00" in text:
        raise CommandError(f"{option}: must not contain NUL characters")
    if len(text) > max_length:
        raise CommandError(f"{option}: at most {max_length} characters")
    return text


def operator_name() -> str:
    """Who runs the command, as recorded in audit records and ``ended_by``: ``manage.py:<OS user>``.

    The OS account is the only identity a shell command has; ``getpass`` reads ``LOGNAME`` / ``USER``
    first, then the password database (a uid without an entry is recorded as ``uid<N>``).
    """
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = f"uid{os.getuid()}"
    return f"manage.py:{user}"[:150]


def database_error(exc: DatabaseError) -> CommandError:
    """A `CommandError` with the first line of a database error (e.g. "database is locked")."""
    text = str(exc).strip()
    first_line = text.splitlines()[0] if text else type(exc).__name__
    return CommandError(f"database error: {escape_control(first_line)}")


def unknown(kind: str, value: object) -> CommandError:
    """``unknown user: 'x'``-style error (the value escaped and shortened)."""
    return CommandError(f"unknown {kind}: {quoted(str(value))}")


class OneLineParser(CommandParser):
    """Usage errors as one line on stderr (``<prog>: error: …``) and exit status 2 (E15)."""

    def error(self, message: str) -> NoReturn:
        if self.called_from_command_line:
            self.exit(2, f"{self.prog}: error: {escape_line(message)}\n")
        super().error(message)
        # Not called from the command line, Django's CommandParser.error raises CommandError (its
        # stub says it returns Any): this line is never reached.
        raise AssertionError(message)


def escape_line(text: str) -> str:
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


class RegistryCommand(BaseCommand):
    """Base of the registry's commands: one-line usage errors, also from sub-command parsers."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parsers = [parser]
        while parsers:
            current = parsers.pop()
            current.__class__ = OneLineParser
            for action in current._actions:
                if isinstance(action, argparse._SubParsersAction):
                    parsers.extend(action.choices.values())
        return parser
