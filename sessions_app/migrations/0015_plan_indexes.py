"""Indexes for plans that do not depend on luck (issue 18; bench/RESULTS-plans.md).

* ``sess_active_created`` gains ``expires_at, ended_at``: the query compiler's deferred join of a
  deep ``offset`` (``SELECT id … ORDER BY created_at, id LIMIT … OFFSET …``) decides "active" from
  the index alone (SQLite: a covering index; PostgreSQL: an index-only scan once vacuumed).
* Every sortable column of the dashboard (``tables.SESSION_SORTS``: a page is ordered by
  (column, id)) gets an index on active rows -- (last_seen_at, id, expires_at), (username, id,
  expires_at), (credentials, id, expires_at, ended_at), which also counts active sessions by type
  from the index, and ``sess_active_origin`` becomes (origin, id, expires_at) -- and on ended rows
  for the history tab. With ``expires_at`` in them, PostgreSQL without statistics (which takes
  ``ended_at IS NULL`` for 0.5 % of the rows) still walks them for a page instead of sorting every
  active row.
* ``sess_ended`` becomes (ended_at, id) WHERE ``ended_at IS NOT NULL``, the history tab's own
  condition (``NOT (ended_at IS NULL)`` did not match it on SQLite, which then sorted every ended
  row).

Building them on an existing database reads the sessions table once per index. Where SQLite already
has statistics (``sqlite_stat1``), the table is analysed again afterwards: an index without a row
there looks to SQLite's planner like the most selective one, so the old statistics would steer it to
the new indexes for the wrong queries (e.g. ``credentials = X`` newest first through (credentials,
id) and a sort of every match). A database without statistics is left without (PostgreSQL plans
from column statistics, which a new index does not change).
"""

from __future__ import annotations

from typing import Any

from django.db import migrations, models


def refresh_sqlite_statistics(apps: Any, schema_editor: Any) -> None:
    connection = schema_editor.connection
    if connection.vendor != "sqlite":
        return
    table = apps.get_model("sessions_app", "UserSession")._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'")
        if cursor.fetchone() is not None:
            cursor.execute(f'ANALYZE "{table}"')


class Migration(migrations.Migration):
    dependencies = [("sessions_app", "0014_notices")]

    operations = [
        migrations.RemoveIndex(model_name="usersession", name="sess_active_created"),
        migrations.RemoveIndex(model_name="usersession", name="sess_active_origin"),
        migrations.RemoveIndex(model_name="usersession", name="sess_ended"),
        migrations.AddIndex(
            model_name="usersession",
            index=models.Index(
                condition=models.Q(("ended_at__isnull", True)),
                fields=["created_at", "id", "expires_at", "ended_at"],
                name="sess_active_created",
            ),
        ),
        migrations.AddIndex(
            model_name="usersession",
            index=models.Index(
                condition=models.Q(("ended_at__isnull", True)),
                fields=["origin", "id", "expires_at"],
                name="sess_active_origin",
            ),
        ),
        migrations.AddIndex(
            model_name="usersession",
            index=models.Index(
                condition=models.Q(("ended_at__isnull", True)),
                fields=["last_seen_at", "id", "expires_at"],
                name="sess_active_seen",
            ),
        ),
        migrations.AddIndex(
            model_name="usersession",
            index=models.Index(
                condition=models.Q(("ended_at__isnull", True)),
                fields=["username", "id", "expires_at"],
                name="sess_active_uname_id",
            ),
        ),
        migrations.AddIndex(
            model_name="usersession",
            index=models.Index(
                condition=models.Q(("ended_at__isnull", True)),
                fields=["credentials", "id", "expires_at", "ended_at"],
                name="sess_active_cred_id",
            ),
        ),
        migrations.AddIndex(
            model_name="usersession",
            index=models.Index(
                condition=models.Q(("ended_at__isnull", False)), fields=["ended_at", "id"], name="sess_ended"
            ),
        ),
        migrations.AddIndex(
            model_name="usersession",
            index=models.Index(
                condition=models.Q(("ended_at__isnull", False)),
                fields=["created_at", "id"],
                name="sess_ended_created",
            ),
        ),
        migrations.AddIndex(
            model_name="usersession",
            index=models.Index(
                condition=models.Q(("ended_at__isnull", False)),
                fields=["username", "id"],
                name="sess_ended_username",
            ),
        ),
        migrations.AddIndex(
            model_name="usersession",
            index=models.Index(
                condition=models.Q(("ended_at__isnull", False)),
                fields=["credentials", "id"],
                name="sess_ended_cred",
            ),
        ),
        migrations.AddIndex(
            model_name="usersession",
            index=models.Index(
                condition=models.Q(("ended_at__isnull", False)),
                fields=["origin", "id"],
                name="sess_ended_origin",
            ),
        ),
        migrations.RunPython(refresh_sqlite_statistics, migrations.RunPython.noop),
    ]
