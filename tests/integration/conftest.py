"""Fixtures of the integration tests: see `tests.integration.servers`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration import servers


@pytest.fixture(scope="module")
def server_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture
def create_user() -> Callable[..., Any]:
    """``create_user("alice", superuser=False)``: a user the servers can log in (password PASSWORD)."""
    return servers.create_user
