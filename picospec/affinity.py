"""Pinning processes to CPUs, so that the edge and the cloud emulate two machines on one."""

from __future__ import annotations

import argparse
import logging
import os

logger = logging.getLogger("picospec")

EDGE_CORE, CLOUD_CORE = 0, 1


def parse_cores(text: str) -> set[int]:
    """A CPU list as taskset writes it ("1", "0,2-3") as a set of CPU ids."""
    error = argparse.ArgumentTypeError(f"not a CPU list: {text!r} (try 1 or 0,2-3)")
    cores: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.partition("-")
        try:
            low, high = int(first), int(last if dash else first)
        except ValueError:
            raise error from None
        if not 0 <= low <= high:
            raise error
        cores.update(range(low, high + 1))
    return cores


def pin_to_cores(cores: set[int]) -> bool:
    """Pin this process to `cores` where the OS allows it; otherwise warn, run unpinned and return False."""
    if not hasattr(os, "sched_setaffinity"):
        logger.warning("this OS cannot pin a process to CPUs; running unpinned")
        return False
    try:
        os.sched_setaffinity(0, cores)
    except OSError as exc:
        logger.warning("cannot pin to CPUs %s (%s); running unpinned", sorted(cores), exc)
        return False
    return True
