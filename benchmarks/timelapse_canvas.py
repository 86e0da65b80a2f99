"""Time mode's canvas margin side by side (issue 33, docs/timelapse.md): the smear measures of
``stacks.py --parts smear`` for one sequence, each variant of time mode in this one process
against one independent run (the shipped margin, MARGIN 8).

Variants: ``carried`` (a later frame's whole canvas, margin included, follows the previous
result along the flow, and the temporal term holds the margin too: shipped until session 22),
``free`` (carried, the margin not held by the temporal term: canvas.HOLD_MARGIN False),
``later0`` (later frames without a margin, the first frame
with it), ``none`` (MARGIN 0 for every frame), ``smoothN`` (carried, the flow computed on the
grey frames smoothed by a Gaussian of N px), ``bilinear``, ``bicubic`` (carried, the
previous result resampled that way along the flow: frames.WARP_MODE; the others nearest),
``own`` (carried, later frames compared with the previous result's style statistics:
optimise.LATER_FRAME_STYLE "previous"), ``ownfree`` (own with the margin free), ``shipped`` (the
defaults: the bicubic warp where pixels move, the margin held, later frames compared with the
warped previous result's statistics, LATER_FRAME_STYLE "previous"), ``shippedfree`` (shipped
with the margin free), ``shippedstyle`` (shipped compared with the style image's statistics:
the defaults of sessions 22-23), ``shippedheld`` (shipped compared with the statistics of the
held pixels only, LATER_FRAME_STYLE "held"), ``shippedcovered`` (shipped without telling
uncovered background apart: frames.TELL_UNCOVERED False, the defaults of sessions 22-24),
``passes`` (the shipped defaults in time passes: ``time_passes=2``, every frame styled alone,
then a forward and a backward pass; every other variant is the single forward pass),
``shippedforget`` (shipped without taking uncovered background back from the series' backdrop:
pipeline/backdrop.py's RECALL "", the defaults of session 25), ``shippedrecallfresh`` (any
pixel that would start afresh taken back where its content is as it was: RECALL "fresh"). A
variant may end in ``:NAME=VALUE`` pairs, each setting the constant ``frames.NAME`` for that run
(``shipped:MOTION_FLOOR=0.02``); the next variant starts from the shipped values again. The
mirrored margin of before is the code at b229ccc~1 (run this script from that commit's tree).

    python benchmarks/timelapse_canvas.py crossing carried,later0,none --montage docs/images/x.png

Pixel measures only: they do not depend on the machine's load. fp32, 1 torch thread.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import stacks


def set_variant(variant: str) -> None:
    """Set the module constants (and the flow) that ``variant`` names; ``VARIANT:NAME=VALUE``
    also sets ``frames.NAME`` (a number) for a trial, e.g. ``shipped:MOTION_FLOOR=0.02``."""
    from scipy.ndimage import gaussian_filter

    from napari_style_transfer import frames
    from napari_style_transfer.pipeline import backdrop, canvas, optimise

    variant, *trials = variant.split(":")
    shipped_constants = frames.__dict__.setdefault("_shipped_constants", {})
    for name, value in shipped_constants.items():
        setattr(frames, name, value)
    shipped = (
        *("shipped", "shippedfree", "shippedstyle", "shippedheld", "shippedcovered"),
        *("shippedforget", "shippedrecallfresh", "passes"),
    )
    warps = {"bilinear": "bilinear", "bicubic": "bicubic", **dict.fromkeys(shipped, "bicubic")}
    frames.WARP_MODE = warps.get(variant, "nearest")
    # every shipped variant but the two named for their statistics compares with the previous result's
    statistics = {
        **dict.fromkeys(("own", "ownfree", *shipped), "previous"),
        "shippedstyle": "style",
        "shippedheld": "held",
    }
    optimise.LATER_FRAME_STYLE = statistics.get(variant, "style")
    frames.TELL_UNCOVERED = variant in shipped and variant != "shippedcovered"
    recalled = {"shippedcovered": "", "shippedforget": "", "shippedrecallfresh": "fresh"}
    backdrop.RECALL = recalled.get(variant, "uncovered") if variant in shipped else ""
    canvas.MARGIN = 0 if variant == "none" else 8
    canvas.LATER_FRAME_MARGIN = 0 if variant == "later0" else None
    canvas.HOLD_MARGIN = variant not in ("free", "ownfree", "shippedfree")
    real = frames.__dict__.setdefault("_tvl1_flow", frames.optical_flow)
    if variant.startswith("smooth"):
        sigma = float(variant.removeprefix("smooth"))
        frames.optical_flow = lambda a, b: real(gaussian_filter(a, sigma), gaussian_filter(b, sigma))
    else:
        frames.optical_flow = real
    for trial in trials:
        name, value = trial.split("=")
        shipped_constants.setdefault(name, getattr(frames, name))
        setattr(frames, name, type(shipped_constants[name])(float(value)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sequence", choices=list(stacks.SMEAR_SEQUENCES))
    parser.add_argument(
        "variants",
        help="comma-separated: carried, free, later0, none, smoothN, bilinear, bicubic, own, ownfree, "
        "shipped, shippedfree, shippedstyle, shippedheld, shippedcovered, shippedforget, shippedrecallfresh, "
        "passes; "
        "VARIANT:NAME=VALUE also sets frames.NAME",
    )
    parser.add_argument(
        "--montage", type=Path, help="a PNG: content, independent, each variant (frames 1, 3, 5, 7)"
    )
    parser.add_argument("--quick", action="store_true", help="48 px, 3 frames, 2 + 1 steps: a smoke run")
    parser.add_argument("--size", type=int, default=stacks.SMEAR_SIZE, help="px, longest side")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    side, frames = (48, 3) if args.quick else (args.size, stacks.SMEAR_FRAMES)
    options = {
        "size": side,
        "steps": 2 if args.quick else stacks.SMEAR_STEPS,
        "time_steps": 1 if args.quick else stacks.SMEAR_TIME_STEPS,
        "weights": "random",
        "snapshot_every": 0,
        "style_weight": 1e6,
        "precision": "fp32",
    }
    movie, masks = stacks.SMEAR_SEQUENCES[args.sequence](side, frames)
    style = stacks.style_image(side)
    set_variant("carried")
    independent = stacks.run_api(movie, style, {**options, "frames": "independent"})["image"]
    content = stacks._resize_stack(movie, independent.shape[1:])
    masks = stacks._resize_masks(masks, independent.shape[1:])
    rows = {"content": content, "independent": independent}
    for variant in args.variants.split(","):
        set_variant(variant)
        # every variant but passes is the single forward pass (time_passes=0)
        passes = stacks.SMEAR_PASSES if variant.split(":")[0] == "passes" else 0
        timed = stacks.run_api(movie, style, {**options, "frames": "time", "time_passes": passes})["image"]
        entry = stacks.smear_measures(timed, independent, content, masks, max(2, side // 16))
        print(args.sequence, variant, json.dumps(entry), flush=True)
        rows[variant] = timed
    if args.montage:
        shown = {name: stack[1::2] for name, stack in rows.items()}
        stacks._sheet(shown, args.montage, 90)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
