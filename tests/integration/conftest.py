"""Fixtures of the integration tests: see `tests.integration.servers`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.servers import PASSWORD_HASH


@pytest.fixture(scope="module")
def server_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture
def create_user(django_user_model: Any) -> Callable[..., Any]:
    """``create_user("alice", superuser=False)``: a user the servers can log in (password PASSWORD)."""

    def create(username: str, *, superuser: bool = False) -> Any:
        model = django_user_model
        user = model(username=username, is_superuser=superuser, is_staff=superuser)
        user.password = PASSWORD_HASH
        user.save()
        return user

    return create
