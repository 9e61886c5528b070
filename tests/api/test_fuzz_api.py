"""Fuzz a real ``imgclass serve`` from its own OpenAPI spec with schemathesis.

Every operation, three callers (an admin key, a plain user's key, no key), every check
schemathesis has (tests/api/schemathesis.toml lists the few expectations the spec cannot
express): no 5xx, every status, content type, header and body as documented, schema-valid
requests accepted and invalid ones refused, 405 with ``Allow`` for undocumented methods,
auth not ignored. The run is seeded and bounded (``FUZZ_EXAMPLES`` per operation and phase),
so CI sees the same few thousand requests each time; ``IMGCLASS_FUZZ_EXAMPLES`` raises it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.support.server import environment, imgclass_command, serve

pytestmark = pytest.mark.slow

FUZZ_EXAMPLES = int(os.environ.get("IMGCLASS_FUZZ_EXAMPLES", "40"))
SEED = 20261125
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir):
    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    # Rate limits off so the budget goes to the endpoints (429 is documented everywhere and
    # the limits have their own tests); the drift thread off so runs are repeatable.
    with serve(data_dir, model_dir, workers=1, rate_limit_per_ip="", rate_limit_per_key="") as base:
        yield base, data_dir


def _user_key(data_dir: Path, model_dir: Path) -> str:
    out = subprocess.run(
        imgclass_command("users", "add", "fuzzer"),
        env=environment(data_dir, model_dir),
        capture_output=True,
        text=True,
        check=True,
    )
    return re.search(r"imgc_[A-Za-z0-9_-]+", out.stdout + out.stderr).group(0)


def run_schemathesis(base: str, workdir: Path, *headers: str) -> subprocess.CompletedProcess:
    """The schemathesis CLI, run in ``workdir`` (where it keeps its cache and report)."""
    schemathesis = str(Path(sys.executable).parent / "schemathesis")
    args = [
        schemathesis,
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        f"{base}/api/v1/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(FUZZ_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--request-timeout",
        "60",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(workdir / "events.ndjson"),
    ]
    for header in headers:
        args += ["-H", header]
    return subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=workdir)


@pytest.mark.parametrize("caller", ["admin", "user", "anonymous"])
def test_the_api_answers_fuzzed_requests_as_its_spec_says(server, model_dir, tmp_path, caller):
    base, data_dir = server
    headers = []
    if caller == "admin":
        headers = [f"Authorization: Bearer {(data_dir / 'admin-token').read_text().strip()}"]
    elif caller == "user":
        headers = [f"Authorization: Bearer {_user_key(data_dir, model_dir)}"]
    result = run_schemathesis(base, tmp_path, *headers)
    summary = result.stdout[-6000:]
    assert result.returncode == 0, summary
    # It really ran: every operation (but the spec's own URL, which schemathesis leaves out)
    # and over a thousand cases.
    with urllib.request.urlopen(f"{base}/api/v1/openapi.json") as resp:
        operations = sum(len(item) for item in json.load(resp)["paths"].values()) - 1
    assert f"Tested: {operations}\n" in result.stdout, summary
    generated = int(re.search(r"(\d+) generated", result.stdout).group(1))
    assert generated >= 1000, summary
    log = (data_dir.parent / "serve.log").read_text()
    assert "unhandled error" not in log and "Traceback" not in log
