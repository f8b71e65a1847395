"""The per-process hub's periodic check of open sockets (`sessions_app.server.live`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sessions_app.auth.clients import Client
from sessions_app.models import Credentials
from sessions_app.server.live import _socket_states
from sessions_app.services.api_keys import api_key_create, api_key_revoke
from sessions_app.services.sessions import session_create
from tests import factories

pytestmark = pytest.mark.django_db

CLIENT = Client(address="127.0.0.1", port=50000)


def test_one_query_however_many_key_and_token_sessions(
    make_user: Callable[..., Any], django_assert_num_queries: Any
) -> None:
    user = make_user("alice")
    pks = []
    for i in range(4):
        key, _ = api_key_create(user=user, name=f"k{i}")
        parent = session_create(
            credentials=Credentials.API_KEY, client=CLIENT, user=user, api_key=key
        ).session
        child = factories.session(credentials=Credentials.TOKEN, user=user, parent=parent)
        child.save()
        pks += [parent.pk, child.pk]
    with django_assert_num_queries(1):
        assert set(_socket_states(dict.fromkeys(pks, CLIENT))) == set(pks)


def test_a_revoked_key_ends_its_session_and_the_tokens_under_it(make_user: Callable[..., Any]) -> None:
    user = make_user("alice")
    key, _ = api_key_create(user=user, name="k")
    parent = session_create(credentials=Credentials.API_KEY, client=CLIENT, user=user, api_key=key).session
    child = factories.session(credentials=Credentials.TOKEN, user=user, parent=parent)
    child.save()
    api_key_revoke(key=key, reason="test", actor=None)
    assert _socket_states({parent.pk: CLIENT, child.pk: CLIENT}) == {}
    parent.refresh_from_db()
    child.refresh_from_db()
    assert parent.ended_at is not None
    assert child.ended_at is not None
