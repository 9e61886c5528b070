"""Small read-only aggregates over the star schema, meant for the analytics engine.

``Services.analytics_engine`` is the read replica when
``IMGCLASS_ANALYTICS_DATABASE_URL`` is set (the primary otherwise): queries here
only read, so they run on either.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, func, select

from imgclass.warehouse.schema import NONE_KEY, api_event_fact, class_dim


@dataclass(frozen=True)
class ClassCount:
    class_id: int
    class_name: str
    requests: int


def requests_per_class(engine: Engine) -> list[ClassCount]:
    """Classified images per predicted class, most frequent first (failures excluded)."""
    requests = func.count().label("requests")
    query = (
        select(class_dim.c.class_id, class_dim.c.class_name, requests)
        .select_from(api_event_fact.join(class_dim))
        .where(api_event_fact.c.class_key != NONE_KEY)
        .group_by(class_dim.c.class_id, class_dim.c.class_name)
        .order_by(requests.desc(), class_dim.c.class_id)
    )
    with engine.connect() as conn:
        return [ClassCount(*row) for row in conn.execute(query)]
