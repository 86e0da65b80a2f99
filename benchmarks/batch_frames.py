"""Frames through VGG19 as one batch against one at a time: seconds per evaluation and frames/s.

    PYTHONPATH=src python benchmarks/batch_frames.py                      # 64 and 128 px, batches 1 2 4 8
    PYTHONPATH=src python benchmarks/batch_frames.py --sizes 32 --batches 1 2 --repeats 1   # smoke run
    PYTHONPATH=src python benchmarks/batch_frames.py --device cuda --sizes 128 256 512

One evaluation is what an L-BFGS step costs when its full step is accepted (the usual case):
VGG19 forward through the paper's layers (untrained weights from ``vgg19_features_module``,
channels-last as the engine runs it) and backward to the image, with per-frame Gram and
content losses. With ``--lbfgs`` a whole BatchBoxLBFGS step is timed as well, whose extra
cost over the evaluation is the optimiser's own (two-loop recursion, checks, one host sync).

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
