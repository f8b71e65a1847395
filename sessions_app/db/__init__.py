"""The database underneath: what every connection gets and how its planner is kept informed.

`connections` hooks each new connection (the bounded ``REGEXP`` on SQLite, private database files,
the statement budget, SQLite's ``PRAGMA optimize`` routine, `atomic_or_give_up`); `planner_stats`
refreshes planner statistics after bulk changes and says when they are missing. Core, below
everything else but the query language: it may import `sessions_app.conf` and Django, nothing of
the app above it (the compiler, selectors, auth and services import it).
"""
