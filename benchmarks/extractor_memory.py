"""The extractor's memory cuts against torch's own modules, side by side in one process.

    python benchmarks/extractor_memory.py [--size 256] [--steps 6] [--rounds 4] [--precision fp32]
        [--channels-last auto|true|false] [--cuts conv relu pool] [--pairs 20]

*torch's*: the extractor's convolutions as ``nn.Conv2d`` (keeping their inputs), in-place
``nn.ReLU`` (keeping its output) and a max pool that keeps its input; *ours*: the extractor as
it is (vgg.py: inputs not kept, ReLU masks, int32 pool indices). The two take turns (the order
reversed every round, so a busy spell hits both alike), each a fresh run from the content of
``--steps`` L-BFGS steps on the bundled astronaut and swirl, untrained weights. Prints each
variant's median seconds per step (steps 2 on), their ratio, the bytes autograd keeps for one
evaluation (a busy machine does not change these) and the loss after the steps (the same
bit for bit where the gradients are).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import _images, one_size_options  # noqa: E402

from napari_style_transfer.engine import StyleObjective, compute_dtype, optimize  # noqa: E402
from napari_style_transfer.vgg import FrozenConv2d, MaxPool2x2, ReLUKeepingMask, VGGFeatures  # noqa: E402
from napari_style_transfer.weights import load_vgg19_features  # noqa: E402


class _PoolKeepingInput(nn.Module):
    """The max pool before the cut: keeps its input, finds the maxima again in the backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _PoolKeepingInputFunction.apply(x)


class _PoolKeepingInputFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return F.max_pool2d(x, 2, 2)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        _, indices = F.max_pool2d(x, 2, 2, return_indices=True)
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False, indices
        )


CUTS = ("conv", "relu", "pool")


def torchs_modules(extractor: VGGFeatures, cuts: tuple[str, ...] = CUTS) -> VGGFeatures:
    """``extractor`` with torch's own modules in place of the ``cuts`` (hooks kept)."""
    for index, module in enumerate(extractor.body):
        if isinstance(module, FrozenConv2d) and "conv" in cuts:
            module.__class__ = nn.Conv2d
        elif isinstance(module, ReLUKeepingMask) and "relu" in cuts:
            extractor.body[index] = nn.ReLU(inplace=True)
        elif isinstance(module, MaxPool2x2) and "pool" in cuts:
            extractor.body[index] = _PoolKeepingInput()
    return extractor


def kept_mb(objective: StyleObjective, content: torch.Tensor) -> float:
    """MB of distinct storages autograd keeps for one evaluation (weights included)."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        objective(content.clone().requires_grad_(True))
    return sum(storages.values()) / 2**20


def evaluation_pairs(objectives: dict[str, StyleObjective], content: torch.Tensor, pairs: int) -> dict:
    """One loss and gradient evaluation of each variant in turn, ``pairs`` times (the first
    of each pair alternating): per pair, ours over torch's in wall time and in this process's
    CPU time (which time spent waiting for a busy CPU does not count: with one thread the
    fairer measure under load), their medians, and each variant's fastest evaluation."""
    wall: dict[str, list[float]] = {name: [] for name in objectives}
    cpu: dict[str, list[float]] = {name: [] for name in objectives}
    for pair in range(pairs + 1):  # the first pair warms up, untimed
        for name in objectives if pair % 2 == 0 else list(objectives)[::-1]:
            image = content.clone().requires_grad_(True)
            started, started_cpu = time.perf_counter(), time.process_time()
            objectives[name](image)[0].backward()
            if pair:
                wall[name].append(time.perf_counter() - started)
                cpu[name].append(time.process_time() - started_cpu)
    result = {}
    for clock, seconds in (("wall", wall), ("cpu", cpu)):
        ratios = [ours / torchs for ours, torchs in zip(seconds["ours"], seconds["torch's"], strict=True)]
        result[clock] = {
            "median_ratio": statistics.median(ratios),
            "fastest": {name: min(values) for name, values in seconds.items()},
            "ratios": [round(ratio, 3) for ratio in ratios],
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--pairs", type=int, default=20, help="evaluations timed in alternating pairs")
    parser.add_argument("--cuts", nargs="+", choices=CUTS, default=CUTS, help="the cuts *ours* has")
    parser.add_argument("--channels-last", default="auto", choices=["auto", "true", "false"])
    args = parser.parse_args()
    content, style = _images(args.size)
    options = one_size_options(
        args.size,
        args.steps,
        "random",
        precision=args.precision,
        channels_last={"auto": "auto", "true": True, "false": False}[args.channels_last],
    )
    dtype = compute_dtype(options.precision, content.device)
    features = load_vgg19_features("random", progress=False, deepest=options.layers[-1]).features
    objectives = {}
    for name in ("torch's", "ours"):
        extractor = VGGFeatures(features, options.layers, options.pooling)
        undone = CUTS if name == "torch's" else tuple(cut for cut in CUTS if cut not in args.cuts)
        extractor = torchs_modules(extractor, undone)
        objectives[name] = StyleObjective(extractor, content, style, options, dtype)
        extractor.to(memory_format=objectives[name].memory_format)
    seconds: dict[str, list[float]] = {name: [] for name in objectives}
    losses: dict[str, float] = {}
    for round_ in range(args.rounds):
        for name in objectives if round_ % 2 == 0 else list(objectives)[::-1]:
            times = [time.perf_counter()]
            for _, step_losses, _ in optimize(objectives[name], content, options):
                times.append(time.perf_counter())
                losses[name] = step_losses.total
            seconds[name].append(statistics.median(b - a for a, b in zip(times[2:], times[3:], strict=False)))
    median = {name: statistics.median(values) if values else None for name, values in seconds.items()}
    pairs = evaluation_pairs(objectives, content, args.pairs)
    print(
        json.dumps(
            {
                "size": args.size,
                "precision": str(dtype).removeprefix("torch."),
                "channels_last": objectives["ours"].memory_format == torch.channels_last,
                "threads": torch.get_num_threads(),
                "seconds_per_step": seconds,
                "median": median,
                "ours_over_torchs": median["ours"] / median["torch's"] if args.rounds else None,
                "evaluation_pairs": pairs,
                "kept_mb": {name: kept_mb(objective, content) for name, objective in objectives.items()},
                "loss_after_steps": losses,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
