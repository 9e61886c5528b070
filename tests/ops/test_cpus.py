"""CPU sizing: cgroup v1/v2 quotas read from real files, affinity, and the worker plan."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from imgclass.config import Settings
from imgclass.ops.cpus import affinity_cpus, available_cpus, cgroup_cpu_limit, plan
from imgclass.server import ImgclassServer
from tests.support.servers import free_port


def v2_root(tmp_path: Path, cpu_max: str | None, own: str = "/") -> tuple[Path, Path]:
    """A cgroup v2 mount (unified hierarchy) with cpu.max at the root, and /proc/self/cgroup."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    if cpu_max is not None:
        (root / "cpu.max").write_text(cpu_max + "\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"0::{own}\n")
    return root, proc


def v1_root(tmp_path: Path, quota: str, period: str = "100000") -> tuple[Path, Path]:
    """A cgroup v1 mount as Docker lays it out: the cpu controller joined with cpuacct."""
    root = tmp_path / "cgroup"
    cpu = root / "cpu,cpuacct"
    cpu.mkdir(parents=True)
    (root / "memory").mkdir()
    (cpu / "cpu.cfs_quota_us").write_text(quota + "\n")
    (cpu / "cpu.cfs_period_us").write_text(period + "\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("12:memory:/\n4:cpu,cpuacct:/\n0::/\n")
    return root, proc


@pytest.mark.parametrize(
    ("cpu_max", "limit"),
    [("max 100000", None), ("150000 100000", 1.5), ("50000 100000", 0.5), ("400000 100000", 4.0)],
)
def test_cgroup_v2_quota(tmp_path, cpu_max, limit):
    root, proc = v2_root(tmp_path, cpu_max)
    assert cgroup_cpu_limit(root, proc) == limit


@pytest.mark.parametrize(
    ("quota", "period", "limit"),
    [("-1", "100000", None), ("150000", "100000", 1.5), ("200000", "50000", 4.0)],
)
def test_cgroup_v1_quota(tmp_path, quota, period, limit):
    root, proc = v1_root(tmp_path, quota, period)
    assert cgroup_cpu_limit(root, proc) == limit


def test_fractional_quota_rounds_down_to_whole_cpus(tmp_path):
    # 1.5 CPUs: one inference worker; the half CPU is headroom for decoding and recording.
    root, proc = v2_root(tmp_path, "150000 100000")
    assert available_cpus(root, proc) == 1
    root, proc = v1_root(tmp_path / "v1", "150000")
    assert available_cpus(root, proc) == 1


def test_quota_below_one_cpu_still_gives_one(tmp_path):
    root, proc = v2_root(tmp_path, "20000 100000")
    assert available_cpus(root, proc) == 1


def test_quota_above_the_cores_is_capped_by_affinity(tmp_path):
    root, proc = v2_root(tmp_path, "6400000 100000")  # 64 CPUs of quota
    assert available_cpus(root, proc) == affinity_cpus()


def test_no_quota_means_affinity(tmp_path):
    root, proc = v2_root(tmp_path, "max 100000")
    assert available_cpus(root, proc) == affinity_cpus()
    root, proc = v1_root(tmp_path / "v1", "-1")
    assert available_cpus(root, proc) == affinity_cpus()


def test_a_parent_cgroups_quota_limits_the_child(tmp_path):
    # Kubernetes on cgroup v2 without a cgroup namespace: the pod's quota sits above
    # the container's own directory, which has none.
    root, proc = v2_root(tmp_path, None, own="/kubepods/pod1/ctr")
    (root / "kubepods" / "pod1" / "ctr").mkdir(parents=True)
    (root / "kubepods" / "pod1" / "cpu.max").write_text("100000 100000\n")
    (root / "kubepods" / "pod1" / "ctr" / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(root, proc) == 1.0


def test_missing_or_garbled_files_mean_no_quota(tmp_path):
    assert cgroup_cpu_limit(tmp_path / "nothing", tmp_path / "nothing-either") is None
    root, proc = v2_root(tmp_path, "lots 100000")
    assert cgroup_cpu_limit(root, proc) is None


def test_this_machine_never_exceeds_its_affinity():
    assert 1 <= available_cpus() <= affinity_cpus() <= (os.cpu_count() or 1)


def test_affinity_of_one_core_gives_one_cpu():
    # A real child process pinned to one core, as `taskset -c 0` or a CPU manager would.
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from imgclass.config import Settings; p = Settings().cpu_plan; "
        "print(p.cpus, p.workers, p.threads, p.inference_threads)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGCLASS_")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    assert out.split() == ["1", "1", "4", "1"]


def test_plan_defaults_one_worker_per_cpu_one_inference_thread_each():
    p = plan(4)
    assert (p.workers, p.threads, p.inference_threads) == (4, 4, 1)


def test_plan_fewer_workers_get_the_spare_cpus_for_inference():
    p = plan(4, workers=2)
    assert (p.workers, p.threads, p.inference_threads) == (2, 5, 2)
    p = plan(4, workers=3)
    assert (p.workers, p.inference_threads) == (3, 1)  # never more inference threads than CPUs


def test_plan_overrides_win():
    p = plan(8, workers=2, threads=16, inference_threads=1)
    assert (p.workers, p.threads, p.inference_threads) == (2, 16, 1)
    assert not p.oversubscribed


def test_plan_more_inference_threads_give_fewer_workers():
    p = plan(4, inference_threads=2)
    assert (p.workers, p.threads, p.inference_threads) == (2, 5, 2)
    assert not p.oversubscribed
    p = plan(2, inference_threads=4)  # not 2 workers x 4 on 2 cores
    assert (p.workers, p.inference_threads) == (1, 4)
    assert p.oversubscribed  # asked for: kept, and serve warns


def test_plan_oversubscribes_only_when_the_given_values_do():
    for cpus in range(1, 9):
        for inference in (None, 1, 2, 3, 8):
            for workers in (None, 1, 2, 3, 8):
                p = plan(cpus, workers=workers, inference_threads=inference)
                asked = (workers or 1) * (inference or 1)
                assert p.oversubscribed == (asked > cpus), (cpus, workers, inference)


def test_settings_overrides_reach_gunicorn(tmp_path):
    settings = Settings(data_dir=tmp_path, workers=1, threads=7, inference_threads=1)
    cfg = ImgclassServer(settings).cfg
    assert (cfg.workers, cfg.threads) == (1, 7)
    assert settings.effective_inference_threads == 1


def test_unset_settings_follow_the_cpus(tmp_path):
    settings = Settings(data_dir=tmp_path, workers=1, threads=None, inference_threads=None)
    cpus = available_cpus()
    assert settings.effective_inference_threads == cpus
    assert ImgclassServer(settings).cfg.threads == cpus + 3
    assert ImgclassServer(Settings(data_dir=tmp_path)).cfg.workers == cpus


@pytest.mark.slow
def test_serve_warns_when_the_given_values_oversubscribe(tmp_path, model_dir):
    # Pinned to one core: IMGCLASS_INFERENCE_THREADS=2 gives one worker, and a warning.
    code = (
        "import os, sys; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from imgclass.cli import main; main(['serve'])"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGCLASS_")}
    env.update(
        IMGCLASS_DATA_DIR=str(tmp_path / "data"),
        IMGCLASS_METRICS_DIR=str(tmp_path / "metrics"),  # stopped early: nothing left in /dev/shm
        IMGCLASS_MODEL_DIR=str(model_dir),
        IMGCLASS_PORT=str(free_port()),
        IMGCLASS_INFERENCE_THREADS="2",
        IMGCLASS_LOG_FORMAT="text",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        lines = []
        for line in proc.stdout:  # serve logs the plan before gunicorn starts
            lines.append(line)
            if "sizing for" in line:
                lines.append(proc.stdout.readline())
                break
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        proc.stdout.close()
    sizing, warning = lines[-2:]
    assert "sizing for 1 CPUs: 1 workers x 5 threads, 2 inference threads each" in sizing
    assert "WARNING" in warning and "2 inference threads on 1 CPUs: oversubscribed" in warning
