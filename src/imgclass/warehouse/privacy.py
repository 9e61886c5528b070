"""Forgetting a user and pruning old events, without breaking the facts' counts.

``forget_user`` keeps every fact of the user (so totals, per-class counts and distinct-user
counts stay right) but points them at one pseudonymous member, ``forgotten-<user id>``, with
no address and no user agent, deletes the user's other dimension rows, and scrubs the
account (renamed, key replaced, revoked). ``prune_events`` deletes facts older than a cut-off,
with their feedback, then every dimension row no fact uses any more (the key-0 "none"
members stay). Both recompute the pre-summed aggregates (``aggregates.rebuild``) in the same
transaction, so the cube's fast paths agree with the facts afterwards.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, and_, delete, exists, select, update

from imgclass.warehouse.aggregates import rebuild as rebuild_aggregates
from imgclass.warehouse.db import WRITE
from imgclass.warehouse.recorder import utc_now
from imgclass.warehouse.schema import (
    NONE_KEY,
    api_event_fact,
    api_user,
    image_dim,
    prediction_feedback,
    time_dim,
    user_dim,
)
from imgclass.warehouse.users import UserError, hash_key


@dataclass(frozen=True)
class ForgetReport:
    username: str
    pseudonym: str
    dimension_rows_removed: int
    facts_kept: int


@dataclass(frozen=True)
class PruneReport:
    facts: int
    feedback: int
    users: int
    images: int
    minutes: int


def forget_user(engine: Engine, username: str) -> ForgetReport:
    with engine.connect() as conn:
        conn.execution_options(**WRITE)
        with conn.begin():
            account = conn.execute(
                select(api_user.c.user_id).where(api_user.c.username == username)
            ).first()
            if account is None:
                raise UserError(f"no user named {username!r}")
            user_id = account.user_id
            pseudonym = f"forgotten-{user_id}"
            old_keys = list(
                conn.execute(select(user_dim.c.user_key).where(user_dim.c.user_id == user_id))
                .scalars()
                .all()
            )
            natural = {"user_id": user_id, "ip_address": "", "user_agent": ""}
            kept = conn.execute(
                select(user_dim.c.user_key).where(
                    and_(*(user_dim.c[k] == v for k, v in natural.items()))
                )
            ).scalar()
            if kept is None:
                kept = conn.execute(
                    user_dim.insert().values(**natural, username=pseudonym)
                ).inserted_primary_key[0]
            conn.execute(
                update(user_dim).where(user_dim.c.user_key == kept).values(username=pseudonym)
            )
            others = [key for key in old_keys if key != kept]
            facts = conn.execute(
                update(api_event_fact)
                .where(api_event_fact.c.user_key.in_([*old_keys, kept]))
                .values(user_key=kept)
            ).rowcount
            if others:
                conn.execute(delete(user_dim).where(user_dim.c.user_key.in_(others)))
            # The per-user daily aggregate is keyed by user_key: recompute it from the facts.
            rebuild_aggregates(conn)
            conn.execute(
                update(api_user)
                .where(api_user.c.user_id == user_id)
                .values(
                    username=pseudonym,
                    key_hash=hash_key(secrets.token_urlsafe(32)),  # no key can match it
                    revoked_at=utc_now(),
                )
            )
    return ForgetReport(username, pseudonym, len(others), facts)


def prune_events(engine: Engine, older_than: datetime) -> PruneReport:
    """Delete events before ``older_than`` (naive UTC) and the dimension rows left unused."""
    old = select(api_event_fact.c.event_id).where(api_event_fact.c.event_time < older_than)
    with engine.connect() as conn:
        conn.execution_options(**WRITE)
        with conn.begin():
            feedback = conn.execute(
                delete(prediction_feedback).where(prediction_feedback.c.event_id.in_(old))
            ).rowcount
            facts = conn.execute(
                delete(api_event_fact).where(api_event_fact.c.event_time < older_than)
            ).rowcount
            counts = [
                conn.execute(
                    delete(table).where(
                        table.c[key] != NONE_KEY,
                        ~exists().where(api_event_fact.c[key] == table.c[key]),
                    )
                ).rowcount
                for table, key in (
                    (user_dim, "user_key"),
                    (image_dim, "image_key"),
                    (time_dim, "timestamp_key"),
                )
            ]
            # The daily/hourly aggregates still count the deleted events: recompute them.
            rebuild_aggregates(conn)
    return PruneReport(facts, feedback, *counts)
