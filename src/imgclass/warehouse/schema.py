"""The star schema (SQLAlchemy Core): one fact table and its dimensions.

    api_event_fact ─┬─ time_dim   (minute grain: hour, day, weekday, week, month, quarter, year)
                    ├─ user_dim   (account, IP address, user agent)
                    ├─ image_dim  (content sha256 + filename, size, format, bytes)
                    ├─ class_dim  (ImageNet class)
                    └─ model_dim  (which model answered)
    prediction_feedback ── api_event_fact  (ground truth: the true class of an event)
    class_dim ── class_concept ── concept_dim  (snowflake: WordNet hypernyms of each class)

One fact row per classified image; a failed request is a fact too, pointing at
the special "none" members of image_dim/class_dim/model_dim (key 0) rather
than at NULL, so every join stays an inner join. ``api_user`` holds accounts
(API-key hashes), ``service_heartbeat`` and ``backup_receipt`` operational facts;
they are not part of the star. Every change to these tables goes through an
Alembic migration in ``warehouse/migrations``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Key of the special dimension member used where a fact has no image/class/model.
NONE_KEY = 0
ANONYMOUS_USER_ID = 0

time_dim = Table(
    "time_dim",
    metadata,
    # YYYYMMDDHHMM in UTC, e.g. 202611251432: readable and ordered.
    Column("timestamp_key", BigInteger, primary_key=True, autoincrement=False),
    Column("minute_start", DateTime, nullable=False),
    Column("minute", SmallInteger, nullable=False),
    Column("hour", SmallInteger, nullable=False),
    Column("day", Date, nullable=False),
    Column("weekday", SmallInteger, nullable=False),  # ISO: 1 = Monday … 7 = Sunday
    Column("week", SmallInteger, nullable=False),  # ISO week number
    Column("month", SmallInteger, nullable=False),
    Column("quarter", SmallInteger, nullable=False),
    Column("year", SmallInteger, nullable=False),
)

user_dim = Table(
    "user_dim",
    metadata,
    Column("user_key", Integer, primary_key=True),
    Column("user_id", Integer, nullable=False),  # api_user.user_id; 0 = anonymous
    Column("username", String(64), nullable=False),
    Column("ip_address", String(45), nullable=False),
    Column("user_agent", String(512), nullable=False),
    UniqueConstraint("user_id", "ip_address", "user_agent", name="uq_user_dim_natural"),
)

image_dim = Table(
    "image_dim",
    metadata,
    Column("image_key", Integer, primary_key=True),
    Column("image_id", String(64), nullable=False),  # sha256 of the content (hex)
    Column("image_filename", String(255), nullable=False),
    Column("width", Integer),
    Column("height", Integer),
    Column("format", String(16)),
    Column("bytes", Integer),
    Column("brightness", Float),  # mean luma 0-255 of the decoded image (input drift)
    UniqueConstraint("image_id", "image_filename", name="uq_image_dim_natural"),
)

class_dim = Table(
    "class_dim",
    metadata,
    Column("class_key", Integer, primary_key=True),
    Column("class_id", Integer, nullable=False, unique=True),  # ImageNet index; -1 = none
    Column("class_name", String(128), nullable=False),
    Column("wnid", String(16)),  # WordNet synset id
    # Short, unique, comma-free name for analytics filters: "tabby", "Persian_cat" (0003).
    Column("label", String(128), nullable=False, server_default=""),
)

model_dim = Table(
    "model_dim",
    metadata,
    Column("model_key", Integer, primary_key=True),
    Column("model_name", String(64), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("sha256", String(64), nullable=False),
    UniqueConstraint("model_name", "model_version", "sha256", name="uq_model_dim_natural"),
)

api_event_fact = Table(
    "api_event_fact",
    metadata,
    Column("event_id", Integer, primary_key=True),
    Column("request_id", String(64), nullable=False),
    Column("timestamp_key", BigInteger, ForeignKey("time_dim.timestamp_key"), nullable=False),
    Column("user_key", Integer, ForeignKey("user_dim.user_key"), nullable=False),
    Column("image_key", Integer, ForeignKey("image_dim.image_key"), nullable=False),
    Column("class_key", Integer, ForeignKey("class_dim.class_key"), nullable=False),
    Column("model_key", Integer, ForeignKey("model_dim.model_key"), nullable=False),
    Column("event_time", DateTime, nullable=False),  # exact UTC time the request arrived
    Column("time_taken", Float, nullable=False),  # ms spent on this image (or the failure)
    Column("request_count", Integer, nullable=False, default=1),
    Column("confidence", Float),  # top-1 score; NULL for failures
    Column("status_code", SmallInteger, nullable=False),
    Column("error_code", String(64)),  # NULL on success
    Column("endpoint", String(64), nullable=False),
    # Answered from the result cache without running the model.
    Column("cache_hit", Boolean, nullable=False, default=False, server_default="0"),
    # Answered by the fallback classifier because the primary failed or its breaker is open.
    Column("is_fallback", Boolean, nullable=False, default=False, server_default="0"),
    Index("ix_api_event_fact_request_id", "request_id"),
    Index("ix_api_event_fact_timestamp_key", "timestamp_key"),
    # Percentiles of a time range as the k-th index entry (0004; cube totals on SQLite).
    Index("ix_api_event_fact_latency", "time_taken", "timestamp_key", "user_key", "class_key"),
)

prediction_feedback = Table(
    "prediction_feedback",
    metadata,
    # Ground truth for one fact row: the class a caller says the image really shows.
    # One row per event; a second feedback for the same event replaces the first.
    Column("feedback_id", Integer, primary_key=True),
    Column("event_id", Integer, ForeignKey("api_event_fact.event_id"), nullable=False, unique=True),
    Column("true_class_key", Integer, ForeignKey("class_dim.class_key"), nullable=False),
    Column("is_correct", Boolean, nullable=False),  # true class == predicted class
    Column("user_id", Integer, nullable=False),  # api_user.user_id of who gave it; 0 = anonymous
    Column("created_at", DateTime, nullable=False),
)

concept_dim = Table(
    "concept_dim",
    metadata,
    # A WordNet noun synset on the hypernym path of some ImageNet class (0003).
    Column("concept_key", Integer, primary_key=True, autoincrement=False),
    Column("wnid", String(16), nullable=False, unique=True),
    Column("name", String(128), nullable=False),  # first lemma: "domestic_cat"
    Column("depth", SmallInteger, nullable=False),  # 0 = top category (animal, artifact…)
    Column("parent_key", Integer, ForeignKey("concept_dim.concept_key")),
)

class_concept = Table(
    "class_concept",
    metadata,
    # One row per ImageNet class and depth 0..max: the class's ancestor at that depth.
    # Below the class's own depth the row points at the class's own concept, so that
    # grouping by the concept at depth N counts every class exactly once.
    # Keyed by class_id (the ImageNet index), not class_key: it is filled by the
    # migration, before and independently of the class_dim rows the recorder creates.
    Column("class_id", Integer, primary_key=True, autoincrement=False),
    Column("depth", SmallInteger, primary_key=True, autoincrement=False),
    Column("concept_key", Integer, ForeignKey("concept_dim.concept_key"), nullable=False),
    Index("ix_class_concept_concept_key", "concept_key"),
)


def _aggregate(name: str, *keys: Column, time_key: str = "day_key") -> Table:
    """A daily (0004) or hourly (0005) roll-up of api_event_fact by ``keys``.

    Kept current by the Recorder. Additive measures only (sums, counts, min, max), so the
    cube can answer coarse-grained queries from a few thousand rows instead of every fact.
    Percentiles and distinct counts other than users still read the facts.
    """
    return Table(
        name,
        metadata,
        # day_key YYYYMMDD or hour_key YYYYMMDDHH, UTC
        Column(
            time_key,
            BigInteger if time_key == "hour_key" else Integer,
            primary_key=True,
            autoincrement=False,
        ),
        *keys,
        Column("events", Integer, nullable=False),  # fact rows
        Column("requests", Integer, nullable=False),  # sum of request_count
        Column("errors", Integer, nullable=False),  # requests with status >= 400
        Column("time_sum", Float, nullable=False),
        Column("time_min", Float, nullable=False),
        Column("time_max", Float, nullable=False),
        Column("confidence_sum", Float, nullable=False),
        Column("confidence_count", Integer, nullable=False),
        Column("cache_hits", Integer, nullable=False),
        Column("fallbacks", Integer, nullable=False),
    )


agg_day_class = _aggregate(
    "agg_day_class", Column("class_key", Integer, primary_key=True, autoincrement=False)
)
agg_day_user = _aggregate(
    "agg_day_user", Column("user_key", Integer, primary_key=True, autoincrement=False)
)


def _outcome_keys() -> list[Column]:
    return [
        Column("model_key", Integer, primary_key=True, autoincrement=False),
        Column("status_code", SmallInteger, primary_key=True, autoincrement=False),
        # '' for success: NULL cannot be part of a key that upserts match on.
        Column("error_code", String(64), primary_key=True),
        Column("cache_hit", Boolean, primary_key=True),
        Column("is_fallback", Boolean, primary_key=True),
    ]


agg_day_outcome = _aggregate("agg_day_outcome", *_outcome_keys())
agg_hour_outcome = _aggregate("agg_hour_outcome", *_outcome_keys(), time_key="hour_key")
DAILY_AGGREGATES = (agg_day_class, agg_day_user, agg_day_outcome)
AGGREGATES = (*DAILY_AGGREGATES, agg_hour_outcome)

api_user = Table(
    "api_user",
    metadata,
    Column("user_id", Integer, primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False, unique=True),  # sha256 of the API key
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("created_at", DateTime, nullable=False),
    Column("revoked_at", DateTime),
)

service_heartbeat = Table(
    "service_heartbeat",
    metadata,
    # Written by /readyz to prove the database accepts writes.
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("checked_at", DateTime, nullable=False),
)

backup_receipt = Table(
    "backup_receipt",
    metadata,
    # One row per successful backup of a PostgreSQL warehouse (warehouse/backup_postgres.py),
    # so that every replica's backup-age metric sees a backup taken on any host.
    Column("name", String(64), primary_key=True),  # imgclass-YYYYMMDDTHHMMSS.ffffffZ
    Column("destination", String(1024), nullable=False),
    Column("created_at", DateTime, nullable=False),  # naive UTC, like the rest
)
