"""``manage.py api_key create|revoke``: API-key management for scripts.

``create`` prints the new key -- and nothing else -- on stdout, once: ``KEY=$(manage.py api_key
create --user backup --name nightly)`` captures it, and it is never shown again (only its keyed hash
is stored). Both actions go through the API-key services, so they are audited like the API calls,
with ``manage.py:<OS user>`` as the actor, and revoking ends the sessions opened with the key.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import DatabaseError
from django.utils import timezone

from sessions_app.exceptions import InvalidParams
from sessions_app.management.cli import (
    RegistryCommand,
    database_error,
    operator_name,
    parse_instant,
    parse_text,
    unknown,
)
from sessions_app.management.output import escape_control
from sessions_app.selectors import api_key_get, user_get_by_username
from sessions_app.services.api_keys import api_key_create, api_key_expiry_problem, api_key_revoke


class Command(RegistryCommand):
    help = (
        "Create an API key (printed once on stdout, nothing else) or revoke one (ending its sessions). "
        "Exit status 0 on success, 1 with a one-line reason on stderr, 2 for usage errors."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
        create = actions.add_parser(
            "create",
            help="create a key; prints it once",
            description="Create an API key for a user. The key is printed on stdout, alone, exactly once.",
        )
        create.add_argument("--user", required=True, metavar="NAME", help="owner of the key")
        create.add_argument(
            "--name", required=True, metavar="NAME", help="name, unique per user (1-200 chars)"
        )
        create.add_argument(
            "--expires",
            metavar="WHEN",
            help="expiry, in the future: a duration from now (30d, 12h) or an ISO-8601 date-time (UTC without offset)",
        )
        revoke = actions.add_parser(
            "revoke",
            help="revoke a key and end its sessions",
            description="Revoke an API key (by its api_key.query id) and end the sessions opened with it.",
        )
        revoke.add_argument("id", metavar="ID", help="the key's id (the part before '-' in the key)")
        revoke.add_argument(
            "--reason", metavar="TEXT", help="why, recorded with the key and in the audit trail"
        )

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        try:
            getattr(self, f"handle_{action}")(**options)
        except DatabaseError as exc:
            raise database_error(exc) from None

    def handle_create(self, **options: Any) -> None:
        now = timezone.now()
        name = parse_text("--name", options["name"], max_length=200)
        expires_at = None
        if options["expires"] is not None:
            expires_at = parse_instant("--expires", options["expires"], now=now, direction="future")
            problem = api_key_expiry_problem(expires_at, now=now)
            if problem is not None:  # a key that expired before it was made could never be used
                raise CommandError(f"--expires: {problem}")
        user = user_get_by_username(username=options["user"])
        if user is None:
            raise unknown("user", options["user"])
        try:
            _, plaintext = api_key_create(user=user, name=name, expires_at=expires_at, actor=operator_name())
        except InvalidParams as exc:
            option = "--expires" if exc.errors[0][0].endswith(".expires_at") else "--name"
            message = "; ".join(m for _, m in exc.errors)
            raise CommandError(f"{option}: {escape_control(message)}") from None
        self.stdout.write(plaintext)

    def handle_revoke(self, **options: Any) -> None:
        text = options["id"].strip()
        reason = parse_text("--reason", options["reason"], max_length=200) or "revoked with manage.py api_key"
        key = api_key_get(key_id=int(text)) if text.isascii() and text.isdigit() and len(text) < 19 else None
        if key is None:
            raise unknown("API key id", options["id"])
        label = f"API key {key.pk} ({escape_control(key.name)})"
        if key.revoked:
            self.stdout.write(f"{label} was already revoked.")
            return
        api_key_revoke(key=key, reason=reason, actor=operator_name())
        self.stdout.write(f"Revoked {label}; its sessions have ended.")
