"""How much memory a run needs, and whether the device has it (checked before starting).

The model is linear in the working image's pixels; its constants were measured on the CPU in
float32 (``benchmarks/`` reports the measurements): about 3.6 kB a pixel for VGG19's
activations, gradients and the loss terms up to conv5_1, plus 12 bytes a pixel for each
L-BFGS curvature pair (bfloat16), plus a fixed part for the network's weights and buffers.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from pathlib import Path
from typing import Any

#: Bytes a working pixel for forward + backward through VGG19 (measured, rounded up).
ACTIVATION_BYTES_PER_PIXEL = 4_000
#: Bytes a pixel for one L-BFGS curvature pair (two bfloat16 RGB images, lbfgs.PAIR_DTYPE) or
#: one of Adam's two moment images (float32).
LBFGS_PAIR_BYTES_PER_PIXEL = 12
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


def usable_of(free_bytes: float) -> str:
    """How a refusal names the memory a run may take: :data:`HEADROOM` of ``free_bytes``, and
    the free memory itself, so that a need between the two does not read as if it fitted."""
    return f"{format_bytes(free_bytes * HEADROOM)} usable of {format_bytes(free_bytes)} free (a tenth is kept in reserve)"


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
    rooms = [
        room
        for subfolder, limit_names, usage_name, reclaimable in _LAYOUTS
        for folder in _groups_upwards(proc, root, subfolder)
        if (room := _group_room(folder, limit_names, usage_name, reclaimable)) is not None
    ]
    return min(rooms) if rooms else None


def _groups_upwards(proc: Path, root: Path, controller: str) -> list[Path]:
    """The folders of the process's cgroup and of every group above it, for v2 (``controller``
    "") or a v1 controller ("memory", "cpu"); none where the process has no such group."""
    group = _group_paths(proc).get(controller)
    if group is None:
        return []
    top = root / controller
    if not controller and not (root / "cgroup.controllers").exists():
        top = root / "unified"  # the hybrid layout: v1 controllers, v2 beside them
    own = top / group
    # without a cgroup namespace the path names the host's group, but a container sees
    # only its own group, mounted as the root
    folder = own if own.is_dir() else top
    folders = [folder]
    while folder != top and top in folder.parents:
        folder = folder.parent
        folders.append(folder)
    return folders


def _group_paths(proc: Path) -> dict[str, str | None]:
    """The process's cgroup paths: v2's (key "") and v1's memory and cpu controllers'
    ("memory", "cpu"), None where it has none."""
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        lines = []
    paths: dict[str, str | None] = {"": None, "memory": None, "cpu": None}
    for line in lines:
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            paths[""] = path.strip("/")
        for controller in ("memory", "cpu"):
            if controller in controllers.split(","):
                paths[controller] = path.strip("/")
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
    return len(_usable_cpu_ids())


def _usable_cpu_ids() -> set[int]:
    try:
        return os.sched_getaffinity(0)
    except AttributeError:  # macOS, Windows
        return set(range(os.cpu_count() or 1))


def compute_cores(
    sys_root: Path = Path("/sys"), proc: Path = Path("/proc"), cgroup_root: Path = Path("/sys/fs/cgroup")
) -> int:
    """How many threads of convolutions this process's CPUs run well at once: its physical
    cores (SMT siblings share one core's vector units, so a second thread on a core adds
    little to oneDNN's kernels and makes every barrier wait for the slower sibling) among
    the CPUs its affinity allows (``taskset``, Slurm, ``docker --cpuset-cpus``), at most its
    cgroup's CPU quota rounded down (``docker --cpus``, Kubernetes limits: past the quota
    the kernel stops all the threads until the next period). At least 1. Needs no torch."""
    cores = _physical_cores(_usable_cpu_ids(), sys_root)
    quota = cpu_quota(proc, cgroup_root)
    if quota is not None:
        cores = min(cores, int(quota))
    return max(1, cores)


def _physical_cores(cpus: set[int], sys_root: Path) -> int:
    """Cores among ``cpus``: CPUs that list the same SMT siblings (Linux's topology) count
    once. Without the topology (macOS, Windows) psutil's physical cores, else every CPU."""
    siblings = set()
    for cpu in cpus:
        topology = sys_root / "devices" / "system" / "cpu" / f"cpu{cpu}" / "topology"
        for name in ("core_cpus_list", "thread_siblings_list"):  # the second: kernels before 5.7
            try:
                siblings.add((topology / name).read_text().strip())
                break
            except OSError:
                continue
        else:
            return _cores_without_topology(len(cpus))
    return len(siblings)


def _cores_without_topology(cpus: int) -> int:
    try:
        import psutil
    except ImportError:  # psutil comes with napari; plain installs may lack it
        return cpus
    return min(cpus, psutil.cpu_count(logical=False) or cpus)


def cpu_quota(proc: Path = Path("/proc"), cgroup_root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs' worth of time the process's cgroup and the groups above it allow (the least of
    their quotas over their periods: v2's cpu.max, v1's cpu.cfs_quota_us), or None without one."""
    quotas = [
        quota
        for controller, read in (("", _v2_quota), ("cpu", _v1_quota))
        for folder in _groups_upwards(proc, cgroup_root, controller)
        if (quota := read(folder)) is not None
    ]
    return min(quotas) if quotas else None


def _v2_quota(folder: Path) -> float | None:
    """cpu.max: "QUOTA PERIOD" in microseconds, or "max PERIOD" for none."""
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return int(quota) / int(period) if quota.isdigit() and period.isdigit() and int(period) else None


def _v1_quota(folder: Path) -> float | None:
    """cpu.cfs_quota_us over cpu.cfs_period_us; a quota of -1 is none."""
    quota, period = (_read_number(folder / f"cpu.cfs_{name}_us") for name in ("quota", "period"))
    return quota / period if quota and period else None  # "-1" is not read as a number


def release_freed_memory() -> bool:
    """Give the pages of memory freed since the last call back to the system (glibc's
    ``malloc_trim``); True where that was done (Linux with glibc), else nothing happens.

    glibc keeps freed blocks of its heap resident, and a tile's activations of another
    shape leave holes the next tile does not fill exactly: a full-resolution run's resident
    memory crept up tile by tile without this, called after each tile (docs/slides.md)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.cache
def _malloc_trim() -> Any:
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # another C library (musl has no malloc_trim)
        return None
