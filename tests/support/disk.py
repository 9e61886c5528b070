"""A small real filesystem for disk-full tests: a tmpfs mounted for the test, and a filler."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.system import _unavailable


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 24 MB tmpfs (needs root, as CI and these machines have), unmounted afterwards."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        _unavailable(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full (ENOSPC); returns it, so a test can free the space."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * (1 << 16))
    except OSError:  # ENOSPC: the disk is full
        pass
    finally:
        os.close(fd)
    return filler
