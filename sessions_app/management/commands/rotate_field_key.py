"""``manage.py rotate_field_key [--check]``: re-seal the secrets kept at rest under the current key.

Run after setting ``SESSIONS_FIELD_KEY`` to a new key and ``SESSIONS_FIELD_KEY_PREVIOUS`` to the old
one(s) (docs/operations.md "Rotating the field key"); afterwards the previous keys can be removed. ``--check`` changes
nothing and exits 1 when a rotation is still needed (or a value cannot be opened).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError, CommandParser
from django.db import DatabaseError

from sessions_app.management.cli import RegistryCommand, database_error, operator_name
from sessions_app.management.output import escape_control
from sessions_app.services.field_keys import ColumnRotation, FieldKeyRotationError, field_key_rotate

#: Row ids named in an error, at most.
SHOWN_IDS = 10


def _ids(ids: list[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:SHOWN_IDS])
    return shown + (f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else "")


class Command(RegistryCommand):
    help = (
        "Re-encrypt every secret sealed at rest (TOTP seeds, SCRAM verifiers of API keys) under the current SESSIONS_FIELD_KEY; "
        "values under a key in SESSIONS_FIELD_KEY_PREVIOUS are opened and sealed again, plain ones "
        "are sealed. All or nothing, audited. Exit status 0 on success, 1 with a one-line reason on "
        "stderr (or, with --check, when a rotation is needed), 2 for usage errors."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--check",
            action="store_true",
            help="change nothing; exit 1 if any value is not under the current key",
        )

    def handle(self, *args: Any, check: bool, **options: Any) -> None:
        try:
            report = field_key_rotate(check_only=check, actor=operator_name())
        except FieldKeyRotationError as exc:
            detail = "; ".join(
                f"{len(r.unreadable)} {r.column} (ids {_ids(r.unreadable)})"
                for r in exc.report
                if r.unreadable
            )
            raise CommandError(
                f"cannot be opened with SESSIONS_FIELD_KEY or SESSIONS_FIELD_KEY_PREVIOUS: {detail}; "
                "nothing was changed"
            ) from None
        except ImproperlyConfigured as exc:
            raise CommandError(escape_control(str(exc))) from None
        except DatabaseError as exc:
            raise database_error(exc) from None
        for column in report:
            self.stdout.write(self._line(column, check))
        pending = sum(r.changes for r in report)
        if check and pending:
            raise CommandError(
                f"{pending} values are not under the current key: run manage.py rotate_field_key"
            )

    @staticmethod
    def _line(column: ColumnRotation, check: bool) -> str:
        verb = "to re-encrypt" if check else "re-encrypted"
        return (
            f"{column.column}: {column.resealed} {verb} under the current key, "
            f"{column.sealed} plain {'to seal' if check else 'sealed'}, {column.current} already current"
        )
