"""Speed switches whose best value depends on the machine, decided by measuring it or by a rule.

``channels_last`` helps on some CPUs and hurts on others (issue 37: 10% faster with AVX-512,
22% slower on an AVX2-only EPYC), so ``"auto"`` times a few convolution passes both ways at
first use (about a second) and keeps the faster layout in the user's cache, keyed by the CPU
(model and instruction-set flags, and the instruction sets this process's kernels may use: see
:func:`kernel_isa`), the torch version and the device. A later run on the same machine reads the
answer back; a cache file that cannot be read is measured again and rewritten.

``threads=0`` (auto) follows a rule instead of a probe: torch's threads are the physical cores
the process may use (:func:`~napari_style_transfer.memory.compute_cores`), never more than
torch's own count, and a run sets them for its own steps only (:func:`with_threads`).
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TypeVar

from ._torch_compat import hide_triton

hide_triton()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from .atomic import write_replacing  # noqa: E402
from .memory import compute_cores  # noqa: E402

T = TypeVar("T")

#: CPU flags (as /proc/cpuinfo names them) that decide which convolution kernels oneDNN picks.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")
#: The probe's network: VGG19's first block and the start of its second (channels in, out), on a
#: 64 px image: the layers whose layout costs or saves the most per pixel, in well under a second.
PROBE_CONVS = ((3, 64), (64, 64), (64, 128), (128, 128))
PROBE_SIZE = 64
#: Timed passes per layout, alternating layouts so that a busy spell hits both; the least counts.
PROBE_REPEATS = 3
CACHE_FILE = "speed_choices.json"
#: Environment variables that cap the instruction sets of oneDNN (convolutions) and MKL (matrix
#: products) below what the CPU has, as a benchmark emulating an older CPU class sets them.
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
#: oneDNN ISA caps that still allow its native bf16 kernels (AVX-512 BF16, AMX and later).
BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX10", "ALL", "DEFAULT")

_LOCK = threading.Lock()  # two runs starting together probe once


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/napari-style-transfer``, else ``~/.cache/napari-style-transfer``."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "napari-style-transfer"


def cpu_description() -> dict[str, object]:
    """The CPU's model name and which of :data:`CPU_FLAGS` it has (Linux's /proc/cpuinfo;
    elsewhere the platform's processor string and no flags)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() in ("flags", "Features"):
            flags = set(value.split())
    return {"model": model, "flags": [flag for flag in CPU_FLAGS if flag in flags]}


def kernel_isa() -> str:
    """The instruction sets this process's CPU kernels may use: torch's own vector kernels
    (``torch.backends.cpu.get_cpu_capability()``, which ``ATEN_CPU_CAPABILITY`` lowers) and any
    cap of :data:`ISA_CAPS` set, e.g. ``"AVX2 ONEDNN_MAX_CPU_ISA=AVX2"``; ``"AVX512"`` on an
    AVX-512 CPU with nothing capped. Two processes on one CPU can differ here (an AVX2 emulation
    beside a native run), and so can their faster layout."""
    caps = [f"{name}={os.environ[name].upper()}" for name in ISA_CAPS if os.environ.get(name)]
    return " ".join([torch.backends.cpu.get_cpu_capability(), *caps])


def onednn_has_native_bf16() -> bool:
    """False where ``ONEDNN_MAX_CPU_ISA`` (or ``DNNL_MAX_CPU_ISA``) caps oneDNN below the ISAs with
    bf16 instructions, so that its bf16 convolutions would be emulated; True where nothing caps it
    (whether the CPU has them is :func:`~napari_style_transfer.engine.cpu_has_native_bf16`'s)."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return not cap or cap.upper().startswith(BF16_ISAS)


def machine_key(device: torch.device, dtype: torch.dtype = torch.float32) -> str:
    """What a cached choice holds for: the CPU, the torch version, the device (a GPU's name),
    the convolutions' dtype and, on the CPU, the thread count and the kernels' instruction sets
    (:func:`kernel_isa`; the kernels oneDNN picks differ with both)."""
    cpu = cpu_description()
    where = device.type
    if device.type == "cuda":
        where += ":" + torch.cuda.get_device_name(device)
    else:
        where += f" {torch.get_num_threads()} threads isa {kernel_isa()}"
    flags = " ".join(cpu["flags"])  # type: ignore[arg-type]
    return f"{cpu['model']} [{flags}] torch {torch.__version__} {where} {str(dtype).removeprefix('torch.')}"


def time_layouts(device: torch.device, dtype: torch.dtype = torch.float32) -> dict[bool, float]:
    """Seconds of one forward and backward pass of :data:`PROBE_CONVS` at :data:`PROBE_SIZE`
    px in ``dtype``, channels-last (True) and contiguous (False): the least of
    :data:`PROBE_REPEATS` each."""
    generator = torch.Generator().manual_seed(0)
    weights = [
        (torch.randn(out, inp, 3, 3, generator=generator) * 0.05).to(dtype) for inp, out in PROBE_CONVS
    ]
    image = torch.rand(1, 3, PROBE_SIZE, PROBE_SIZE, generator=generator).to(dtype)
    layouts = {True: torch.channels_last, False: torch.contiguous_format}
    prepared = {
        last: ([w.to(device, memory_format=fmt) for w in weights], image.to(device, memory_format=fmt))
        for last, fmt in layouts.items()
    }
    best = dict.fromkeys(layouts, float("inf"))
    for repeat in range(PROBE_REPEATS + 1):  # the first round warms the kernels up, untimed
        for last, (layer_weights, start) in prepared.items():
            seconds = _one_pass(layer_weights, start.clone().requires_grad_(True), device)
            if repeat:
                best[last] = min(best[last], seconds)
    return best


def _one_pass(weights: list[torch.Tensor], image: torch.Tensor, device: torch.device) -> float:
    _synchronize(device)
    started = time.perf_counter()
    x = image
    for index, weight in enumerate(weights):
        x = F.relu(F.conv2d(x, weight, padding=1))
        if index == 1:
            x = F.max_pool2d(x, 2)
    x.float().square().mean().backward()  # the image's gradient, as a style-transfer step takes it
    _synchronize(device)
    return time.perf_counter() - started


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def choose_channels_last(
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    probe: Callable[[torch.device, torch.dtype], dict[bool, float]] | None = None,
) -> bool:
    """Whether channels-last is the faster layout for ``dtype`` convolutions on ``device``:
    read from the cache, else measured with ``probe`` (default :func:`time_layouts`) and
    remembered there. A tie keeps contiguous, the layout that needs no conversions."""
    key = machine_key(device, dtype)
    path = cache_dir() / CACHE_FILE
    with _LOCK:
        choices = _read_choices(path)
        entry = choices.get(key)
        if isinstance(entry, dict) and isinstance(entry.get("channels_last"), bool):
            return entry["channels_last"]
        seconds = (probe or time_layouts)(device, dtype)
        faster = seconds[True] < seconds[False]
        choices[key] = {
            "channels_last": faster,
            "seconds": {"channels_last": seconds[True], "contiguous": seconds[False]},
        }
        _write_choices(path, choices)
        return faster


def _read_choices(path: Path) -> dict[str, object]:
    """The cached choices, or none where the file is missing or not what this module writes."""
    try:
        choices = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return choices if isinstance(choices, dict) else {}


def _write_choices(path: Path, choices: dict[str, object]) -> None:
    """Write the cache; a cache that cannot be written (read-only home) only costs a probe next time."""
    text = json.dumps(choices, indent=1, sort_keys=True).encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_replacing(path, lambda file: file.write(text))
    except OSError:
        return


def channels_last_used(option: bool | str, device: torch.device, dtype: torch.dtype = torch.float32) -> bool:
    """Whether a run with ``channels_last=option`` computes its ``dtype`` convolutions (see
    :func:`compute_dtype`) in the channels-last layout on ``device``: an explicit True or
    False as given; ``auto`` as the machine's probe found faster (:func:`~napari_style_transfer.speed_probe.choose_channels_last`, measured once per
    machine, torch version and device, then read from the cache). What ``auto`` became, for a
    run's record."""
    if isinstance(option, str) and option == "auto":
        return choose_channels_last(device, dtype)
    return bool(option)


def memory_format(
    option: bool | str, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.memory_format:
    """The layout of the network's weights and the images it sees (see :func:`channels_last_used`)."""
    return torch.channels_last if channels_last_used(option, device, dtype) else torch.contiguous_format


def threads_used(option: int) -> int:
    """torch's CPU threads for a run with ``threads=option``: ``option`` where it is 1 or more;
    for 0 (auto) :func:`~napari_style_transfer.memory.compute_cores`, at most torch's count in
    the calling thread. Torch starts with every core of the machine, blind to cgroup quotas
    (and, without MKL, counting SMT siblings); a lower count was set on purpose
    (``OMP_NUM_THREADS``, ``torch.set_num_threads``, a dask worker's share) and holds."""
    if option:
        return option
    return min(torch.get_num_threads(), compute_cores())


def with_threads(steps: Iterator[T], option: int) -> Iterator[T]:
    """What ``steps`` yields, each item computed with :func:`threads_used` ``(option)`` torch
    threads (decided at the first item, in the thread that iterates) in the thread that asks
    for it; between items that thread's own count is back, so a caller's later runs and its
    own torch work keep theirs. A thread's count is its own (OpenMP's), so runs in other
    threads (the widget's worker, a batch's) keep theirs. Closing this closes ``steps``."""
    threads = None
    try:
        while True:
            before = torch.get_num_threads()
            threads = threads_used(option) if threads is None else threads
            if before != threads:
                torch.set_num_threads(threads)
            try:
                item = next(steps)
            except StopIteration:
                return
            finally:
                if before != threads:
                    torch.set_num_threads(before)
            yield item
    finally:
        if isinstance(steps, Generator):
            steps.close()
