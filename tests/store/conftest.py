"""Fixtures of the store tests."""

from __future__ import annotations

import pytest
import redis

from tests.harness.store import IDENTITY
from vora.store.directory import Directory

OWNERS = ("alice", "bob", "carol")


@pytest.fixture
def owners(redisdb: redis.Redis) -> None:
    """Give IDENTITY to every user the store tests open sessions for."""
    directory = Directory(redisdb)
    for subject in OWNERS:
        directory.add(subject, [IDENTITY])
