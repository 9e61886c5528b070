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


def test_rotate_key_replaces_the_old_one_and_reinstates(users):
    _, old = users.add("dave", admin=True)
    account, new = users.rotate_key("dave")
    assert new != old and account.active and account.is_admin
    assert users.authenticate(old) is None
    assert users.authenticate(new).username == "dave"
    users.revoke("dave")
    given = "imgc_" + "k" * 40
    account, key = users.rotate_key("dave", given)
    assert key == given and account.active
    assert users.authenticate(given).username == "dave"
    with pytest.raises(UserError, match="no user"):
        users.rotate_key("nobody")
    _, erin = users.add("erin")
    with pytest.raises(UserError, match="another user"):
        users.rotate_key("dave", erin)
    assert users.authenticate(given).username == "dave"  # unchanged
