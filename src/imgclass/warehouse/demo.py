"""Realistic synthetic traffic for exploring the analytics: ``imgclass demo seed``.

Events go through ``Recorder.record_batch`` (the recorder's own dimension handling, in
batched transactions so a million events take minutes, not hours), then a little ground
truth goes into ``prediction_feedback``. The shape of the traffic:

* eight users (seven named, plus anonymous callers), each with its own IPs and user
  agents and a skewed share of the traffic; named demo users have negative user ids
  (they are not accounts and have no API key);
* diurnal traffic peaking mid-afternoon UTC with a morning shoulder, quieter weekends;
* a long-tail (Zipf, s = 1.1) class distribution over the real ImageNet classes, led
  by cats, dogs, coffee and pizza;
* log-normal latency (~11 ms primary model, ~6 ms int8 fallback, < 2 ms cache hits,
  a 2% slow tail); about 12% cache hits (repeated images) and 3% fallback answers;
* about 2.5% failures with the service's real error codes, plus one model outage of
  45 minutes (503 ``model_unavailable``, more fallback answers around it);
* feedback on about 1.5% of answers, more often correct when the model was confident.

The same ``seed`` gives the same events (their times relative to ``now``), except for
their request ids: those carry a random run id as well, so that seeding a warehouse twice
with one seed adds new requests instead of a second fact row under each old request id.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import Engine, select

from imgclass.warehouse.db import WRITE
from imgclass.warehouse.recorder import (
    ClassFacts,
    Event,
    ImageFacts,
    ModelFacts,
    Recorder,
    Requester,
)
from imgclass.warehouse.schema import NONE_KEY, class_dim, prediction_feedback

BATCH = 5000  # events per transaction
CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0 Safari/537.36"
)
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"
SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15"
)
# (username, share of traffic, IPs, user agents)
USERS = [
    ("alice", 0.28, ["10.0.0.11", "10.0.0.12"], [CHROME, "curl/8.5.0"]),
    ("bob", 0.18, ["10.0.1.20"], ["python-requests/2.32.3"]),
    ("carol", 0.14, ["192.168.1.7", "192.168.1.8"], [FIREFOX]),
    ("dave", 0.11, ["203.0.113.45"], ["imgclass-batch/1.0"]),
    ("erin", 0.08, ["198.51.100.23"], [SAFARI]),
    ("frank", 0.06, ["10.0.2.5"], ["Go-http-client/2.0"]),
    ("grace", 0.04, ["172.16.4.2"], ["curl/8.5.0"]),
    ("anonymous", 0.11, ["203.0.113.200", "198.51.100.99", "192.0.2.10"], [CHROME, "Wget/1.21.4"]),
]
# (status, error_code, share of the ordinary failures)
FAILURES = [
    (415, "unsupported_media_type", 0.40),
    (422, "corrupt_image", 0.25),
    (401, "unauthorized", 0.12),
    (400, "no_image", 0.08),
    (422, "image_too_large", 0.08),
    (413, "payload_too_large", 0.07),
]
# The head of the long tail: what people photograph most (ImageNet ids), in order.
POPULAR = [281, 285, 207, 208, 967, 504, 963, 282, 263, 817, 430, 959, 151, 283, 250]
FAILURE_RATE = 0.025
CACHE_HIT_RATE = 0.12
FALLBACK_RATE = 0.03
FEEDBACK_RATE = 0.015
OUTAGE_MINUTES = 45
FORMATS = (["JPEG", "PNG", "WEBP", "GIF"], [0.72, 0.20, 0.06, 0.02])
PRIMARY = ModelFacts("efficientnet-lite0", "0.1.0+fp32", hashlib.sha256(b"demo fp32").hexdigest())
FALLBACK = ModelFacts("efficientnet-lite0", "0.1.0+int8", hashlib.sha256(b"demo int8").hexdigest())


@dataclass(frozen=True)
class SeedResult:
    events: int
    feedback: int
    first: datetime
    last: datetime


def _requesters() -> tuple[list[Requester], np.ndarray]:
    people, weights = [], []
    for index, (name, share, ips, agents) in enumerate(USERS):
        user_id = 0 if name == "anonymous" else -(index + 1)
        pairs = [(ip, agent) for ip in ips for agent in agents]
        for ip, agent in pairs:
            people.append(Requester(user_id, name, ip, agent))
            weights.append(share / len(pairs))
    return people, np.array(weights) / sum(weights)


def _times(rng: np.random.Generator, n: int, days: int, now: datetime) -> list[datetime]:
    """n sorted moments in the ``days`` days up to ``now``, diurnal and weekly."""
    hours = np.arange(24)
    diurnal = (
        0.15 + np.exp(-(((hours - 14) / 4.0) ** 2)) + 0.4 * np.exp(-(((hours - 9) / 2.0) ** 2))
    )
    start = (now - timedelta(days=days)).replace(minute=0, second=0, microsecond=0)
    slots = int((now - start).total_seconds() // 3600) + 1
    slot_start = [start + timedelta(hours=h) for h in range(slots)]
    weekday = np.array([0.5 if s.isoweekday() >= 6 else 1.0 for s in slot_start])
    weights = diurnal[[s.hour for s in slot_start]] * weekday
    chosen = rng.choice(slots, size=n, p=weights / weights.sum())
    offsets = rng.uniform(0, 3600, size=n)
    moments = sorted(
        slot_start[slot] + timedelta(seconds=float(offset))
        for slot, offset in zip(chosen, offsets, strict=True)
    )
    # The current hour is only partly over: fold anything in the future back an hour.
    return sorted(m if m <= now else m - timedelta(hours=1) for m in moments)


def generate(
    n: int,
    days: int,
    classes: Sequence[ClassFacts],
    now: datetime,
    seed: int = 0,
    run_id: str | None = None,
) -> tuple[list[Event], list[tuple[int, bool, int]]]:
    """The events, and feedback as (event index, is_correct, true class id).

    Request ids are ``demo-<seed>-<run_id>-<index>``; ``run_id`` is random unless given.
    """
    run = secrets.token_hex(4) if run_id is None else run_id
    rng = np.random.default_rng(seed)
    people, shares = _requesters()
    ids = [c.class_id for c in classes]
    head = [ids.index(c) for c in POPULAR if c in ids]
    ranks = np.array(head + [i for i in rng.permutation(len(classes)) if i not in head])
    zipf = 1.0 / np.arange(1, len(classes) + 1) ** 1.1
    times = _times(rng, n, days, now)
    outage_start = now - timedelta(days=rng.uniform(0.3, 0.8) * days)
    outage_end = outage_start + timedelta(minutes=OUTAGE_MINUTES)

    who = rng.choice(len(people), size=n, p=shares)
    cls = ranks[rng.choice(len(classes), size=n, p=zipf / zipf.sum())]
    roll = rng.random((n, 6))
    latency = rng.lognormal(np.log(11.0), 0.35, size=n)
    formats = rng.choice(len(FORMATS[0]), size=n, p=FORMATS[1])
    failure_kind = rng.choice(len(FAILURES), size=n, p=[w for *_, w in FAILURES])
    confidence = rng.beta(5, 2, size=n)
    recent: list[ImageFacts] = []
    events: list[Event] = []
    feedback: list[tuple[int, bool, int]] = []
    for i, when in enumerate(times):
        requester = people[who[i]]
        in_outage = outage_start <= when < outage_end
        request_id = f"demo-{seed}-{run}-{i:08d}"
        if roll[i, 0] < FAILURE_RATE or (in_outage and roll[i, 0] < 0.4):
            status, code, _ = (
                FAILURES[failure_kind[i]] if not in_outage else (503, "model_unavailable", 0)
            )
            image = None
            if status in (415, 422):  # the upload had bytes: it is an image row
                # Content from the seed alone (not the run): the same seed, the same images.
                content = f"demo-{seed}-{i:08d}".encode()
                image = ImageFacts(hashlib.sha256(content).hexdigest(), f"upload-{i}.bin", 2048)
            events.append(
                Event(
                    request_id,
                    when,
                    requester,
                    "predict",
                    status,
                    float(rng.uniform(0.8, 5.0)),
                    image=image,
                    error_code=code,
                )
            )
            continue
        cache_hit = bool(recent) and roll[i, 1] < CACHE_HIT_RATE
        fallback = not cache_hit and (
            roll[i, 2] < FALLBACK_RATE or (in_outage and roll[i, 2] < 0.5)
        )
        if cache_hit:
            image = recent[int(roll[i, 3] * len(recent))]
            ms = float(rng.uniform(0.3, 1.8))
        else:
            fmt = FORMATS[0][formats[i]]
            suffix = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif"}[fmt]
            width, height = [(640, 480), (1024, 768), (4032, 3024), (800, 800)][i % 4]
            image = ImageFacts(
                hashlib.sha256(f"{seed}-{i}".encode()).hexdigest(),
                f"IMG_{i % 10000:04d}.{suffix}",
                int(width * height * 0.25 * roll[i, 4] + 20_000),
                width,
                height,
                fmt,
                float(np.clip(rng.normal(118, 32), 5, 250)),
            )
            recent.append(image)
            if len(recent) > 500:
                recent.pop(0)
            ms = float(latency[i] * (0.55 if fallback else 1.0))
            if roll[i, 5] < 0.02:
                ms *= float(rng.uniform(3, 8))  # the slow tail: big uploads, a busy core
        conf = float(confidence[i] * (0.85 if fallback else 1.0))
        events.append(
            Event(
                request_id,
                when,
                requester,
                "predict",
                200,
                ms,
                image=image,
                predicted=classes[int(cls[i])],
                model=FALLBACK if fallback else PRIMARY,
                confidence=conf,
                cache_hit=cache_hit,
                is_fallback=fallback,
            )
        )
        if roll[i, 4] < FEEDBACK_RATE:
            correct = bool(rng.random() < 0.5 + 0.45 * conf)
            # A wrong answer's true class: one the model predicted elsewhere (so it has a row).
            other = events[int(rng.integers(len(events)))].predicted
            truth = classes[int(cls[i])].class_id if correct or other is None else other.class_id
            feedback.append((i, correct, truth))
    return events, feedback


def seed_demo(
    engine: Engine,
    *,
    events: int,
    days: int,
    classes: Sequence[ClassFacts],
    now: datetime,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    run_id: str | None = None,
) -> SeedResult:
    """Generate and record ``events`` synthetic events over the ``days`` days up to ``now``."""
    generated, feedback = generate(events, days, classes, now, seed, run_id)
    recorder = Recorder(engine)
    ids: list[int] = []
    for start in range(0, len(generated), BATCH):
        chunk = generated[start : start + BATCH]
        ids += recorder.record_batch(chunk)
        if progress is not None:
            progress(len(chunk))
    class_keys = _class_keys(engine)
    rows = [
        {
            "event_id": ids[index],
            "true_class_key": class_keys.get(truth, NONE_KEY),
            "is_correct": correct,
            "user_id": generated[index].requester.user_id,
            "created_at": generated[index].event_time + timedelta(minutes=5),
        }
        for index, correct, truth in feedback
    ]
    if rows:
        with engine.connect() as conn:
            conn.execution_options(**WRITE)
            with conn.begin():
                conn.execute(prediction_feedback.insert(), rows)
    return SeedResult(
        len(generated),
        len(rows),
        generated[0].event_time if generated else now,
        generated[-1].event_time if generated else now,
    )


def _class_keys(engine: Engine) -> dict[int, int]:
    with engine.connect() as conn:
        return dict(conn.execute(select(class_dim.c.class_id, class_dim.c.class_key)).all())
