"""Generating the demo rows: users, TOTP devices, API keys and sessions, batch after batch.

`_Seeder` draws from the `population` with one `random.Random` and inserts with ``bulk_create``;
it notes every session in the audit history (`history`) as it goes.
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import hashlib
import itertools
import random
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django_otp.plugins.otp_totp.models import TOTPDevice

from sessions_app import conf
from sessions_app.auth.totp_seeds import seal_seed
from sessions_app.devices.agents import describe
from sessions_app.devices.places import locate
from sessions_app.management.demo.history import _AuditHistory
from sessions_app.management.demo.population import (
    _BROWSER_AGENTS,
    _CHAINED_TOKENS,
    _FIRST_NAMES,
    _KEY_PURPOSES,
    _LAST_NAMES,
    _PROGRAM_AGENTS,
    _TOKEN_PARENTS,
    _TWOFACTOR_USERS,
    _USER_LOGINS,
    CRED,
    CREDENTIAL_WEIGHTS,
    DAY_MS,
    DEMO_PREFIX,
    END_WEIGHTS,
    EPOCH,
    HOUR_MS,
    LIFETIME_MS,
    NODE_NETWORK,
    REASON,
    ROOT_USERNAME,
    WINDOW_MS,
    _cumulative,
)
from sessions_app.models import ApiKey, UserSession
from sessions_app.services.sessions import user_auth_hash


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
