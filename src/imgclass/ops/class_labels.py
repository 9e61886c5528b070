"""The bounded ``class_name`` label: which predicted classes a server names in its metrics.

A label value is a time series in Prometheus forever, and ImageNet has 1000
classes, so a server names only its first ``limit`` distinct predicted classes
and counts every later one as ``other``. Frequent classes turn up early and so
carry their name; totals over all labels are always exact.

The set is the server's, not each worker's: under gunicorn the workers share it
through a small file in the server's metrics directory, appended under an
exclusive ``flock``. With a set per worker, every worker named its own first
classes, and a replacement worker (after a crash) named a fresh set: the
server exported far more than ``limit`` named series. A worker reads the file
only when it meets a class it has not seen named yet and the set is not full,
so at most about ``limit`` times over its life.
"""

from __future__ import annotations

import fcntl
import json
import threading
from pathlib import Path

OTHER_CLASS = "other"
FILE_NAME = "class-labels.jsonl"  # in the metrics directory: one JSON string per line


class ClassLabels:
    """The first ``limit`` distinct classes keep their name; the rest are ``other``.

    ``path``: the file that shares the set between the processes of one server
    (None: this process alone, as under the Flask test client).
    """

    def __init__(self, limit: int, path: Path | None = None):
        self.limit = limit
        self.path = path
        self._named: set[str] = set()
        self._full = False  # the set cannot change any more: no need to read the file
        self._lock = threading.Lock()

    def __call__(self, class_name: str) -> str:
        """The label for a class just predicted: its name if it has or gets one, else other."""
        if class_name in self._named:
            return class_name
        if self._full:
            return OTHER_CLASS
        with self._lock:
            if self.path is None:
                if class_name in self._named or len(self._named) < self.limit:
                    self._named.add(class_name)
                    return class_name
                self._full = True
                return OTHER_CLASS
            with self.path.open("a+", encoding="utf-8") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                text = self._read(fh)
                if class_name in self._named:
                    return class_name
                if len(self._named) >= self.limit:
                    self._full = True
                    return OTHER_CLASS
                # A line cut short by a killed writer must not swallow this one.
                prefix = "\n" if text and not text.endswith("\n") else ""
                fh.write(prefix + json.dumps(class_name) + "\n")
                fh.flush()
                self._named.add(class_name)
                return class_name

    def label(self, class_name: str) -> str:
        """The label a class has now, without giving it a name (for figures about it)."""
        return class_name if class_name in self.named() else OTHER_CLASS

    def named(self) -> frozenset[str]:
        """The classes that have a name so far (any process of the server may add some)."""
        if self.path is not None and not self._full:
            with self._lock:
                try:
                    with self.path.open(encoding="utf-8") as fh:
                        fcntl.flock(fh, fcntl.LOCK_SH)
                        self._read(fh)
                except FileNotFoundError:
                    pass
        return frozenset(self._named)

    def _read(self, fh) -> str:
        """Merge the file's names into ours (the caller holds a lock on it); return its text."""
        fh.seek(0)
        text = fh.read()
        for line in text.splitlines():
            try:
                name = json.loads(line)
            except ValueError:
                continue  # cut short by a killed writer
            if isinstance(name, str):
                self._named.add(name)
        if len(self._named) >= self.limit:
            self._full = True
        return text
