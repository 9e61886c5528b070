"""Accounts: keys are shown once and stored hashed; revoked keys stop working (both backends)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from imgclass.warehouse.schema import api_user
from imgclass.warehouse.users import UserError, UserStore, hash_key

pytestmark = pytest.mark.backends


@pytest.fixture
def users(db_engine) -> UserStore:
    return UserStore(db_engine)


def test_add_authenticate_revoke(users):
    _account, key = users.add("alice")
    assert key.startswith("imgc_") and len(key) > 40
    assert users.authenticate(key).username == "alice"
    assert users.authenticate(key + "x") is None
    users.revoke("alice")
    assert users.authenticate(key) is None
    assert not users.list()[0].active


def test_only_the_hash_is_stored(users):
    _, key = users.add("bob", admin=True)
    with users.engine.connect() as conn:
        row = conn.execute(select(api_user)).one()._mapping
    assert key not in [str(v) for v in row.values()]
    assert row["key_hash"] == hash_key(key)
    assert users.has_active_admin()


@pytest.mark.parametrize(
    "name", ["", "anonymous", "-x", "a b", "x" * 65, "../etc", "robert'); DROP TABLE api_user;--"]
)
def test_bad_usernames_are_refused(users, name):
    with pytest.raises(UserError):
        users.add(name)


def test_duplicates_and_unknown_users(users):
    users.add("carol")
    with pytest.raises(UserError, match="already exists"):
        users.add("carol")
    with pytest.raises(UserError, match="no user"):
        users.revoke("nobody")
