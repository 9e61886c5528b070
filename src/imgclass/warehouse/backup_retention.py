"""Which backups ``prune`` keeps: the newest N, plus the newest of each recent day and week.

The rule (the one restic and borg use, so it is familiar to operators):

* ``keep_last``: the N newest backups;
* ``keep_daily``: for each of the D most recent UTC days that have backups, the newest
  backup of that day;
* ``keep_weekly``: for each of the W most recent ISO weeks (Monday to Sunday, UTC) that
  have backups, the newest backup of that week.

A backup kept by several rules is kept once; every other backup is deleted. Days and weeks
without a backup do not count, so a paused backup job never makes prune delete its last
good copies. ``keep_last`` is at least 1: prune can never delete the newest backup.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class RetentionPolicy:
    keep_last: int = 7
    keep_daily: int = 7
    keep_weekly: int = 4

    def __post_init__(self) -> None:
        if self.keep_last < 1 or self.keep_daily < 0 or self.keep_weekly < 0:
            raise ValueError("keep_last must be at least 1; keep_daily and keep_weekly at least 0")


def plan_retention(
    backups: Sequence[tuple[str, datetime]], policy: RetentionPolicy
) -> dict[str, list[str]]:
    """For each backup (name, UTC creation time): the reasons to keep it (empty: delete it)."""
    newest_first = sorted(backups, key=lambda b: (b[1], b[0]), reverse=True)
    reasons: dict[str, list[str]] = {name: [] for name, _ in newest_first}
    for index, (name, _) in enumerate(newest_first[: policy.keep_last]):
        reasons[name].append(f"last {index + 1}")

    def newest_per_period(count: int, period: Callable[[datetime], Hashable], label) -> None:
        seen: list[Hashable] = []
        for name, when in newest_first:
            key = period(when)
            if key in seen:
                continue  # an older backup of a period that already has its keeper
            if len(seen) == count:
                break
            seen.append(key)
            reasons[name].append(label(when))

    newest_per_period(policy.keep_daily, lambda t: t.date(), lambda t: f"daily {t:%Y-%m-%d}")
    newest_per_period(
        policy.keep_weekly,
        lambda t: t.isocalendar()[:2],
        lambda t: "weekly {}-W{:02d}".format(*t.isocalendar()[:2]),
    )
    return reasons
