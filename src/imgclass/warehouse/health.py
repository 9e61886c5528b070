"""Readiness probe for the warehouse: prove the database accepts a write right now."""

from __future__ import annotations

from sqlalchemy import Engine, update

from imgclass.warehouse.db import WRITE
from imgclass.warehouse.recorder import utc_now
from imgclass.warehouse.schema import service_heartbeat


def check_writable(engine: Engine) -> None:
    """Write (and commit) the heartbeat row; raises SQLAlchemyError if that fails."""
    with engine.connect() as conn:
        conn.execution_options(**WRITE)
        with conn.begin():
            now = utc_now()
            changed = conn.execute(
                update(service_heartbeat).where(service_heartbeat.c.id == 1).values(checked_at=now)
            ).rowcount
            if not changed:
                conn.execute(service_heartbeat.insert().values(id=1, checked_at=now))
