"""How much memory a run may use: a size the user gives ("16GiB"), or what the machine has free.

Detected, in order: on CUDA the device's free memory (torch.cuda.mem_get_info); on a CPU the
smaller of MemAvailable (/proc/meminfo: what can be allocated without swapping) and the room left
under the cgroup's memory limit (memory.max - memory.current, cgroup v2; v1's limit_in_bytes).
"""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import ConfigError

UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000 ** 2, "mb": 1000 ** 2, "g": 1000 ** 3, "gb": 1000 ** 3,
         "t": 1000 ** 4, "tb": 1000 ** 4, "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "tib": 1024 ** 4}


def parse_size(text, key: str = "--memory") -> int:
    """'16GiB', '512MB', '2.5G', 1e9 -> bytes."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return int(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in UNITS:
        raise ConfigError(f"{key}: {text!r} is not a memory size. Fix: a number with a unit, e.g. 16GiB, 512MB "
                          "or 8G")
    return int(float(m.group(1)) * UNITS[m.group(2).lower()])


def human(n: float) -> str:
    """Bytes in binary units: 1.5 GiB, 320.0 MiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def cgroup_room() -> int | None:
    """Bytes left under this process's cgroup memory limit, or None when there is no limit."""
    limit, used = _read("/sys/fs/cgroup/memory.max"), _read("/sys/fs/cgroup/memory.current")
    if limit is None:   # cgroup v1
        limit, used = _read("/sys/fs/cgroup/memory/memory.limit_in_bytes"), \
            _read("/sys/fs/cgroup/memory/memory.usage_in_bytes")
    if not limit or limit == "max" or not limit.isdigit() or int(limit) >= 2 ** 60:
        return None
    return int(limit) - int(used or 0)


def mem_available() -> int | None:
    text = _read("/proc/meminfo") or ""
    m = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) * 1024 if m else None


def detect(device: str) -> tuple[int | None, str]:
    """(bytes free for the run, where the number comes from); (None, why) when nothing says."""
    if device == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return free, "CUDA free memory"
    found = [(n, src) for n, src in ((mem_available(), "MemAvailable"), (cgroup_room(), "cgroup limit"))
             if n is not None]
    if not found:
        return None, "no /proc/meminfo or cgroup limit to read"
    return min(found)
