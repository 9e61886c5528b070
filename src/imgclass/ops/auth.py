"""Bearer-key authentication: who is asking, and may they?"""

from __future__ import annotations

from imgclass.errors import Forbidden, Unauthorized
from imgclass.warehouse.users import Account, UserStore

ANONYMOUS = "anonymous"


def bearer_key(authorization: str | None) -> str | None:
    """The key from an ``Authorization: Bearer KEY`` header, None when absent.

    A header that is present but malformed is an error rather than "anonymous":
    a client that tried to authenticate should learn that it failed.
    """
    if authorization is None or not authorization.strip():
        return None
    scheme, _, key = authorization.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise Unauthorized("use an 'Authorization: Bearer <API key>' header")
    return key


def authenticate(users: UserStore, authorization: str | None, *, required: bool) -> Account | None:
    """The account behind the request's key; None for an allowed anonymous request."""
    key = bearer_key(authorization)
    if key is None:
        if required:
            raise Unauthorized("an API key is required: send 'Authorization: Bearer <API key>'")
        return None
    account = users.authenticate(key)
    if account is None:
        raise Unauthorized("the API key is not valid (unknown or revoked)")
    return account


def require_admin(users: UserStore, authorization: str | None) -> Account:
    account = authenticate(users, authorization, required=True)
    assert account is not None
    if not account.is_admin:
        raise Forbidden("this endpoint needs an admin API key")
    return account
