"""How long the dashboard takes to draw in a real browser over a big warehouse.

    python -m bench.analytics_speed --events 1000000 --keep /tmp/big/data/imgclass.db
    python -m bench.dashboard_speed --data-dir /tmp/big/data [--repeat 3]

Serves ``--data-dir`` with ``imgclass serve``, signs in to /dashboard in Debian's headless
Chromium and times, for each step (first load, a user filter, a class filter, a concept,
the hour grain): the first panel drawn and every panel drawn (the page's own
``#board[data-state=ready]``), as the median of ``--repeat`` runs. Also prints each API
call the page made with the server's time for it (Resource Timing). Results go to
docs/PERFORMANCE.md by hand.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from bench.common import REPO
from tests.support.browser import launch
from tests.support.server import serve


def step(page, action, reload: bool = False) -> tuple[float, float]:
    """(ms to the first panel drawn, ms to all panels drawn) after ``action``.

    The page marks ``#board`` with ``data-drawn`` (the refresh that drew a panel) and
    ``data-generation`` + ``data-state=ready`` (the refresh that drew them all); a reload
    starts counting refreshes from 1 again.
    """
    before = 0 if reload else int(page.get_attribute("#board", "data-generation") or 0)
    started = time.perf_counter()
    action()
    page.wait_for_function(
        "n => Number(document.getElementById('board').dataset.drawn || 0) > n", arg=before
    )
    first = (time.perf_counter() - started) * 1000
    page.wait_for_function(
        """n => { const b = document.getElementById('board');
                  return Number(b.dataset.generation || 0) > n && b.dataset.state === 'ready'; }""",
        arg=before,
    )
    return first, (time.perf_counter() - started) * 1000


def api_timings(page) -> list[tuple[str, float]]:
    entries = page.evaluate(
        """() => performance.getEntriesByType('resource')
            .filter(e => e.name.includes('/api/v1/analytics/'))
            .map(e => {
                const url = new URL(e.name);
                const what = ['group_by', 'measures', 'parent']
                    .filter(n => url.searchParams.get(n))
                    .map(n => `${n}=${url.searchParams.get(n)}`).join('&');
                return [url.pathname.split('/').pop() + (what ? `?${what}` : ''), e.duration];
            })"""
    )
    performance_clear(page)
    return entries


def performance_clear(page) -> None:
    page.evaluate("performance.clearResourceTimings()")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("chromium is not installed: apt-get install chromium")
    key = (args.data_dir / "admin-token").read_text().strip()

    with serve(args.data_dir, REPO / "models", workers=2) as base, sync_playwright() as pw:
        browser = launch(pw, chromium)
        results: dict[str, list[tuple[float, float]]] = {}
        calls: dict[str, list[float]] = {}
        for _ in range(args.repeat):
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(120_000)
            page.goto(base + "/dashboard")
            page.evaluate("key => sessionStorage.setItem('imgclass.adminKey', key)", key)
            steps = {
                "first load (30 days)": lambda p=page: p.reload(),
                "user filter": lambda p=page: (
                    p.fill("#f-user", "bob"),
                    p.press("#f-user", "Enter"),
                ),
                "class filter": lambda p=page: (
                    p.fill("#f-user", ""),
                    p.fill("#f-class", "beagle"),
                    p.press("#f-class", "Enter"),
                ),
                "concept dog": lambda p=page: (
                    p.goto(base + "/dashboard#concept=dog"),
                    p.reload(),
                ),
                "hour grain": lambda p=page: p.select_option("#f-grain", "hour"),
            }
            for name, action in steps.items():
                if name == "first load (30 days)":
                    performance_clear(page)
                reload = name in ("first load (30 days)", "concept dog")
                results.setdefault(name, []).append(step(page, action, reload))
                for call, ms in api_timings(page):
                    calls.setdefault(f"{name}: {call}", []).append(ms)
            page.close()
        browser.close()

    print(f"dashboard over {args.data_dir} (median of {args.repeat}):")
    for name, times in results.items():
        first = statistics.median(t[0] for t in times)
        done = statistics.median(t[1] for t in times)
        print(f"  {name:24} first panel {first:7.0f} ms   all panels {done:7.0f} ms")
    print("API calls (browser-side duration):")
    for name, times in calls.items():
        print(f"  {statistics.median(times):7.0f} ms  {name}")


if __name__ == "__main__":
    main()
