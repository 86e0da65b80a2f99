"""Small runs of every mode, saved once and compared later on the same machine.

A refactor must not change results. Floating-point results differ between CPUs and thread
counts, so this is a script, not a unit test: save the outputs of today's code, change the
code, then check that the new code gives the same images (equal within ``--tolerance``)::

    python benchmarks/compare_results.py --save /tmp/before     # on the old code
    python benchmarks/compare_results.py --check /tmp/before    # on the new code

Untrained weights (written by the script, seed 7) and one torch thread keep it reproducible;
they show mechanics only, never quality.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

STEPS = 5


def _content(seed: int = 1234, shape: tuple[int, int] = (40, 48)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    base = np.stack([x / shape[1], y / shape[0], (x + y) / sum(shape)], axis=-1)
    return (np.clip(base + 0.2 * rng.random(shape + (3,)), 0, 1) * 255).astype(np.uint8)


def _style(period: float = 2.0) -> np.ndarray:
    y, x = np.mgrid[0:36, 0:36]
    stripes = 0.5 + 0.5 * np.sin(x / period)[..., None] * np.array([1.0, -1.0, 0.5])
    return np.clip(stripes + 0.05 * np.random.default_rng(5).random((36, 36, 3)), 0, 1).astype(np.float32)


def _moving_disc(frames: int = 4, size: int = 40) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    stack = []
    for t in range(frames):
        disc = (y - 20) ** 2 + (x - 12 - 3 * t) ** 2 < 64
        background = 0.3 + 0.1 * np.sin(x / 3.0) * np.cos(y / 4.0)
        stack.append(np.where(disc, 0.9, background))
    return np.stack(stack).astype(np.float32)


def _stack() -> np.ndarray:
    return np.stack([_content(seed) for seed in (1, 2, 3)])


def modes(weights: str) -> dict[str, Callable[[], np.ndarray]]:
    """Mode name -> a function that runs it and returns the result."""
    from napari_style_transfer import stylize

    # channels_last pinned: "auto" asks the machine's probe, whose choice changes the rounding
    base = {
        "weights": weights,
        "steps": STEPS,
        "size": 48,
        "seed": 0,
        "precision": "fp32",
        "snapshot_every": 0,
        "channels_last": True,
    }

    def run(content, style, **options):
        return lambda: stylize(content, style, **{**base, **options})

    labels = np.zeros((40, 48), dtype=np.int32)
    labels[:, 24:] = 1
    labels[:20, :24] = 2
    return {
        "2d": run(_content(), _style()),
        "2d_bf16": run(_content(), _style(), precision="bf16"),
        "2d_coarse_to_fine": run(_content(shape=(80, 96)), _style(), size=96, steps=6),
        "grey": run(_content()[..., 0], _style()),
        "rgba": run(np.dstack([_content(), np.full((40, 48), 200, np.uint8)]), _style()),
        "stack_independent": run(_stack(), _style()),
        "stack_batched": run(_stack(), _style(), batch_frames=3),
        "time_series": run(_moving_disc(), _style(), size=40, frames="time"),
        "regions": lambda: stylize(_content(), [_style(), _style(5.0)], style_regions=labels, **{**base}),
        "several_styles": run(_content(), [_style(), _style(5.0)], style_blend=(0.7, 0.3)),
        "loss_gram": run(_content(), _style(), style_loss="gram"),
        "loss_mean_cov": run(_content(), _style(), style_loss="mean_cov"),
        "loss_sliced": run(_content(), _style(), style_loss="sliced"),
        "adam_average": run(_content(), _style(), optimizer="adam", average=0.9, steps=8),
        "content_colours": run(_content(), _style(), content_colours="luminance"),
        "histogram_colours": run(_content(), _style(), content_colours="histogram"),
        "tv_noise_init": run(_content(), _style(), tv_weight=1e-3, init="noise"),
        "cluster": lambda: _on_cluster(_stack(), _style(), base),
    }


def _on_cluster(content: np.ndarray, style: np.ndarray, options: dict) -> np.ndarray:
    from distributed import Client, LocalCluster

    from napari_style_transfer import stylize

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.run(lambda: __import__("torch").set_num_threads(1))
        return stylize(content, style, client=client, **options)


def write_weights(path: Path) -> str:
    """An untrained VGG19 in torchvision's layout, the same bytes every time (seed 7)."""
    if not path.exists():
        import torch
        import torchvision

        torch.manual_seed(7)
        torch.save(torchvision.models.vgg19(weights=None).state_dict(), path)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--save", type=Path, help="folder to save today's results in")
    where.add_argument("--check", type=Path, help="folder of saved results to compare with")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest absolute difference allowed")
    parser.add_argument("--only", nargs="*", help="run only these modes")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    folder = args.save or args.check
    folder.mkdir(parents=True, exist_ok=True)
    weights = write_weights(folder / "untrained_vgg19.pth")
    failed = 0
    for name, run in modes(weights).items():
        if args.only and name not in args.only:
            continue
        started = time.perf_counter()
        image = np.asarray(run(), dtype=np.float32)
        seconds = time.perf_counter() - started
        saved = folder / f"{name}.npy"
        if args.save:
            np.save(saved, image)
            print(f"{name:20s} saved {image.shape} in {seconds:.1f} s")
            continue
        before = np.load(saved)
        if before.shape != image.shape:
            print(f"{name:20s} DIFFERENT shape {image.shape}, was {before.shape}")
            failed += 1
            continue
        difference = float(np.abs(before - image).max())
        same = difference <= args.tolerance
        failed += not same
        print(
            f"{name:20s} {'equal    ' if same else 'DIFFERENT'} max |diff| {difference:.2e} ({seconds:.1f} s)"
        )
    if args.check:
        print("every mode equal" if not failed else f"{failed} mode(s) differ")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
