"""A real `imgclass serve` (gunicorn, several workers) driven over HTTP, as the README says."""

from __future__ import annotations

import http.client
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import CAT_CLASSES, REPO
from tests.support.server import serve

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir):
    data_dir = tmp_path_factory.mktemp("serve") / "data"
    port = free_port()
    env = {
        **os.environ,
        "IMGCLASS_DATA_DIR": str(data_dir),
        "IMGCLASS_MODEL_DIR": str(model_dir),
        "IMGCLASS_PORT": str(port),
        "IMGCLASS_WORKERS": "2",
        "IMGCLASS_RATE_LIMIT_PER_IP": "",  # the concurrency test floods from one address
    }
    env.pop("IMGCLASS_DATABASE_URL", None)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "imgclass"), "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("server did not become ready:\n" + proc.stdout.read())
    yield base, data_dir
    proc.terminate()
    output, _ = proc.communicate(timeout=30)
    assert "Traceback" not in output, output
    # Every worker exits by itself: none aborted, none killed after the grace period.
    assert proc.returncode == 0 and "was sent SIG" not in output, output


def facts(data_dir: Path) -> list[tuple]:
    with sqlite3.connect(data_dir / "imgclass.db") as conn:
        return conn.execute(
            "SELECT f.request_id, c.class_id, u.username FROM api_event_fact f "
            "JOIN class_dim c USING (class_key) JOIN user_dim u USING (user_key) "
            "JOIN image_dim USING (image_key) JOIN time_dim USING (timestamp_key) "
            "JOIN model_dim USING (model_key)"
        ).fetchall()


def test_readme_curl_example(server):
    base, data_dir = server
    sample = REPO / "samples" / "cat.jpg"
    if not sample.exists():
        pytest.fail("samples/cat.jpg is missing: `make install` creates it")
    out = subprocess.run(
        ["curl", "-s", "-F", f"image=@{sample}", f"{base}/api/v1/predict"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    body = json.loads(out)
    assert body["results"][0]["predictions"][0]["class_id"] in CAT_CLASSES
    assert body["request_id"] in {row[0] for row in facts(data_dir)}
    assert (data_dir / "admin-token").is_file()


@pytest.mark.parametrize(
    ("agent", "stored"),
    [
        ("ünïcødé☃ agent".encode(), "ünïcødé☃ agent"),  # UTF-8, as curl -A sends it
        ("caf\u00e9/1.0".encode("latin-1"), "caf\u00e9/1.0"),  # not UTF-8: kept as latin-1
    ],
)
def test_a_non_ascii_user_agent_is_stored_as_sent(server, cat_jpeg, agent, stored):
    base, data_dir = server
    connection = http.client.HTTPConnection(base.removeprefix("http://"), timeout=60)
    connection.putrequest("POST", "/api/v1/predict?top_k=1")
    connection.putheader("Content-Type", "image/jpeg")
    connection.putheader("Content-Length", str(len(cat_jpeg)))
    connection.putheader("User-Agent", agent)  # raw bytes on the wire
    connection.endheaders(cat_jpeg)
    response = connection.getresponse()
    assert response.status == 200
    request_id = json.loads(response.read())["request_id"]
    connection.close()
    with sqlite3.connect(data_dir / "imgclass.db") as conn:
        (agent_stored,) = conn.execute(
            "SELECT u.user_agent FROM api_event_fact f JOIN user_dim u USING (user_key) "
            "WHERE f.request_id = ?",
            (request_id,),
        ).fetchone()
    assert agent_stored == stored


def test_concurrent_clients_across_workers_lose_nothing(server, cat_jpeg):
    base, data_dir = server
    before = Counter(row[0] for row in facts(data_dir))

    def send(i: int) -> tuple[int, str]:
        req = urllib.request.Request(
            f"{base}/api/v1/predict?top_k=1&filename={i}.jpg",
            data=cat_jpeg,
            headers={"Content-Type": "image/jpeg"},
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())["request_id"]

    with ThreadPoolExecutor(max_workers=12) as pool:
        outcomes = list(pool.map(send, range(120)))
    assert {status for status, _ in outcomes} == {200}
    after = Counter(row[0] for row in facts(data_dir))
    new = after - before
    assert new == Counter({rid: 1 for _, rid in outcomes})


def test_big_phone_photo_and_bad_input_over_http(server, photos):
    base, _ = server
    import io

    buf = io.BytesIO()
    photos["chelsea"].resize((4032, 3024)).save(buf, "JPEG", quality=90)
    big = buf.getvalue()
    assert len(big) > 500_000  # upscaled, so it compresses well
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-w",
            "\n%{http_code}",
            "-H",
            "Content-Type: image/jpeg",
            "--data-binary",
            "@-",
            f"{base}/api/v1/predict",
        ],
        input=big,
        capture_output=True,
        check=True,
    ).stdout.decode()
    body, status = out.rsplit("\n", 1)
    assert status == "200", body
    assert json.loads(body)["results"][0]["predictions"][0]["class_id"] in CAT_CLASSES
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-w",
            "\n%{http_code}",
            "-F",
            "image=@/dev/null;filename=empty.jpg",
            f"{base}/api/v1/predict",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    body, status = out.rsplit("\n", 1)
    assert status == "400" and json.loads(body)["error"]["code"] == "empty_file"


def test_serve_on_ipv6_any_truncates_ipv4_clients_as_ipv4(tmp_path, model_dir, cat_jpeg):
    # `--host ::` used to fail at start ("'' is not a valid port number": the bind address
    # was "{host}:{port}"); and a dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d,
    # which truncation cut to the /48 "::" for every IPv4 client.
    data_dir = tmp_path / "data"
    with serve(data_dir, model_dir, host="::", ip_storage="truncated") as base:
        port = base.rsplit(":", 1)[1]
        for url in (base, f"http://[::1]:{port}"):
            req = urllib.request.Request(
                f"{url}/api/v1/predict", data=cat_jpeg, headers={"Content-Type": "image/jpeg"}
            )
            with urllib.request.urlopen(req, timeout=60) as resp:
                assert resp.status == 200
    with sqlite3.connect(data_dir / "imgclass.db") as conn:
        stored = conn.execute(
            "SELECT u.ip_address FROM api_event_fact f JOIN user_dim u USING (user_key) "
            "ORDER BY f.event_id"
        ).fetchall()
    assert stored == [("127.0.0.0",), ("::",)]  # 127.0.0.1 as IPv4 /24; ::1 as IPv6 /48


def test_every_log_line_is_json_and_the_admin_key_stays_out_of_the_log(
    tmp_path, model_dir, cat_jpeg
):
    # gunicorn's own lines ("Booting worker", timeouts, crashes) were plain text among the
    # JSON lines, and the first admin's key was printed into the log stream (container logs
    # keep it); with stderr not a terminal the log now says only where the key file is.
    data_dir = tmp_path / "data"
    with serve(data_dir, model_dir) as base:
        req = urllib.request.Request(
            f"{base}/api/v1/predict", data=cat_jpeg, headers={"Content-Type": "image/jpeg"}
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert resp.status == 200
    output = (tmp_path / "serve.log").read_text()
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]  # all JSON
    gunicorn = [r["message"] for r in lines if r["logger"] == "gunicorn.error"]
    assert any(m.startswith("Booting worker") for m in gunicorn), gunicorn
    key_file = data_dir / "admin-token"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.read_text().strip() not in output
    assert any(str(key_file) in r["message"] for r in lines)
