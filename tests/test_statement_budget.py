"""The statement budget's own bookkeeping never fails a finished query (PostgreSQL).

``RESET statement_timeout`` after a budgeted block in autocommit is itself governed by the short
budget: on a starved machine it can be cancelled. A cancelled RESET changed nothing, so it is sent
again instead of turning the finished query into an error (a 500).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from sessions_app.db import connections as db

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's statement_timeout"),
]


def _timeout() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        return str(cursor.fetchone()[0])


def test_a_cancelled_reset_is_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    from psycopg import errors

    connection.ensure_connection()
    before = _timeout()
    real_execute = connection.cursor().__class__.execute
    cancelled: list[str] = []

    def execute(self: Any, sql: str, params: Any = None) -> Any:
        if sql == "RESET statement_timeout" and not cancelled:
            cancelled.append(sql)
            raise db.OperationalError("canceling statement due to statement timeout") from (
                errors.QueryCanceled("canceling statement due to statement timeout")
            )
        return real_execute(self, sql, params)

    monkeypatch.setattr(connection.cursor().__class__, "execute", execute)
    with db.statement_budget(0.5), connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    monkeypatch.undo()
    assert cancelled == ["RESET statement_timeout"]
    assert _timeout() == before  # put back by the second RESET
