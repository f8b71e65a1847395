from __future__ import annotations

from django.apps import AppConfig


class SessionsAppConfig(AppConfig):
    name = "sessions_app"
    verbose_name = "Authentication sessions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Connection hooks (bounded REGEXP on SQLite) and the account-change cascades.
        from sessions_app import db, signals  # noqa: F401
