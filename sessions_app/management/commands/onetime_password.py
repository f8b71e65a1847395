"""``manage.py onetime_password NAME``: issue a one-time password (printed once, nothing else)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import DatabaseError

from sessions_app.management.cli import RegistryCommand, database_error, operator_name, quoted, unknown
from sessions_app.selectors import user_get_by_username
from sessions_app.services.users import onetime_password_issue


class Command(RegistryCommand):
    help = (
        "Issue a one-time password for a user (24 characters, valid 24 hours, single use; the user "
        "must set a new password after logging in with it). It is printed on stdout, alone, exactly "
        "once; the issue is audited with manage.py:<OS user> as the actor. Exit status 0 on success, "
        "1 with a one-line reason on stderr."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", metavar="NAME", help="the user's login name")

    def handle(self, *args: Any, username: str, **options: Any) -> None:
        try:
            user = user_get_by_username(username=username)
            if user is None:
                raise unknown("user", username)
            if not user.is_active:
                raise CommandError(f"user {quoted(username)} is disabled")
            password = onetime_password_issue(user=user, actor=operator_name())
        except DatabaseError as exc:
            raise database_error(exc) from None
        self.stdout.write(password)
