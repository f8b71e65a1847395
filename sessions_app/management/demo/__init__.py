"""Demo and benchmark data: realistic users, API keys and sessions, loaded in bulk.

`demo_seed` writes ``sessions`` rows covering every credential type with the denormalised
``credentials_data`` columns that `specs.build_session_row` reads (see `sessions_app.models`), so
that every generated row is a well-formed ``auth.sessions`` row. It is built for volume: rows are
generated with plain Python from one `random.Random` (deterministic for a given ``seed`` and
``now``), inserted with ``bulk_create`` one transaction per batch, and no query is made per row.
Users share a single unusable password hash (one `make_password` call), API keys get placeholder
hashes of random bytes: no secret is ever generated, stored or printed.

Everything written here is recognisable as demo data, so that `demo_clear` removes it and nothing
else: demo usernames and API-key names start with `DEMO_PREFIX`, every user-bound session belongs
to a demo user, and the ``TRUENAS_NODE`` peers (which have no user) come from TEST-NET-1
(``192.0.2.0/24``, RFC 5737), which no real deployment uses. The audit history that goes with the
sessions (`_AuditHistory`: the logins, failed attempts and session ends of the last
`AUDIT_WINDOW_MS`, as the services would have recorded them) carries ``"demo": true`` in its
``event_data`` and a demo username or none. Timestamps have millisecond precision,
the precision of ``{"$date": ms}`` on the wire, so a value read from the API filters back exactly.

The package tells it in four modules: `population` holds the model of the population (prefixes
and reserved networks, the time windows, the weights of credential types, end reasons, agents and
names); `seeder` generates the users, API keys and sessions from it; `history` the audit records
that go with them; `seed` has the entry points, `demo_seed` and `demo_clear`, which run both in
bulk and refresh the planner statistics afterwards.
"""

from __future__ import annotations
