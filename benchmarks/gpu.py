"""GPU benchmark: seconds per step, peak memory and TFLOP/s at 512, 1024 and 2048 px.

    bash benchmarks/gpu.sh                        # or: PYTHONPATH=src python3 benchmarks/gpu.py
    PYTHONPATH=src python3 benchmarks/gpu.py --sizes 512 1024 --steps 15

Prints markdown: for fp32, tf32 and bf16, the median seconds per step (after cuDNN has tuned
itself), the peak GPU memory and its bytes per working pixel (the constant behind the memory
estimate), and the convolutions' achieved TFLOP/s against a matrix multiply measured in the
same run; then whole 500-step runs at 1024 px through the public API (the goal on an H200:
under 10 s), and how far fp32 and bf16 results differ. Needs numpy, torch and pillow only
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

from run import CONTENT_LAYERS, STYLE_LAYERS, conv_gflops, count_evaluations  # noqa: E402

PRECISIONS = ("fp32", "tf32", "bf16")


def matmul_tflops(torch, precision: str) -> float:
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    a = torch.randn(8192, 8192, device="cuda", dtype=dtype)
    b = torch.randn(8192, 8192, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    torch.backends.cuda.matmul.allow_tf32 = False
    return 10 * 2 * 8192**3 / (time.perf_counter() - started) / 1e12


def step_times(torch, size: int, precision: str, steps: int) -> dict:
    from napari_style_transfer import StyleOptions
    from napari_style_transfer.engine import StyleObjective, backend_flags, compute_dtype, optimize
    from napari_style_transfer.vgg import VGGFeatures
    from napari_style_transfer.weights import load_vgg19_features

    device = torch.device("cuda")
    options = StyleOptions(
        size=size, steps=steps, weights="random", precision=precision, schedule="none",
        content_layers=tuple(CONTENT_LAYERS), style_layers=tuple(STYLE_LAYERS),
    ).validated()
    generator = torch.Generator(device="cpu").manual_seed(0)
    content = torch.rand(1, 3, size, size, generator=generator).to(device)
    style = torch.rand(1, 3, size, size, generator=generator).to(device)
    features = load_vgg19_features("random").features
    extractor = VGGFeatures(features, options.layers).to(device, memory_format=torch.channels_last)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    with backend_flags(options, device):
        objective = StyleObjective(extractor, content, style, options, compute_dtype(options.precision, device))
        calls = count_evaluations(objective)
        stamps = []
        for _ in optimize(objective, content, options):
            stamps.append(time.perf_counter())  # optimize syncs once per evaluation already
    torch.cuda.synchronize()
    durations = [b - a for a, b in zip(stamps, stamps[1:], strict=False)][3:]  # after cuDNN tuning
    per_step = statistics.median(durations)
    evaluations = calls[0] / len(stamps)
    peak = torch.cuda.max_memory_allocated() - before
    return {
        "seconds": per_step,
        "tflops": conv_gflops(size) * evaluations / per_step / 1e3,
        "peak_gb": peak / 2**30,
        "bytes_per_pixel": peak / (size * size),
    }


def whole_run(size: int, steps: int, precision: str, schedule: str) -> tuple[float, float]:
    import numpy as np

    from napari_style_transfer import iter_stylize
    from napari_style_transfer.api import StyleResult

    rng = np.random.default_rng(0)
    content, style = rng.random((size, size, 3)), rng.random((size, size, 3))
    started = time.perf_counter()
    for record in iter_stylize(
        content, style, size=size, steps=steps, weights="random", precision=precision,
        schedule=schedule, snapshot_every=0, device="cuda",
    ):
        if isinstance(record, StyleResult):
            return time.perf_counter() - started, record.losses.total
    raise AssertionError("no result")


def agreement(steps: int) -> float:
    import numpy as np

    from napari_style_transfer import stylize

    rng = np.random.default_rng(1)
    content, style = rng.random((256, 256, 3)), rng.random((256, 256, 3))
    kwargs = {"size": 256, "steps": steps, "weights": "random", "device": "cuda", "schedule": "none"}
    fp32 = stylize(content, style, precision="fp32", **kwargs)
    bf16 = stylize(content, style, precision="bf16", **kwargs)
    return float(np.abs(fp32 - bf16).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--steps", type=int, default=20, help="steps per timing (the first 3 are not timed)")
    parser.add_argument("--run-steps", type=int, default=500)
    parser.add_argument("--run-size", type=int, default=1024)
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark needs a GPU")
    name = torch.cuda.get_device_name()
    print(f"# GPU benchmark: {name}, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    matmul = {precision: matmul_tflops(torch, precision) for precision in PRECISIONS}
    print("Matrix multiply 8192^3: " + ", ".join(f"{p} {v:.0f} TFLOP/s" for p, v in matmul.items()) + "\n", flush=True)
    print("| size | precision | ms/step | TFLOP/s | of matmul | peak GB | bytes/pixel |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for size in args.sizes:
        for precision in PRECISIONS:
            try:
                r = step_times(torch, size, precision, args.steps)
            except torch.OutOfMemoryError:
                print(f"| {size} | {precision} | out of memory | | | | |", flush=True)
                torch.cuda.empty_cache()
                continue
            print(
                f"| {size} | {precision} | {r['seconds'] * 1e3:.1f} | {r['tflops']:.0f} | "
                f"{r['tflops'] / matmul[precision]:.0%} | {r['peak_gb']:.2f} | {r['bytes_per_pixel']:.0f} |",
                flush=True,
            )
    print(f"\nWhole runs through iter_stylize, {args.run_size} px x {args.run_steps} steps (weights built, targets, all steps):\n")
    print("| precision | schedule | seconds | final loss |")
    print("| --- | --- | --- | --- |")
    for precision, schedule in (("bf16", "none"), ("bf16", "auto"), ("fp32", "none")):
        seconds, loss = whole_run(args.run_size, args.run_steps, precision, schedule)
        print(f"| {precision} | {schedule} | {seconds:.1f} | {loss:.4g} |", flush=True)
    print(f"\nfp32 against bf16 after 50 steps at 256 px: mean absolute pixel difference {agreement(50):.4f} (pixels in [0, 1])")


if __name__ == "__main__":
    main()
