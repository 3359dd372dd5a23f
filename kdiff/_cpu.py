"""What the machine's CPU can do, as Linux lists it."""

from __future__ import annotations

CPUINFO = "/proc/cpuinfo"


def cpu_flags(cpuinfo=CPUINFO):
    """The CPU's instruction-set flags (``avx512f``, ``avx512_bf16``, ``amx_tile``, …).

    Args:
        cpuinfo: the file listing them (Linux's).

    Returns:
        The first processor's flags, in the file's order; empty where the file is missing
        or lists none (other systems).
    """
    try:
        with open(cpuinfo, encoding="utf-8") as file:
            return next((line.split(":", 1)[1].split() for line in file if line.startswith("flags")), [])
    except OSError:
        return []
