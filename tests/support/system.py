"""Real system components for tests: Debian packages and the local PostgreSQL/Redis servers.

A test that needs a real tool (prometheus, chromium, …) asks for it here. When the
tool is missing it is installed with apt-get; if that is impossible the test is
skipped with the reason, except under CI (``CI`` set), where a missing component
is a failure: CI must never pass by silently skipping what it is meant to check.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

IN_CI = bool(os.environ.get("CI"))


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI must run this test; .ci/run installs it)")
    pytest.skip(reason)


def require_binary(binary: str, package: str) -> str:
    """Path of ``binary``, installing Debian's ``package`` first if it is missing."""
    found = shutil.which(binary)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600"]
        subprocess.run([*apt, "update", "-qq"], check=False, capture_output=True)
        subprocess.run(
            [*apt, "install", "-y", "-qq", package],
            check=False,
            capture_output=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        found = shutil.which(binary)
        if found:
            return found
    _unavailable(f"{binary} is not installed (Debian package {package!r})")
    raise AssertionError("unreachable")


def require_file(path: str, package: str) -> str:
    """``path``, installing Debian's ``package`` first if it is missing (data packages)."""
    import pathlib

    if not pathlib.Path(path).exists() and os.geteuid() == 0 and shutil.which("apt-get"):
        apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600"]
        subprocess.run([*apt, "update", "-qq"], check=False, capture_output=True)
        subprocess.run(
            [*apt, "install", "-y", "-qq", package],
            check=False,
            capture_output=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    if not pathlib.Path(path).exists():
        _unavailable(f"{path} is missing (Debian package {package!r})")
    return path
