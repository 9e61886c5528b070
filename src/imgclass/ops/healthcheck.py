"""Probe the local server: ``python -m imgclass.ops.healthcheck [--ready]``, exit 0 if healthy.

The container image's HEALTHCHECK runs this, so the image needs neither curl nor wget.
It asks ``/healthz`` (the process answers) or, with ``--ready``, ``/readyz`` (model loaded,
database writable) on 127.0.0.1 at ``IMGCLASS_PORT``.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request

from imgclass.config import Settings

TIMEOUT_S = 3.0


def probe(port: int, path: str = "/healthz", timeout_s: float = TIMEOUT_S) -> tuple[bool, str]:
    """(healthy, what was seen) for ``GET http://127.0.0.1:<port><path>``."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status == 200, f"{url}: {resp.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{url}: {exc.code} {exc.read(300).decode(errors='replace')}"
    except OSError as exc:
        return False, f"{url}: {exc}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imgclass.ops.healthcheck")
    parser.add_argument("--ready", action="store_true", help="probe /readyz instead of /healthz")
    parser.add_argument("--port", type=int, help="default: IMGCLASS_PORT")
    args = parser.parse_args(argv)
    port = args.port or Settings().port
    healthy, seen = probe(port, "/readyz" if args.ready else "/healthz")
    print(seen, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
