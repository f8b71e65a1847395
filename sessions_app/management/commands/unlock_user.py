"""``manage.py unlock_user NAME``: end an account lockout early (audited)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from sessions_app import throttle


class Command(BaseCommand):
    help = "Unlock an account locked by repeated failed logins (the unlock is audited)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="the account name as used at login")

    def handle(self, *args: Any, username: str, **options: Any) -> None:
        was_locked = throttle.unlock(username=username, actor="manage.py")
        self.stdout.write(
            f"{username!r} unlocked" if was_locked else f"{username!r} was not locked (counter reset)"
        )
