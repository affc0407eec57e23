"""Tests of the directory store: replacing a user's identities in one step, and the provisioning marker."""

from __future__ import annotations

import redis

from vora.store import keys
from vora.store.directory import Directory


def test_replace_answers_what_it_added_and_removed(redisdb: redis.Redis) -> None:
    """Replacing a user's set adds and removes in one script and says which; the same call again changes nothing."""
    directory = Directory(redisdb)
    directory.add("alice", ["1", "2", "3"])
    replaced = directory.replace("alice", ["3", "4"])
    assert (replaced.added, replaced.removed) == (["4"], ["1", "2"])
    assert directory.identities_of("alice") == ["3", "4"]
    again = directory.replace("alice", ["3", "4"])
    assert (again.added, again.removed) == ([], [])
    emptied = directory.replace("alice", [])
    assert emptied.removed == ["3", "4"]
    assert redisdb.exists(keys.user_identities("alice")) == 0


def test_every_write_marks_the_directory_provisioned_once(redisdb: redis.Redis) -> None:
    """Adding, removing or replacing sets the marker if it is absent and keeps the first time otherwise."""
    directory = Directory(redisdb)
    assert directory.provisioned_at() is None
    directory.remove("alice", ["1"])
    first = directory.provisioned_at()
    assert first is not None
    directory.replace("bob", ["2"])
    directory.add("carol", ["3"])
    assert directory.provisioned_at() == first
