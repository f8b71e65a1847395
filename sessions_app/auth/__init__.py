"""The core of who is calling: credentials, second factors and the secrets they rest on.

- `keys`: the secrets themselves (session secrets, API keys, tokens, one-time passwords) and their
  keyed hashes; pure Python (the import-linter purity contract holds it to that).
- `throttle`: per-address and per-account login limits and lockouts; `policy`: what a credential
  type may do and how long its sessions live; `roles`: the roles of spec §6 and who has them.
- `clients`: who is on the other end of a request or socket (address, origin, unix peer).
- `request`: `RegistryRequest`, the request as the authentication middleware leaves it (typing).
- `prepared`: the authentication lookups run as prepared statements on every request.
- `scram`, `channel_binding`: SCRAM-SHA-512 and TLS channel binding (spec/scram.md).
- `fieldcrypt`, `secret_fields`, `totp_seeds`: secrets kept encrypted at rest (TOTP seeds).

Core: imported by services and interfaces, never importing them; may import models, `db`, `conf`
and the query language.
"""
