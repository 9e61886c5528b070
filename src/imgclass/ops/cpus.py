"""How many CPUs this process may use, and how to size gunicorn and ONNX Runtime to them.

A container sees every core of its host in ``os.cpu_count()``, but it may run on fewer
(CPU affinity: ``taskset``, Kubernetes' static CPU manager) and for less time (a CFS quota:
``docker run --cpus``, a Kubernetes CPU limit). Sizing workers to the host's cores then
oversubscribes the quota: the kernel throttles the whole container for the rest of each
period, which shows as tail-latency spikes, not as lower throughput.

The quota comes from cgroup v2 (``cpu.max``: ``"<quota> <period>"`` or ``"max <period>"``)
or cgroup v1 (``cpu.cfs_quota_us``, ``-1`` for none, and ``cpu.cfs_period_us``). The
effective limit is the smallest quota on the way from the process's own cgroup up to the
root. A fractional quota is rounded **down** (at least 1): 1.5 CPUs give one worker with
one inference thread, and the half CPU left over runs what each worker does besides
inference (parsing, decoding, recording), instead of a second inference that would be
throttled.

This module reads files only; ``config.py`` decides (from ``IMGCLASS_*``) what overrides it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
# cgroup v1 mounts the cpu controller alone or together with cpuacct (Docker, systemd).
V1_CPU_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")
# Threads per worker besides its inference threads: the measured sweet spot at one
# inference thread was 4 (docs/PERFORMANCE.md), i.e. three threads parsing, decoding and
# recording while one runs the model.
OTHER_THREADS_PER_WORKER = 3


def affinity_cpus() -> int:
    """CPUs the scheduler lets this process run on, at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _own_cgroup_paths(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """This process's cgroup path in the v2 hierarchy and in v1's cpu controller."""
    v2 = v1 = None
    for line in (_read(proc_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _hierarchy, controllers, path = parts
        if controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _candidate_dirs(mount: Path, own_path: str | None) -> list[Path]:
    """The process's cgroup directory under ``mount`` and each of its ancestors.

    Inside a container the cgroup is usually mounted at its own root (the path in
    /proc/self/cgroup is "/" or names a host directory that does not exist here), so the
    mount point itself is always a candidate.
    """
    dirs = [mount]
    if own_path and own_path != "/":
        current = mount / own_path.lstrip("/")
        while current != mount and mount in current.parents:
            if current.is_dir():
                dirs.append(current)
            current = current.parent
    return dirs


def _v2_limit(directory: Path) -> float | None:
    raw = _read(directory / "cpu.max")
    if raw is None:
        return None
    fields = raw.split()
    if not fields or fields[0] == "max":
        return None
    try:
        quota = int(fields[0])
        period = int(fields[1]) if len(fields) > 1 else 100_000
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v1_limit(directory: Path) -> float | None:
    quota_raw = _read(directory / "cpu.cfs_quota_us")
    period_raw = _read(directory / "cpu.cfs_period_us")
    if quota_raw is None or period_raw is None:
        return None
    try:
        quota, period = int(quota_raw), int(period_raw)
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None  # -1: no quota


def cgroup_cpu_limit(
    root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP
) -> float | None:
    """The CPU quota (in CPUs, may be fractional) of this process's cgroup, or None.

    ``root`` is where the cgroup filesystem is mounted: cgroup v2's unified hierarchy
    (it has ``cgroup.controllers``) or cgroup v1's per-controller directories. Tests point
    it at a directory of files shaped like the kernel's.
    """
    v2_path, v1_path = _own_cgroup_paths(proc_cgroup)
    limits: list[float] = []
    if (root / "cgroup.controllers").is_file():
        limits = [x for d in _candidate_dirs(root, v2_path) if (x := _v2_limit(d)) is not None]
    else:
        for name in V1_CPU_DIRS:
            mount = root / name
            if mount.is_dir():
                dirs = _candidate_dirs(mount, v1_path)
                limits = [x for d in dirs if (x := _v1_limit(d)) is not None]
                break
    return min(limits) if limits else None


def available_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """Whole CPUs this process may keep busy: affinity, capped by the cgroup quota (≥ 1)."""
    cpus = affinity_cpus()
    quota = cgroup_cpu_limit(root, proc_cgroup)
    if quota is not None:
        # Round down: a fractional remainder is headroom, not another inference (see above).
        cpus = min(cpus, max(1, math.floor(quota)))
    return cpus


@dataclass(frozen=True)
class CpuPlan:
    """How one server process tree uses its CPUs."""

    cpus: int
    workers: int
    threads: int
    inference_threads: int

    @property
    def oversubscribed(self) -> bool:
        """More inference threads in all than CPUs (only when both counts were given)."""
        return self.workers * self.inference_threads > self.cpus


def plan(
    cpus: int,
    workers: int | None = None,
    threads: int | None = None,
    inference_threads: int | None = None,
) -> CpuPlan:
    """Workers, threads per worker and ONNX Runtime threads for ``cpus`` CPUs.

    Each given value wins; the others follow from it so that the workers' inference
    threads add up to the CPUs, at most (each worker runs one inference at a time):
    by default one worker per CPU with one inference thread each; with fewer workers
    forced (e.g. to save memory) each gets the CPUs the others left; with more
    inference threads per worker forced, fewer workers (at least one). Only values
    given that already exceed the CPUs (more workers than CPUs, or both counts) make
    more inference threads than CPUs: ``CpuPlan.oversubscribed``, which ``serve`` logs
    as a warning.
    """
    cpus = max(1, cpus)
    if workers is None:
        workers = max(1, cpus // inference_threads) if inference_threads else cpus
    inference_threads = inference_threads or max(1, cpus // workers)
    threads = threads or inference_threads + OTHER_THREADS_PER_WORKER
    return CpuPlan(cpus, workers, threads, inference_threads)
