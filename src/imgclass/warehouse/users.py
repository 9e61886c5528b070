"""API accounts: create, list, revoke, rotate keys, and resolve a bearer key to its user.

Keys are random (256 bits), shown once, and stored only as their sha256: a
slow password hash buys nothing for keys this long, and a fast hash keeps
authentication a single indexed lookup per request.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError

from imgclass.warehouse.db import WRITE
from imgclass.warehouse.recorder import utc_now
from imgclass.warehouse.schema import api_user

KEY_PREFIX = "imgc_"
USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
RESERVED_NAMES = {"anonymous"}


class UserError(ValueError):
    """A user-management request that cannot be carried out (message says why)."""


@dataclass(frozen=True)
class Account:
    user_id: int
    username: str
    is_admin: bool
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _account(row) -> Account:
    return Account(row.user_id, row.username, bool(row.is_admin), row.created_at, row.revoked_at)


class UserStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def add(
        self, username: str, *, admin: bool = False, key: str | None = None
    ) -> tuple[Account, str]:
        """Create a user; returns the account and its API key (the only time it exists).

        ``key`` sets the key instead of a random one (an admin key kept in a secret store).
        """
        if not USERNAME_RE.match(username) or username.lower() in RESERVED_NAMES:
            raise UserError(
                f"invalid username {username!r}: use 1-64 letters, digits or _ . @ -, "
                "not starting with a symbol, and not 'anonymous'"
            )
        key = key or new_key()
        values = {
            "username": username,
            "key_hash": hash_key(key),
            "is_admin": admin,
            "created_at": utc_now(),
        }
        try:
            with self.engine.connect() as conn:
                conn.execution_options(**WRITE)
                with conn.begin():
                    user_id = conn.execute(api_user.insert().values(**values)).inserted_primary_key[
                        0
                    ]
        except IntegrityError as exc:
            raise UserError(f"user {username!r} already exists") from exc
        return Account(user_id, username, admin, values["created_at"], None), key

    def list(self) -> list[Account]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(api_user).order_by(api_user.c.user_id)).all()
        return [_account(r) for r in rows]

    def revoke(self, username: str) -> Account:
        with self.engine.connect() as conn:
            conn.execution_options(**WRITE)
            with conn.begin():
                conn.execute(
                    update(api_user)
                    .where(api_user.c.username == username, api_user.c.revoked_at.is_(None))
                    .values(revoked_at=utc_now())
                )
                row = conn.execute(select(api_user).where(api_user.c.username == username)).first()
        if row is None:
            raise UserError(f"no user named {username!r}")
        return _account(row)

    def rotate_key(self, username: str, key: str | None = None) -> tuple[Account, str]:
        """Give ``username`` a new key (``key``, or a random one); the old one stops working.

        A revoked account is active again with the new key.
        """
        key = key or new_key()
        try:
            with self.engine.connect() as conn:
                conn.execution_options(**WRITE)
                with conn.begin():
                    conn.execute(
                        update(api_user)
                        .where(api_user.c.username == username)
                        .values(key_hash=hash_key(key), revoked_at=None)
                    )
                    row = conn.execute(
                        select(api_user).where(api_user.c.username == username)
                    ).first()
        except IntegrityError as exc:  # another account holds that very key
            raise UserError(f"that key belongs to another user than {username!r}") from exc
        if row is None:
            raise UserError(f"no user named {username!r}")
        return _account(row), key

    def authenticate(self, key: str) -> Account | None:
        """The active account owning ``key``, or None."""
        # The presented key is never compared with a stored one, so no comparison can leak
        # through its timing: the database looks up the key's sha256 in a unique index. What
        # an index search's timing could reveal is how a digest sorts against stored digests,
        # and steering the digest of a guess needs a sha256 preimage, so that reveals nothing
        # about any key (the reason hmac.compare_digest exists does not apply to a lookup by
        # a cryptographic digest).
        with self.engine.connect() as conn:
            row = conn.execute(
                select(api_user).where(
                    api_user.c.key_hash == hash_key(key), api_user.c.revoked_at.is_(None)
                )
            ).first()
        return _account(row) if row else None

    def has_active_admin(self) -> bool:
        with self.engine.connect() as conn:
            count = conn.execute(
                select(func.count())
                .select_from(api_user)
                .where(api_user.c.is_admin.is_(True), api_user.c.revoked_at.is_(None))
            ).scalar_one()
        return count > 0
