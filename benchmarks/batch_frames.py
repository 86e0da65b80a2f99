"""Frames through VGG19 as one batch against one at a time: seconds per evaluation and frames/s.

    PYTHONPATH=src python benchmarks/batch_frames.py                      # 64 and 128 px, batches 1 2 4 8
    PYTHONPATH=src python benchmarks/batch_frames.py --sizes 32 --batches 1 2 --repeats 1   # smoke run
    PYTHONPATH=src python benchmarks/batch_frames.py --device cuda --sizes 128 256 512

One evaluation is what an L-BFGS step costs when its full step is accepted (the usual case):
VGG19 forward through the paper's layers (untrained weights from ``vgg19_features_module``,
channels-last as the engine runs it) and backward to the image, with per-frame Gram and
content losses. With ``--lbfgs`` a whole BatchBoxLBFGS step is timed as well, whose extra
cost over the evaluation is the optimiser's own (two-loop recursion, checks, one host sync).

With ``--whole`` it times whole-stack runs through the public API instead
(``stylize(stack, style, batch_frames=N)``: network built, targets, every step of every
frame, results copied back; ``--frames`` frames of ``--steps`` steps, schedule none) and
prints frames per second of the whole run:

    PYTHONPATH=src python benchmarks/batch_frames.py --whole --sizes 64 128 --batches 1 2 4 8

Each configuration runs ``--repeats`` times after a warm-up, the configurations of one size
taking turns in every round, and the minimum is kept: the least disturbed run on a machine
shared with other work. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def batch_objective(torch, extractor, content_features, grams, channels_last):
    """Per-frame totals (N,) and terms (N, 2) of the paper's loss for a batch of frames."""
    from napari_style_transfer.engine import gram_matrix

    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def objective(image):
        features = extractor(image.contiguous(memory_format=memory_format))
        content = sum(
            (features[name] - target).pow(2).flatten(1).mean(1) for name, target in content_features.items()
        )
        style = sum((gram_matrix(features[name]) - g).pow(2).flatten(1).mean(1) for name, g in grams.items())
        terms = torch.stack([content, 1e6 * style], dim=1)
        return terms.sum(dim=1), terms.detach()

    return objective


def prepare(torch, device, size: int, frames: int, lbfgs: bool, channels_last: bool) -> dict:
    """The timed functions of one configuration: an evaluation, and an L-BFGS step with ``lbfgs``."""
    from napari_style_transfer.engine import gram_matrix
    from napari_style_transfer.lbfgs import BatchBoxLBFGS
    from napari_style_transfer.options import StyleOptions
    from napari_style_transfer.vgg import VGGFeatures, vgg19_features_module

    options = StyleOptions()
    generator = torch.Generator().manual_seed(0)
    extractor = VGGFeatures(vgg19_features_module(), options.layers).to(device)
    content = torch.rand(frames, 3, size, size, generator=generator).to(device)
    style = torch.rand(1, 3, size, size, generator=generator).to(device)
    with torch.no_grad():
        content_features = {
            name: value for name, value in extractor(content).items() if name in options.content_layers
        }
        style_features = extractor(style)
        grams = {name: gram_matrix(style_features[name]) for name in options.style_layers}
    objective = batch_objective(torch, extractor, content_features, grams, channels_last)
    start = torch.rand(frames, 3, size, size, generator=generator).to(device)

    def evaluation():
        image = start.detach().requires_grad_(True)
        totals, _ = objective(image)
        (grad,) = torch.autograd.grad(totals.sum(), image)
        grad.sum().item()  # wait for the device, as an optimiser's host sync does

    timed = {"evaluation": evaluation}
    if lbfgs:
        optimiser = BatchBoxLBFGS(start, objective, history_size=30)
        optimiser.step()  # the first step evaluates twice and searches; time later ones
        timed["lbfgs step"] = optimiser.step
    for function in timed.values():
        function()  # warm-up: allocator, oneDNN or cuDNN plans
    return timed


def stack_run(device: str, size: int, frames: int, steps: int, batch: int) -> tuple[float, float]:
    """One whole-stack run of ``frames`` unlike grey frames of ``size`` px with
    ``batch_frames=batch`` (0: auto) through the public API: (seconds in all, frames per
    second of its steps). The steps' rate leaves out building the network (about 2.5 s with
    random weights on a loaded CPU, the same for every batch size) and the first batch's first
    step: it counts the frame-steps done after the first record over the time they took."""
    import numpy as np

    from napari_style_transfer import iter_stylize
    from napari_style_transfer.api import StyleResult

    rng = np.random.default_rng(0)
    stack = rng.random((frames, size, size), dtype=np.float32)
    style = rng.random((size, size, 3), dtype=np.float32)
    began = time.perf_counter()
    first = None
    steps_seen = []  # the step of every record, in order
    for record in iter_stylize(
        stack,
        style,
        size=size,
        steps=steps,
        weights="random",
        batch_frames=batch,
        schedule="none",
        snapshot_every=0,
        device=device,
    ):
        if isinstance(record, StyleResult):
            break
        first = first or time.perf_counter()
        steps_seen.append(record.step)
    ended = time.perf_counter()
    # the first batch step's frames: the records of step 1 before the first of step 2 (steps >= 2)
    first_batch = steps_seen.index(2) if 2 in steps_seen else len(steps_seen)
    return ended - began, (frames * steps - first_batch) / steps / (ended - first)


def whole_runs(args) -> None:
    """Frames per second of whole-stack runs, the batch sizes taking turns in every round."""
    print(
        f"Whole-stack runs: {args.frames} frames x {args.steps} steps, weights random, schedule none. "
        "*s per run* includes building the network; *frames/s* is that of the steps (see stack_run).\n"
    )
    print(f"| size (px) | batch_frames | s per run | frames/s | frames/s vs {args.batches[0]} at a time |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        stack_run(args.device, size, 2, 2, 2)  # warm-up: allocator, oneDNN or cuDNN plans
        best = {batch: (float("inf"), 0.0) for batch in args.batches}
        for _ in range(args.repeats):
            for batch in args.batches:
                seconds, rate = stack_run(args.device, size, args.frames, args.steps, batch)
                best[batch] = (min(best[batch][0], seconds), max(best[batch][1], rate))
        reference = best[args.batches[0]][1]
        for batch, (seconds, rate) in best.items():
            shown = batch if batch else "0 (auto)"
            print(f"| {size} | {shown} | {seconds:.2f} | {rate:.2f} | {rate / reference:.2f}x |", flush=True)


def measure(configs: dict, repeats: int) -> dict:
    """Minimum seconds of each timed function, the configurations taking turns in every
    round, so that a change in the machine's load hits them all alike."""
    best = {key: dict.fromkeys(timed, float("inf")) for key, timed in configs.items()}
    for _ in range(repeats):
        for key, timed in configs.items():
            for name, function in timed.items():
                began = time.perf_counter()
                function()
                best[key][name] = min(best[key][name], time.perf_counter() - began)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="frame side in pixels")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8], help="frames per batch")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (minimum kept)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lbfgs", action="store_true", help="also time a whole BatchBoxLBFGS step")
    parser.add_argument("--contiguous", action="store_true", help="NCHW instead of channels-last")
    parser.add_argument("--whole", action="store_true", help="time whole-stack runs through the API instead")
    parser.add_argument("--frames", type=int, default=8, help="--whole: frames in the stack")
    parser.add_argument("--steps", type=int, default=5, help="--whole: steps per frame (at least 2)")
    args = parser.parse_args(argv)

    import torch

    device = torch.device(args.device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# Frames through VGG19 as one batch ({device.type})\n")
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"with {torch.get_num_threads()} threads; load average {load:.1f} at the start. Minimum of "
        f"{args.repeats} interleaved runs per row. On a machine shared with other work the absolute "
        "times are inflated and noisy; compare rows of one table.\n"
    )
    if args.whole:
        whole_runs(args)
        return
    header = f"| size (px) | frames | s per evaluation | frames/s | frames/s vs {args.batches[0]} at a time |"
    rule = "|---|---|---|---|---|"
    if args.lbfgs:
        header += " s per L-BFGS step | optimiser overhead |"
        rule += "---|---|"
    print(header)
    print(rule)
    for size in args.sizes:
        channels_last = not args.contiguous
        configs = {n: prepare(torch, device, size, n, args.lbfgs, channels_last) for n in args.batches}
        results = measure(configs, args.repeats)
        single = None
        for frames, times in results.items():
            per_second = frames / times["evaluation"]
            single = per_second if single is None else single
            row = (
                f"| {size} | {frames} | {times['evaluation']:.3f} | {per_second:.2f} "
                f"| {per_second / single:.2f}x |"
            )
            if args.lbfgs:
                overhead = times["lbfgs step"] / times["evaluation"] - 1
                row += f" {times['lbfgs step']:.3f} | {overhead:+.0%} |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
