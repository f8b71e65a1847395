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
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import datetime as dt
import hashlib
import itertools
import random
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import connection, transaction
from django.db.models import Model, Q
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app import conf
from sessions_app.auth.totp_seeds import seal_seed
from sessions_app.db.planner_stats import refresh_after_bulk_change
from sessions_app.devices.agents import describe
from sessions_app.devices.places import locate
from sessions_app.models import ApiKey, AuditEvent, AuditRecord, Credentials, EndReason, UserSession
from sessions_app.services.sessions import user_auth_hash

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

_SQLITE_SEED_CACHE_KIB = -512 * 1024  # negative: KiB, i.e. up to 512 MiB of page cache while seeding
LIFETIME = dt.timedelta(days=30)  # LEVEL_1 absolute lifetime; no idle limit.
WINDOW_MS = 30 * 86_400_000  # created_at is spread over the last 30 days.
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
LIFETIME_MS = 30 * DAY_MS
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

CRED = Credentials
REASON = EndReason

# Audit history: the records of the last two days (the dashboard charts 24 h), at most this many
# logins and session ends (the most recent ones): about 14% of the sessions, 150,000 rows at most
# plus the failed attempts (a few % of the logins and two bursts of at most 400 each).
AUDIT_WINDOW_MS = 2 * DAY_MS
AUDIT_MAX_EVENTS = 150_000
# Failed attempts before a successful login: (share of logins, mechanism, error), by credential type.
_LOGIN_FAILURES: dict[str, tuple[float, str, str]] = {
    CRED.LOGIN_PASSWORD: (0.07, "PASSWORD_PLAIN", "wrong password"),
    CRED.LOGIN_TWOFACTOR: (0.10, "OTP_TOKEN", "wrong code"),
    CRED.LOGIN_ONETIME_PASSWORD: (0.05, "PASSWORD_PLAIN", "wrong password"),
    CRED.API_KEY: (0.01, "API_KEY_PLAIN", "invalid key"),
    CRED.TOKEN: (0.005, "TOKEN_PLAIN", "unknown or expired token"),
}
_MECHANISMS = {
    CRED.LOGIN_PASSWORD: "PASSWORD_PLAIN",
    CRED.LOGIN_TWOFACTOR: "OTP_TOKEN",
    CRED.LOGIN_ONETIME_PASSWORD: "PASSWORD_PLAIN",
    CRED.API_KEY: "API_KEY_PLAIN",
    CRED.TOKEN: "TOKEN_PLAIN",
    CRED.TRUENAS_NODE: "NODE_HMAC",
}
# Names tried by password guessers that are no account (demo-prefixed, so `demo_clear` finds them).
_GUESSED_NAMES = tuple(f"{DEMO_PREFIX}{n}" for n in ("admin", "test", "guest", "oracle", "user"))
ATTACK_NETWORK = "203.0.113."  # TEST-NET-3 (RFC 5737): the address of the demo's brute-force bursts
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
_LOGIN_ENDS = {
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


class DemoDataExists(Exception):
    """Demo data is already present and ``clear`` was not requested."""


@dataclass(frozen=True, slots=True)
class DemoSeedResult:
    """What `demo_seed` wrote (and, with ``clear``, what it removed first)."""

    users: int
    api_keys: int
    sessions: int
    ended: int
    by_credentials: dict[str, int]
    seconds: float  # spent creating (clearing excluded)
    cleared: dict[str, int] = field(default_factory=dict)
    audit_records: int = 0
    #: Tables whose planner statistics were refreshed (`planner_stats.refresh_after_bulk_change`).
    statistics: tuple[str, ...] = ()


@dataclass(slots=True)
class _Account:
    pk: int
    username: str
    uid: int


@dataclass(slots=True)
class _Parent:
    """What a TOKEN session inherits from the session whose token it used."""

    pk: int
    user_id: int
    username: str
    root: tuple[
        Any, ...
    ]  # root_credentials, root_username, root_login_at, root_api_key_id, root_api_key_name
    origin_ip: str | None
    created_ms: int
    ended_ms: int | None
    expires_ms: int
    public_id: str = ""


def demo_clear(*, batch_size: int = 5000) -> dict[str, int]:
    """Delete every demo user, their API keys and TOTP devices, and every demo session.

    Sessions go first, in batches of ``batch_size`` (one transaction each), so that a million rows
    are removed without loading them all into memory; a session is demo data when it belongs to a
    demo user or demo API key, has a demo username, or is a TEST-NET-1 node peer. Audit records go
    the same way; one is demo data when its ``event_data`` says ``"demo": true`` (only this module
    writes that key at the top level) and its username is a demo one or none. Returns the number of
    rows removed per kind.
    """
    demo_users = get_user_model().objects.filter(username__startswith=DEMO_PREFIX)
    demo_sessions = UserSession.objects.filter(
        Q(user__in=demo_users.values("pk"))
        | Q(username__startswith=DEMO_PREFIX)
        | Q(api_key_name__startswith=DEMO_PREFIX)
        | Q(credentials=CRED.TRUENAS_NODE, origin__startswith=NODE_NETWORK)
    )
    removed = {"sessions": 0, "api_keys": 0, "users": 0, "audit_records": 0}
    demo_audit = AuditRecord.objects.filter(
        Q(username__startswith=DEMO_PREFIX) | Q(username__isnull=True), event_data__demo=True
    )
    last = 0
    with _bulk_load():
        while pks := list(
            demo_audit.filter(pk__gt=last).order_by("pk").values_list("pk", flat=True)[:batch_size]
        ):
            last = pks[-1]
            with transaction.atomic():
                removed["audit_records"] += AuditRecord.objects.filter(pk__in=pks).delete()[0]
        last = 0
        # Walk the primary key so that each batch resumes where the last one stopped (no rescans).
        while pks := list(
            demo_sessions.filter(pk__gt=last).order_by("pk").values_list("pk", flat=True)[:batch_size]
        ):
            last = pks[-1]
            with transaction.atomic():
                # Through the ORM, so that the sessions' tokens go too; only the pk is loaded.
                deleted = UserSession.objects.filter(pk__in=pks).only("pk").delete()[1]
                removed["sessions"] += deleted.get(UserSession._meta.label, 0)
        with transaction.atomic():
            keys = ApiKey.objects.filter(
                Q(user__in=demo_users.values("pk")) | Q(name__startswith=DEMO_PREFIX)
            )
            removed["api_keys"] = keys.delete()[1].get(ApiKey._meta.label, 0)
            # The account signals end each user's sessions (none are left): ~2 ms a user.
            removed["users"] = demo_users.delete()[1].get(get_user_model()._meta.label, 0)
    return removed


def demo_seed(
    *,
    sessions: int,
    users: int | None = None,
    api_keys: int | None = None,
    ended_fraction: float = 0.3,
    seed: int | None = None,
    batch_size: int = 5000,
    clear: bool = False,
    now: dt.datetime | None = None,
    progress: Callable[[int], object] | None = None,
) -> DemoSeedResult:
    """Fill the database with demo users, API keys and ``sessions`` sessions.

    ``users`` defaults to one per 20 sessions (at least 10; none without sessions) and ``api_keys``
    to one per 10 users (at least 3). About ``ended_fraction`` of the sessions are history
    (``ended_at`` / ``end_reason`` / ``ended_by`` set); the rest are active and within their LEVEL_1
    lifetime at ``now`` (default: the current time), at most ``SESSIONS_MAX_PER_USER`` per user
    (logins beyond the cap end as ``EVICTED``, as the login service would end them). The same
    ``seed`` and ``now`` give the same rows, public ids included; without a seed, public ids come
    from `secrets`. ``progress`` is called with the number of sessions written after each batch.

    Raises `DemoDataExists` when demo users exist and ``clear`` is false (re-seeding would collide
    with them); with ``clear``, `demo_clear` runs first. Raises `ValueError` for counts or fractions
    out of range.
    """
    if sessions < 0 or batch_size < 1 or not 0.0 <= ended_fraction <= 1.0:
        raise ValueError("sessions must be >= 0, batch_size >= 1 and ended_fraction within [0, 1]")
    if users is None:
        users = max(10, sessions // 20) if sessions or api_keys else 0
    if api_keys is None:
        api_keys = max(3, users // 10) if users else 0
    if users < (1 if sessions or api_keys else 0) or api_keys < 0:
        raise ValueError("sessions and API keys need users >= 1; api_keys must be >= 0")

    cleared = demo_clear(batch_size=batch_size) if clear else {}
    existing = get_user_model().objects.filter(username__startswith=DEMO_PREFIX).count() if users else 0
    if existing:
        raise DemoDataExists(f"{existing} demo users ({DEMO_PREFIX}*) already exist; clear them first")

    started = time.perf_counter()
    now = now or timezone.now()
    now_ms = (now - EPOCH) // dt.timedelta(milliseconds=1)
    rng = random.Random(seed)
    seeder = _Seeder(rng=rng, now_ms=now_ms, ended_fraction=ended_fraction, deterministic=seed is not None)
    # The audit history draws from a generator of its own, so that it changes no session.
    seeder.audit = _AuditHistory(
        rng=random.Random(None if seed is None else f"{seed}:audit"),
        now_ms=now_ms,
        deterministic=seed is not None,
    )
    written = 0
    with _bulk_load():
        if users:
            with transaction.atomic():
                seeder.create_users(users)
                seeder.create_api_keys(api_keys)
        first = True
        while written < sessions:
            n = min(batch_size, sessions - written)
            with transaction.atomic():
                written += seeder.create_sessions(n, every_type=first)
            first = False
            if progress is not None:
                progress(n)
        audit_records = seeder.audit.write(batch_size=batch_size)
    # Planner statistics of every table filled or emptied (issue 18), so that a demo or benchmark
    # database is fast from its first query, with autovacuum off and on SQLite alike.
    user_rows = users + cleared.get("users", 0)
    changed: dict[type[Model], int] = {
        UserSession: written + cleared.get("sessions", 0),
        AuditRecord: audit_records + cleared.get("audit_records", 0),
        ApiKey: api_keys + cleared.get("api_keys", 0),
        get_user_model(): user_rows,
        TOTPDevice: user_rows,  # at most one device per user
    }
    statistics = tuple(
        model._meta.db_table for model, rows in changed.items() if refresh_after_bulk_change(model, rows)
    )
    return DemoSeedResult(
        users=users,
        api_keys=api_keys,
        sessions=written,
        ended=seeder.ended,
        by_credentials=dict(seeder.by_credentials),
        seconds=time.perf_counter() - started,
        cleared=cleared,
        audit_records=audit_records,
        statistics=statistics,
    )


@contextlib.contextmanager
def _bulk_load() -> Iterator[None]:
    """On SQLite, relax durability and widen the page cache of this connection while seeding or clearing.

    Random public ids and secret digests land all over their unique indexes; once the database
    outgrows SQLite's default 2 MB cache, every batch re-reads and checkpoints index pages (a third
    of the run was system time at 1M rows). A crash mid-seed may lose demo data, nothing else: the
    settings are this connection's only and are restored afterwards.
    """
    if connection.vendor != "sqlite" or connection.in_atomic_block:  # SQLite refuses it in a transaction
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA synchronous")
        synchronous = int(cursor.fetchone()[0])
        cursor.execute("PRAGMA cache_size")
        cache_size = int(cursor.fetchone()[0])
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.execute(f"PRAGMA cache_size={_SQLITE_SEED_CACHE_KIB}")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute(f"PRAGMA cache_size={cache_size}")


class _Pool:
    """Accounts (or keys) drawn with Zipf-like weights: a few hold most sessions, as in real deployments."""

    def __init__(self, rng: random.Random, items: Sequence[Any]) -> None:
        self.rng = rng
        self.items = list(items)
        self.cum = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(self.items))))

    def pick(self, *, uniform: bool = False) -> Any:
        if uniform:
            return self.rng.choice(self.items)
        index = bisect.bisect_left(self.cum, self.rng.random() * self.cum[-1])
        return self.items[min(index, len(self.items) - 1)]


class _Seeder:
    """Generates and inserts the rows; holds the state shared between batches."""

    def __init__(
        self, *, rng: random.Random, now_ms: int, ended_fraction: float, deterministic: bool
    ) -> None:
        self.rng = rng
        self.now_ms = now_ms
        self.ended_fraction = ended_fraction
        self.deterministic = deterministic
        # Logins beyond the cap evict older sessions, so no user holds more active sessions than this.
        self.cap = int(conf.get("SESSIONS_MAX_PER_USER"))
        self.active: Counter[int] = Counter()
        self.auth_hash = ""
        self.root = _Account(0, ROOT_USERNAME, 0)
        self.users = self.password_users = self.twofactor_users = _Pool(rng, [])
        self.keys = _Pool(rng, [])
        self.recent_tokens: list[_Parent] = []
        self.ended = 0
        self.by_credentials: Counter[str] = Counter()
        self.cred_names = list(CREDENTIAL_WEIGHTS)
        self.cred_cum = list(itertools.accumulate(CREDENTIAL_WEIGHTS.values()))
        self.end_choices = {
            c: (list(w), list(itertools.accumulate(w.values()))) for c, w in END_WEIGHTS.items()
        }
        # Devices come from a generator of their own, so that adding them changed no other value.
        self.device_rng = random.Random(rng.getrandbits(64) if deterministic else None)
        self.audit = _AuditHistory(rng=random.Random(), now_ms=now_ms, deterministic=False)

    # -- users and keys ---------------------------------------------------------------------------

    def create_users(self, count: int) -> None:
        rng = self.rng
        user_model = get_user_model()
        password = make_password(None)  # one unusable hash, shared: hashing per user would take hours
        rows = [
            user_model(
                username=ROOT_USERNAME,
                password=password,
                first_name="Demo",
                last_name="Root",
                is_staff=True,
                is_superuser=True,
                date_joined=self._dt(self.now_ms - 365 * DAY_MS),
            )
        ]
        names = len(_FIRST_NAMES) * len(_LAST_NAMES)
        for i in range(count - 1):
            first = _FIRST_NAMES[i % len(_FIRST_NAMES)]
            last = _LAST_NAMES[(i // len(_FIRST_NAMES)) % len(_LAST_NAMES)]
            suffix = str(i // names) if i >= names else ""
            rows.append(
                user_model(
                    username=f"{DEMO_PREFIX}{first}.{last}{suffix}",
                    password=password,
                    first_name=first.capitalize(),
                    last_name=last.capitalize(),
                    email=f"{first}.{last}{suffix}@example.com".lower(),
                    date_joined=self._dt(self.now_ms - rng.randrange(31 * DAY_MS, 365 * DAY_MS)),
                )
            )
        created = user_model.objects.bulk_create(rows, batch_size=1000)
        # Every user has the same password hash, hence the same fingerprint: compute it once.
        self.auth_hash = user_auth_hash(created[0])
        self.root = _Account(created[0].pk, created[0].username, 0)
        everyone, password_users, twofactor_users, devices = [], [], [], []
        for index, user in enumerate(created[1:]):
            account = _Account(user.pk, user.username, 3000 + index)
            everyone.append(account)
            if rng.random() < _TWOFACTOR_USERS:
                twofactor_users.append(account)
                # bulk_create sends no pre_save: seal the seed here (security.md F6).
                sealed = seal_seed(rng.randbytes(20).hex(), user_id=user.pk)
                devices.append(TOTPDevice(user=user, name="demo", confirmed=True, key=sealed))
            else:
                password_users.append(account)
        TOTPDevice.objects.bulk_create(devices, batch_size=1000)
        everyone = everyone or [self.root]  # only the root account: it logs in too
        self.users = _Pool(rng, everyone)
        self.password_users = _Pool(rng, password_users or twofactor_users or everyone)
        self.twofactor_users = _Pool(rng, twofactor_users or password_users or everyone)

    def create_api_keys(self, count: int) -> None:
        rng = self.rng
        rows = []
        owners = []
        for i in range(count):
            owner = self.users.pick(uniform=True)
            owners.append(owner)
            created_ms = self.now_ms - WINDOW_MS - rng.randrange(DAY_MS, 300 * DAY_MS)
            expires = None if rng.random() < 0.7 else self._dt(self.now_ms + rng.randrange(30, 365) * DAY_MS)
            rows.append(
                ApiKey(
                    name=f"{DEMO_PREFIX}{_KEY_PURPOSES[i % len(_KEY_PURPOSES)]}-{i + 1:04d}",
                    user_id=owner.pk,
                    # A placeholder digest: no secret exists for demo keys.
                    key_hash=hashlib.sha256(rng.randbytes(32)).hexdigest(),
                    created_at=self._dt(created_ms),
                    expires_at=expires,
                    last_used_at=self._dt(self.now_ms - rng.randrange(0, 7 * DAY_MS)),
                )
            )
        created = ApiKey.objects.bulk_create(rows, batch_size=1000)
        self.keys = _Pool(rng, [(k.pk, k.name, o) for k, o in zip(created, owners, strict=True)])

    # -- sessions ---------------------------------------------------------------------------------

    def create_sessions(self, count: int, *, every_type: bool) -> int:
        """Insert ``count`` sessions: first the ones that may parent a token, then the tokens."""
        rng = self.rng
        creds = rng.choices(self.cred_names, cum_weights=self.cred_cum, k=count)
        if every_type:
            creds[: len(CREDENTIAL_WEIGHTS)] = list(CREDENTIAL_WEIGHTS)[:count]
        if not self.keys.items:
            creds = [CRED.LOGIN_PASSWORD if c == CRED.API_KEY else c for c in creds]
        if CRED.TOKEN in creds and not self.recent_tokens and not _TOKEN_PARENTS.intersection(creds):
            # A tiny first batch without any session that could have issued a token.
            creds[creds.index(CRED.TOKEN)] = CRED.LOGIN_PASSWORD

        rows: list[UserSession] = []
        parents: list[_Parent] = []
        for cred in creds:
            if cred == CRED.TOKEN:
                continue
            row, created_ms, ended_ms, expires_ms = self._session(cred)
            rows.append(row)
            if cred in _TOKEN_PARENTS:
                parents.append(self._parent(row, created_ms, ended_ms, expires_ms))
        UserSession.objects.bulk_create(rows, batch_size=len(rows) or 1)
        for parent, row in zip(parents, (r for r in rows if r.credentials in _TOKEN_PARENTS), strict=True):
            parent.pk = row.pk  # primary keys exist only now

        tokens = [self._token(parents) for _ in range(count - len(rows))]
        UserSession.objects.bulk_create(tokens, batch_size=len(tokens) or 1)
        self.recent_tokens = [self._token_as_parent(t) for t in tokens[:200]] or self.recent_tokens
        self.by_credentials.update(r.credentials for r in rows)
        self.by_credentials[CRED.TOKEN] += len(tokens)
        self.ended += sum(1 for r in itertools.chain(rows, tokens) if r.ended_at is not None)
        return len(rows) + len(tokens)

    def _account(
        self, cred: str, *, uniform: bool
    ) -> tuple[_Account | None, tuple[int, str, _Account] | None]:
        """Who a new session of type ``cred`` belongs to (and the API key it used)."""
        if cred == CRED.TRUENAS_NODE:
            return None, None
        if cred == CRED.API_KEY:
            key = self.keys.pick(uniform=uniform)
            return key[2], key
        if cred == CRED.UNIX_SOCKET:
            root = not uniform and self.rng.random() < 0.5  # local root processes are half the peers
            return (self.root if root else self.users.pick(uniform=uniform)), None
        if cred == CRED.LOGIN_TWOFACTOR:
            return self.twofactor_users.pick(uniform=uniform), None
        if cred == CRED.LOGIN_PASSWORD:
            return self.password_users.pick(uniform=uniform), None
        return self.users.pick(uniform=uniform), None

    def _session(self, cred: str) -> tuple[UserSession, int, int | None, int]:
        """One non-TOKEN session, with its created / ended / expires times in ms."""
        rng = self.rng
        ended = rng.random() < self.ended_fraction
        reason: str | None = None
        for attempt in range(9):
            account, key = self._account(cred, uniform=attempt == 8)
            if ended or account is None or self.active[account.pk] < self.cap:
                break
        else:
            reason = REASON.EVICTED  # every candidate is at the cap: this login was evicted since
        if ended:
            reason = self._reason(cred)
        elif reason is None and account is not None:
            self.active[account.pk] += 1
        created_ms, ended_ms = self._lifetime(reason)
        expires_ms = created_ms + LIFETIME_MS
        internal = cred == CRED.TRUENAS_NODE or (cred == CRED.UNIX_SOCKET and account is self.root)
        secure = True
        pid = uid = None
        if cred == CRED.TRUENAS_NODE:
            origin = f"{NODE_NETWORK}{rng.choice((10, 11))}:{rng.randrange(32768, 61000)}"
        elif cred == CRED.UNIX_SOCKET:
            assert account is not None
            pid, uid = rng.randrange(300, 4_194_304), account.uid
            origin = f"UNIX socket (pid={pid} uid={uid} gid={uid})"
        else:
            origin, secure = self._tcp_origin()
            secure = secure or cred == CRED.API_KEY  # keys are refused over insecure transports
        username = account.username if account else None
        device = self._device(cred, origin)
        row = UserSession(
            **device,
            public_id=self._public_id(),
            # Browser logins carry a cookie secret (a placeholder digest here: no secret exists).
            secret_hash=hashlib.sha256(rng.randbytes(32)).hexdigest() if cred in _USER_LOGINS else None,
            user_id=account.pk if account else None,
            credentials=cred,
            username=username,
            username_folded=username.casefold() if username else None,
            login_at=self._dt(created_ms) if account else None,
            api_key_id=key[0] if key else None,
            api_key_name=key[1] if key else None,
            origin=origin,
            internal=internal,
            secure_transport=secure,
            peer_pid=pid,
            peer_uid=uid,
            peer_gid=uid,
            created_at=self._dt(created_ms),
            last_seen_at=self._dt(self._last_seen(created_ms, ended_ms)),
            expires_at=self._dt(expires_ms),
            user_auth_hash=self.auth_hash if account else "",
            password_change_required=cred == CRED.LOGIN_ONETIME_PASSWORD,
            ended_at=self._dt(ended_ms) if ended_ms is not None else None,
            end_reason=reason,
            ended_by=self._ended_by(reason, username),
        )
        self.audit.note(row, created_ms, ended_ms, key=key)
        return row, created_ms, ended_ms, expires_ms

    def _token(self, parents: Sequence[_Parent]) -> UserSession:
        """A TOKEN session opened with a token that a parent session generated (maybe a TOKEN one)."""
        rng = self.rng
        pool = parents
        if self.recent_tokens and (not parents or rng.random() < _CHAINED_TOKENS):
            pool = self.recent_tokens
        want_ended = rng.random() < self.ended_fraction
        parent = rng.choice(pool)
        if not want_ended:
            # An active session descends from an active one whose user is below the cap.
            for _ in range(8):
                if parent.ended_ms is None and self.active[parent.user_id] < self.cap:
                    break
                parent = rng.choice(pool)
            else:
                want_ended = True
        parent_end = parent.ended_ms if parent.ended_ms is not None else self.now_ms
        latest = min(parent_end, parent.expires_ms, self.now_ms) - 1
        created_ms = rng.randint(parent.created_ms, max(parent.created_ms, latest))
        expires_ms = min(created_ms + LIFETIME_MS, parent.expires_ms)  # never outlives its parent
        reason: str | None = None
        ended_ms: int | None = None
        ended_by: str | None = None
        if parent.ended_ms is not None:
            # Ending a session ends the TOKEN sessions derived from it.
            reason, ended_ms = REASON.PARENT_ENDED, parent.ended_ms
        elif want_ended:
            reason = self._reason(CRED.TOKEN)
            ended_ms = min(created_ms + 1 + int(rng.expovariate(1 / HOUR_MS)), self.now_ms)
            ended_by = self._ended_by(reason, parent.username)
        else:
            self.active[parent.user_id] += 1
        # match_origin: the same address as the parent, a new port; a unix-socket parent hands its
        # token to a local client.
        origin = f"{parent.origin_ip or '127.0.0.1'}:{rng.randrange(32768, 61000)}"
        root_cred, root_user, root_login, root_key_id, root_key_name = parent.root
        row = UserSession(
            public_id=self._public_id(),
            secret_hash=hashlib.sha256(rng.randbytes(32)).hexdigest(),
            user_id=parent.user_id,
            credentials=CRED.TOKEN,
            username=parent.username,
            username_folded=parent.username.casefold(),
            parent_id=parent.pk,
            root_credentials=root_cred,
            root_username=root_user,
            root_login_at=root_login,
            root_api_key_id=root_key_id,
            root_api_key_name=root_key_name,
            origin=origin,
            internal=False,
            secure_transport=True,
            created_at=self._dt(created_ms),
            last_seen_at=self._dt(self._last_seen(created_ms, ended_ms)),
            expires_at=self._dt(expires_ms),
            user_auth_hash=self.auth_hash,
            ended_at=self._dt(ended_ms) if ended_ms is not None else None,
            end_reason=reason,
            ended_by=ended_by,
        )
        self.audit.note(row, created_ms, ended_ms, parent=parent.public_id)
        return row

    def _parent(self, row: UserSession, created_ms: int, ended_ms: int | None, expires_ms: int) -> _Parent:
        assert row.user_id is not None
        assert row.username is not None
        origin_ip = None if row.credentials == CRED.UNIX_SOCKET else row.origin.rpartition(":")[0]
        root = (row.credentials, row.username, row.login_at, row.api_key_id, row.api_key_name)
        return _Parent(
            0, row.user_id, row.username, root, origin_ip, created_ms, ended_ms, expires_ms, row.public_id
        )

    def _token_as_parent(self, row: UserSession) -> _Parent:
        assert row.user_id is not None
        assert row.username is not None
        root = (
            row.root_credentials,
            row.root_username,
            row.root_login_at,
            row.root_api_key_id,
            row.root_api_key_name,
        )
        return _Parent(
            row.pk,
            row.user_id,
            row.username,
            root,
            row.origin.rpartition(":")[0],
            self._ms(row.created_at),
            self._ms(row.ended_at) if row.ended_at is not None else None,
            self._ms(row.expires_at),
            row.public_id,
        )

    # -- small generators -------------------------------------------------------------------------

    def _reason(self, cred: str) -> str:
        names, cum = self.end_choices[cred]
        return self.rng.choices(names, cum_weights=cum)[0]

    def _lifetime(self, reason: str | None) -> tuple[int, int | None]:
        """created_at and ended_at (ms) of a non-TOKEN session ending for ``reason`` (None: active)."""
        rng = self.rng
        if reason is None:
            # Recent sessions are the common ones; stay an hour clear of the 30-day expiry.
            return self.now_ms - int((rng.random() ** 1.5) * (WINDOW_MS - HOUR_MS)), None
        if reason == REASON.EXPIRED:
            # Ran its whole LEVEL_1 lifetime, so it began up to a day before the 30-day window.
            created = self.now_ms - LIFETIME_MS - rng.randrange(1, DAY_MS)
            return created, created + LIFETIME_MS
        created = self.now_ms - rng.randrange(1, WINDOW_MS)
        mean = HOUR_MS if reason in (REASON.LOGOUT, REASON.IDLE) else 6 * HOUR_MS
        return created, min(created + 1 + int(rng.expovariate(1 / mean)), self.now_ms)

    def _last_seen(self, created_ms: int, ended_ms: int | None) -> int:
        end = self.now_ms if ended_ms is None else ended_ms
        return created_ms + int((end - created_ms) * self.rng.random() ** 0.25)

    def _ended_by(self, reason: str | None, username: str | None) -> str | None:
        if reason in (REASON.LOGOUT, REASON.PASSWORD_CHANGED):
            return username
        if reason in (REASON.TERMINATED, REASON.CREDENTIAL_REVOKED):
            return self.root.username if username is None or self.rng.random() < 0.7 else username
        if reason == REASON.USER_DISABLED:
            return self.root.username
        return None

    def _device(self, cred: str, origin: str) -> dict[str, Any]:
        """The device and place columns of a session (`sessions_app.devices`): browsers for logins,
        programs for API keys, none for the unix socket and node peers."""
        if cred in (CRED.UNIX_SOCKET, CRED.TRUENAS_NODE):
            return {}
        rng = self.device_rng
        agents_ = _BROWSER_AGENTS if cred in _USER_LOGINS else _PROGRAM_AGENTS
        user_agent = rng.choices(agents_, cum_weights=_cumulative(agents_))[0][0]
        address = origin.rpartition(":")[0].strip("[]")
        device = describe(user_agent, websocket=True)
        place = locate(address)
        return {
            "user_agent": user_agent,
            "client_address": address,
            "device_label": device.label,
            "device_browser": device.browser,
            "device_os": device.os,
            "device_family": device.device,
            "location_country": place.country if place else None,
            "location_city": place.city if place else None,
        }

    def _tcp_origin(self) -> tuple[str, bool]:
        """A client address and whether the transport was secure (loopback always is)."""
        rng = self.rng
        port = rng.randrange(32768, 61000)
        kind = rng.random()
        if kind < 0.45:
            host = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        elif kind < 0.80:
            host = f"192.168.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        elif kind < 0.95:
            host = f"[2001:db8::{rng.randrange(1, 0x10000):x}]"
        else:
            return f"127.0.0.1:{port}", True
        return f"{host}:{port}", rng.random() < 0.9

    def _public_id(self) -> str:
        if self.deterministic:
            return base64.urlsafe_b64encode(self.rng.randbytes(48)).decode()
        return secrets.token_urlsafe(48)

    @staticmethod
    def _dt(ms: int) -> dt.datetime:
        return EPOCH + dt.timedelta(milliseconds=ms)

    @staticmethod
    def _ms(value: dt.datetime) -> int:
        return (value - EPOCH) // dt.timedelta(milliseconds=1)


class _AuditHistory:
    """The audit records that the demo sessions would have left, for the last `AUDIT_WINDOW_MS`.

    `note` keeps what a record needs of every session that began or ended in the window (a tuple,
    only for those: about one in seven); `write` then builds the records as the services write
    them (``AUTHENTICATION`` for each login, ``LOGOUT`` or ``METHOD_CALL`` ``session.end`` for each
    end, as `session_end` does), adds failed attempts (a few before some logins, guessed account
    names, two brute-force bursts from TEST-NET-3) and inserts them in bulk, oldest first. Beyond
    `AUDIT_MAX_EVENTS` logins and ends, only the most recent are recorded (as if older records had
    been purged), so a million sessions add a bounded number of rows.
    """

    def __init__(self, *, rng: random.Random, now_ms: int, deterministic: bool) -> None:
        self.rng = rng
        self.now_ms = now_ms
        self.since_ms = now_ms - AUDIT_WINDOW_MS
        self.deterministic = deterministic
        # (time ms, kind, row fields...): kind 0 a login, 1 an end.
        self.events: list[tuple[Any, ...]] = []

    def note(
        self,
        row: UserSession,
        created_ms: int,
        ended_ms: int | None,
        *,
        key: tuple[int, str, Any] | None = None,
        parent: str | None = None,
    ) -> None:
        if created_ms >= self.since_ms:
            data: dict[str, Any] = {
                "credentials": row.credentials,
                "mechanism": _MECHANISMS.get(row.credentials),
            }
            if key is not None:
                data["api_key_ref"] = f"{key[0]}:{key[1]}"
            elif parent is not None:
                data["parent"] = parent
            elif row.credentials == CRED.UNIX_SOCKET:
                data = {"credentials": row.credentials, "transport": "websocket"}
            elif row.credentials == CRED.LOGIN_ONETIME_PASSWORD:
                data["onetime_password"] = True
            self.events.append((created_ms, 0, row.public_id, row.username, row.origin, data))
        if ended_ms is not None and ended_ms >= self.since_ms:
            self.events.append(
                (
                    ended_ms,
                    1,
                    row.public_id,
                    row.username,
                    row.origin,
                    row.credentials,
                    row.end_reason,
                    row.ended_by,
                )
            )

    def write(self, *, batch_size: int) -> int:
        """Insert the records (one transaction per ``batch_size``); returns how many."""
        events = self.events
        since = self.since_ms
        if len(events) > AUDIT_MAX_EVENTS:
            events.sort(key=lambda e: e[0], reverse=True)  # stable: ties keep their (seeded) order
            del events[AUDIT_MAX_EVENTS:]
            since = events[-1][0]
        records: list[AuditRecord] = []
        logins = 0
        for event in events:
            if event[1] == 0:
                logins += 1
                records.extend(self._login(*event[:1], *event[2:]))
            else:
                records.append(self._end(*event[:1], *event[2:]))
        records.extend(self._guesses(since, logins))
        records.sort(key=lambda r: r.timestamp)
        for start in range(0, len(records), batch_size):
            with transaction.atomic():
                AuditRecord.objects.bulk_create(records[start : start + batch_size])
        self.events = []
        return len(records)

    def _record(
        self,
        at_ms: int,
        event: str,
        *,
        success: bool,
        username: str | None,
        session: str | None = None,
        address: str = "",
        data: dict[str, Any],
    ) -> AuditRecord:
        audit_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4)) if self.deterministic else None
        return AuditRecord(
            **({"audit_id": audit_id} if audit_id else {}),
            timestamp=EPOCH + dt.timedelta(milliseconds=at_ms),
            event=event,
            success=success,
            username=username,
            session=session,
            address=address,
            event_data={**data, "demo": True},
        )

    def _login(
        self, at_ms: int, public_id: str, username: str | None, origin: str, data: dict[str, Any]
    ) -> list[AuditRecord]:
        """The login's record, after the failed attempts that some logins take first."""
        rng = self.rng
        records = []
        share, mechanism, error = _LOGIN_FAILURES.get(data["credentials"], (0.0, "", ""))
        if share and rng.random() < share:
            tries = 1 if rng.random() < 0.8 else rng.randint(2, 4)
            for i in range(tries, 0, -1):
                extra = {"api_key_ref": data["api_key_ref"]} if "api_key_ref" in data else {}
                records.append(
                    self._record(
                        max(self.since_ms, at_ms - i * rng.randint(4_000, 40_000)),
                        AuditEvent.AUTHENTICATION,
                        success=False,
                        username=None if mechanism == "TOKEN_PLAIN" else username,
                        address=origin,
                        data={"mechanism": mechanism, "error": error, **extra},
                    )
                )
        records.append(
            self._record(
                at_ms,
                AuditEvent.AUTHENTICATION,
                success=True,
                username=username,
                session=public_id,
                address=origin,
                data=data,
            )
        )
        return records

    def _end(
        self,
        at_ms: int,
        public_id: str,
        username: str | None,
        origin: str,
        credentials: str,
        reason: str,
        ended_by: str | None,
    ) -> AuditRecord:
        logout = reason == REASON.LOGOUT
        return self._record(
            at_ms,
            AuditEvent.LOGOUT if logout else AuditEvent.METHOD_CALL,
            success=True,
            username=ended_by or username,
            session=public_id,
            address=origin if logout else "",
            data={
                "method": "auth.logout" if logout else "session.end",
                "end_reason": reason,
                "target": public_id,
                "target_username": username,
                "credentials": credentials,
            },
        )

    def _guesses(self, since: int, logins: int) -> list[AuditRecord]:
        """Attempts on names that are no account (1 % of the logins, spread out) and two bursts from
        one address: the first within the last day (so the dashboard shows it), the other before."""
        rng = self.rng
        span = self.now_ms - since
        if span <= 0 or not logins:
            return []
        records = []
        for _ in range(max(1, logins // 100)):
            records.append(
                self._record(
                    since + rng.randrange(span),
                    AuditEvent.AUTHENTICATION,
                    success=False,
                    username=rng.choice(_GUESSED_NAMES),
                    address=f"{ATTACK_NETWORK}{rng.randrange(1, 255)}:{rng.randrange(32768, 61000)}",
                    data={"mechanism": "PASSWORD_PLAIN", "error": "unknown user"},
                )
            )
        size = min(400, max(15, logins // 40))
        for begin in (max(since, self.now_ms - DAY_MS), since):
            start = begin + rng.randrange(max(1, min(span, DAY_MS) - HOUR_MS))
            host = f"{ATTACK_NETWORK}{rng.randrange(1, 255)}"
            for i in range(size):
                name = rng.choice((ROOT_USERNAME, *_GUESSED_NAMES))
                error = "unknown user" if name != ROOT_USERNAME else ("wrong password" if i < 5 else "locked")
                records.append(
                    self._record(
                        min(self.now_ms, start + i * rng.randint(1_000, 6_000)),
                        AuditEvent.AUTHENTICATION,
                        success=False,
                        username=name,
                        address=f"{host}:{rng.randrange(32768, 61000)}",
                        data={"mechanism": "PASSWORD_PLAIN", "error": error},
                    )
                )
        return records
