"""The demo population: who the demo holds and how its sessions are distributed.

Markers that make demo data recognisable (`DEMO_PREFIX`, `NODE_NETWORK`), the time windows, the
share of each credential type and of each end reason, the User-Agents of browsers and programs and
the names of users and keys. Plain data (and one helper to weigh it): the seeder draws from it.
"""

from __future__ import annotations

import datetime as dt
import itertools

from sessions_app.models import Credentials, EndReason

#: (User-Agent, weight) of the demo's browser logins and of its programs (API keys, tokens); None: a
#: WebSocket client that sends none (the official TrueNAS client, midclt).
_BROWSER_AGENTS: list[tuple[str | None, int]] = [
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36",
        30,
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        15,
    ),
    ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0", 15),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7_1) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/18.1 Safari/605.1.15",
        15,
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/18.1 Mobile/15E148 Safari/604.1",
        15,
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Mobile Safari/537.36",
        10,
    ),
]
_PROGRAM_AGENTS: list[tuple[str | None, int]] = [
    (None, 40),
    ("Python/3.11 websockets/15.0.1", 20),
    ("python-requests/2.32.3", 20),
    ("curl/8.5.0", 20),
]


def _cumulative(weighted: list[tuple[str | None, int]]) -> list[int]:
    return list(itertools.accumulate(weight for _, weight in weighted))


DEMO_PREFIX = "demo_"
ROOT_USERNAME = f"{DEMO_PREFIX}root"
NODE_NETWORK = "192.0.2."  # TEST-NET-1: marks demo TRUENAS_NODE peers (they have no user).

LIFETIME = dt.timedelta(days=30)  # LEVEL_1 absolute lifetime; no idle limit.
WINDOW_MS = 30 * 86_400_000  # created_at is spread over the last 30 days.
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
LIFETIME_MS = 30 * DAY_MS
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

CRED = Credentials
REASON = EndReason

# Share of each credential type in the generated sessions (mostly logins, API keys and tokens).
CREDENTIAL_WEIGHTS: dict[str, int] = {
    CRED.LOGIN_PASSWORD: 36,
    CRED.API_KEY: 24,
    CRED.TOKEN: 20,
    CRED.LOGIN_TWOFACTOR: 10,
    CRED.UNIX_SOCKET: 5,
    CRED.LOGIN_ONETIME_PASSWORD: 3,
    CRED.TRUENAS_NODE: 2,
}
# How sessions of each type end, when they are history.
_LOGIN_ENDS: dict[str, int] = {
    REASON.LOGOUT: 50,
    REASON.EXPIRED: 15,
    REASON.TERMINATED: 12,
    REASON.PASSWORD_CHANGED: 5,
    REASON.EVICTED: 3,
    REASON.USER_DISABLED: 2,
}
END_WEIGHTS: dict[str, dict[str, int]] = {
    CRED.LOGIN_PASSWORD: _LOGIN_ENDS,
    CRED.LOGIN_TWOFACTOR: _LOGIN_ENDS,
    CRED.LOGIN_ONETIME_PASSWORD: {
        REASON.PASSWORD_CHANGED: 40,
        REASON.LOGOUT: 40,
        REASON.EXPIRED: 10,
        REASON.TERMINATED: 10,
    },
    CRED.API_KEY: {
        REASON.LOGOUT: 60,
        REASON.EXPIRED: 10,
        REASON.TERMINATED: 10,
        REASON.CREDENTIAL_REVOKED: 8,
        REASON.USER_DISABLED: 2,
    },
    CRED.TOKEN: {REASON.LOGOUT: 70, REASON.TERMINATED: 20, REASON.EVICTED: 5},
    CRED.UNIX_SOCKET: {REASON.LOGOUT: 60, REASON.IDLE: 40},
    CRED.TRUENAS_NODE: {REASON.LOGOUT: 50, REASON.IDLE: 30, REASON.TERMINATED: 20},
}
_USER_LOGINS = frozenset({CRED.LOGIN_PASSWORD, CRED.LOGIN_TWOFACTOR, CRED.LOGIN_ONETIME_PASSWORD})
# Sessions that may create tokens (one-time-password sessions may not; node peers do not).
_TOKEN_PARENTS = frozenset({CRED.LOGIN_PASSWORD, CRED.LOGIN_TWOFACTOR, CRED.API_KEY, CRED.UNIX_SOCKET})
_CHAINED_TOKENS = 0.15  # share of tokens created from a TOKEN session (root copied from the parent)
_TWOFACTOR_USERS = 0.25  # share of users with a TOTP device (they log in with LOGIN_TWOFACTOR)

_FIRST_NAMES = (
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "yvonne", "José",
    "Zoë", "Øyvind", "Ægir", "Straße", "İlkay", "Ἀθηνᾶ", "MARIA", "Renée", "chloé",
)  # fmt: skip
_LAST_NAMES = (
    "smith", "jones", "garcia", "miller", "davis", "martin", "lee", "walker", "hall", "young",
    "king", "wright", "lopez", "hill", "scott", "green", "adams", "baker", "nelson", "carter",
)  # fmt: skip
_KEY_PURPOSES = ("backup", "monitoring", "replication", "ci", "terraform", "ansible", "grafana", "sync")
