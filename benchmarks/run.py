"""All the CPU benchmarks in one command: our engine and the seed report's algorithm side by side.

    python benchmarks/run.py                 # about 15 minutes on 2 cores; writes docs/benchmarks.md
    python benchmarks/run.py --quick         # a 1-minute smoke run (tiny sizes, one repeat)
    python benchmarks/run.py --emulate-avx2  # the AVX2 class on an AVX-512 CPU: its own page

Writes ``docs/benchmarks.md`` (tables) and two plots under ``docs/images/`` (loss against wall
time, seconds per step against size), with the machine, the date and the torch version.

Every measurement runs in a fresh process, so each has its own peak memory and nothing is
shared between implementations. Numbers are medians over ``--repeats`` processes (of the
per-step medians inside each). The bundled astronaut (content) and swirl (style, resized to
the content's size because the report's model needs equal sizes) are used throughout, with
the paper's layers and an untrained VGG19 unless ``--weights`` says otherwise: the numbers
say how fast and how far each optimiser gets, nothing about how the images look.

A *step* is one optimiser iteration of ours and one closure call (loss + gradient
evaluation) of the reference, which is how the seed report counts them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
STYLE_LAYERS = ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]
CONTENT_LAYERS = ["conv4_2"]
PARTS = ("speed", "curves", "first", "cancel", "memory", "threads")
#: Stages of a run whose peak resident memory the memory part reports, in order.
MEMORY_STAGES = ("imports", "weights load", "model build", "style targets", "first step", "steady steps")
#: Our runs in the time-to-quality comparison stop at this share of the reference's time.
CURVE_BUDGET = 0.6
#: Time-to-quality runs of ours, in the order they run.
CURVE_RUNS = ("ours-auto", "ours-single", "ours-noise", "ours-adam", "ours-auto-bf16")


def measured(names, native_bf16: bool) -> list[str]:
    """The configurations to time: none in bf16 on a CPU without native bf16 (an AVX2 CPU, or
    ``--emulate-avx2``), where bf16 is oneDNN's emulation (14x slower than fp32 at 96 px), never
    what ``precision="auto"`` picks there, and would take most of the run's hour."""
    return [name for name in names if native_bf16 or "bf16" not in name]


#: Implementations timed per step: name -> (description, engine options). fp32 is named, not
#: left to precision="auto", which is bf16 on CPUs with native bf16: the runs compare the two.
CONFIGS = {
    "reference": (
        "seed report: loss modules in a copied Sequential, torch.optim.LBFGS, clamp in the closure",
        {},
    ),
    "ours": (
        "this engine, defaults: forward hooks, box L-BFGS, channels_last=auto (the layout the "
        "machine's probe found faster), precision fp32",
        {"precision": "fp32"},
    ),
    "ours-channels-last": (
        "this engine in fp32 with channels_last=True",
        {"precision": "fp32", "channels_last": True},
    ),
    "ours-contiguous": (
        "this engine in fp32 with channels_last=False",
        {"precision": "fp32", "channels_last": False},
    ),
    "ours-bf16": ("this engine with precision=bf16 (autocast on the CPU)", {"precision": "bf16"}),
    "ours-adam": ("this engine in fp32 with optimizer=adam", {"precision": "fp32", "optimizer": "adam"}),
}


# --- measurements, each run in its own process -------------------------------------------


def _images(size: int):
    import torch

    from napari_style_transfer._image import describe_image
    from napari_style_transfer._sample_data import load_sample
    from napari_style_transfer.api import _to_tensor
    from napari_style_transfer.engine import resize

    def load(key: str) -> torch.Tensor:
        frame = describe_image(load_sample(key), key).frame()
        return resize(_to_tensor(frame.rgb, torch.device("cpu")), size, size)

    return load("astronaut"), load("swirl")


def _peak_reset() -> int:
    """Reset the kernel's peak-RSS counter; return the current RSS (bytes)."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status("VmRSS")


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def one_size_options(size: int, steps: int, weights: str, **overrides):
    """Validated options of a benchmark run at one size (no coarse levels, no snapshots)."""
    from napari_style_transfer import StyleOptions

    return StyleOptions(
        steps=steps,
        size=size,
        weights=weights,
        schedule="none",
        snapshot_every=0,
        content_layers=tuple(CONTENT_LAYERS),
        style_layers=tuple(STYLE_LAYERS),
        **overrides,
    ).validated()


def measure_steps(name: str, size: int, steps: int, weights: str) -> dict:
    """Seconds per step, evaluations and peak memory of one implementation at one size."""
    import torch

    from napari_style_transfer.engine import (
        StyleObjective,
        channels_last_used,
        compute_dtype,
        evaluate,
        optimize,
    )
    from napari_style_transfer.vgg import VGGFeatures
    from napari_style_transfer.weights import load_vgg19_features

    content, style = _images(size)
    features = load_vgg19_features(weights, progress=False).features
    overrides = CONFIGS[name][1]
    options = one_size_options(size, steps, weights, **overrides)
    baseline = _peak_reset()
    times: list[float] = []
    if name == "reference":
        sys.path.insert(0, str(HERE))
        from reference import run_reference

        history, final = run_reference(
            features,
            content,
            style,
            content,
            steps=steps,
            content_layers=CONTENT_LAYERS,
            style_layers=STYLE_LAYERS,
            content_weight=options.content_weight,
            style_weight=options.style_weight,
        )
        times = [t for _, _, t in history]
        evaluations = len(history)
    else:
        dtype = compute_dtype(options.precision, content.device)
        channels_last = channels_last_used(options.channels_last, content.device, dtype)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        extractor = VGGFeatures(features, options.layers).to(memory_format=memory_format)
        objective = StyleObjective(extractor, content, style, options, dtype)
        calls = count_evaluations(objective)
        started = time.perf_counter()
        for _, _, image in optimize(objective, content, options):  # noqa: B007 (the last image is kept)
            times.append(time.perf_counter() - started)
        final = image.detach().clone()
        evaluations = calls[0]
    peak = _status("VmHWM")
    judge = StyleObjective(VGGFeatures(features, options.layers), content, style, options)
    durations = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    return {
        "name": name,
        "size": size,
        "steps": len(times),
        "evaluations": evaluations,
        "seconds_per_step": statistics.median(durations[2:] if len(durations) > 4 else durations),
        "peak_mb": peak / 2**20,
        "optimisation_mb": (peak - baseline) / 2**20,
        "final_loss": evaluate(judge, final).total,
        "channels_last": name != "reference" and channels_last,
    }


def measure_threads(threads: int, size: int, steps: int, weights: str) -> dict:
    """:func:`measure_steps` of the default engine with ``threads`` torch threads."""
    import torch

    torch.set_num_threads(threads)
    return measure_steps("ours", size, steps, weights) | {"threads": threads}


def compare_threads(size: int, steps: int, repeats: int, weights: str) -> dict:
    """Seconds per step with 1 thread, the rule's count and every CPU, taking turns (the
    order reversed every round, so that a busy spell hits each count alike); and what
    ``threads=0`` (auto) picks here, with torch's own count beside it."""
    import torch

    from napari_style_transfer.memory import compute_cores, cpu_quota, usable_cpus

    counts = sorted({1, compute_cores(), usable_cpus()})
    runs: dict[int, list[dict]] = {count: [] for count in counts}
    for round_ in range(repeats):
        for count in counts if round_ % 2 == 0 else counts[::-1]:
            runs[count].append(_child("threads", threads=count, size=size, steps=steps, weights=weights))
    return {
        "size": size,
        "rule": {
            "cores": compute_cores(),
            "usable_cpus": usable_cpus(),
            "cpu_quota": cpu_quota(),
            "torch_default": torch.get_num_threads(),
        },
        "runs": {str(count): results for count, results in runs.items()},
    }


class EvaluationCost:
    """Counts the forward and backward passes of every StyleObjective in this process, each
    weighted by its pixels against ``size`` x ``size``: the cost of a run in full-size
    evaluations, which a busy machine does not change (a pass at half the size costs 1/4;
    ``benchmarks/fewer_steps.py ratio`` checks that against the clock). Evaluations without
    a gradient (a run's final losses) are not the optimiser's and are not counted."""

    def __init__(self, size: int) -> None:
        from napari_style_transfer.objective import StyleObjective

        self.cost = 0.0
        self.by_size: dict[int, int] = {}
        forward = StyleObjective.forward

        def counted(objective, image, *args, **kwargs):
            if image.requires_grad:
                side = max(image.shape[-2:])
                self.by_size[side] = self.by_size.get(side, 0) + len(image)
                self.cost += len(image) * image.shape[-2] * image.shape[-1] / size**2
            return forward(objective, image, *args, **kwargs)

        StyleObjective.forward = counted


def count_evaluations(objective) -> list[int]:
    """Make ``objective`` count its calls; returns the one-element counter."""
    calls = [0]
    forward = objective.forward

    def counted(image):
        calls[0] += 1
        return forward(image)

    objective.forward = counted
    return calls


def measure_curve(name: str, size: int, steps: int, weights: str, budget: float = float("inf")) -> dict:
    """Loss (the full-size objective) against wall time and cost (:class:`EvaluationCost`), for
    the time-to-quality comparison: ``curve`` holds (seconds, loss, cost) after every full-size
    step; stops after ``steps`` steps or ``budget`` seconds."""
    import numpy as np

    from napari_style_transfer import iter_stylize
    from napari_style_transfer.api import StyleResult

    if name == "reference":
        return measure_steps("reference", size, steps, weights) | {
            "curve": _reference_curve(size, steps, weights)
        }
    content, style = _images(size)
    as_numpy = [t[0].permute(1, 2, 0).numpy() for t in (content, style)]
    overrides = {
        "ours-auto": {"precision": "fp32"},
        "ours-single": {"schedule": "none", "precision": "fp32"},
        "ours-noise": {"schedule": "none", "init": "noise", "precision": "fp32"},
        "ours-adam": {"schedule": "none", "optimizer": "adam", "precision": "fp32"},
        "ours-auto-bf16": {"precision": "bf16"},
    }[name]
    curve = []
    cost = EvaluationCost(size)
    started = time.perf_counter()
    for record in iter_stylize(
        *as_numpy, steps=steps, size=size, weights=weights, snapshot_every=0, style_scale=1.0, **overrides
    ):
        if isinstance(record, StyleResult):
            break
        if record.size == size:  # coarse levels optimise a smaller objective: not comparable
            curve.append((time.perf_counter() - started, record.losses.total, cost.cost))
        if time.perf_counter() - started > budget:
            break
    return {"name": name, "size": size, "curve": curve, "final_loss": float(np.asarray(curve)[-1, 1])}


def _reference_curve(size: int, steps: int, weights: str) -> list[tuple[float, float]]:
    from napari_style_transfer.weights import load_vgg19_features

    sys.path.insert(0, str(HERE))
    from reference import run_reference

    content, style = _images(size)
    features = load_vgg19_features(weights, progress=False).features
    history, _ = run_reference(
        features,
        content,
        style,
        content,
        steps=steps,
        content_layers=CONTENT_LAYERS,
        style_layers=STYLE_LAYERS,
        content_weight=1.0,
        style_weight=1e6,
    )
    return [(t, loss, float(evaluations)) for evaluations, loss, t in history]


def measure_memory(
    size: int,
    steps: int,
    weights: str,
    precision: str = "auto",
    channels_last: bool | str = "auto",
    history: int | None = None,
) -> dict:
    """Peak resident memory (MB, the kernel's high-water mark) of a run at ``size`` px, square,
    one size (no coarse levels: the default schedule's peak is its last level), read after each
    of :data:`MEMORY_STAGES` in this fresh process; and the resident memory then, anonymous
    (what the run allocates) and mapped files (libraries). ``history``: L-BFGS curvature pairs
    kept (default the engine's LBFGS_HISTORY), to price them."""
    import torch

    from napari_style_transfer import engine
    from napari_style_transfer.engine import StyleObjective, compute_dtype, memory_format, optimize
    from napari_style_transfer.vgg import VGGFeatures
    from napari_style_transfer.weights import load_vgg19_features

    stages = {"imports": _memory_now()}
    if history is not None:
        engine.LBFGS_HISTORY = history
    content, style = _images(size)
    options = one_size_options(size, steps, weights, precision=precision, channels_last=channels_last)
    dtype = compute_dtype(options.precision, content.device)
    layout = memory_format(options.channels_last, content.device, dtype)  # the probe, before the peaks count
    # as the pipeline loads them (pipeline.optimise.load_model): no weights past the deepest layer
    features = load_vgg19_features(weights, progress=False, deepest=options.layers[-1]).features
    stages["weights load"] = _memory_now()
    extractor = VGGFeatures(features, options.layers, options.pooling).to(memory_format=layout)
    stages["model build"] = _memory_now()
    objective = StyleObjective(extractor, content, style, options, dtype)
    stages["style targets"] = _memory_now()
    run = optimize(objective, content, options)
    started = time.perf_counter()
    _, losses, _ = next(run)
    stages["first step"] = _memory_now()
    for step in run:
        losses = step[1]
    stages["steady steps"] = _memory_now()
    return {
        "size": size,
        "steps": steps,
        "history": engine.LBFGS_HISTORY,
        "precision": str(dtype).removeprefix("torch."),
        "channels_last": layout == torch.channels_last,
        "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
        "seconds_per_step": (time.perf_counter() - started) / steps,
        "final_loss": losses.total,  # what fewer curvature pairs cost, beside what they save
        "stages": stages,
    }


def _memory_now() -> dict[str, float]:
    """The peak and the resident memory now, and how much of it is the process's own
    (anonymous) and how much mapped files (shared libraries: torch's CUDA build maps about
    0.4 GB of them even on the CPU, shared with every other process that loads them)."""
    keys = {"peak_mb": "VmHWM", "resident_mb": "VmRSS", "anonymous_mb": "RssAnon", "files_mb": "RssFile"}
    return {name: _status(key) / 2**20 for name, key in keys.items()}


def measure_first_step(size: int, torch_home: str, started: float) -> dict:
    """Seconds from the start of this process (before any import) to the first step."""
    os.environ["TORCH_HOME"] = torch_home
    from napari_style_transfer import iter_stylize
    from napari_style_transfer._sample_data import load_sample

    records = iter_stylize(
        load_sample("astronaut"), load_sample("swirl"), size=size, steps=5, weights="imagenet"
    )
    first = next(records)
    records.close()
    return {"size": size, "seconds": time.perf_counter() - started, "first_step_size": first.size}


def measure_matmul(threads: int, size: int = 2048) -> dict:
    """GFLOP/s of a square matrix product in fp32 and bf16 (at most 512 x 512 without native
    bf16, where 2048 takes minutes), and the kernels' instruction sets as the runs see them."""
    import torch

    from napari_style_transfer.engine import cpu_has_native_bf16
    from napari_style_transfer.speed_probe import kernel_isa

    torch.set_num_threads(threads)
    sizes = {torch.float32: size, torch.bfloat16: size if cpu_has_native_bf16() else min(size, 512)}
    rates = {}
    for dtype, side in sizes.items():
        a, b = torch.rand(side, side, dtype=dtype), torch.rand(side, side, dtype=dtype)
        a @ b
        seconds = []
        for _ in range(5):
            started = time.perf_counter()
            a @ b
            seconds.append(time.perf_counter() - started)
        rates[str(dtype).removeprefix("torch.")] = 2 * side**3 / statistics.median(seconds) / 1e9
    return {**rates, "size": size, "bfloat16_size": sizes[torch.bfloat16], "kernel_isa": kernel_isa()}


def measure_cancel(size: int, trials: int, weights: str) -> dict:
    """Seconds from a cancel request (at a random moment within a step) to the worker's stop."""
    import random

    import numpy as np

    from napari_style_transfer._napari.worker import Cancelled, Progress, style_transfer_updates

    rng = np.random.default_rng(0)
    content, style = rng.random((size, size, 3)), rng.random((size, size, 3))
    latencies, step_seconds = [], []
    for trial in range(trials):
        cancel = threading.Event()
        updates = style_transfer_updates(
            content, style, {"size": size, "steps": 1000, "weights": weights, "schedule": "none"}, cancel
        )
        box: dict[str, float] = {}

        def consume(updates=updates, box=box) -> None:
            times = []
            for update in updates:
                if isinstance(update, Progress):
                    times.append(time.perf_counter())
                    if len(times) == 3:
                        box["step"] = times[2] - times[1]
                        box["third"] = times[2]
                if isinstance(update, Cancelled):
                    box["stopped"] = time.perf_counter()
                    return

        thread = threading.Thread(target=consume)
        thread.start()
        while "third" not in box:
            time.sleep(0.005)
        time.sleep(random.Random(trial).random() * box["step"])
        requested = time.perf_counter()
        cancel.set()
        thread.join()
        latencies.append(box["stopped"] - requested)
        step_seconds.append(box["step"])
    return {
        "size": size,
        "median": statistics.median(latencies),
        "max": max(latencies),
        "step": statistics.median(step_seconds),
    }


# --- FLOPs --------------------------------------------------------------------------------


def conv_gflops(size: int, deepest: str = "conv5_1") -> float:
    """Conv FLOPs of one evaluation: forward plus the input-gradient backward (the weights
    are frozen, so no weight gradient), counting a multiply-add as two FLOPs."""
    sys.path.insert(0, str(ROOT / "src"))
    from napari_style_transfer.options import VGG19_LAYERS
    from napari_style_transfer.vgg import VGG19_CHANNELS

    flops, side, in_channels = 0, size, 3
    names = iter(VGG19_LAYERS)
    for block in VGG19_CHANNELS:
        for out_channels in block:
            name = next(names)
            flops += 2 * in_channels * out_channels * 9 * side * side
            in_channels = out_channels
            next(names)  # relu
            if name == deepest:
                return 2 * flops / 1e9
        next(names)  # pool
        side //= 2
    return 2 * flops / 1e9


# --- the driver ---------------------------------------------------------------------------


def _child(kind: str, **kwargs) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--kwargs", json.dumps(kwargs)]
    out = subprocess.run(
        command, check=True, capture_output=True, text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"}
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median_of(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


#: CPU classes by the best instruction set oneDNN's convolutions use, best first: the speed
#: figures of one class say little about another (issue 37: channels-last helps on one, hurts on the other).
CPU_CLASSES = (("amx_tile", "AMX"), ("avx512_bf16", "AVX-512 BF16"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))


#: What caps torch's own vector kernels (ATen), oneDNN's (convolutions) and MKL's (matrix
#: products) at AVX2 on a newer CPU, as their documentation names them. MKL obeys only on Intel
#: CPUs; on AMD it picks its own code path (AVX2 on Zen 2 and 3).
AVX2_EMULATION = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}


def cpu_class(flags: list[str]) -> str:
    """The CPU's class (:data:`CPU_CLASSES`) from its /proc/cpuinfo flags."""
    return next((name for flag, name in CPU_CLASSES if flag in flags), "no AVX2")


def emulated_class(native: str) -> str | None:
    """``AVX2 (emulated: kernels capped on an <native> CPU)`` where this process's environment
    holds :data:`AVX2_EMULATION` (children inherit it; the report's header names the caps);
    None for a native run."""
    if any(os.environ.get(name) != value for name, value in AVX2_EMULATION.items()):
        return None
    return f"AVX2 (emulated: kernels capped on an {native} CPU)"


def _has_native_bf16() -> bool:
    from napari_style_transfer.engine import cpu_has_native_bf16

    return cpu_has_native_bf16()


def machine(threads: int) -> dict:
    import torch

    from napari_style_transfer.speed_probe import cpu_description

    cpu = cpu_description()
    native = cpu_class(cpu["flags"])
    return {
        "cpu": cpu["model"],
        "cpu_flags": cpu["flags"],
        "cpu_class": emulated_class(native) or native,
        "cores": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_torch_home(path: Path) -> None:
    """A hub cache holding an untrained VGG19 under the ImageNet file's name (no download)."""
    import torch

    from napari_style_transfer._torch_compat import import_torchvision

    checkpoints = path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    torch.save(
        import_torchvision().models.vgg19(weights=None).state_dict(), checkpoints / "vgg19-dcbb9e9d.pth"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one repeat, to check the script")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--steps", type=int, default=20, help="steps per speed measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quality-size", type=int, default=512)
    parser.add_argument(
        "--quality-steps", type=int, default=100, help="reference steps that set the target loss"
    )
    parser.add_argument("--weights", default="random")
    parser.add_argument("--memory-size", type=int, default=512, help="size of the memory part's run")
    parser.add_argument(
        "--memory-steps",
        type=int,
        default=32,
        help="steps of the memory part's run (past the L-BFGS history of 30, so that it is full)",
    )
    parser.add_argument(
        "--emulate-avx2",
        action="store_true",
        help="cap torch's, oneDNN's and MKL's kernels at AVX2 in every measuring process "
        "(AVX2_EMULATION); the class is then 'AVX2 (emulated: ...)' and the defaults of --output, "
        "--json and --images are benchmarks_avx2_emulated.md, .json and images/avx2_emulated/",
    )
    parser.add_argument("--output", type=Path, help="default docs/benchmarks.md")
    parser.add_argument("--images", type=Path, help="default docs/images")
    parser.add_argument(
        "--json",
        type=Path,
        help="raw measurements (default docs/benchmarks.json); parts not rerun are read from here",
    )
    parser.add_argument(
        "--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to measure again"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--kwargs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.emulate_avx2:  # before torch is imported here; the children inherit it
        os.environ.update(AVX2_EMULATION)
    page = "benchmarks_avx2_emulated" if args.emulate_avx2 else "benchmarks"
    args.output = args.output or ROOT / "docs" / f"{page}.md"
    args.json = args.json or ROOT / "docs" / f"{page}.json"
    args.images = args.images or ROOT / "docs" / "images" / ("avx2_emulated" if args.emulate_avx2 else "")

    if args.child:
        started = time.perf_counter()
        kwargs = json.loads(args.kwargs)
        if args.child == "first_step":
            kwargs["started"] = started
        function = {
            "steps": measure_steps,
            "curve": measure_curve,
            "first_step": measure_first_step,
            "matmul": measure_matmul,
            "cancel": measure_cancel,
            "memory": measure_memory,
            "threads": measure_threads,
        }[args.child]
        print(json.dumps(function(**kwargs)))
        return

    if args.quick:
        args.sizes, args.steps, args.repeats, args.quality_size, args.quality_steps = [64], 6, 1, 64, 10
        args.memory_size, args.memory_steps = 64, 3
    saved = json.loads(args.json.read_text()) if args.json.is_file() and set(args.parts) != set(PARTS) else {}
    threads = os.cpu_count() or 1
    results = {"loads": [os.getloadavg()[0]], "info": machine(threads)}
    print(f"machine: {results['info']}", flush=True)
    # --quick: a CPU without native bf16 (no AVX-512 BF16 or AMX) takes minutes for 2048 x 2048
    results["matmul"] = _child("matmul", threads=threads, size=512 if args.quick else 2048)
    print(f"matmul GFLOP/s: {results['matmul']}", flush=True)
    if args.emulate_avx2 and not results["matmul"]["kernel_isa"].startswith("AVX2 "):
        raise SystemExit(f"the AVX2 cap did not take in a child: {results['matmul']['kernel_isa']}")

    native_bf16 = not args.emulate_avx2 and _has_native_bf16()
    results["info"]["native_bf16"] = native_bf16
    if "speed" in args.parts:
        results["speed"] = {}
        for size in args.sizes:
            steps = max(8, args.steps * 256 // max(size, 256))  # fewer at 512 px, where a step is slow
            for name in measured(CONFIGS, native_bf16):
                runs = [
                    _child("steps", name=name, size=size, steps=steps, weights=args.weights)
                    for _ in range(args.repeats)
                ]
                results["speed"][f"{name}@{size}"] = runs
                print(
                    f"{size:4d} px {name:16s} {_median_of(runs, 'seconds_per_step'):.3f} s/step", flush=True
                )

    if "curves" in args.parts:
        curves = {
            "reference": _child(
                "curve",
                name="reference",
                size=args.quality_size,
                steps=args.quality_steps,
                weights=args.weights,
            )
        }
        budget = CURVE_BUDGET * curves["reference"]["curve"][-1][0]
        for name in measured(CURVE_RUNS, native_bf16):
            curves[name] = _child(
                "curve",
                name=name,
                size=args.quality_size,
                steps=args.quality_steps * 3,
                weights=args.weights,
                budget=budget,
            )
            print(f"curve {name}: final loss {curves[name]['final_loss']:.4g}", flush=True)
        results["curves"] = curves

    if "first" in args.parts:
        with tempfile.TemporaryDirectory() as home:
            write_torch_home(Path(home))
            _child("first_step", size=args.sizes[0], torch_home=home)  # writes the features-only copy
            results["first_steps"] = [
                {
                    "size": size,
                    "seconds": statistics.median(
                        _child("first_step", size=size, torch_home=home)["seconds"]
                        for _ in range(args.repeats)
                    ),
                }
                for size in args.sizes
            ]
    if "cancel" in args.parts:
        results["cancels"] = [
            _child("cancel", size=size, trials=3 if args.quick else 5, weights=args.weights)
            for size in args.sizes
        ]
    if "memory" in args.parts:
        # memory is not distorted by a busy machine, unlike the timings
        results["memory"] = _child(
            "memory", size=args.memory_size, steps=args.memory_steps, weights=args.weights
        )
        print(f"memory: {results['memory']['stages']}", flush=True)
    if "threads" in args.parts:
        # the children set their own counts: torch's default here is what auto starts from
        results["threads"] = compare_threads(
            args.sizes[-1], max(8, args.steps // 2), args.repeats, args.weights
        )
        print(f"threads: {results['threads']['rule']}", flush=True)
    results["loads"].append(os.getloadavg()[0])
    results = {**saved, **results, "parts": args.parts}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    write_report(args, results)
    print(f"wrote {args.output}")


def memory_lines(memory: dict | None, cpu: str) -> list[str]:
    """The memory part's table: the peak after each stage, what the stage added to it, and the
    resident memory then, anonymous (the run's own) and mapped files (libraries)."""
    if not memory:
        return []
    history = memory.get("history", 30)
    lines = [
        "",
        f"## Peak memory by stage at {memory['size']} px",
        "",
        f"One fresh process, {memory['steps']} steps at one size ({memory['precision']}, "
        f"channels_last {memory['channels_last']}, L-BFGS history {history}): the kernel's resident-memory "
        "high-water mark (VmHWM) after each stage, and the resident memory then (VmRSS), split into "
        "anonymous memory (RssAnon: what the process allocated) and mapped files (RssFile: shared "
        "libraries). A busy machine does not change these numbers. L-BFGS keeps up to "
        f"{history} curvature pairs, so the steady peak grows by two images a step until step {history}.",
        "",
        "| CPU class | stage | peak MB | added to the peak MB | resident after MB | anonymous after MB | files after MB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    before = 0.0
    for stage in MEMORY_STAGES:
        numbers = memory["stages"][stage]
        lines.append(
            f"| {cpu} | {stage} | {numbers['peak_mb']:.0f} | {numbers['peak_mb'] - before:.0f} | "
            f"{numbers['resident_mb']:.0f} | {numbers.get('anonymous_mb', float('nan')):.0f} | "
            f"{numbers.get('files_mb', float('nan')):.0f} |"
        )
        before = numbers["peak_mb"]
    return lines


def threads_lines(threads: dict | None, cpu: str, busy: bool) -> list[str]:
    """The thread counts' table: seconds per step of each count, and what auto picks."""
    if not threads:
        return []
    rule = threads["rule"]
    auto = min(rule["torch_default"], rule["cores"])
    lines = [
        "",
        f"## Threads at {threads['size']} px",
        "",
        f"`threads=0` (auto) here: {auto} (physical cores in the affinity {rule['cores']}, usable CPUs "
        f"{rule['usable_cpus']}, cgroup CPU quota {rule['cpu_quota'] or 'none'}, torch's own count "
        f"{rule['torch_default']}). The counts took turns, fresh processes, the default engine in fp32"
        + (" (**measured on a busy machine: the ratios are unreliable**)." if busy else "."),
        "",
        "| CPU class | threads | s/step (median) | each run | vs 1 thread |",
        "| --- | --- | --- | --- | --- |",
    ]
    one = _median_of(threads["runs"]["1"], "seconds_per_step")
    for count, runs in threads["runs"].items():
        median = _median_of(runs, "seconds_per_step")
        each = ", ".join(f"{run['seconds_per_step']:.3f}" for run in runs)
        lines.append(f"| {cpu} | {count} | {median:.3f} | {each} | {median / one:.2f} |")
    return lines


def _loss_plot(curves: dict, axis: int, targets: tuple[float, float]):
    """Each run's full-size loss against its curve points' ``axis`` (0 seconds, 2 cost), the
    targets as grey lines."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, result in curves.items():
        points = [point for point in result["curve"] if len(point) > axis]
        xs, losses = [point[axis] for point in points], [point[1] for point in points]
        axes.plot(xs, losses, label=name, lw=2 if name in ("reference", "ours-auto") else 1)
    for target, style in zip(targets, (":", "--"), strict=True):
        axes.axhline(target, color="grey", ls=style, lw=1)
    axes.set(ylabel="loss (full-size objective)", yscale="log")
    axes.legend()
    figure.tight_layout()
    return figure


def write_report(args, results: dict) -> None:
    """The report of every part in ``results`` (this run's and those read back from the JSON):
    a part never measured leaves its section and figures out."""
    info, loads = results["info"], results["loads"]
    busy = max(loads) > 0.5 * info["cores"] + 1
    cpu = info.get("cpu_class", "not recorded")
    speed = _speed_by_config(results.get("speed", {}))
    lines = header_lines(args, info, results["matmul"], loads, busy)
    images = Path(os.path.relpath(args.images, args.output.parent)).as_posix()  # links from the page
    lines += speed_lines(speed, results["matmul"], cpu, images)
    lines += curve_lines(results.get("curves"), images)
    lines += first_step_lines(results.get("first_steps"))
    lines += cancel_lines(results.get("cancels"))
    lines += memory_lines(results.get("memory"), cpu)
    lines += threads_lines(results.get("threads"), cpu, busy)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n" + other_sections(args.output))
    draw_figures(args, results.get("curves"), speed)


#: The headings of the sections this script writes; a page's other sections are other scripts'.
OWN_SECTIONS = (
    "Seconds per step",
    "Time to quality",
    "Time from Run",
    "Cancel latency",
    "Peak memory by stage",
    "Threads at",
)


def other_sections(page: Path) -> str:
    """The sections of ``page`` that other scripts wrote (stacks.py's, batch.py's, ...), in
    their order, to follow this script's own: rewriting the page must not drop them."""
    text = page.read_text() if page.is_file() else ""
    sections = ["## " + part for part in text.split("\n## ")[1:]]
    return "".join("\n" + section for section in sections if not section[3:].startswith(OWN_SECTIONS))


def _speed_by_config(speed: dict) -> dict[tuple[str, int], list[dict]]:
    """The speed part's runs by (configuration, size) from its "name@size" keys."""
    pairs = {tuple(key.split("@")): runs for key, runs in speed.items()}
    return {(name, int(size)): runs for (name, size), runs in pairs.items()}


def header_lines(args, info: dict, matmul: dict, loads: list[float], busy: bool) -> list[str]:
    return [
        "# Benchmarks",
        "",
        f"Written by `python benchmarks/run.py{' --quick' if args.quick else ''}"
        f"{' --emulate-avx2' if args.emulate_avx2 else ''}` on {info['date']}: "
        f"{info['cpu']} (class {info.get('cpu_class', 'not recorded')}: "
        f"{', '.join(info.get('cpu_flags', [])) or 'flags not recorded'}), {info['cores']} cores, {info['threads']} torch threads, Python {info['python']}, "
        f"torch {info['torch']}, weights `{args.weights}`. Load average {loads[0]:.2f} before, {loads[-1]:.2f} after"
        + (" (**the machine was busy: these numbers are less reliable**)." if busy else "."),
        "",
        "Images: the bundled astronaut (content) and swirl (style, resized to the content's size), "
        f"layers content {', '.join(CONTENT_LAYERS)} and style {', '.join(STYLE_LAYERS)}, content weight 1, style "
        "weight 1e6. Every number comes from its own process; medians over "
        f"{args.repeats} processes. With untrained weights the numbers say how fast and how far each "
        "optimiser gets, nothing about how the images look.",
        "",
        f"Matrix multiply ({matmul.get('size', 2048)} x {matmul.get('size', 2048)}, same threads): {matmul['float32']:.0f} GFLOP/s fp32, "
        f"{matmul['bfloat16']:.0f} GFLOP/s bf16 ({matmul.get('bfloat16_size', matmul.get('size', 2048))} px). Kernels of the measuring processes "
        f"(`speed_probe.kernel_isa`): {matmul.get('kernel_isa', 'not recorded')}."
        + (
            " Without native bf16 (this CPU class, or the AVX2 cap) the bf16 configurations are not "
            "timed (see `measured`): they would run oneDNN's emulation, which "
            '`precision="auto"` never picks.'
            if args.emulate_avx2 or info.get("native_bf16") is False
            else ""
        ),
    ]


def speed_lines(
    speed: dict[tuple[str, int], list[dict]], matmul: dict, cpu: str, images: str = "images"
) -> list[str]:
    """The speed part's table: seconds per step of each configuration and size."""
    if not speed:
        return []
    lines = [
        "",
        "## Seconds per step",
        "",
        "A step is one optimiser iteration of ours and one loss-and-gradient evaluation of the reference. "
        "GFLOP/s counts the convolutions of one evaluation as direct convolutions (forward plus "
        "input-gradient backward, multiply-add = 2; the frozen weights get no gradient) over the seconds "
        "per evaluation; *of matmul* compares it with the matrix multiply of the same precision. oneDNN "
        "computes 3x3 convolutions with Winograd transforms, which need fewer multiplications than the "
        "direct count, so this rate can exceed the matrix multiply's.",
        "",
        "| CPU class | size | implementation | s/step | vs reference | evaluations/step | GFLOP/s | of matmul | peak memory MB | of which the optimisation | loss after the steps |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for size in sorted({size for _, size in speed}):
        reference = _median_of(speed["reference", size], "seconds_per_step")
        for name in CONFIGS:
            if (name, size) not in speed:  # a configuration added since the speed part last ran
                continue
            runs = speed[name, size]
            per_step = _median_of(runs, "seconds_per_step")
            evaluations_per_step = _median_of(runs, "evaluations") / _median_of(runs, "steps")
            rate = conv_gflops(size) * evaluations_per_step / per_step
            peak_matmul = matmul["bfloat16" if "bf16" in name else "float32"]
            lines.append(
                f"| {cpu} | {size} | {name} | {per_step:.3f} | {per_step / reference:.2f} | "
                f"{evaluations_per_step:.2f} | {rate:.0f} | {rate / peak_matmul:.0%} | "
                f"{_median_of(runs, 'peak_mb'):.0f} | {_median_of(runs, 'optimisation_mb'):.0f} | "
                f"{_median_of(runs, 'final_loss'):.4g} |"
            )
    timed = {name for name, _ in speed}
    lines += ["", "Implementations:", ""]
    lines += [f"- `{name}`: {text}" for name, (text, _) in CONFIGS.items() if name in timed]
    return [*lines, "", f"![seconds per step against size]({images}/bench_step_time.png)"]


def curve_lines(curves: dict | None, images: str = "images") -> list[str]:
    """The time-to-quality table: when each run reached the reference's targets."""
    if not curves:
        return []
    ref_curve = curves["reference"]["curve"]
    target_loss, target_time = ref_curve[-1][1], ref_curve[-1][0]
    best_time, best_loss = min(ref_curve, key=lambda point: point[1])[:2]
    steps_done = len(ref_curve)
    lines = [
        "",
        f"## Time to quality at {curves['reference']['size']} px",
        "",
        f"Two targets from the reference's {steps_done} steps ({target_time:.1f} s): its loss after the last "
        f"step, {target_loss:.4g}, and the lowest loss it reached on the way, {best_loss:.4g} (after "
        f"{best_time:.1f} s; torch's L-BFGS with clamping goes up and down). Each of ours runs for "
        f"{CURVE_BUDGET:.0%} of the reference's time at most. *Reached* is the wall time (weights and model "
        "already loaded) when the full-size loss first falls to the target; coarse-to-fine levels count in "
        "the time but not in the curve (their loss is a smaller image's). Ratios are to the reference's "
        f"{target_time:.1f} s.",
        "",
        "*Cost* counts the forward and backward passes instead, each weighted by its pixels against "
        f"{curves['reference']['size']} px (one at half the size costs 1/4), so a busy machine does not change it; "
        f"its ratio is to the reference's {steps_done} evaluations.",
        "",
        "| run | reached the last-step target after s | ratio | reached the lowest-loss target after s | ratio | reached it at cost | cost ratio | final loss |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, result in curves.items():
        cells = []
        for target in (target_loss, best_loss):
            reached = next((point[0] for point in result["curve"] if point[1] <= target), None)
            cells += (
                [f"{reached:.1f}", f"{reached / target_time:.2f}"]
                if reached is not None
                else ["not reached", "-"]
            )
        cost = next((point[2] for point in result["curve"] if point[1] <= best_loss and len(point) > 2), None)
        cells += [f"{cost:.1f}", f"{cost / steps_done:.2f}"] if cost is not None else ["-", "-"]
        lines.append(f"| {name} | {' | '.join(cells)} | {result['final_loss']:.4g} |")
    lines += [
        "",
        "Runs: `reference` (torch.optim.LBFGS as the report uses it), `ours-auto` (the default: "
        "coarse-to-fine schedule, L-BFGS, init from the content; in fp32), `ours-single` (schedule none), "
        "`ours-noise` (single size, init noise), `ours-adam` (single size, Adam), `ours-auto-bf16` "
        "(the default with precision=bf16, what precision=auto gives on a CPU with native bf16).",
        "",
        f"![loss against wall time]({images}/bench_loss_time.png)",
        "",
        f"![loss against cost]({images}/bench_loss_cost.png)",
    ]
    return lines


def first_step_lines(first_steps: list[dict] | None) -> list[str]:
    if not first_steps:
        return []
    lines = [
        "",
        "## Time from Run to the first step",
        "",
        "A fresh process with the bundled images and default options: importing the package and torch, "
        "loading the weights from the torch hub cache (an untrained VGG19 saved under the ImageNet file's "
        "name; the features-only copy already written), building the network, the targets and one step "
        "(at 512 px the default schedule's first step is at 128 px).",
        "",
        "| size | seconds (median) |",
        "| --- | --- |",
    ]
    lines += [f"| {r['size']} | {r['seconds']:.2f} |" for r in first_steps]
    return lines


def cancel_lines(cancels: list[dict] | None) -> list[str]:
    if not cancels:
        return []
    lines = [
        "",
        "## Cancel latency",
        "",
        "Seconds from a cancel request, at a random moment within a step, until the worker has stopped "
        "(the napari worker's generator in a thread, no GUI).",
        "",
        "| size | median s | max s | one step s |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {c['size']} | {c['median']:.3f} | {c['max']:.3f} | {c['step']:.3f} |" for c in cancels]
    return lines


def draw_figures(args, curves: dict | None, speed: dict[tuple[str, int], list[dict]]) -> None:
    """Loss against time and cost (the curves part), seconds per step against size (the speed part)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args.images.mkdir(parents=True, exist_ok=True)
    if curves:
        size, ref_curve = curves["reference"]["size"], curves["reference"]["curve"]
        targets = (ref_curve[-1][1], min(point[1] for point in ref_curve))
        for axis, label, name in ((0, "wall time (s)", "time"), (2, f"cost ({size} px evaluations)", "cost")):
            figure = _loss_plot(curves, axis, targets)
            figure.axes[0].set(
                xlabel=label, title=f"Loss against {name} at {size} px ({args.weights} weights)"
            )
            figure.savefig(args.images / f"bench_loss_{name}.png", dpi=110)
            plt.close(figure)
    if not speed:
        return
    sizes = sorted({size for _, size in speed})
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name in (name for name in CONFIGS if all((name, s) in speed for s in sizes)):
        axes.plot(sizes, [_median_of(speed[name, s], "seconds_per_step") for s in sizes], "o-", label=name)
    axes.set(
        xlabel="working size (px, longest side)",
        ylabel="seconds per step",
        xscale="log",
        yscale="log",
        title="Seconds per step against size (CPU)",
    )
    axes.legend()
    figure.tight_layout()
    figure.savefig(args.images / "bench_step_time.png", dpi=110)


if __name__ == "__main__":
    main()
