"""GPU benchmark: seconds per step, peak memory and TFLOP/s at 512, 1024 and 2048 px.

    bash benchmarks/gpu.sh                        # or: PYTHONPATH=src python3 benchmarks/gpu.py
    PYTHONPATH=src python3 benchmarks/gpu.py --sizes 512 1024 --steps 15
    PYTHONPATH=src python3 benchmarks/gpu.py --device cpu --sizes 32 --steps 6 --run-size 32 \
        --run-steps 4 --agreement-size 32 --agreement-steps 3 --matmul-size 256   # smoke run

Prints markdown: for fp32, tf32 and bf16, the median seconds per step (after cuDNN has tuned
itself), the peak GPU memory and its bytes per working pixel (the constant behind the memory
estimate), and the convolutions' achieved TFLOP/s against a matrix multiply measured in the
same run; then whole 500-step runs at 1024 px through the public API (the goal on an H200:
under 10 s), how far fp32 and bf16 results differ, and frames per second of whole-stack
runs of small independent frames with batch_frames 1, 4, 16 and auto. Needs numpy, torch and pillow only
(no napari); untrained weights, so nothing here says anything about image quality. Designed
to finish in well under 6 minutes on one GPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from batch_frames import stack_run  # noqa: E402
from run import CONTENT_LAYERS, STYLE_LAYERS, conv_gflops, count_evaluations  # noqa: E402

PRECISIONS = ("fp32", "tf32", "bf16")


class Device:
    """The few calls that differ between CUDA and the CPU (the CPU only for a smoke run:
    it has no peak-memory counter, so memory columns stay empty there)."""

    def __init__(self, torch, name: str):
        self.torch, self.name, self.cuda = torch, name, name.startswith("cuda")

    def synchronize(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> int:
        """Start counting the peak; returns the bytes allocated now."""
        if not self.cuda:
            return 0
        self.torch.cuda.empty_cache()
        self.torch.cuda.reset_peak_memory_stats()
        return self.torch.cuda.memory_allocated()

    def peak_since(self, before: int) -> float | None:
        return self.torch.cuda.max_memory_allocated() - before if self.cuda else None

    def describe(self) -> str:
        return self.torch.cuda.get_device_name() if self.cuda else "CPU (smoke run, not a benchmark)"


def matmul_tflops(device: Device, precision: str, n: int) -> float:
    torch = device.torch
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    a = torch.randn(n, n, device=device.name, dtype=dtype)
    b = torch.randn(n, n, device=device.name, dtype=dtype)
    for _ in range(3):
        a @ b
    device.synchronize()
    started = time.perf_counter()
    for _ in range(10):
        a @ b
    device.synchronize()
    torch.backends.cuda.matmul.allow_tf32 = False
    return 10 * 2 * n**3 / (time.perf_counter() - started) / 1e12


def step_times(device: Device, size: int, precision: str, steps: int) -> dict:
    from napari_style_transfer import StyleOptions
    from napari_style_transfer.engine import StyleObjective, backend_flags, compute_dtype, optimize
    from napari_style_transfer.vgg import VGGFeatures
    from napari_style_transfer.weights import load_vgg19_features

    torch = device.torch
    options = StyleOptions(
        size=size,
        steps=steps,
        weights="random",
        precision=precision,
        schedule="none",
        content_layers=tuple(CONTENT_LAYERS),
        style_layers=tuple(STYLE_LAYERS),
    ).validated()
    generator = torch.Generator(device="cpu").manual_seed(0)
    target = torch.device(device.name)
    content = torch.rand(1, 3, size, size, generator=generator).to(target)
    style = torch.rand(1, 3, size, size, generator=generator).to(target)
    features = load_vgg19_features("random").features
    extractor = VGGFeatures(features, options.layers).to(target, memory_format=torch.channels_last)
    before = device.reset_peak()
    with backend_flags(options, target):
        objective = StyleObjective(
            extractor, content, style, options, compute_dtype(options.precision, target)
        )
        calls = count_evaluations(objective)
        stamps = []
        for _ in optimize(objective, content, options):
            stamps.append(time.perf_counter())  # optimize syncs once per evaluation already
    device.synchronize()
    durations = [b - a for a, b in zip(stamps, stamps[1:], strict=False)][3:]  # after cuDNN tuning
    per_step = statistics.median(durations)
    evaluations = calls[0] / len(stamps)
    peak = device.peak_since(before)
    return {
        "seconds": per_step,
        "tflops": conv_gflops(size) * evaluations / per_step / 1e3,
        "peak_gb": None if peak is None else peak / 2**30,
        "bytes_per_pixel": None if peak is None else peak / (size * size),
    }


def _number(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def whole_run(device: str, size: int, steps: int, precision: str, schedule: str) -> tuple[float, float]:
    import numpy as np

    from napari_style_transfer import iter_stylize
    from napari_style_transfer.api import StyleResult

    rng = np.random.default_rng(0)
    content, style = rng.random((size, size, 3)), rng.random((size, size, 3))
    started = time.perf_counter()
    for record in iter_stylize(
        content,
        style,
        size=size,
        steps=steps,
        weights="random",
        precision=precision,
        schedule=schedule,
        snapshot_every=0,
        device=device,
    ):
        if isinstance(record, StyleResult):
            return time.perf_counter() - started, record.losses.total
    raise AssertionError("no result")


def agreement(device: str, size: int, steps: int) -> float:
    import numpy as np

    from napari_style_transfer import stylize

    rng = np.random.default_rng(1)
    content, style = rng.random((size, size, 3)), rng.random((size, size, 3))
    kwargs = {"size": size, "steps": steps, "weights": "random", "device": device, "schedule": "none"}
    fp32 = stylize(content, style, precision="fp32", **kwargs)
    bf16 = stylize(content, style, precision="bf16", **kwargs)
    return float(np.abs(fp32 - bf16).mean())


def refused_size(device: str, size: int) -> str:
    """The memory check's answer for a run far too large for the device (no step runs)."""
    import numpy as np

    from napari_style_transfer import OutOfMemoryError, iter_stylize

    image = np.random.default_rng(2).random((64, 64, 3), np.float32)  # upscaled to ``size``
    try:
        next(iter(iter_stylize(image, image, size=size, steps=1, weights="random", device=device)))
    except OutOfMemoryError as error:
        return str(error)
    return "not refused"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device", default="cuda", help="cuda (the benchmark) or cpu (a smoke run of this script)"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--steps", type=int, default=20, help="steps per timing (the first 3 are not timed)")
    parser.add_argument("--run-steps", type=int, default=500)
    parser.add_argument("--run-size", type=int, default=1024)
    parser.add_argument("--agreement-size", type=int, default=256)
    parser.add_argument("--agreement-steps", type=int, default=50)
    parser.add_argument("--matmul-size", type=int, default=8192)
    parser.add_argument(
        "--refuse-size", type=int, default=40_000, help="a size whose run must be refused up front"
    )
    parser.add_argument(
        "--stack-sizes", type=int, nargs="+", default=[128, 256], help="batch_frames runs: frame sizes"
    )
    parser.add_argument("--stack-frames", type=int, default=32, help="batch_frames runs: frames in the stack")
    parser.add_argument("--stack-steps", type=int, default=20, help="batch_frames runs: steps per frame")
    parser.add_argument(
        "--stack-batches", type=int, nargs="+", default=[1, 4, 16, 0], help="batch_frames (0: auto)"
    )
    args = parser.parse_args()

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark needs a GPU (--device cpu only smoke-tests the script)")
    device = Device(torch, args.device)
    from napari_style_transfer.memory import ACTIVATION_BYTES_PER_PIXEL

    print(
        f"# GPU benchmark: {device.describe()}, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"
    )
    matmul = {precision: matmul_tflops(device, precision, args.matmul_size) for precision in PRECISIONS}
    print(
        f"Matrix multiply {args.matmul_size}^3: "
        + ", ".join(f"{p} {v:.1f} TFLOP/s" for p, v in matmul.items())
        + "\n",
        flush=True,
    )
    print(
        f"Steps: median of {args.steps - 4} after 3 warm-up steps; the memory estimate assumes {ACTIVATION_BYTES_PER_PIXEL} bytes/pixel for activations.\n"
    )
    print("| size | precision | ms/step | TFLOP/s | of matmul | peak GB | bytes/pixel |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for size in args.sizes:
        for precision in PRECISIONS:
            try:
                r = step_times(device, size, precision, args.steps)
            except torch.OutOfMemoryError:
                print(f"| {size} | {precision} | out of memory | | | | |", flush=True)
                device.reset_peak()
                continue
            print(
                f"| {size} | {precision} | {r['seconds'] * 1e3:.1f} | {r['tflops']:.1f} | "
                f"{r['tflops'] / matmul[precision]:.0%} | {_number(r['peak_gb'], '.2f')} | {_number(r['bytes_per_pixel'], '.0f')} |",
                flush=True,
            )
    print(
        f"\nWhole runs through iter_stylize, {args.run_size} px x {args.run_steps} steps (weights built, targets, all steps):\n"
    )
    print("| precision | schedule | seconds | final loss |")
    print("| --- | --- | --- | --- |")
    for precision, schedule in (("bf16", "none"), ("bf16", "auto"), ("fp32", "none")):
        seconds, loss = whole_run(args.device, args.run_size, args.run_steps, precision, schedule)
        print(f"| {precision} | {schedule} | {seconds:.1f} | {loss:.4g} |", flush=True)
    difference = agreement(args.device, args.agreement_size, args.agreement_steps)
    print(
        f"\nfp32 against bf16 after {args.agreement_steps} steps at {args.agreement_size} px: "
        f"mean absolute pixel difference {difference:.4f} (pixels in [0, 1])"
    )
    print(
        f"\nA {args.refuse_size} px run is refused before it starts: {refused_size(args.device, args.refuse_size)}"
    )
    print(
        f"\nWhole-stack runs of {args.stack_frames} independent frames x {args.stack_steps} steps (fp32/bf16 auto), "
        "frames per second of the steps (benchmarks/batch_frames.py --whole):\n"
    )
    print("| size | batch_frames | s per run | frames/s | vs 1 at a time |")
    print("| --- | --- | --- | --- | --- |")
    for size in args.stack_sizes:
        stack_run(args.device, size, 2, 2, 2)  # warm-up: cuDNN plans for this size
        reference = None
        for batch in args.stack_batches:
            seconds, rate = stack_run(args.device, size, args.stack_frames, args.stack_steps, batch)
            reference = reference or rate
            shown = batch if batch else "0 (auto)"
            print(f"| {size} | {shown} | {seconds:.1f} | {rate:.1f} | {rate / reference:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
