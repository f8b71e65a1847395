"""``manage.py unlock_user NAME``: end an account lockout early (audited)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser
from django.db import DatabaseError

from sessions_app.auth import throttle
from sessions_app.management.cli import RegistryCommand, database_error, operator_name, parse_text, quoted


class Command(RegistryCommand):
    help = (
        "Unlock an account locked by repeated failed logins and reset its failure counter and lock "
        "level. The name is taken as presented at login (locks are kept for unknown names too). The "
        "unlock is audited with manage.py:<OS user> as the actor. Exit status 0 on success, 1 with a "
        "one-line reason on stderr."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="the account name as used at login")

    def handle(self, *args: Any, username: str, **options: Any) -> None:
        name = parse_text("NAME", username, max_length=1024) or ""
        try:
            was_locked = throttle.unlock(username=name, actor=operator_name())
        except DatabaseError as exc:
            raise database_error(exc) from None
        shown = quoted(name, limit=200)
        self.stdout.write(f"{shown} unlocked" if was_locked else f"{shown} was not locked (counter reset)")
