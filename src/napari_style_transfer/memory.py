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


def estimate_bytes(shape: tuple[int, int], optimizer: str, history: int, frames: int = 1) -> int:
    """Peak bytes for a run whose working image is ``shape`` (H, W), with ``frames`` such
    images optimised together as one batch (activations and optimiser state per frame)."""
    return FIXED_BYTES + frames * shape[0] * shape[1] * bytes_per_pixel(optimizer, history)


def largest_pixels(free_bytes: float, optimizer: str, history: int, extra_per_pixel: float = 0) -> float:
    """The most working pixels a run can have in ``free_bytes`` (0 or less: none fit);
    ``extra_per_pixel`` is what else each pixel costs in the same memory (the result)."""
    return (free_bytes * HEADROOM - FIXED_BYTES) / (bytes_per_pixel(optimizer, history) + extra_per_pixel)


def largest_size(
    free_bytes: float, aspect: float, optimizer: str, history: int, extra_per_pixel: float = 0
) -> int:
    """The largest ``size`` (longest side, a multiple of 16) that fits in ``free_bytes``.

    ``aspect`` is the shorter side over the longer one."""
    pixels = largest_pixels(free_bytes, optimizer, history, extra_per_pixel)
    return side_for_pixels(pixels, aspect)


def side_for_pixels(pixels: float, aspect: float) -> int:
    """The longest side (a multiple of 16) of an image of at most ``pixels`` and ``aspect``."""
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
    """Linux's MemAvailable (free memory plus what the page cache can give back), else
    psutil's available memory (macOS, Windows), else the free pages (which undercount)."""
    meminfo = _read_keyed(proc / "meminfo")
    if "MemAvailable" in meminfo:
        return meminfo["MemAvailable"] * 1024  # kB
    try:
        import psutil
    except ImportError:  # psutil comes with napari; plain installs may lack it
        pass
    else:
        return int(psutil.virtual_memory().available)
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

#: (subfolder of the cgroup root, limit files, usage file, reclaimable page cache in memory.stat)
_LAYOUTS = (
    ("", ("memory.max", "memory.high"), "memory.current", "inactive_file"),  # v2
    ("memory", ("memory.limit_in_bytes",), "memory.usage_in_bytes", "total_inactive_file"),  # v1
)


def _cgroup_room(proc: Path, root: Path) -> int | None:
    """The tightest memory limit less usage (less the page cache it can reclaim) over the
    process's cgroup and every group above it: a limit set on a Slurm job or a container
    holds for all the groups inside it, which themselves often say "max"."""
    paths = _group_paths(proc)
    rooms = []
    for subfolder, limit_names, usage_name, reclaimable in _LAYOUTS:
        group = paths[subfolder]
        if group is None:
            continue
        top = root / subfolder
        if not subfolder and not (root / "cgroup.controllers").exists():
            top = root / "unified"  # the hybrid layout: v1 controllers, v2 beside them
        own = top / group
        # without a cgroup namespace the path names the host's group, but a container sees
        # only its own group, mounted as the root
        folder = own if own.is_dir() else top
        while True:
            room = _group_room(folder, limit_names, usage_name, reclaimable)
            if room is not None:
                rooms.append(room)
            if folder == top or top not in folder.parents:
                break
            folder = folder.parent
    return min(rooms) if rooms else None


def _group_paths(proc: Path) -> dict[str, str | None]:
    """The process's cgroup paths: v2's (key "") and v1's memory controller's ("memory"),
    None where it has none."""
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        lines = []
    paths: dict[str, str | None] = {"": None, "memory": None}
    for line in lines:
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            paths[""] = path.strip("/")
        elif "memory" in controllers.split(","):
            paths["memory"] = path.strip("/")
    return paths


def _group_room(folder: Path, limit_names: tuple[str, ...], usage_name: str, reclaimable: str) -> int | None:
    """One group's limit less its usage, or None where it sets no limit."""
    numbers = [_read_number(folder / name) for name in limit_names]
    limits = [limit for limit in numbers if limit is not None and limit < _NO_LIMIT]
    stat = _read_keyed(folder / "memory.stat")
    hierarchical = stat.get("hierarchical_memory_limit")  # v1: the least limit above, too
    if hierarchical is not None and hierarchical < _NO_LIMIT:
        limits.append(hierarchical)
    usage = _read_number(folder / usage_name)
    if not limits or usage is None:
        return None
    return min(limits) - max(0, usage - stat.get(reclaimable, 0))


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


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity where the system says, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
