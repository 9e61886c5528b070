"""The result cache: repeated images are answered without the model, identically, and recorded."""

from __future__ import annotations

import os

import pytest

from imgclass.app import create_app, services
from imgclass.ops.cache import RedisCache
from tests.api.test_predict import post_files
from tests.conftest import fact_rows, jpeg_bytes, make_settings
from tests.support.system import IN_CI

REDIS_URL = "redis://127.0.0.1:6379/0"


def unique_photo(photos, seed: int) -> bytes:
    """The cat photo with a few random pixels: same class, bytes no other test sends."""
    img = photos["chelsea"].copy()
    rng = os.urandom(12)
    for i in range(0, 12, 3):
        img.putpixel((rng[i], rng[i + 1]), (rng[i + 2], seed % 256, 0))
    return jpeg_bytes(img)


def strip_volatile(body: dict) -> list:
    """The parts of an answer a cache hit must reproduce exactly."""
    return [(r["filename"], r["predictions"]) for r in body["results"]]


def test_a_repeated_image_is_a_recorded_cache_hit_with_the_same_answer(client, app, photos):
    image = unique_photo(photos, 1)
    first = post_files(client, [("a.jpg", image)]).get_json()
    second = post_files(client, [("a.jpg", image)]).get_json()
    assert [r["cached"] for r in first["results"] + second["results"]] == [False, True]
    assert strip_volatile(first) == strip_volatile(second)
    assert second["model"] == first["model"] == {**first["model"], "fallback": False}

    rows = fact_rows(app)
    assert [r["cache_hit"] for r in rows] == [0, 1]
    assert rows[0]["class_id"] == rows[1]["class_id"]
    # A hit is a complete fact: image size and brightness come from the cache entry.
    keys = ("width", "height", "format", "bytes", "brightness", "model_version")
    assert [rows[1][k] for k in keys] == [rows[0][k] for k in keys]


def test_top_k_and_content_are_part_of_the_key(client, app, photos):
    image = unique_photo(photos, 2)
    post_files(client, [("a.jpg", image)])
    other_k = post_files(client, [("a.jpg", image)], query="?top_k=3").get_json()
    other_bytes = post_files(client, [("a.jpg", unique_photo(photos, 2))]).get_json()
    assert (
        other_k["results"][0]["cached"] is False and len(other_k["results"][0]["predictions"]) == 3
    )
    assert other_bytes["results"][0]["cached"] is False


def test_hits_and_misses_mix_in_one_request(client, app, photos, coffee_jpeg):
    cat = unique_photo(photos, 3)
    post_files(client, [("cat.jpg", cat)])
    body = post_files(client, [("coffee.jpg", coffee_jpeg), ("cat.jpg", cat)]).get_json()
    assert [r["cached"] for r in body["results"]] == [False, True]
    assert [r["filename"] for r in body["results"]] == ["coffee.jpg", "cat.jpg"]


def test_a_disabled_cache_never_hits(settings, photos):
    settings.cache_entries = 0
    app = create_app(settings)
    client = app.test_client()
    image = unique_photo(photos, 4)
    bodies = [post_files(client, [("a.jpg", image)]).get_json() for _ in range(2)]
    assert [b["results"][0]["cached"] for b in bodies] == [False, False]
    services(app).engine.dispose()


@pytest.fixture
def redis_available():
    cache = RedisCache(REDIS_URL, 60)
    try:
        cache._redis.ping()
    except Exception as exc:  # any failure to reach the server
        if IN_CI:
            pytest.fail(f"Redis at {REDIS_URL} is not reachable: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} is not reachable: {exc}")


def make_app(tmp_path, model_dir, name: str, **overrides):
    return create_app(make_settings(tmp_path / name, model_dir, **overrides))


def test_redis_cache_is_shared_between_processes_apps(redis_available, tmp_path, model_dir, photos):
    """Two apps (as two workers or replicas would be) share answers through a real Redis."""
    first = make_app(tmp_path, model_dir, "one", redis_url=REDIS_URL)
    second = make_app(tmp_path, model_dir, "two", redis_url=REDIS_URL)
    image = unique_photo(photos, 5)
    a = post_files(first.test_client(), [("a.jpg", image)]).get_json()
    b = post_files(second.test_client(), [("a.jpg", image)]).get_json()
    assert (a["results"][0]["cached"], b["results"][0]["cached"]) == (False, True)
    assert strip_volatile(a) == strip_volatile(b)
    assert [r["cache_hit"] for r in fact_rows(second)] == [1]
    for app in (first, second):
        services(app).engine.dispose()


def test_another_model_never_reads_old_entries(redis_available, tmp_path, model_dir, photos):
    fp32 = make_app(tmp_path, model_dir, "fp32", redis_url=REDIS_URL)
    int8 = make_app(tmp_path, model_dir, "int8", redis_url=REDIS_URL, model_precision="int8")
    image = unique_photo(photos, 6)
    post_files(fp32.test_client(), [("a.jpg", image)])
    body = post_files(int8.test_client(), [("a.jpg", image)]).get_json()
    assert body["results"][0]["cached"] is False
    assert body["model"]["version"].endswith("int8")
    for app in (fp32, int8):
        services(app).engine.dispose()


def test_an_unreachable_redis_costs_the_cache_not_the_request(tmp_path, model_dir, photos):
    # Port 9 (discard) on loopback: nothing listens, connections are refused at once.
    app = make_app(tmp_path, model_dir, "down", redis_url="redis://127.0.0.1:9/0")
    client = app.test_client()
    image = unique_photo(photos, 7)
    bodies = [post_files(client, [("a.jpg", image)]) for _ in range(2)]
    assert [b.status_code for b in bodies] == [200, 200]
    assert [b.get_json()["results"][0]["cached"] for b in bodies] == [False, False]
    assert len(fact_rows(app)) == 2
    services(app).engine.dispose()


def test_memory_entries_expire_after_their_ttl(settings, photos):
    import time

    settings.cache_ttl_s = 0.5
    app = create_app(settings)
    client = app.test_client()
    image = unique_photo(photos, 8)
    post_files(client, [("a.jpg", image)])
    time.sleep(0.6)
    body = post_files(client, [("a.jpg", image)]).get_json()
    assert body["results"][0]["cached"] is False
    services(app).engine.dispose()


def test_cached_result_round_trips_through_json():
    from imgclass.ops.cache import CachedResult
    from imgclass.vision.classifier import Prediction

    entry = CachedResult((Prediction(281, "tabby", 0.123456789),), 451, 300, "JPEG", 99.5)
    assert CachedResult.from_json(entry.to_json()) == entry
