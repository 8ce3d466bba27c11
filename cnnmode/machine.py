"""What the machine offers this process, for every floor that sizes work by it (threads, loader workers)."""
from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on: its affinity where the OS reports one (Linux), else every core."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
