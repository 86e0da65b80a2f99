"""How much memory a run needs, and whether the device has it (checked before starting).

The model is linear in the working image's pixels; its constants were measured on the CPU in
float32 (``benchmarks/`` reports the measurements): about 3.6 kB a pixel for VGG19's
activations, gradients and the loss terms up to conv5_1, plus 24 bytes a pixel for each
L-BFGS curvature pair, plus a fixed part for the network's weights and buffers.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

#: Bytes a working pixel for forward + backward through VGG19 (measured, rounded up).
ACTIVATION_BYTES_PER_PIXEL = 4_000
#: Bytes a pixel for one L-BFGS curvature pair (two float32 RGB images).
LBFGS_PAIR_BYTES_PER_PIXEL = 24
#: Weights (80 MB up to conv5_4), workspace and the images themselves.
FIXED_BYTES = 300 * 2**20
#: Keep this share of the free memory in reserve.
HEADROOM = 0.9


def bytes_per_pixel(optimizer: str, history: int) -> int:
    pairs = history if optimizer == "lbfgs" else 2  # Adam keeps two moment images
    return ACTIVATION_BYTES_PER_PIXEL + LBFGS_PAIR_BYTES_PER_PIXEL * pairs


def estimate_bytes(shape: tuple[int, int], optimizer: str, history: int) -> int:
    """Peak bytes for a run whose working image is ``shape`` (H, W)."""
    return FIXED_BYTES + shape[0] * shape[1] * bytes_per_pixel(optimizer, history)


def largest_pixels(free_bytes: float, optimizer: str, history: int) -> float:
    """The most working pixels a run can have in ``free_bytes`` (0 or less: none fit)."""
    return (free_bytes * HEADROOM - FIXED_BYTES) / bytes_per_pixel(optimizer, history)


def largest_size(free_bytes: float, aspect: float, optimizer: str, history: int) -> int:
    """The largest ``size`` (longest side, a multiple of 16) that fits in ``free_bytes``.

    ``aspect`` is the shorter side over the longer one."""
    pixels = largest_pixels(free_bytes, optimizer, history)
    if pixels <= 0:
        return 0
    return int(math.sqrt(pixels / aspect)) // 16 * 16


def format_bytes(count: float) -> str:
    return f"{count / 2**30:.1f} GB" if count >= 2**30 else f"{count / 2**20:.0f} MB"


def available_ram_bytes(proc: Path = Path("/proc"), cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """RAM this process can still take: the least of the machine's available memory, its
    cgroup's limit less its usage (containers, Slurm jobs) and its address-space limit
    (``ulimit -v``) less what it has mapped. Needs no torch and no psutil."""
    candidates = [_machine_available(proc)]
    for limit in (_cgroup_room(proc, cgroup_root), _address_space_room(proc)):
        if limit is not None:
            candidates.append(limit)
    return max(0, min(candidates))


def _machine_available(proc: Path) -> int:
    """psutil's available memory, else Linux's MemAvailable (free memory plus what the page
    cache can give back), else the free pages (which undercount)."""
    try:
        import psutil
    except ImportError:  # psutil comes with napari; plain installs may lack it
        pass
    else:
        return int(psutil.virtual_memory().available)
    meminfo = _read_keyed(proc / "meminfo")
    if "MemAvailable" in meminfo:
        return meminfo["MemAvailable"] * 1024  # kB
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _read_keyed(path: Path) -> dict[str, int]:
    """``key: number`` or ``key number`` lines (meminfo, memory.stat, /proc/PID/status)."""
    values: dict[str, int] = {}
    try:
        text = path.read_text()
    except OSError:
        return values
    for line in text.splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and parts[1].isdigit():
            values[parts[0]] = int(parts[1])
    return values


def _read_number(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (v2) means no limit


#: cgroup v1 reports "no limit" as a huge number near 2**63.
_NO_LIMIT = 2**60


def _cgroup_room(proc: Path, root: Path) -> int | None:
    """The memory cgroup's limit less its usage (less the page cache it can reclaim)."""
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        lines = []
    v2_path = v1_path = ""
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":
            v2_path = path.strip("/")
        elif "memory" in controllers.split(","):
            v1_path = path.strip("/")
    layouts = (
        (root / v2_path, root, "memory.max", "memory.current", "inactive_file"),
        (root / "memory" / v1_path, root / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
    )
    for own, top, limit_name, usage_name, reclaimable in layouts:
        for folder in (own, top):  # inside a container the group is often mounted as the root
            limit = _read_number(folder / limit_name)
            usage = _read_number(folder / usage_name)
            if limit is None or usage is None:
                continue
            if limit >= _NO_LIMIT:
                return None
            cache = _read_keyed(folder / "memory.stat").get(reclaimable, 0)
            return limit - max(0, usage - cache)
    return None


def _address_space_room(proc: Path) -> int | None:
    """RLIMIT_AS (``ulimit -v``) less the process's mapped memory, when a limit is set."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    mapped = _read_keyed(proc / "self" / "status").get("VmSize", 0) * 1024
    return soft - mapped
