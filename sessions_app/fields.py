"""Model fields with identical string semantics on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from django.db import models


class BinaryCharField(models.CharField):  # type: ignore[type-arg]  # Django's fields take no [] at runtime (no django_stubs_ext)
    """A ``CharField`` that compares and sorts by code point on every database.

    SQLite's default BINARY collation already orders UTF-8 text by code point, which is Python's
    string order. PostgreSQL uses the database's locale collation unless told otherwise, and a locale
    collation would order ``"B" < "a"`` differently from Python and from SQLite. The column is created
    with ``COLLATE "C"`` on PostgreSQL only, so the migration itself stays database-neutral; a btree
    index on a "C" column also serves ``LIKE 'prefix%'`` without a separate pattern-ops index.
    """

    def db_parameters(self, connection: Any) -> dict[str, Any]:
        params = super().db_parameters(connection)
        if connection.vendor == "postgresql":
            params["collation"] = "C"
        return params
