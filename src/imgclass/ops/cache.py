"""The result cache: identical image bytes + model + top_k → the answer, without the model.

The key is the sha256 of the uploaded bytes, the serving model's own sha256 and
version, and top_k, so a new model (or a re-export) never reads an old entry.
A hit skips decoding too: the entry carries what the warehouse records about
the image (size, format, brightness), so a hit is still a complete fact row.

Two backends: an in-process LRU with a TTL (cachetools; the default, per
worker) and Redis (``IMGCLASS_REDIS_URL``; shared by every worker and replica).
The cache is an optimisation, never a dependency: a Redis error is logged and
counted as a miss, and the request goes on to the model.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Protocol

import cachetools

from imgclass.vision.classifier import ModelInfo, Prediction

log = logging.getLogger(__name__)

KEY_PREFIX = "imgclass:result:v1"


@dataclass(frozen=True)
class CachedResult:
    predictions: tuple[Prediction, ...]
    width: int
    height: int
    format: str
    brightness: float | None

    def to_json(self) -> str:
        return json.dumps(
            {
                "p": [[p.class_id, p.label, p.score] for p in self.predictions],
                "w": self.width,
                "h": self.height,
                "f": self.format,
                "b": self.brightness,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> CachedResult:
        data = json.loads(raw)
        return cls(
            tuple(Prediction(int(c), str(label), float(s)) for c, label, s in data["p"]),
            int(data["w"]),
            int(data["h"]),
            str(data["f"]),
            None if data["b"] is None else float(data["b"]),
        )


def cache_key(model: ModelInfo, top_k: int, image_sha256: str) -> str:
    return f"{KEY_PREFIX}:{model.name}:{model.version}:{model.sha256}:{top_k}:{image_sha256}"


class ResultCache(Protocol):
    backend: str

    def get(self, key: str) -> CachedResult | None: ...

    def put(self, key: str, value: CachedResult) -> None: ...


class MemoryCache:
    """Per-process LRU with a time-to-live; thread-safe."""

    backend = "memory"

    def __init__(self, max_entries: int, ttl_s: float):
        self._entries: cachetools.TTLCache = cachetools.TTLCache(max_entries, ttl_s)
        self._lock = threading.Lock()  # cachetools caches are not thread-safe

    def get(self, key: str) -> CachedResult | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: str, value: CachedResult) -> None:
        with self._lock:
            self._entries[key] = value


class RedisCache:
    """Shared by every process that points at the same Redis; entries expire after the TTL."""

    backend = "redis"

    def __init__(self, url: str, ttl_s: float, *, timeout_s: float = 0.25):
        import redis  # only needed when configured

        self.ttl_ms = max(1, int(ttl_s * 1000))
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._errors = (redis.RedisError, OSError)

    def get(self, key: str) -> CachedResult | None:
        try:
            raw = self._redis.get(key)
        except self._errors as exc:
            log.warning("result cache unavailable (read): %s", exc)
            return None
        if raw is None:
            return None
        try:
            return CachedResult.from_json(raw)
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed result cache entry %s", key)
            return None

    def put(self, key: str, value: CachedResult) -> None:
        try:
            self._redis.set(key, value.to_json(), px=self.ttl_ms)
        except self._errors as exc:
            log.warning("result cache unavailable (write): %s", exc)


def make_cache(*, max_entries: int, ttl_s: float, redis_url: str | None) -> ResultCache | None:
    """The configured cache, or None when disabled (``max_entries`` 0 and no Redis)."""
    if redis_url:
        return RedisCache(redis_url, ttl_s)
    if max_entries <= 0:
        return None
    return MemoryCache(max_entries, ttl_s)
