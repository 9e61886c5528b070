"""glibc malloc tuning for the serving workers: big buffers go back to the system when freed.

glibc serves an allocation above its mmap threshold with its own mapping, returned to the
system on free; below it, from the heap and per-thread arenas, where freed memory mostly
stays with the process. The threshold starts at 128 KB but rises to the size of each such
block freed (up to 32 MB): after one large decode, image buffers of a few MB (Pillow's
blocks, NumPy arrays) come from the arenas of the worker's threads and stay there,
fragmented, after the request. A long soak saw the workers' RSS creep up that way.

A fixed threshold turns the rise off. 1 MB keeps the buffers of an ordinary request (a
640x480 RGB image is 0.9 MB, the model's input 0.6 MB) in the fast arenas and gives
anything bigger back at once.
"""

from __future__ import annotations

import ctypes
import logging
import platform

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # <malloc.h>
MMAP_THRESHOLD_BYTES = 1 << 20


def fix_mmap_threshold(nbytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Set glibc's mmap threshold for this process; False where libc is not glibc."""
    if platform.libc_ver()[0] != "glibc":
        return False
    ok = bool(ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, nbytes))
    if not ok:
        log.warning("mallopt(M_MMAP_THRESHOLD, %d) was refused", nbytes)
    return ok
