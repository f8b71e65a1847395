"""The hot-path lookups (`sessions_app.auth.prepared.RowLoader`) build exactly what the ORM builds, and
PostgreSQL's pool hands out connections without a round trip yet never a dead one
(project/postgresql/base.py)."""

from __future__ import annotations

import datetime as dt
import select
import time
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.transaction import TransactionManagementError
from django.utils import timezone

from sessions_app.auth.keys import hash_secret
from sessions_app.auth.prepared import RowLoader
from sessions_app.models import ApiKey, Credentials, UserSession
from tests import factories

pytestmark = pytest.mark.django_db

BY_SECRET = RowLoader(UserSession, "secret_hash", related="user")
KEY_BY_ID = RowLoader(ApiKey, "id", related="user")


def fields_of(instance: Any) -> dict[str, tuple[Any, type, Any]]:
    """Every concrete field: value, type, and (datetimes) the tzinfo object."""
    out = {}
    for field in instance._meta.concrete_fields:
        value = getattr(instance, field.attname)
        out[field.attname] = (value, type(value), getattr(value, "tzinfo", None))
    return out


def stored_session(user: Any, **fields: Any) -> UserSession:
    now = timezone.now().replace(microsecond=123456)
    row = factories.session(
        user=user,
        secret_hash=hash_secret("s3cret"),
        created_at=now,
        last_seen_at=now,
        idle_timeout=900,
        user_auth_hash="ab" * 32,
        **fields,
    )
    row.save()
    return row


def test_session_row_and_user_equal_the_orm(make_user: Any) -> None:
    user = make_user("alice")
    row = stored_session(user, peer_pid=4321, internal=True)
    loaded = BY_SECRET.load(hash_secret("s3cret"))
    orm = UserSession.objects.select_related("user").get(pk=row.pk)
    assert fields_of(loaded) == fields_of(orm)
    assert fields_of(loaded.user) == fields_of(orm.user)
    assert loaded.last_seen_at.tzinfo is dt.UTC
    assert loaded._state.adding is False
    assert loaded._state.db == "default"
    assert loaded.user._state.adding is False
    # Saving a loaded row updates it (not an insert), like any row the ORM loaded.
    loaded.save(update_fields=["last_seen_at"])
    assert UserSession.objects.count() == 1


def test_related_user_is_cached_and_null_when_absent(make_user: Any, django_assert_num_queries: Any) -> None:
    user = make_user("alice")
    stored_session(user)
    loaded = BY_SECRET.load(hash_secret("s3cret"))
    with django_assert_num_queries(0):
        assert loaded.user.username == "alice"
    node = factories.session(credentials=Credentials.TRUENAS_NODE, secret_hash=hash_secret("node"))
    node.save()
    loaded = BY_SECRET.load(hash_secret("node"))
    with django_assert_num_queries(0):
        assert loaded.user is None


def test_unknown_value_is_none(db: Any) -> None:
    assert BY_SECRET.load(hash_secret("never issued")) is None
    assert KEY_BY_ID.load(123456) is None


def test_api_key_with_user(make_user: Any) -> None:
    user = make_user("bob")
    key = ApiKey.objects.create(name="k", user=user, key_hash="x" * 64, expires_at=None)
    loaded = KEY_BY_ID.load(key.pk)
    orm = ApiKey.objects.select_related("user").get(pk=key.pk)
    assert fields_of(loaded) == fields_of(orm)
    assert fields_of(loaded.user) == fields_of(orm.user)


def test_refused_in_a_broken_transaction_like_the_orm(db: Any) -> None:
    with transaction.atomic():
        transaction.set_rollback(True)
        with pytest.raises(TransactionManagementError):
            BY_SECRET.load(hash_secret("s3cret"))


def test_sees_the_transaction_own_writes(make_user: Any) -> None:
    user = make_user("alice")
    with transaction.atomic():
        stored_session(user)
        assert BY_SECRET.load(hash_secret("s3cret")) is not None


# --- PostgreSQL: prepared statement and the pool's checkout check -----------------------------------


def postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only")


def test_postgresql_lookup_is_a_prepared_statement(make_user: Any) -> None:
    postgresql_only()
    stored_session(make_user("alice"))
    BY_SECRET.load(hash_secret("s3cret"))
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        statements = [row[0] for row in cursor.fetchall()]
    assert any("secret_hash" in statement for statement in statements), statements


def raw_connection() -> Any:
    import psycopg

    params = connection.get_connection_params()
    params.pop("context", None)
    return psycopg.connect(**{**params, "autocommit": True})


@pytest.mark.django_db(transaction=True)
def test_pool_uses_the_check_without_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    postgresql_only()
    from psycopg_pool import ConnectionPool

    from project.postgresql.base import check_connection

    if connection.pool is None:
        pytest.skip("no pool configured (DJANGO_DB_POOL_SIZE=0)")
    assert connection.pool._check is check_connection
    full_checks = []
    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(full_checks.append))
    with raw_connection() as healthy:
        healthy.execute("SELECT 1")
        check_connection(healthy)  # idle, nothing to read: handed out without asking the server
        assert full_checks == []
        healthy.autocommit = False
        healthy.execute("SELECT 1")  # a transaction left open: the full check decides
        check_connection(healthy)
        assert full_checks == [healthy]


def test_pool_check_rejects_a_connection_the_server_ended(db: Any) -> None:
    postgresql_only()
    import psycopg

    from project.postgresql.base import check_connection

    with raw_connection() as victim, raw_connection() as killer:
        pid = victim.info.backend_pid
        killer.execute("SELECT pg_terminate_backend(%s)", [pid])
        poller = select.poll()
        poller.register(victim.fileno(), select.POLLIN)
        deadline = time.monotonic() + 5
        while not poller.poll(50) and time.monotonic() < deadline:
            pass
        with pytest.raises(psycopg.OperationalError):
            check_connection(victim)


def test_model_signals_are_sent_when_someone_listens(make_user: Any) -> None:
    from django.db.models.signals import post_init

    stored_session(make_user("alice"))
    seen: list[Any] = []

    def receiver(sender: Any, instance: Any, **kwargs: Any) -> None:
        seen.append(instance)

    post_init.connect(receiver, sender=UserSession)
    try:
        loaded = BY_SECRET.load(hash_secret("s3cret"))
    finally:
        post_init.disconnect(receiver, sender=UserSession)
    assert seen == [loaded]


def test_persistent_connection_health_check_without_round_trip(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pool off: Django's per-request health check (``is_usable``) uses the same test."""
    postgresql_only()
    from django.db import connections
    from psycopg_pool import ConnectionPool

    wrapper = connections.create_connection("default")
    wrapper.connection = raw_connection()
    try:
        full_checks: list[Any] = []
        monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(full_checks.append))
        assert wrapper.is_usable()
        assert full_checks == []
        monkeypatch.undo()
        with raw_connection() as killer:
            killer.execute("SELECT pg_terminate_backend(%s)", [wrapper.connection.info.backend_pid])
        poller = select.poll()
        poller.register(wrapper.connection.fileno(), select.POLLIN)
        poller.poll(5000)
        assert not wrapper.is_usable()
    finally:
        wrapper.connection.close()
        wrapper.connection = None
