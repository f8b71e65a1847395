"""``manage.py analyze``: gather the query planner's statistics of every table (issue 18)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

from sessions_app.db.planner_stats import SQLITE_ANALYSIS_LIMIT, analyze_database
from sessions_app.management.cli import RegistryCommand


class Command(RegistryCommand):
    help = (
        "Gather the query planner's statistics of every table (ANALYZE; on PostgreSQL VACUUM (ANALYZE), "
        "which also sets the visibility map index-only scans need). The service does it itself "
        "after its bulk operations; run this after loading data any other way (a restore, an import), "
        "and on a schedule where PostgreSQL's autovacuum is off (manage.py check --deploy warns). "
        f"On SQLite it reads at most {SQLITE_ANALYSIS_LIMIT} rows per index unless --full."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--full", action="store_true", help="SQLite: read every row of every index (slower, exact)"
        )
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="database alias (default: default)")

    def handle(self, *args: Any, **options: Any) -> None:
        using = options["database"]
        if using not in connections:
            raise CommandError(f"--database: no database alias {using!r}")
        try:
            result = analyze_database(using=using, full=options["full"])
        except DatabaseError as exc:
            raise CommandError(f"ANALYZE failed: {exc}") from None
        if options["verbosity"] >= 1:
            vendor = connections[using].vendor
            done = "gathered and tables vacuumed" if result.vacuumed else "gathered"
            self.stdout.write(f"Planner statistics {done} ({vendor}) in {result.seconds:.2f} s.")
