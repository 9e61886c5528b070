"""Forgetting a user and pruning old events, without breaking the facts' counts.

``forget_user`` keeps every fact of the user (so totals, per-class counts and distinct-user
counts stay right) but points them at one pseudonymous member, ``forgotten-<user id>``, with
no address and no user agent, deletes the user's other dimension rows, blanks the filename of
every image row only the user's events use (a filename can be personal: ``passport.png``;
rows other users' events share keep theirs), and scrubs the account (renamed, key replaced,
revoked). It refuses to forget the last active admin unless told to: the running servers
would be left without an admin key, and ``<data dir>/admin-token`` with a dead one.
``prune_events`` deletes facts older than a cut-off, with their feedback, then every
dimension row no fact uses any more (the key-0 "none" members stay). Both recompute the
pre-summed aggregates (``aggregates.rebuild``) in the same transaction, so the cube's fast
paths agree with the facts afterwards.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, and_, delete, exists, func, select, update
from sqlalchemy.engine import Connection

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


class LastAdmin(UserError):
    """Forgetting this user would leave no active admin."""


@dataclass(frozen=True)
class ForgetReport:
    username: str
    pseudonym: str
    dimension_rows_removed: int
    facts_kept: int
    filenames_blanked: int = 0
    was_last_admin: bool = False


@dataclass(frozen=True)
class PruneReport:
    facts: int
    feedback: int
    users: int
    images: int
    minutes: int


def forget_user(engine: Engine, username: str, *, allow_last_admin: bool = False) -> ForgetReport:
    with engine.connect() as conn:
        conn.execution_options(**WRITE)
        with conn.begin():
            account = conn.execute(
                select(api_user.c.user_id, api_user.c.is_admin, api_user.c.revoked_at).where(
                    api_user.c.username == username
                )
            ).first()
            if account is None:
                raise UserError(f"no user named {username!r}")
            user_id = account.user_id
            last_admin = (
                bool(account.is_admin) and account.revoked_at is None and _active_admins(conn) == 1
            )
            if last_admin and not allow_last_admin:
                raise LastAdmin(
                    f"{username!r} is the last active admin: forgetting them revokes the only "
                    "admin key (and leaves a dead one in <data dir>/admin-token). Add another "
                    "admin first (imgclass users add NAME --admin), or pass --force"
                )
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
            blanked = _blank_own_filenames(conn, kept)
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
    return ForgetReport(username, pseudonym, len(others), facts, blanked, last_admin)


def _active_admins(conn: Connection) -> int:
    return conn.execute(
        select(func.count())
        .select_from(api_user)
        .where(api_user.c.is_admin.is_(True), api_user.c.revoked_at.is_(None))
    ).scalar_one()


def _blank_own_filenames(conn: Connection, user_key: int) -> int:
    """Blank the filename of the image rows only ``user_key``'s facts use; how many.

    The natural key is (content sha256, filename), so a row whose blank twin already exists
    (the same content, forgotten before) is merged into it: its facts move over and it is
    deleted. Facts keep pointing at the same content either way, so every count, distinct
    images included (they count content), stays the same.
    """
    f, i = api_event_fact.c, image_dim.c
    used_by_them = exists().where(f.image_key == i.image_key, f.user_key == user_key)
    used_by_others = exists().where(f.image_key == i.image_key, f.user_key != user_key)
    rows = conn.execute(
        select(i.image_key, i.image_id).where(
            i.image_key != NONE_KEY, i.image_filename != "", used_by_them, ~used_by_others
        )
    ).all()
    for row in rows:
        twin = conn.execute(
            select(i.image_key).where(i.image_id == row.image_id, i.image_filename == "")
        ).scalar()
        if twin is None:
            conn.execute(
                update(image_dim).where(i.image_key == row.image_key).values(image_filename="")
            )
        else:
            conn.execute(
                update(api_event_fact).where(f.image_key == row.image_key).values(image_key=twin)
            )
            conn.execute(delete(image_dim).where(i.image_key == row.image_key))
    return len(rows)


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
