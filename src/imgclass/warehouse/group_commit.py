"""Group commit: concurrent requests of one process share a write transaction.

Every request must be durable before it is answered, so each one used to pay for its own
write transaction: on SQLite a ``BEGIN IMMEDIATE`` (the database-wide write lock, which
the other threads then wait for in SQLite's busy handler, sleeping in steps of 1-100 ms
rather than waking when the lock is free) and an fsync'd commit. Under load, the threads
of a worker queue here instead: the one holding the writer's turn takes every batch that
is waiting, writes them in one transaction and commits once, and every caller returns
only after the commit that carried its events. Nobody waits for a batch to fill: a lone
request is written at once, so a quiet server pays nothing for this.

A batch that fails is retried one request at a time, so that one request's bad data or
stale key cannot fail the others, and each caller gets its own outcome.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")

# A bound on one transaction, so that a burst cannot hold SQLite's write lock (and the
# other processes) for long; the rest go in the next transaction.
MAX_BATCHES_PER_COMMIT = 64


@dataclass
class _Ticket(Generic[Item]):
    items: Sequence[Item]
    done: bool = False
    error: BaseException | None = None


class GroupCommit(Generic[Item]):
    """Runs ``write(items)`` for each caller, merging callers that arrive together.

    ``write`` receives the items of one or more callers, in arrival order, and must
    write them in one transaction that either commits or raises.
    """

    def __init__(
        self, write: Callable[[Sequence[Item]], None], max_batches: int = MAX_BATCHES_PER_COMMIT
    ):
        self._write = write
        self._max_batches = max_batches
        self._pending: list[_Ticket[Item]] = []
        self._pending_lock = threading.Lock()  # guards _pending, held only briefly
        self._turn = threading.Lock()  # the writer's turn: one transaction at a time

    @property
    def waiting(self) -> int:
        """How many callers' items wait for the next transaction."""
        with self._pending_lock:
            return len(self._pending)

    def submit(self, items: Sequence[Item]) -> None:
        """Write ``items``; returns once they are committed, or raises why they were not."""
        ticket: _Ticket[Item] = _Ticket(items)
        with self._pending_lock:
            self._pending.append(ticket)
        while True:
            with self._turn:
                # A writer that held the turn before us may have carried our items.
                if not ticket.done:
                    self._write_pending()
            if ticket.done:
                break
            # Still here: the batch bound left our ticket for the next transaction.
        if ticket.error is not None:
            raise ticket.error

    def _write_pending(self) -> None:
        with self._pending_lock:
            batch = self._pending[: self._max_batches]
            del self._pending[: self._max_batches]
        if not batch:
            return
        try:
            if len(batch) == 1:
                self._write(batch[0].items)
            else:
                self._write([item for ticket in batch for item in ticket.items])
        except BaseException as exc:
            if len(batch) == 1:
                batch[0].error = exc
            else:
                # Which request failed the batch? Each one alone tells, and the others
                # still get written.
                for ticket in batch:
                    try:
                        self._write(ticket.items)
                    except BaseException as single:
                        ticket.error = single
        finally:
            for ticket in batch:
                ticket.done = True
