from __future__ import annotations

from django.apps import AppConfig


class SessionsAppConfig(AppConfig):
    name = "sessions_app"
    verbose_name = "Authentication sessions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Connection hooks (bounded REGEXP on SQLite) and the account-change cascades.
        from sessions_app import signals  # noqa: F401
        from sessions_app.auth import totp_seeds
        from sessions_app.db import connections  # noqa: F401

        # TOTP seeds sealed at rest (security.md F6): django-otp's reads and writes of the seed.
        totp_seeds.install()

        # No registered admin may display, filter, search or order by a secret column (F5).
        from django.core import checks

        from sessions_app.admin import check_admin_secrets

        checks.register(check_admin_secrets, checks.Tags.admin)
        # Planner statistics (autovacuum on, sessions table analysed): check --deploy only (issue 18).
        from sessions_app.checks import check_planner_statistics

        checks.register(check_planner_statistics, checks.Tags.database, deploy=True)
