"""All writes. Interfaces call one of these; each runs in one transaction with its audit record
and its outbox event (`sessions_app.events`), or not at all.

Logins by pathway (`login` dispatches ``auth.login_ex`` to `password_login`, `totp_login`,
`api_key_login`, `token_login`, `scram_login`, `node`; what they share is `login_results`), sessions
(`sessions`: create and check; `session_ending`: end, bulk end, cascades), `tokens`, `api_keys`,
`users`, `totp`, `stepup`, `notices`, `maintenance` (bulk terminations, sweeps, the purge) and
`field_keys`. May import the core (auth, devices, reads, events, audit, models, the query language);
never an interface.
"""
