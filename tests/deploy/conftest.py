"""The container image without a Docker engine: its Dockerfile, build context and runtime.

No Docker engine runs on these machines, so the runtime stage is reproduced with what it
is made of: the package built as a wheel from exactly the files the build context of a
clean checkout admits (.dockerignore) plus what the `vendor` stage makes (`make vendor`),
installed without its extras, started with the image's ENV, ENTRYPOINT and CMD, and probed
by its HEALTHCHECK command.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from imgclass.ops.healthcheck import probe
from tests.conftest import REPO
from tests.support.nginx import env_without_imgclass

DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


@dataclass
class Stage:
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        return [v for i, v in self.instructions if i == instruction]


def dockerfile_stages() -> dict[str, Stage]:
    """Each build stage's instructions, by stage name (``FROM … AS name``)."""
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for item in DockerfileParser(path=str(DOCKERFILE)).structure:
        instruction, value = item["instruction"], item["value"]
        if instruction == "FROM":
            name = value.split()[-1] if " AS " in value.upper() else str(len(stages))
            current = stages[name] = Stage(name)
        elif current is not None and instruction != "COMMENT":
            current.instructions.append((instruction, value))
    return stages


def runtime_env() -> dict[str, str]:
    """The runtime stage's IMGCLASS_* environment."""
    envs = DockerfileParser(path=str(DOCKERFILE)).envs  # the last stage's
    return {k: v for k, v in envs.items() if k.startswith("IMGCLASS_")}


def runtime_command() -> list[str]:
    """ENTRYPOINT + CMD of the runtime stage (exec form)."""
    runtime = dockerfile_stages()["runtime"]
    return json.loads(runtime.values("ENTRYPOINT")[-1]) + json.loads(runtime.values("CMD")[-1])


def healthcheck_command() -> list[str]:
    value = dockerfile_stages()["runtime"].values("HEALTHCHECK")[-1]
    return json.loads(value.split("CMD", 1)[1])


def _dockerignore_patterns() -> list[str]:
    lines = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()]
    patterns = [ln for ln in lines if ln and not ln.startswith("#")]
    assert patterns[0] == "*", ".dockerignore must start by excluding everything"
    return patterns


def context_includes() -> list[str]:
    """What .dockerignore lets into the build context: it excludes everything, then these."""
    return [p[1:].rstrip("/") for p in _dockerignore_patterns() if p.startswith("!")]


def context_excludes() -> list[str]:
    """The patterns that take files back out of the includes (caches, locally made files)."""
    return [p for p in _dockerignore_patterns()[1:] if not p.startswith("!")]


def clean_checkout(dest: Path) -> Path:
    """The working tree as a fresh clone of it holds it, copied to ``dest``.

    Tracked and new files, nothing git ignores: no node_modules, no vendor files that
    `make install` made here, no caches. (Like `git archive`, but with the uncommitted
    changes under test.)
    """
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if src.is_file():  # a tracked file deleted in the working tree is not there
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def copy_build_context(source: Path, dest: Path) -> Path:
    """The files `docker build` would send from ``source``, copied to ``dest``."""
    for rel in context_includes():
        src = source / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel)
        elif src.is_file():
            shutil.copy(src, dest / rel)
    for pattern in context_excludes():
        for path in sorted(dest.glob(pattern), reverse=True):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    return dest


def run_vendor_stage(context: Path, workdir: Path) -> Path:
    """The Dockerfile's `vendor` stage, run here: its COPY from ``context``, then `make vendor`.

    ``workdir`` stands for the stage's WORKDIR. Its package installation (make, from
    Debian) is the only step left out: make is on this machine.
    """
    stage = dockerfile_stages()["vendor"]
    (copy,) = stage.values("COPY")
    *sources, target = copy.split()
    assert target == "./"
    for source in sources:
        shutil.copy(context / source, workdir / source)
    assert stage.values("RUN")[-1] == "make vendor"
    subprocess.run(["make", "vendor"], cwd=workdir, check=True, capture_output=True)
    return workdir


def copy_vendor_output(vendor_workdir: Path, context: Path) -> list[str]:
    """The `venv` stage's ``COPY --from=vendor``, into ``context`` (its ``/src``).

    Returns the copied files, relative to the context.
    """
    vendor_root = Path(dockerfile_stages()["vendor"].values("WORKDIR")[-1])
    venv = dockerfile_stages()["venv"]
    # The venv stage builds the package in /src from the context's files.
    assert "src /src/src" in venv.values("COPY")
    copied = []
    for value in venv.values("COPY"):
        if not value.startswith("--from=vendor "):
            continue
        source, target = value.split()[1:]
        local_source = vendor_workdir / Path(source).relative_to(vendor_root)
        local_target = context / Path(target).relative_to("/src")
        shutil.copytree(local_source, local_target)
        copied += [
            str(p.relative_to(context)) for p in sorted(local_target.rglob("*")) if p.is_file()
        ]
    return copied


@dataclass
class ImageBuild:
    """What the image's `venv` stage installs: the context plus the `vendor` stage's files."""

    context: Path
    vendor_files: list[str]  # relative to the context, e.g. src/imgclass/web/static/vendor/…
    wheel: Path


@pytest.fixture(scope="session")
def image_build(tmp_path_factory) -> ImageBuild:
    """A clean checkout → the build context → the vendor stage → the package as a wheel."""
    checkout = clean_checkout(tmp_path_factory.mktemp("checkout"))
    context = copy_build_context(checkout, tmp_path_factory.mktemp("context"))
    vendor = run_vendor_stage(context, tmp_path_factory.mktemp("vendor"))
    vendor_files = copy_vendor_output(vendor, context)
    out = tmp_path_factory.mktemp("wheel")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"]
    subprocess.run(
        [*pip_wheel, "--no-build-isolation", "--wheel-dir", str(out), str(context)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("imgclass-*.whl")
    return ImageBuild(context, vendor_files, wheel)


@pytest.fixture(scope="session")
def runtime_wheel(image_build) -> Path:
    """The package as the image's `venv` stage installs it."""
    return image_build.wheel


@pytest.fixture(scope="session")
def runtime_site(runtime_wheel, tmp_path_factory) -> Path:
    """The wheel unpacked: put first on PYTHONPATH, it shadows the editable checkout."""
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(runtime_wheel) as zf:
        zf.extractall(site)
    return site


class Replica:
    """One `imgclass serve` started as the image starts it, in its own process group."""

    def __init__(self, site: Path, model_dir: Path, data_dir: Path, port: int, **env: str):
        self.port = port
        self.data_dir = data_dir
        self.log = data_dir.parent / f"replica-{port}.log"
        self.env = {
            **env_without_imgclass(),
            **runtime_env(),
            # What differs from the container: local paths, loopback, one worker each.
            "IMGCLASS_HOST": "127.0.0.1",
            "IMGCLASS_PORT": str(port),
            "IMGCLASS_MODEL_DIR": str(model_dir),
            "IMGCLASS_DATA_DIR": str(data_dir),
            "IMGCLASS_WORKERS": "1",
            "PYTHONPATH": str(site),
            **env,
        }
        self.proc: subprocess.Popen | None = None

    def start(self) -> Replica:
        entrypoint, *args = runtime_command()
        binary = str(Path(sys.executable).parent / entrypoint)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [binary, *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: master and workers die together
            )
        return self

    def wait_ready(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"replica on {self.port} exited:\n{self.log.read_text()}")
            if probe(self.port, "/readyz", timeout_s=2)[0]:
                return
            time.sleep(0.2)
        pytest.fail(f"replica on {self.port} not ready:\n{self.log.read_text()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group; return once the port refuses connections.

        The parent exits first; until the last worker holding the listening socket is
        gone, the kernel still completes handshakes on it (a dying replica, not a dead one).
        """
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except ConnectionRefusedError:
                return
            except OSError:
                pass
            time.sleep(0.05)
        pytest.fail(f"replica on {self.port} still accepts connections")

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def healthcheck(self) -> subprocess.CompletedProcess:
        """The image's HEALTHCHECK command, run in the replica's environment."""
        command = healthcheck_command()
        if command[0] == "python":
            command = [sys.executable, *command[1:]]
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=30)
