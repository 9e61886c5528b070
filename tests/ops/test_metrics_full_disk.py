"""A full data disk: requests fail with 503, and the metrics keep working.

prometheus_client writes through mmap; on a full filesystem a write to a not yet
allocated page kills the process with SIGBUS. With the metrics directory on the
data disk, a full disk became a worker crash loop; by default it is not there.
"""

from __future__ import annotations

import pytest

from tests.support.disk import fill
from tests.support.prom import parse, value
from tests.support.servers import http_get, post_image, start_imgclass

pytestmark = pytest.mark.slow


def test_full_data_disk_leaves_the_metrics_and_the_workers_alive(
    tmp_path, small_disk, model_dir, cat_jpeg
):
    server = start_imgclass(tmp_path / "run", model_dir, data_dir=small_disk / "data")
    try:
        server.wait_until("/readyz")
        assert post_image(server.base, cat_jpeg) == 200
        fill(small_disk)
        # New label values (statuses, routes) mean new entries in the metric files.
        for path in ("/no/such/page", "/another/missing/page"):
            assert http_get(server.base + path)[0] == 404
        assert post_image(server.base, cat_jpeg) == 503
        status, body = http_get(server.base + "/metrics")
        assert status == 200
        samples = parse(body.decode())
        assert value(samples, "imgclass_ready", check="database") == 0
        assert value(samples, "imgclass_data_dir_free_bytes") == 0
        labels = {"endpoint": "/api/v1/predict", "status": "503"}
        assert value(samples, "imgclass_http_requests_total", **labels) == 1
        (small_disk / "filler").unlink()
        assert post_image(server.base, cat_jpeg) == 200
    finally:
        output = server.stop()
    assert "SIGBUS" not in output and "was sent SIG" not in output, output
