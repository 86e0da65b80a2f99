"""Stacks: frames="time" against frames="independent" and the old warm start, on generated
sequences.

    python benchmarks/stacks.py            # a few minutes on 2 cores; writes the "Stacks"
                                           # section of docs/benchmarks.md, docs/stacks.json
                                           # and docs/images/stack_time_vs_independent.png
    python benchmarks/stacks.py --quick    # a smoke run (tiny sizes), into a temporary folder

Sequences (all generated here, grey, values in [0, 1]):

- ``moving``: a bright textured disc moving right over a static texture;
- ``rotating``: a textured disc turning about its centre over the same static texture;
- ``zstack``: slices unlike each other (stripes of different directions, blobs).

Modes: ``independent`` and ``time`` through the API, and ``old``: the warm start this
project had before (each frame starts from the previous result where its content did not
change, blended into a fresh start where it changed by 0.1 or more, and runs the full steps).
The old logic is kept here only, copied from the engine's earlier ``next_frame_start``, so
that the comparison runs from one checkout; it drives the same engine pieces (objective,
optimiser) as the API does.

Measures (values in [0, 1]; *static* pixels are those the object never comes within
``margin`` pixels of):

- flicker: mean |out_t - out_t-1| over static pixels, averaged over t >= 1;
- drift: mean |out_t - out_0| over static pixels at the last frame;
- ghost: mean |out_t - independent_t| over the pixels the object has just left (inside it at
  t - 1, outside at t), averaged over t >= 1, and the same pixels' variation between
  independent runs of frames where they are background (mean |independent_t - independent_s|
  over those frames s); ``ghost ratio`` is their quotient (1 means no more than an
  independent run varies anyway);
- warp error: mean |out_t - warp(out_t-1)| over the pixels where the content's flow is
  reliable (the engine's own flow and consistency mask), averaged over t >= 1;
- steps and seconds per frame (first frame, later frames), and the content + style loss of
  each frame's result.

The ``long`` part runs the rotating disc for LONG_FRAMES frames in time mode and old: how
far static pixels have moved from the first frame by frame 2, 10, 25 and 50 (the issue: "a
static region must look the same in frame 50 as in frame 1"), and each frame's loss.

The ``demo_sweep`` part runs the moving disc at the command-line demo's size and steps at
several temporal weights (time_steps auto), to see whether one weight meets both the
steadiness and the steps goals where a first frame is nearer convergence.

The ``ahead`` part times time mode's later frames with the next frame read and its flows
computed in a thread while a frame optimises (the API's way) against each frame read when it
is needed (the way before), and the flows alone by frame size.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SECTION = "## Stacks"

#: What a run measures (``--parts``); the report is written from all that docs/stacks.json holds.
MEASURED_PARTS = ("modes", "sweep", "sizes", "demo", "default", "demo_sweep", "ahead", "long", "smear")

#: Frames of the demo and default parts' sequence (its first frame and two later ones: each
#: later frame at 256 px and 100 steps costs minutes on a CPU, at 512 px and 300 steps ten).
DEMO_FRAMES = 3

#: The ahead part: frame sizes timed, and the later frames' steps at each besides time_steps
#: auto: few, so that the steps take about as long as the flows, as on a fast device.
AHEAD_SIZES = (64, 128, 256)
AHEAD_FEW_STEPS = 3
AHEAD_FRAMES = 4
#: Sizes at which one later frame's flows (link_frames) are timed alone.
FLOW_SIZES = (64, 128, 256, 512)

#: The long part: frames of the rotating disc, and the frames (counted from 0) whose static
#: drift from the first frame and loss it reports.
LONG_FRAMES = 50
LONG_AT = (1, 9, 24, 49)

#: The issue's goals: static flicker and drift this many times below old's, and the ghost
#: measure within this many times the independent runs' own variation.
STEADY_GOAL = 5.0
GHOST_GOAL = 1.5
#: The steps goal: later frames at no more than this share of the first frame's steps for its loss.
STEPS_GOAL = 0.5

#: The sweep runs every weight a second time with this many times the first frame's steps for
#: each later frame, to see how many steps the later frames need for the first frame's loss
#: where time_steps auto is not enough.
SWEEP_LONGER = 3

#: The demo_sweep part: temporal weights run on the moving disc at the command-line demo's size
#: and steps (DEMO_FRAMES frames), where a first frame is nearer convergence than at 64 px and
#: 30 steps: does one weight meet both the steadiness and the steps goals there?
DEMO_SWEEP_WEIGHTS = (0.0, 1.0, 3.0, 1e1, 1e2, 1e3)


# --- sequences ---------------------------------------------------------------------------


def _texture(size: int, seed: int, blur: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    noise = gaussian_filter(np.random.default_rng(seed).random((size, size)), blur)
    return (noise - noise.min()) / (noise.max() - noise.min())


def moving(size: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W) frames and (T, H, W) object masks."""
    background = 0.15 + 0.4 * _texture(size, 1, size / 64)
    pattern = 0.75 + 0.25 * _texture(size, 2, size / 96)
    yy, xx = np.mgrid[0:size, 0:size]
    radius, step = size * 0.16, size / 16
    movie, masks = [], []
    for t in range(frames):
        centre = (size * 0.5, size * 0.25 + step * t)
        inside = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2
        frame = background.copy()
        # the disc's own texture moves with it
        shifted = np.roll(pattern, int(round(step * t)), axis=1)
        frame[inside] = shifted[inside]
        movie.append(frame)
        masks.append(inside)
    return np.stack(movie).astype(np.float32), np.stack(masks)


def rotating(size: int, frames: int, degrees: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    from scipy.ndimage import rotate

    background = 0.15 + 0.4 * _texture(size, 1, size / 64)
    pattern = 0.6 + 0.4 * _texture(size, 3, size / 48)
    yy, xx = np.mgrid[0:size, 0:size]
    inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.3) ** 2
    movie = []
    for t in range(frames):
        turned = rotate(pattern, degrees * t, reshape=False, order=1, mode="reflect")
        frame = background.copy()
        frame[inside] = turned[inside]
        movie.append(frame)
    return np.stack(movie).astype(np.float32), np.stack([inside] * frames)


def zstack(size: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size] / size
    makers = [
        lambda: np.sin(xx * 20),
        lambda: np.sin(yy * 20),
        lambda: np.sin((xx + yy) * 14),
        lambda: np.cos(((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * 60),
        lambda: np.sin(xx * 8) * np.sin(yy * 8),
        lambda: np.sin((xx - yy) * 14),
    ]
    slices = [0.5 + 0.4 * makers[z % len(makers)]() for z in range(frames)]
    return np.stack(slices).astype(np.float32), np.ones((frames, size, size), bool)


SEQUENCES = {"moving": moving, "rotating": rotating, "zstack": zstack}


def style_image(size: int) -> np.ndarray:
    from PIL import Image

    from napari_style_transfer._sample_data import load_sample

    return np.asarray(Image.fromarray(load_sample("swirl")).resize((size, size), Image.BILINEAR))


# --- runs --------------------------------------------------------------------------------


def run_api(movie: np.ndarray, style: np.ndarray, options: dict) -> dict:
    """One API run; per frame: seconds, steps, the content + style loss of each step (and
    each of the two)."""
    from napari_style_transfer import iter_stylize
    from napari_style_transfer.api import StyleResult

    frames: list[dict] = []
    last = time.perf_counter()
    for item in iter_stylize(movie, style, **options):
        if isinstance(item, StyleResult):
            return {"image": item.image, "frames": frames}
        if item.step == 1:
            frames.append({"losses": [], "content": [], "style": [], "seconds": 0.0})
        now = time.perf_counter()
        frames[-1]["losses"].append(item.losses.content + item.losses.style)
        frames[-1]["content"].append(item.losses.content)
        frames[-1]["style"].append(item.losses.style)
        frames[-1]["seconds"] += now - last
        last = now
    raise AssertionError("no result")


#: The old engine's threshold: a content change at which a pixel starts afresh.
OLD_FRAME_CHANGE_FRESH = 0.1


def run_old(movie: np.ndarray, style: np.ndarray, options: dict) -> dict:
    """The warm start the engine had before frames="time": every frame runs the full steps
    from the previous result where its content did not change."""
    import torch

    from napari_style_transfer._image import describe_image, finish_image, working_shape
    from napari_style_transfer.api import _to_tensor
    from napari_style_transfer.engine import StyleObjective, initial_image, optimize, resize
    from napari_style_transfer.options import StyleOptions
    from napari_style_transfer.vgg import VGGFeatures
    from napari_style_transfer.weights import load_vgg19_features

    opts = StyleOptions.from_kwargs(options)
    device = torch.device("cpu")
    extractor = VGGFeatures(load_vgg19_features(opts.weights).features, opts.layers, opts.pooling)
    extractor = extractor.to(memory_format=torch.channels_last)
    content_in = describe_image(movie, "content")
    shape = working_shape(*content_in.shape, opts.size)
    style_t = _to_tensor(describe_image(style, "style").frame().rgb, device)
    style_t = resize(style_t, *working_shape(*style.shape[:2], max(shape)))
    objective = None
    previous = previous_content = None
    images, frames = [], []
    for index in content_in.frames():
        started = time.perf_counter()
        content = resize(_to_tensor(content_in.frame(index).rgb, device), *shape)
        fresh = initial_image(content, style_t, opts.init, opts.seed)
        if previous is None:
            start = fresh
            objective = StyleObjective(extractor, content, style_t, opts)
        else:
            change = (content - previous_content).abs().amax(dim=1, keepdim=True)
            weight = (change / OLD_FRAME_CHANGE_FRESH).clamp(0.0, 1.0)
            start = (previous + weight * (fresh - previous)).clamp(0.0, 1.0)
            objective.set_content(content)
        losses = []
        for _, loss, image in optimize(objective, start, opts):  # noqa: B007 (the last image is kept)
            losses.append(loss.content + loss.style)
        previous, previous_content = image.detach().clone(), content
        images.append(finish_image(previous[0].permute(1, 2, 0).numpy(), True, None))
        frames.append({"losses": losses, "seconds": time.perf_counter() - started})
    return {"image": np.stack(images), "frames": frames}


# --- measures ----------------------------------------------------------------------------


def _resize_masks(masks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(m).resize(shape[::-1], Image.NEAREST)) for m in masks])


def measures(
    out: np.ndarray, independent: np.ndarray, content: np.ndarray, masks: np.ndarray, margin: int
) -> dict:
    import torch
    from scipy.ndimage import binary_dilation

    from napari_style_transfer.frames import link_frames, warp

    masks = _resize_masks(masks, out.shape[1:])

    def content_at(t: int) -> np.ndarray:
        from PIL import Image

        return np.asarray(Image.fromarray(content[t]).resize(out.shape[1:][::-1], Image.BILINEAR))

    near = binary_dilation(masks.any(axis=0), iterations=margin)
    static = ~near
    frames = len(out)
    result: dict = {}
    if static.any() and frames > 1:
        result["flicker"] = float(
            np.mean([np.abs(out[t] - out[t - 1])[static].mean() for t in range(1, frames)])
        )
        result["drift"] = float(np.abs(out[-1] - out[0])[static].mean())
    ghosts, variations = [], []
    for t in range(1, frames):
        left = masks[t - 1] & ~masks[t]
        if not left.any():
            continue
        clear = [
            s
            for s in range(frames)
            if s != t and not (binary_dilation(masks[s], iterations=margin) & left).any()
        ]
        if not clear:
            continue
        ghosts.append(np.abs(out[t] - independent[t])[left].mean())
        variations.append(np.mean([np.abs(independent[t] - independent[s])[left].mean() for s in clear]))
    if ghosts:
        result["ghost"] = float(np.mean(ghosts))
        result["ghost_variation"] = float(np.mean(variations))
    # the trail: everywhere the object has been and no longer is (clear of it by the margin),
    # against the independent run of the same frame: its texture (the spread of its values; a
    # flat, unstyled trail is below 1) and its mean difference (a darker trail is below 0)
    spreads, biases = [], []
    for t in range(1, frames):
        trail = masks[:t].any(axis=0) & ~binary_dilation(masks[t], iterations=margin)
        if trail.sum() < 2:
            continue
        spreads.append(out[t][trail].std() / max(independent[t][trail].std(), 1e-6))
        biases.append((out[t] - independent[t])[trail].mean())
    if spreads:
        result["trail_texture"] = float(np.mean(spreads))
        result["trail_bias"] = float(np.mean(biases))
    errors = []
    for t in range(1, frames):
        as_rgb = lambda a: torch.from_numpy(np.ascontiguousarray(np.repeat(a[None, None], 3, axis=1)))  # noqa: E731
        link = link_frames(as_rgb(content[t - 1]), as_rgb(content[t]))
        warped = warp(as_rgb(out[t - 1]), link.flow)[0, 0].numpy()
        reliable = link.reliable[0, 0].numpy() > 0.5
        errors.append(np.abs(out[t] - warped)[reliable].mean() if reliable.any() else np.nan)
    if errors and np.isfinite(errors).all():  # unlike slices: no pixel is reliable
        result["warp_error"] = float(np.mean(errors))
    # untrained weights may invert grey levels: the sign of the correlation says nothing
    result["likeness"] = float(
        np.mean([abs(np.corrcoef(out[t].ravel(), content_at(t).ravel())[0, 1]) for t in range(frames)])
    )
    return result


def later_frames_by_size(side: int, frames: int, steps: int, options: dict, done: dict) -> dict:
    """The moving disc drawn at ``side`` px, time mode with all the steps for every frame: per
    later frame, the step at which its content + style loss reaches the first frame's final
    loss and the independent run of the same frame's, its start and its loss at the auto
    time_steps, and the content and style terms of its final loss against the independent run's.
    ``done``: runs of the moving disc the modes part made, by (side, mode), used as they are."""
    from napari_style_transfer.options import StyleOptions

    movie, _ = moving(side, frames)
    style = style_image(side)

    def run(mode: str, extra: dict) -> list[dict]:
        if (side, mode) not in done:
            done[side, mode] = run_api(movie, style, {**options, **extra})
        return done[side, mode]["frames"]

    independent = run("independent", {"frames": "independent"})
    timed = run("time, full steps", {"frames": "time", "time_steps": steps})
    first = timed[0]["losses"][-1]
    auto = StyleOptions(steps=steps).later_frame_steps
    return {
        "first_loss": first,
        "auto_steps": auto,
        "later": [
            {
                "to_first": steps_to_reach(warm["losses"], first),
                "to_independent": steps_to_reach(warm["losses"], cold["losses"][-1]),
                "start": warm["losses"][0] / first,
                "at_auto": warm["losses"][auto - 1] / first,
                # the warm start's worth: how long the first frame took to the loss this frame has at the auto steps
                "first_steps_to_auto_loss": steps_to_reach(timed[0]["losses"], warm["losses"][auto - 1]),
                "end": warm["losses"][-1] / first,
                "independent": cold["losses"][-1] / first,
                "independent_halfway": cold["losses"][auto - 1] / first,
                "content_over_independent": warm["content"][-1] / cold["content"][-1],
                "style_over_independent": warm["style"][-1] / cold["style"][-1],
            }
            for warm, cold in zip(timed[1:], independent[1:], strict=True)
        ],
    }


def demo_sweep(side: int, steps: int, options: dict, margin: int) -> dict:
    """The moving disc at ``side`` px and ``steps`` steps, DEMO_FRAMES frames, time mode at
    each of DEMO_SWEEP_WEIGHTS with time_steps auto, and old: per weight the measures (static
    flicker and drift, warp error, likeness; with so few frames no ghost), and each later
    frame's content + style loss at its last step over the first frame's, with the step at
    which it reached it."""
    movie, masks = moving(side, DEMO_FRAMES)
    style = style_image(side)
    independent = run_api(movie, style, {**options, "frames": "independent"})["image"]
    entry: dict = {
        "size": side,
        "steps": steps,
        "frames": DEMO_FRAMES,
        "margin": margin,
        "old": measures(run_old(movie, style, options)["image"], independent, movie, masks, margin),
        "weights": {},
    }
    for weight in DEMO_SWEEP_WEIGHTS:
        run = run_api(movie, style, {**options, "frames": "time", "temporal_weight": weight})
        first = run["frames"][0]["losses"][-1]
        entry["weights"][f"{weight:g}"] = {
            **measures(run["image"], independent, movie, masks, margin),
            "later_loss": [f["losses"][-1] / first for f in run["frames"][1:]],
            "later_steps": [len(f["losses"]) for f in run["frames"][1:]],
            "later_steps_to_first_loss": [steps_to_reach(f["losses"], first) for f in run["frames"][1:]],
        }
        print("demo_sweep", weight, json.dumps(entry["weights"][f"{weight:g}"]), flush=True)
    return entry


def long_run(side: int, frames: int, options: dict, margin: int) -> dict:
    """The rotating disc for ``frames`` frames, time mode and old: per later frame, static
    drift from the first frame and flicker from the frame before, and the content + style
    loss over the first frame's."""
    from scipy.ndimage import binary_dilation

    movie, masks = rotating(side, frames)
    style = style_image(side)
    static = ~binary_dilation(masks.any(axis=0), iterations=margin)
    entry: dict = {}
    for mode in ("time", "old"):
        started = time.perf_counter()
        run = (
            run_api(movie, style, {**options, "frames": "time"})
            if mode == "time"
            else run_old(movie, style, options)
        )
        image, first = run["image"], run["frames"][0]["losses"][-1]
        entry[mode] = {
            "drift": [float(np.abs(image[t] - image[0])[static].mean()) for t in range(1, frames)],
            "flicker": [float(np.abs(image[t] - image[t - 1])[static].mean()) for t in range(1, frames)],
            "loss": [f["losses"][-1] / first for f in run["frames"][1:]],
            "seconds": time.perf_counter() - started,
        }
    return entry


# --- the smear part ----------------------------------------------------------------------

#: The smear part (issue 33): the size, the first frame's and the later frames' steps and the
#: frames of its generated sequences (the bundled time-lapse has its own 8).
SMEAR_SIZE, SMEAR_STEPS, SMEAR_TIME_STEPS, SMEAR_FRAMES = 96, 20, 10, 8
#: Texture energy: the mean gradient magnitude in windows of this many pixels (every position
#: where one fits); a window is smeared where its energy is off the independent run's by more
#: than SMEAR_OFF, once the frame's median ratio is divided out.
SMEAR_WINDOW = 16
SMEAR_OFF = 0.3
#: Rows (and columns) along each edge of the frame that make its border band.
BAND_ROWS = 4
#: The goals: smeared windows under this share of a frame; border bands within this of the interior.
SMEAR_GOAL = 0.02
BAND_GOAL = 0.1
#: The smear part's goal for static flicker: at most this share of the independent runs'.
FLICKER_GOAL = 1 / 3
#: The smear part's time mode in passes (time_passes), beside the single forward pass.
SMEAR_PASSES = 2


def _unit(stack: np.ndarray) -> np.ndarray:
    stack = stack.astype(np.float32)
    return (stack - stack.min()) / max(float(stack.max() - stack.min()), 1e-6)


def _blob(size: int, centre: tuple[float, float], radii: tuple[float, float], seed: int) -> np.ndarray:
    """A soft-edged elliptical blob with its own chromatin-like texture, in [0, 1]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = np.sqrt(((yy - centre[0]) / radii[0]) ** 2 + ((xx - centre[1]) / radii[1]) ** 2)
    body = 1.0 / (1.0 + np.exp(np.minimum((r - 1.0) * 8.0, 50.0)))  # far outside: 0, not an overflow
    pattern = np.roll(_texture(size, seed, size / 40), (int(round(centre[0])), int(round(centre[1]))), (0, 1))
    return body * (0.6 + 0.4 * pattern)


def nuclei(size: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """The bundled Nuclei time-lapse (all its 8 frames; ``frames`` is ignored) in [0, 1] at
    ``size`` px, and its nuclei (smoothed content above Otsu's threshold)."""
    from PIL import Image
    from skimage.filters import gaussian, threshold_otsu

    from napari_style_transfer._sample_data import load_sample

    stack = _unit(load_sample("nuclei_timelapse"))
    movie = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR)) for f in stack])
    smooth = gaussian(movie, (0, 1, 1))
    return movie.astype(np.float32), smooth > threshold_otsu(smooth)


def crossing(size: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Three textured discs on a plain dark background: two cross each other's path, passing 3 px
    apart (edge to edge) halfway, the third crawls down."""
    background = np.full((size, size), 0.05)
    radius = size * 0.1
    gap = 2 * radius + 3 * size / 96
    half = (frames - 1) / 2
    movie, masks = [], []
    for t in range(frames):
        s = (t - half) / max(half, 1)
        centres = [
            (size * 0.5 - gap / 2, size * 0.5 + s * size * 0.3),
            (size * 0.5 + gap / 2, size * 0.5 - s * size * 0.3),
            (size * 0.2 + t * size / 64, size * 0.82),
        ]
        frame, inside = background.copy(), np.zeros((size, size), bool)
        for number, centre in enumerate(centres):
            blob = _blob(size, centre, (radius, radius), 10 + number)
            frame = np.maximum(frame, 0.2 + 0.8 * blob)
            inside |= blob > 0.3
        movie.append(frame)
        masks.append(inside)
    return np.stack(movie).astype(np.float32), np.stack(masks)


def drift(size: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """A textured field that drifts as a whole, 1.5 px a frame right and 0.75 px down (no
    static pixels)."""
    from scipy.ndimage import shift

    field = 0.1 + 0.8 * _texture(2 * size, 4, size / 48)
    movie = [
        shift(field, (0.75 * t, 1.5 * t), order=3, mode="reflect")[
            size // 2 : size // 2 + size, size // 2 : size // 2 + size
        ]
        for t in range(frames)
    ]
    return np.clip(np.stack(movie), 0, 1).astype(np.float32), np.ones((frames, size, size), bool)


def fluorescence(size: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Bright textured blobs on a dark background with camera noise new in every frame: two
    crawl towards each other and pass 2 px apart, two sit still, one enters from the left."""
    rng = np.random.default_rng(7)
    radii = (size * 0.09, size * 0.12)
    movie, masks = [], []
    for t in range(frames):
        centres = [
            (size * 0.35, size * 0.2 + t * size / 48),
            (size * 0.35 + 2 * radii[0] + 2 * size / 96, size * 0.8 - t * size / 48),
            (size * 0.75, size * 0.3),
            (size * 0.15, size * 0.8),
            (size * 0.75, -size * 0.1 + t * size / 40),
        ]
        signal = sum(_blob(size, centre, radii, 20 + n) for n, centre in enumerate(centres))
        photons = 0.02 + 0.8 * signal
        movie.append(np.clip(photons + rng.normal(0, 0.006, photons.shape), 0, 1))
        masks.append(signal > 0.2)
    return np.stack(movie).astype(np.float32), np.stack(masks)


#: The sequences whose objects are counted: on a plain background (a textured one breaks into
#: many components of its own).
COUNTED = ("nuclei", "crossing", "fluorescence")

#: The smear part's sequences: the bundled time-lapse, the moving disc and sequences made here.
SMEAR_SEQUENCES = {
    "nuclei": nuclei,
    "moving": moving,
    "crossing": crossing,
    "drift": drift,
    "fluorescence": fluorescence,
}


def _gradient_magnitude(image: np.ndarray) -> np.ndarray:
    rows, columns = np.gradient(image.astype(np.float64))
    return np.hypot(rows, columns)


def texture_energy(image: np.ndarray, window: int = SMEAR_WINDOW) -> np.ndarray:
    """Mean gradient magnitude in every ``window`` x ``window`` window that fits the frame."""
    magnitude = _gradient_magnitude(image)
    sums = magnitude.cumsum(0).cumsum(1)
    sums = np.pad(sums, ((1, 0), (1, 0)))
    total = (
        sums[window:, window:] - sums[:-window, window:] - sums[window:, :-window] + sums[:-window, :-window]
    )
    return total / window**2


def smeared_share(out: np.ndarray, independent: np.ndarray) -> float:
    """The share of windows whose texture energy is off the independent run's by more than
    SMEAR_OFF, relative to the frame's median ratio (independent runs of different frames
    differ by up to 15% as a whole at these steps: that is not a smear)."""
    ratio = texture_energy(out) / np.maximum(texture_energy(independent), 1e-9)
    return float(np.mean(np.abs(ratio / np.median(ratio) - 1.0) > SMEAR_OFF))


#: The same-content smear measure (:func:`same_content_smear`): windows whose content differs
#: from this frame's by at most SAME_CONTENT (mean absolute difference, values in [0, 1]) count
#: as the same content; a result's window must be within SMEAR_MEAN_OFF of such an independent
#: run's mean as well as within SMEAR_OFF of its texture energy.
SAME_CONTENT = 0.02
SMEAR_MEAN_OFF = 0.05


def _window_means(image: np.ndarray, window: int = SMEAR_WINDOW) -> np.ndarray:
    """The mean of every ``window`` x ``window`` window that fits the image."""
    sums = np.pad(np.asarray(image, np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    total = (
        sums[window:, window:] - sums[:-window, window:] - sums[window:, :-window] + sums[:-window, :-window]
    )
    return total / window**2


def same_content_smear(
    out: np.ndarray, independent: np.ndarray, content: np.ndarray, t: int, skip_own: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Where frame ``t`` of ``out`` is smeared, per window: no independent run of any frame whose
    content is the same there (SAME_CONTENT) has its texture energy (within SMEAR_OFF, after
    dividing out the median ratio) and its mean (within SMEAR_MEAN_OFF). With the frame's own
    independent run only, as :func:`smeared_share`, the measure counts the independent runs'
    own changes from frame to frame: a background held still matches frame 0's styling, not
    frame 5's (at 96 px two independent runs of consecutive crossing-disc frames differ by
    13-21% of windows), and it missed darker slabs of equal texture energy. Returns the smeared
    windows and the windows that some frame's run covered (with ``skip_own``, frame ``t``'s own
    run left out: the measure's floor, an independent run judged by the others)."""
    energy, means = texture_energy(out[t]), _window_means(out[t])
    matched, covered = np.zeros(energy.shape, bool), np.zeros(energy.shape, bool)
    for k in range(len(independent)):
        if skip_own and k == t:
            continue
        same = _window_means(np.abs(content[k].astype(np.float64) - content[t])) <= SAME_CONTENT
        ratio = energy / np.maximum(texture_energy(independent[k]), 1e-9)
        near = np.abs(ratio / np.median(ratio) - 1.0) <= SMEAR_OFF
        near &= np.abs(means - _window_means(independent[k])) <= SMEAR_MEAN_OFF
        matched |= same & near
        covered |= same
    return ~matched & covered, covered


def count_objects(image: np.ndarray, content: np.ndarray) -> int:
    """Separate objects: connected components of the smoothed image above Otsu's threshold,
    the image's polarity set by its correlation with ``content`` (untrained weights may invert
    grey levels), components under (size / 24)^2 pixels dropped."""
    from skimage.filters import gaussian, threshold_otsu
    from skimage.measure import label

    size = max(image.shape)
    smooth = gaussian(image.astype(np.float64), size / 48)
    if np.corrcoef(smooth.ravel(), content.ravel())[0, 1] < 0:
        smooth = -smooth
    labels = label(smooth > threshold_otsu(smooth))
    areas = np.bincount(labels.ravel())[1:]
    return int((areas >= (size / 24) ** 2).sum())


def band_ratios(image: np.ndarray) -> list[float]:
    """Texture energy of the BAND_ROWS outer rows (top, bottom) and columns (left, right) over
    the interior's."""
    magnitude = _gradient_magnitude(image)
    b = BAND_ROWS
    inner = magnitude[b:-b, b:-b].mean()
    sides = (magnitude[:b], magnitude[-b:], magnitude[:, :b], magnitude[:, -b:])
    return [float(side.mean() / max(inner, 1e-9)) for side in sides]


def moving_flicker(out: np.ndarray, content: np.ndarray) -> float | None:
    """Mean |x_t - x_t-1 warped along the flow| over the pixels that move (a flow of half a
    pixel or more) where time mode trusts the flow (``FrameLink.reliable``), over the later
    frames: how well moving content keeps its texture (static flicker sees only still pixels).
    None where nothing moves."""
    import torch

    from napari_style_transfer.frames import link_frames, warp_result

    def tensor(frame: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32))[None, None].expand(
            1, 3, -1, -1
        )

    total, count = 0.0, 0
    for t in range(1, len(out)):
        link = link_frames(tensor(content[t - 1]), tensor(content[t]))
        moving = (link.flow.abs().amax(dim=1) >= 0.5) & (link.reliable[:, 0] > 0)
        warped = warp_result(tensor(out[t - 1]).contiguous(), link.flow)[:, 0]
        total += float(
            (torch.from_numpy(np.asarray(out[t], dtype=np.float32))[None] - warped).abs()[moving].sum()
        )
        count += int(moving.sum())
    return total / count if count else None


def smear_measures(
    out: np.ndarray, independent: np.ndarray, content: np.ndarray, masks: np.ndarray, margin: int
) -> dict:
    """Per later frame: smeared share, object counts (result, independent, content) and the
    border band against the independent run's; moving flicker (:func:`moving_flicker`), static
    flicker and drift by frame."""
    from scipy.ndimage import binary_dilation

    frames = len(out)
    later = range(1, frames)
    band = [
        max(
            abs(mine / theirs - 1.0)
            for mine, theirs in zip(band_ratios(out[t]), band_ratios(independent[t]), strict=True)
        )
        for t in later
    ]

    def added_band(image: np.ndarray, others: range | list[int]) -> float:
        """The band ``image`` adds over the nearest of the independent runs ``others``: the
        least, over them, of its worst side's excess texture energy (one-sided: a weaker band
        than a run's own adds none)."""
        return min(
            max(
                mine / theirs - 1.0
                for mine, theirs in zip(band_ratios(image), band_ratios(independent[k]), strict=True)
            )
            for k in others
        )

    entry = {
        "band_added": [added_band(out[t], range(frames)) for t in later],
        "band_added_floor": [added_band(independent[t], [k for k in range(frames) if k != t]) for t in later],
        "smeared": [smeared_share(out[t], independent[t]) for t in later],
        "smeared_same": [float(same_content_smear(out, independent, content, t)[0].mean()) for t in later],
        "smeared_same_floor": [
            float(same_content_smear(independent, independent, content, t, skip_own=True)[0].mean())
            for t in later
        ],
        "objects": [count_objects(out[t], content[t]) for t in range(frames)],
        "objects_independent": [count_objects(independent[t], content[t]) for t in range(frames)],
        "objects_content": [count_objects(content[t], content[t]) for t in range(frames)],
        "band": band,
        "band_raw": [max(abs(r - 1.0) for r in band_ratios(out[t])) for t in later],
        "band_raw_independent": [max(abs(r - 1.0) for r in band_ratios(independent[t])) for t in later],
        "moving_flicker": moving_flicker(out, content),
        "moving_flicker_independent": moving_flicker(independent, content),
    }
    static = ~binary_dilation(masks.any(axis=0), iterations=margin)
    if static.any():
        for name, image in (("", out), ("_independent", independent)):
            entry["flicker" + name] = float(
                np.mean([np.abs(image[t] - image[t - 1])[static].mean() for t in later])
            )
            entry["drift" + name] = [float(np.abs(image[t] - image[0])[static].mean()) for t in later]
    return entry


def smear_run(name: str, options: dict, side: int, frames: int) -> tuple[dict, dict]:
    """The smear measures of one sequence (time mode against independent), and the images."""
    movie, masks = SMEAR_SEQUENCES[name](side, frames)
    style = style_image(side)
    independent = run_api(movie, style, {**options, "frames": "independent"})["image"]
    timed = run_api(movie, style, {**options, "frames": "time", "time_passes": 0})["image"]
    passes = run_api(movie, style, {**options, "frames": "time", "time_passes": SMEAR_PASSES})["image"]
    content = _resize_stack(movie, timed.shape[1:])
    margin = max(2, side // 16)
    masks = _resize_masks(masks, timed.shape[1:])
    entry = smear_measures(timed, independent, content, masks, margin)
    entry["passes"] = smear_measures(passes, independent, content, masks, margin)
    return entry, {"content": content, "time": timed, "passes": passes, "independent": independent}


def _resize_stack(stack: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize(shape[::-1], Image.BILINEAR)) for f in stack])


def frame_changes(stack: np.ndarray) -> np.ndarray:
    """Each frame's |x_t - x_t-1| x4 (black for the first), for montages."""
    return np.concatenate([np.zeros_like(stack[:1]), np.clip(4 * np.abs(np.diff(stack, axis=0)), 0, 1)])


def smear_montage(images: dict, path: Path, scale: int = 2) -> None:
    """Rows content / time (one forward pass) / time in passes / independent and each one's
    |x_t - x_t-1| (differences x4), columns frames, at ``scale`` times the images' size."""

    change = frame_changes
    passes = f"{SMEAR_PASSES} passes"
    rows = {
        "content": images["content"],
        "time": images["time"],
        passes: images["passes"],
        "independent": images["independent"],
        "time: change": change(images["time"]),
        f"{passes}: change": change(images["passes"]),
        "independent: change": change(images["independent"]),
    }
    _sheet(rows, path, 120, scale)


SMEAR_SECTION = "## Measured: smears, objects, border band"


def smear_section(smear: dict, machine: dict) -> str:
    """The smear part's table and goals, for docs/timelapse.md."""

    def worst(values: list[float]) -> str:
        return f"{max(values) * 100:.1f}%" if values else "-"

    def counts(e: dict, key: str) -> str:
        return " ".join(str(n) for n in e[key])

    lines = [
        SMEAR_SECTION,
        "",
        f"Written by `python benchmarks/stacks.py --parts smear` on {machine['date']} ({machine['cpu']}, "
        f"{machine['threads']} torch thread(s); load average {machine['load']:.2f}: seconds are not reported). "
        f"{smear['size']} px, {smear['steps']} steps for the first frame and {smear['time_steps'] or 'auto: half as many'} for later ones, "
        "the bundled swirl as the style, weights `random` (mechanics only: untrained weights say nothing of "
        "quality). Raw numbers: `docs/stacks.json` (`smear`).",
        "",
        f"| sequence | smeared windows, worst frame (goal < {SMEAR_GOAL:.0%}) | smeared against the same content, "
        "worst frame (floor) | objects: time | objects: independent "
        f"| objects: content | border band against independent, worst (goal <= {BAND_GOAL:.0%}) | border band added "
        "over the nearest independent run, worst (floor) | border band, raw: "
        "time / independent | moving flicker: time / independent | static flicker: time / independent (goal <= 1/3) "
        "| static drift by frame (time) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = []
    for name, e in smear["sequences"].items():
        rows.append((name, e, name in COUNTED))
        if "passes" in e:
            rows.append((f"{name}, {SMEAR_PASSES} passes", e["passes"], name in COUNTED))
    for name, e, counted in rows:
        flicker = (
            f"{e['flicker']:.4f} / {e['flicker_independent']:.4f} ({e['flicker'] / e['flicker_independent']:.2f})"
            if "flicker" in e
            else "- (nothing static)"
        )
        drift = " ".join(f"{d:.4f}" for d in e["drift"]) if "drift" in e else "-"
        moving = (
            f"{e['moving_flicker']:.4f} / {e['moving_flicker_independent']:.4f}"
            if e.get("moving_flicker") is not None
            else "-"
        )
        same = (
            f"{worst(e['smeared_same'])} ({worst(e['smeared_same_floor'])})" if "smeared_same" in e else "-"
        )
        added = (
            f"{max(e['band_added']) * 100:.1f}% ({max(e['band_added_floor']) * 100:.1f}%)"
            if "band_added" in e
            else "-"
        )
        lines.append(
            f"| {name} | {worst(e['smeared'])} | {same} | {counts(e, 'objects') if counted else '-'} "
            f"| {counts(e, 'objects_independent') if counted else '-'} "
            f"| {counts(e, 'objects_content') if counted else '-'} | {worst(e['band'])} | {added} | {worst(e['band_raw'])} / "
            f"{worst(e['band_raw_independent'])} | {moving} | {flicker} | {drift} |"
        )
    lines += [
        "",
        f"*smeared windows*: of every {SMEAR_WINDOW} x {SMEAR_WINDOW} px window of a later frame, the share whose "
        f"texture energy (mean gradient magnitude) is off the independent run's of that frame by more than "
        f"{SMEAR_OFF:.0%}, after dividing out the frame's median ratio (independent runs of different frames "
        "differ by up to 15% as a whole at these steps). *smeared against the same content*: the share of "
        "windows that match no independent run of any frame whose content is the same there (mean absolute "
        f"difference <= {SAME_CONTENT}) in texture energy (within {SMEAR_OFF:.0%}) and mean (within "
        f"{SMEAR_MEAN_OFF}): a background held still matches the styling of the frame it was held from; "
        "*floor*: each independent run judged by the others. *objects*: connected components of the smoothed frame "
        "above Otsu's threshold, per frame. *border band*: texture energy of the "
        f"{BAND_ROWS} outer rows or columns over the interior's, worst side and frame; *against independent* "
        "divides it by the independent run's own (the untrained network draws a frame of its own along the "
        "edges in every independent run, *raw*, which changes from frame to frame); *added over the nearest "
        "independent run*: the least, over the independent runs of every frame, of the worst side's excess "
        "(negative: weaker than every run's own band), with each independent run judged by the others as "
        "its floor. *moving flicker*: the mean change of a pixel that moves "
        "(half a pixel or more where time mode trusts the flow) from the previous frame's result warped "
        "along the flow: how well moving content keeps its texture. *static*: pixels never within "
        f"{max(2, smear['size'] // 16)} px of an object. A sequence's first row is time mode's single forward "
        f"pass (`time_passes=0`), its second `time_passes={SMEAR_PASSES}`: every frame styled alone, then a "
        'forward and a backward pass (docs/timelapse.md, "Multi-pass").',
        "",
    ]
    return "\n".join(lines)


@contextlib.contextmanager
def frames_read(when: str):
    """Within it, time mode reads each frame and computes its flows ``when``: "ahead" (in a
    thread, while the previous frame optimises) or "when taken" (as before that), whatever the
    API would choose for the machine."""
    from napari_style_transfer.pipeline import reader

    choose = reader.reads_ahead
    reader.reads_ahead = lambda device: when == "ahead"
    try:
        yield
    finally:
        reader.reads_ahead = choose


def flow_seconds(side: int, repeats: int = 3) -> float:
    """Seconds for one later frame's link (two TV-L1 flows and the consistency tests) of the
    moving disc at ``side`` px."""
    import torch

    from napari_style_transfer.frames import link_frames

    first, second = (
        torch.from_numpy(np.repeat(frame[None, None], 3, axis=1)) for frame in moving(side, 2)[0]
    )
    link_frames(first, second)  # the first call pays for imports
    started = time.perf_counter()
    for _ in range(repeats):
        link_frames(first, second)
    return (time.perf_counter() - started) / repeats


def read_ahead(side: int, options: dict, threads: int) -> dict:
    """Time mode on the moving disc at ``side`` px with ``threads`` torch threads, frames read
    ahead and when taken (each twice, alternating, as the machine's load drifts; the faster
    run of each kept): seconds per later frame and for the run, by the later frames' steps."""
    import torch

    from napari_style_transfer.options import StyleOptions

    movie, _ = moving(side, AHEAD_FRAMES)
    style = style_image(side)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    entry = {}
    try:
        for later_steps in (StyleOptions(steps=options["steps"]).later_frame_steps, AHEAD_FEW_STEPS):
            runs: dict[str, list] = {"when taken": [], "ahead": []}
            for when in [*runs] * 2:
                with frames_read(when):
                    started = time.perf_counter()
                    run = run_api(
                        movie, style, {**options, "size": side, "frames": "time", "time_steps": later_steps}
                    )
                runs[when].append(
                    (
                        time.perf_counter() - started,
                        float(np.mean([f["seconds"] for f in run["frames"][1:]])),
                        run["image"],
                    )
                )
            entry[str(later_steps)] = {
                **{
                    when: {"run": min(r[0] for r in done), "later": min(r[1] for r in done)}
                    for when, done in runs.items()
                },
                "identical": all(
                    np.array_equal(a[2], b[2]) for a, b in zip(runs["when taken"], runs["ahead"], strict=True)
                ),
            }
    finally:
        torch.set_num_threads(before)
    return entry


def _steps_text(steps: list[int | None]) -> str:
    """Steps to a loss, one per later frame, as "12, -, 9" (- : not reached)."""
    return ", ".join("-" if step is None else str(step) for step in steps)


def steps_to_reach(losses: list[float], target: float) -> int | None:
    for step, loss in enumerate(losses, start=1):
        if loss <= target:
            return step
    return None


# --- the report --------------------------------------------------------------------------


def _sweep_reading(sweep: dict, old: dict | None, steps: int) -> list[str]:
    """What the temporal_weight sweep shows, in words computed from its numbers (``steps``: the
    first frame's)."""
    from napari_style_transfer.options import StyleOptions

    def ratios(e: dict) -> tuple[float, float]:
        return old["flicker"] / e["flicker"], old["drift"] / e["drift"]

    def reaches(e: dict) -> bool:
        return all(r is not None for r in e.get("later_steps_to_first_loss", [None]))

    lines = ["Reading it:", ""]
    reaching = [w for w, e in sweep.items() if reaches(e)]
    steady = [w for w, e in sweep.items() if old and e.get("flicker") and min(ratios(e)) >= STEADY_GOAL]
    both = [w for w in steady if w in reaching]
    lines.append(
        f"- Later frames reach the first frame's content + style loss within their steps at temporal_weight "
        f"{', '.join(reaching) or 'none'}; static flicker and drift are {STEADY_GOAL:g}x or more below old's at "
        f"{', '.join(steady) or 'none'}; both at {', '.join(both) or 'none'}."
    )
    if steady:
        low = sweep[steady[0]]
        lines.append(
            f"- The lowest weight that holds static parts {STEADY_GOAL:g}x steadier than old, {steady[0]}: flicker "
            f"{ratios(low)[0]:.1f}x and drift {ratios(low)[1]:.1f}x below old, the later frames' loss "
            f"{low['later_loss'] / low['first_loss']:.2f}x the first frame's."
        )
    # the most steps a later frame needed with SWEEP_LONGER times the first frame's, by weight
    needed = {
        w: math.inf if None in e["longer_steps_to_first_loss"] else max(e["longer_steps_to_first_loss"])
        for w, e in sorted(sweep.items(), key=lambda item: float(item[0]))
        if e.get("longer_steps_to_first_loss")
    }
    if needed:
        allowed = STEPS_GOAL * steps
        quick = [w for w, most in needed.items() if most <= allowed]
        steady_too = [w for w in quick if w in steady]
        text = (
            f"- Given {SWEEP_LONGER}x the first frame's steps each, the most steps a later frame needed for the first "
            "frame's loss, by weight (- : one did not get there): "
            + ", ".join(f"{w}: {'-' if most == math.inf else most}" for w, most in needed.items())
            + f". Within the steps goal (at most {allowed:g}, half the first frame's {steps}) at "
            f"{', '.join(quick) or 'none'}; with static parts also {STEADY_GOAL:g}x steadier than old at "
            f"{', '.join(steady_too) or 'none'}."
        )
        growing = list(needed.values())
        if quick and not steady_too and all(b >= a for a, b in zip(growing, growing[1:], strict=False)):
            text += (
                " The steps needed grow with the weight: the term that holds static parts costs the later "
                "frames content + style loss, so at this size no one weight meets both goals."
            )
        lines.append(text)
    ordered = sorted(sweep.items(), key=lambda item: float(item[0]))
    growth = [e["later_loss"] / e["first_loss"] for _, e in ordered]
    if len(growth) > 1 and all(b >= a for a, b in zip(growth, growth[1:], strict=False)):
        lines.append(
            f"- The later frames' loss grows with the weight at every step of the sweep ({growth[0]:.2f}x to "
            f"{growth[-1]:.2f}x the first frame's): a held pixel keeps its value while the content's features "
            "around it change (VGG19's receptive fields reach well beyond the moving object; a likely reason, "
            "not measured here)."
        )
    default = f"{StyleOptions().temporal_weight:g}"
    if default in sweep and old:
        e = sweep[default]
        ghost = (
            f"ghost {e['ghost'] / e['ghost_variation']:.2f} of the independent runs' variation, "
            if e.get("ghost_variation")
            else ""
        )
        lines.append(
            f"- The default, {default}: flicker {ratios(e)[0]:.0f}x and drift {ratios(e)[1]:.0f}x below old, "
            f"{ghost}the later frames' loss {e['later_loss'] / e['first_loss']:.2f}x the first frame's. It is kept "
            "because time mode is for steady static parts: each tenfold step up to it cuts the static flicker "
            "further"
            + (
                f" (1e2 to 1e3: {sweep['100']['flicker'] / e['flicker']:.1f}x lower)"
                if "100" in sweep
                else ""
            )
            + (
                f", and the next, 1e4, only {e['flicker'] / sweep['10000']['flicker']:.1f}x more for "
                f"{sweep['10000']['later_loss'] / sweep['10000']['first_loss']:.2f}x the first frame's loss"
                if "10000" in sweep
                else ""
            )
            + "."
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "stacks.json")
    parser.add_argument("--images", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument(
        "--parts",
        default=",".join(MEASURED_PARTS),
        help="any of modes, sweep (temporal_weight), sizes (later frames' steps by frame size), demo (the same at the "
        "command-line demo's size and steps, 20 minutes or more on a CPU), default (the same at the API's default "
        "size and steps, 40 minutes or more), demo_sweep (temporal_weight at the demo's size and steps, 20 minutes or more), ahead (time mode reading frames ahead, and the flows' seconds), long (the rotating disc for "
        f"{LONG_FRAMES} frames: static drift and loss by frame), smear (time mode against independent on the bundled "
        "time-lapse and generated sequences: smeared windows, object counts, border band; docs/timelapse.md)",
    )
    parser.add_argument("--smear-output", type=Path, default=ROOT / "docs" / "timelapse.md")
    parser.add_argument(
        "--smear-size",
        type=int,
        default=SMEAR_SIZE,
        help="the smear part's size (the widget's default: 512, the bundled sample upscaled from 192)",
    )
    parser.add_argument(
        "--smear-steps", type=int, default=SMEAR_STEPS, help="the smear part's first frame's steps"
    )
    parser.add_argument(
        "--smear-time-steps",
        type=int,
        default=SMEAR_TIME_STEPS,
        help="the smear part's later frames' steps (0: auto)",
    )
    parser.add_argument(
        "--smear-sequences", default=",".join(SMEAR_SEQUENCES), help="which sequences the smear part runs"
    )
    parser.add_argument(
        "--sequences", default=",".join(SEQUENCES), help="which sequences the modes part runs"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: on a shared machine more threads only spin)"
    )
    args = parser.parse_args(argv)

    import torch

    from napari_style_transfer import options as option_defaults

    torch.set_num_threads(args.threads)
    size, steps, frames = (48, 6, 3) if args.quick else (64, 30, 5)
    margin = max(2, size // 8)
    # fp32 throughout: precision auto is bf16 on CPUs with native bf16, and the tables should
    # not depend on which machine ran them. Time mode's single forward pass (time_passes=0),
    # whose steps and weights these parts study; the smear part adds the passes beside it.
    base = {
        "size": size,
        "steps": steps,
        "weights": "random",
        "snapshot_every": 0,
        "style_weight": 1e6,
        "precision": "fp32",
        "time_passes": 0,
    }
    style = style_image(size)
    raw: dict = {"size": size, "steps": steps, "frames": frames, "margin": margin, "sequences": {}}
    outputs: dict = {}
    moving_runs: dict = {}  # (size, mode): the modes part's runs of the moving disc, for the sizes part
    parts = set(args.parts.split(","))
    started = time.perf_counter()

    if "modes" in parts:
        for name in args.sequences.split(","):
            make = SEQUENCES[name]
            movie, masks = make(size, frames)
            runs = {
                "independent": run_api(movie, style, {**base, "frames": "independent"}),
                "time": run_api(movie, style, {**base, "frames": "time"}),
                "old": run_old(movie, style, base),
            }
            if name == "moving":  # how many warm steps reach the first frame's loss, and at twice the size
                runs["time, full steps"] = run_api(
                    movie, style, {**base, "frames": "time", "time_steps": steps}
                )
                # the same sequence drawn at twice the size (the disc moves twice as many pixels)
                big_movie, big_masks = make(2 * size, frames)
                larger = {**base, "size": 2 * size}
                for mode in ("independent", "time"):
                    runs[f"{mode}, {2 * size} px"] = run_api(
                        big_movie, style_image(2 * size), {**larger, "frames": mode}
                    )
            if name == "moving":
                moving_runs.update(
                    {
                        (size, "independent"): runs["independent"],
                        (size, "time, full steps"): runs["time, full steps"],
                        (2 * size, "independent"): runs[f"independent, {2 * size} px"],
                    }
                )
            outputs[name] = {mode: run["image"] for mode, run in runs.items()}
            outputs[name]["content"] = movie
            entry = {}
            for mode, run in runs.items():
                first, later = run["frames"][0], run["frames"][1:]
                target = first["losses"][-1]
                reach = [steps_to_reach(f["losses"], target) for f in later]
                big = mode.endswith(f"{2 * size} px")
                entry[mode] = {
                    **(
                        measures(
                            run["image"],
                            runs[f"independent, {2 * size} px"]["image"],
                            big_movie,
                            big_masks,
                            2 * margin,
                        )
                        if big
                        else measures(run["image"], runs["independent"]["image"], movie, masks, margin)
                    ),
                    "first_steps": len(first["losses"]),
                    "later_steps": float(np.mean([len(f["losses"]) for f in later])),
                    "first_seconds": first["seconds"],
                    "later_seconds": float(np.mean([f["seconds"] for f in later])),
                    "first_loss": target,
                    "later_loss": float(np.mean([f["losses"][-1] for f in later])),
                    "later_steps_to_first_loss": reach,
                }
                print(name, mode, json.dumps(entry[mode]), flush=True)
            raw["sequences"][name] = entry

    if "sweep" in parts:
        movie, masks = moving(size, frames)
        independent = run_api(movie, style, {**base, "frames": "independent"})["image"]
        raw["sweep_old"] = measures(run_old(movie, style, base)["image"], independent, movie, masks, margin)
        raw["sweep"] = {}
        for weight in (0.0, 1.0, 3.0, 1e1, 3e1, 1e2, 1e3, 1e4):
            run = run_api(movie, style, {**base, "frames": "time", "temporal_weight": weight})
            first = run["frames"][0]["losses"][-1]
            entry = {
                **measures(run["image"], independent, movie, masks, margin),
                "later_loss": float(np.mean([f["losses"][-1] for f in run["frames"][1:]])),
                "first_loss": first,
                "later_steps_to_first_loss": [steps_to_reach(f["losses"], first) for f in run["frames"][1:]],
            }
            longer = run_api(
                movie,
                style,
                {**base, "frames": "time", "temporal_weight": weight, "time_steps": SWEEP_LONGER * steps},
            )
            entry["longer_steps"] = SWEEP_LONGER * steps
            # its first frame is the run above's (time_steps changes only the later frames)
            entry["longer_steps_to_first_loss"] = [
                steps_to_reach(f["losses"], first) for f in longer["frames"][1:]
            ]
            raw["sweep"][f"{weight:g}"] = entry
            print("sweep", weight, json.dumps(entry), flush=True)

    if "sizes" in parts:
        raw["sizes"] = {}
        for side in (size, 2 * size, 4 * size):
            raw["sizes"][str(side)] = later_frames_by_size(
                side, frames, steps, {**base, "size": side}, moving_runs
            )
            print("sizes", side, json.dumps(raw["sizes"][str(side)]), flush=True)

    # where the later frames get to once the first frame is nearer convergence (a first frame of
    # 30 steps at 256 px is far from it): the demo's size and steps, and the API's defaults
    defaults = option_defaults.StyleOptions()
    settings = {
        "demo": (option_defaults.DEMO_DEFAULTS["size"], option_defaults.DEMO_DEFAULTS["steps"]),
        "default": (defaults.size, defaults.steps),
    }
    for part in ("demo", "default"):
        if part in parts:
            side, part_steps = (2 * size, 2 * steps) if args.quick else settings[part]
            raw[part] = {
                "size": side,
                "steps": part_steps,
                "frames": DEMO_FRAMES,
                **later_frames_by_size(
                    side, DEMO_FRAMES, part_steps, {**base, "size": side, "steps": part_steps}, {}
                ),
            }
            print(part, json.dumps(raw[part]), flush=True)

    if "demo_sweep" in parts:
        side, part_steps = (2 * size, 2 * steps) if args.quick else settings["demo"]
        raw["demo_sweep"] = demo_sweep(
            side, part_steps, {**base, "size": side, "steps": part_steps}, max(2, side // 8)
        )
        print("demo_sweep", json.dumps(raw["demo_sweep"]), flush=True)

    if "ahead" in parts:
        from napari_style_transfer.memory import usable_cpus

        sizes, flow_sizes = (AHEAD_SIZES[:1], FLOW_SIZES[:1]) if args.quick else (AHEAD_SIZES, FLOW_SIZES)
        raw["ahead"] = {
            "frames": AHEAD_FRAMES,
            "cpus": usable_cpus(),
            "flow_seconds": {str(side): flow_seconds(side) for side in flow_sizes},
            "runs": {
                str(threads): {str(side): read_ahead(side, base, threads) for side in sizes}
                for threads in sorted({args.threads, usable_cpus()})
            },
        }
        print("ahead", json.dumps(raw["ahead"]), flush=True)

    if "long" in parts:
        long_frames = 6 if args.quick else LONG_FRAMES
        raw["long"] = {
            "size": size,
            "steps": steps,
            "frames": long_frames,
            "margin": margin,
            **long_run(size, long_frames, base, margin),
        }
        print("long", json.dumps(raw["long"]), flush=True)

    if "smear" in parts:
        side = 48 if args.quick else args.smear_size
        smear_steps = {"steps": args.smear_steps, "time_steps": args.smear_time_steps}
        smear_options = {**base, "size": side, **smear_steps}
        raw["smear"] = {"size": side, **smear_steps, "sequences": {}}
        for name in args.smear_sequences.split(","):
            entry, images = smear_run(name, smear_options, side, 4 if args.quick else SMEAR_FRAMES)
            raw["smear"]["sequences"][name] = entry
            if name == "nuclei":
                smear_montage(images, args.images / f"timelapse_nuclei_{side}px.png")
            print("smear", name, json.dumps(entry), flush=True)

    if args.json.exists():  # keep the parts this run did not redo
        earlier = json.loads(args.json.read_text())
        if earlier.get("sequences"):  # a run of some sequences keeps the others'
            raw["sequences"] = {**earlier["sequences"], **raw.get("sequences", {})}
        if "sweep" not in parts and earlier.get("sweep"):  # a sweep is kept or redone whole
            raw["sweep"], raw["sweep_old"] = earlier["sweep"], earlier.get("sweep_old")
        for part in ("sizes", "demo", "default", "demo_sweep", "ahead", "long", "smear"):
            if part not in parts and earlier.get(part):
                raw[part] = earlier[part]
    raw["seconds"] = time.perf_counter() - started
    raw["machine"] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load": os.getloadavg()[0],
    }
    if not parts & set(MEASURED_PARTS) and args.json.exists():  # only the report is rewritten
        raw["machine"], raw["seconds"] = earlier["machine"], earlier["seconds"]
    # when each part was last measured, and with how many torch threads (a run of one part keeps
    # the others'; parts measured before threads were kept had the run's)
    raw["dates"] = dict(earlier.get("dates", {})) if args.json.exists() else {}
    raw["threads"] = (
        {part: earlier.get("threads", {}).get(part, earlier["machine"]["threads"]) for part in raw["dates"]}
        if args.json.exists()
        else {}
    )
    for part in parts & set(MEASURED_PARTS):
        raw["dates"][part] = raw["machine"]["date"]
        raw["threads"][part] = raw["machine"]["threads"]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(raw, indent=1))
    if "moving" in outputs:
        montage(outputs["moving"], args.images / "stack_time_vs_independent.png")
    write_section(args.output, raw, option_defaults)
    if raw.get("smear"):
        replace_section(args.smear_output, SMEAR_SECTION, smear_section(raw["smear"], raw["machine"]))
    return 0


def montage(images: dict, path: Path) -> None:
    """Rows content / independent / time / old, columns frames; the content at the working size."""
    _sheet({row: images[row] for row in ("content", "independent", "time", "old")}, path, 80)


def _sheet(rows: dict[str, np.ndarray], path: Path, label: int, scale: int = 2) -> None:
    """One row of frames per named stack, shown at ``scale`` times the size (pixels kept
    sharp), the names in a margin of ``label`` px."""
    from PIL import Image, ImageDraw

    first = next(iter(rows.values()))
    size = scale * first.shape[1]
    frames = len(first)
    sheet = Image.new("L", (label + frames * (size + 2), len(rows) * (size + 2)), 255)
    draw = ImageDraw.Draw(sheet)
    for r, (name, stack) in enumerate(rows.items()):
        for t in range(frames):
            tile = Image.fromarray((np.clip(stack[t], 0, 1) * 255).astype(np.uint8))
            sheet.paste(tile.resize((size, size), Image.NEAREST), (label + t * (size + 2), r * (size + 2)))
        draw.text((4, r * (size + 2) + size // 2 - 5), name, fill=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def write_section(path: Path, raw: dict, defaults) -> None:
    from napari_style_transfer.options import StyleOptions

    opts = StyleOptions()
    m = raw["machine"]
    dates = {**dict.fromkeys(MEASURED_PARTS, "?"), **raw.get("dates", {})}
    lines = [
        SECTION,
        "",
        f"Written by `python benchmarks/stacks.py` on {m['date']}"
        + (
            f" (the modes table measured on {dates['modes']}, the temporal_weight sweep on {dates['sweep']}, "
            f"the sizes table on {dates['sizes']}, its demo row on {dates['demo']}, its default row on {dates['default']}, "
            f"the temporal_weight sweep at the demo's size on {dates['demo_sweep']}, reading ahead on {dates['ahead']}, the long run on {dates['long']})"
            if len(set(dates.values())) > 1
            else ""
        )
        + f": {m['cpu']}, {_threads(raw.get('threads', {}), m['threads'])}, torch {m['torch']}; the last run: load average "
        f"{m['load']:.2f} at its end, {raw['seconds']:.0f} s in all. Raw numbers: `docs/stacks.json`.",
        "",
        f"Generated grey sequences of {raw['frames']} frames at {raw['size']} px (see the script), the bundled swirl "
        f"as the style, weights `random`, {raw['steps']} steps for a first frame, the default temporal_weight "
        f"{opts.temporal_weight:g} and time_steps auto ({StyleOptions(steps=raw['steps']).later_frame_steps} "
        f"steps here). *old* is the warm start this project had before `frames`: each frame from the previous result "
        f"where its content did not change, all steps. Static pixels: more than {raw['margin']} px from anywhere "
        "the object goes. Differences are mean absolute values in [0, 1].",
        "",
    ]
    moving_runs = raw["sequences"].get("moving", {})
    moving_half = moving_runs.get("time", {}).get("later_loss")
    moving_full = moving_runs.get("time, full steps", {}).get("later_loss") if moving_half else None
    if raw["sequences"]:
        lines += [
            "| sequence | mode | flicker (static) | drift (static) | ghost | ghost / independent variation | trail texture | trail bias "
            "| warp error | likeness | steps first / later | later frames' steps to the first frame's loss | s first / later | loss first / later |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, entry in raw["sequences"].items():
            for mode, e in entry.items():
                ghost = f"{e['ghost']:.4f}" if "ghost" in e else "-"
                ratio = (
                    f"{e['ghost'] / e['ghost_variation']:.2f}"
                    if "ghost" in e and e["ghost_variation"]
                    else "-"
                )
                reach = _steps_text(e["later_steps_to_first_loss"])
                lines.append(
                    f"| {name} | {mode} | {_f(e.get('flicker'))} | {_f(e.get('drift'))} | {ghost} | {ratio} "
                    f"| {_f(e.get('trail_texture'), 2)} | {_f(e.get('trail_bias'))} | {_f(e.get('warp_error'))} | {_f(e.get('likeness'))} | {e['first_steps']} / {e['later_steps']:g} | {reach} "
                    f"| {e['first_seconds']:.1f} / {e['later_seconds']:.1f} | {e['first_loss']:.4g} / {e['later_loss']:.4g} |"
                )
        for name, entry in raw["sequences"].items():
            timed, old = entry.get("time"), entry.get("old")
            if timed and old and timed.get("flicker") and timed.get("drift"):
                lines.append("")
                lines.append(
                    f"{name}: time against old, static flicker {old['flicker'] / timed['flicker']:.0f}x lower, drift "
                    f"{old['drift'] / timed['drift']:.0f}x lower; against independent {entry['independent']['flicker'] / timed['flicker']:.0f}x "
                    f"and {entry['independent']['drift'] / timed['drift']:.0f}x."
                )
        lines += [
            "",
            "*trail*: the pixels the object has covered and has since left (clear of it by the margin), each later "
            "frame against the independent run of that frame: *texture* is the spread (standard deviation) of its "
            "values over the independent run's (a flat, unstyled trail is well below 1), *bias* the mean difference "
            "(a darker trail is below 0). *likeness*: mean |correlation| of each result frame with its content frame. "
            "*later frames' steps to the first frame's loss*: the step at which each later frame's content + style "
            "loss first fell to the first frame's final value (- : not within its steps). *time, full steps* gives "
            "later frames as many steps as the first, to see where they get there.",
            "",
            "![content, independent, time and old runs of the moving disc](images/stack_time_vs_independent.png)",
            "",
            "Reading it:",
            "",
            _static_reading(raw["sequences"]),
            *_trail_reading(moving_runs, 2 * raw["size"]),
            f"- Steps: at {raw['size']} px time mode's later frames stop above the first frame's content + style "
            "loss even with all the steps (*time, full steps*)"
            + (
                f"; at half the steps they end within {abs(moving_half / moving_full - 1) * 100:.0f}% of where all "
                "the steps take them"
                if moving_full
                else ""
            )
            + ". The sizes table below shows how that changes with the frame's size, and the temporal_weight sweep "
            "what the first frame's loss asks of the weight at this size.",
            *_size_reading(moving_runs, 2 * raw["size"]),
            "- zstack: time mode is the wrong choice for unlike slices (the flow finds no reliable pixels, every "
            "slice starts afresh with only the later frames' steps: lower likeness, higher loss); independent is "
            "the default for that reason.",
            "- Seconds are wall time on a shared, loaded machine (other jobs ran alongside); compare them only "
            "within a row."
            + (
                f" A later frame's optical flows (TV-L1, two per frame) take {raw['ahead']['flow_seconds'][str(raw['size'])]:.2f} s "
                f"at {raw['size']} px (the reading-ahead table below)."
                if str(raw["size"]) in raw.get("ahead", {}).get("flow_seconds", {})
                else ""
            ),
            "",
        ]
    if raw.get("sweep"):
        old = raw.get("sweep_old")
        lines += [
            "temporal_weight on the moving disc (time mode, auto time_steps, the same sequence and steps as above). "
            + (
                f"*x below old*: old's static flicker and drift over this weight's (the goal is {STEADY_GOAL:g}x). "
                if old
                else ""
            )
            + "*later frames' steps to the first frame's loss*: as in the table above; *the same with "
            f"{SWEEP_LONGER}x*: a second run of each weight that gives every later frame {SWEEP_LONGER}x the first "
            "frame's steps, to see how many it needs where the auto steps are not enough.",
            "",
            "| temporal_weight | flicker (static) | drift (static) | x below old (flicker, drift) | ghost / independent variation "
            "| trail texture | warp error | loss first / later | later frames' steps to the first frame's loss "
            f"| the same with {SWEEP_LONGER}x the first frame's steps |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for weight, e in raw["sweep"].items():
            ratio = (
                f"{e['ghost'] / e['ghost_variation']:.2f}" if "ghost" in e and e["ghost_variation"] else "-"
            )
            below = (
                f"{old['flicker'] / e['flicker']:.1f}, {old['drift'] / e['drift']:.1f}"
                if old and e.get("flicker")
                else "-"
            )
            reach, longer = (
                _steps_text(e.get(key, []))
                for key in ("later_steps_to_first_loss", "longer_steps_to_first_loss")
            )
            lines.append(
                f"| {weight} | {_f(e.get('flicker'))} | {_f(e.get('drift'))} | {below} | {ratio} "
                f"| {_f(e.get('trail_texture'), 2)} | {_f(e.get('warp_error'))} | {e['first_loss']:.4g} / {e['later_loss']:.4g} "
                f"| {reach or '-'} | {longer or '-'} |"
            )
        lines += ["", *_sweep_reading(raw["sweep"], old, raw["steps"]), ""]
    if raw.get("sizes"):
        lines += _sizes_table(raw["sizes"], raw["steps"], raw.get("demo"), raw.get("default"))
    if raw.get("demo_sweep"):
        lines += _demo_sweep_table(raw["demo_sweep"])
    if raw.get("ahead"):
        lines += _ahead_table(raw["ahead"], raw["steps"])
    if raw.get("long"):
        lines += _long_table(raw["long"])
    replace_section(path, SECTION, "\n".join(lines))


def replace_section(path: Path, heading: str, section: str) -> None:
    """``path`` with its section under ``heading`` (up to the next "## ") replaced by
    ``section``, or with ``section`` added at its end."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if heading in text:
        before, _, after = text.partition(heading)
        rest = after.split("\n## ", 1)
        text = before + section + ("\n## " + rest[1] if len(rest) > 1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _trail_reading(runs: dict, larger: int) -> list[str]:
    """What the trail measures say of the moving disc's runs."""
    timed, old = runs.get("time", {}), runs.get("old", {})
    if "trail_texture" not in timed or "trail_texture" not in old or "ghost" not in timed:
        return []
    big = runs.get(f"time, {larger} px", {})
    at_larger = f", {big['ghost'] / big['ghost_variation']:.2f} at {larger} px" if "ghost" in big else ""
    return [
        f"- Where the disc has been: old leaves grey ghost discs (visible in the montage; trail texture "
        f"{old['trail_texture']:.2f}, bias {old['trail_bias']:+.3f}). Time mode starts the uncovered pixels from "
        f"their content plus the styling of known pixels nearby: trail texture {timed['trail_texture']:.2f}, bias "
        f"{timed['trail_bias']:+.3f}, so no flat or dark trail. It is still visible in the montage: a patch of "
        "a blotchier grain than the texture around it, with a faint outline of the disc's dark edge where it "
        "was (the texture measure is a spread of values and cannot tell grain apart). The ghost measure "
        "rewards a flat trail (a flat patch differs less from a styled one than two unlike textures do): "
        f"time mode's is {timed['ghost'] / timed['ghost_variation']:.2f} of the independent runs' "
        f"variation{at_larger} (the goal: within {GHOST_GOAL:g}).",
    ]


def _static_reading(sequences: dict) -> str:
    """How much steadier time mode holds static parts than old and independent, at worst."""
    below = {
        other: min(
            entry[other][key] / entry["time"][key]
            for entry in sequences.values()
            for key in ("flicker", "drift")
            if entry.get("time", {}).get(key) and other in entry
        )
        for other in ("old", "independent")
    }
    return (
        f"- Static parts: time mode holds them (flicker and drift at least {below['old']:.0f}x below old and "
        f"{below['independent']:.0f}x below independent on every sequence, against the goal of {STEADY_GOAL:g}x "
        "below old); old drifts further every frame, as each frame adds its full steps on top of the previous."
    )


def _size_reading(runs: dict, larger: int) -> list[str]:
    """How the later frames' loss compares at twice the size."""
    small, big = runs.get("time", {}), runs.get(f"time, {larger} px", {})
    if "later_loss" not in small or "later_loss" not in big:
        return []
    return [
        f"- At {larger} px (the same sequence drawn at twice the size) the later frames end at "
        f"{big['later_loss'] / big['first_loss']:.2f}x the first frame's loss, against "
        f"{small['later_loss'] / small['first_loss']:.2f}x here (the sizes table below splits the loss into its terms). Static "
        f"flicker there: {_f(big['flicker'])}.",
    ]


def _sizes_table(sizes: dict, steps: int, demo: dict | None = None, default: dict | None = None) -> list[str]:
    """The later frames' steps to the first frame's loss by frame size (and at the demo's and
    the API's default size and steps), and the reading."""
    rows = {f"{side} px": (e, steps) for side, e in sizes.items()}
    settings = [
        (e, whose, at)
        for e, whose, at in (
            (demo, "demo's", "the command-line demo's size and steps"),
            (default, "defaults", "the API's default size and steps"),
        )
        if e
    ]
    for e, whose, _ in settings:
        rows[f"{e['size']} px, {e['steps']} steps (the {whose})"] = (e, e["steps"])
    last = ""
    if settings:
        ats = " and one at ".join(at for _, _, at in settings)
        frames = settings[0][0]["frames"]
        last = (
            f"; the last rows have {frames} frames, one at {ats}"
            if len(settings) > 1
            else f"; the last row has {frames} frames at {ats}"
        )
    lines = [
        f"Later frames by frame size: the moving disc drawn at each size (the disc and its moves scale with it), time "
        f"mode with all the first frame's steps ({steps} unless the row says) for every frame, so that one sees "
        f"where each later frame gets to{last}. Losses are content + style over the first frame's final loss; *first frame's steps to it*: the step at "
        "which the first frame's own loss first fell to the loss each later frame has at time_steps auto; *steps "
        "to ...*: the step at which each later frame's loss first fell to the first frame's final loss, and to the "
        "independent run of that frame's final loss (- : not within the steps); *content, style over "
        "independent*: the terms of each later frame's final loss over the independent run's.",
        "",
        "| size | later frames' start | at time_steps auto | first frame's steps to it | after all steps "
        "| independent runs of those frames | steps to the first frame's loss | steps to the independent run's loss "
        "| content, style over independent |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def listed(entry: dict, key: str, digits: int = 2) -> str:
        return ", ".join(f"{frame[key]:.{digits}f}" for frame in entry["later"])

    def steps_list(entry: dict, key: str, none: str = "-") -> str:
        return ", ".join(none if frame[key] is None else str(frame[key]) for frame in entry["later"])

    for label, (e, first_steps) in rows.items():
        terms = ", ".join(
            f"{f['content_over_independent']:.2f} / {f['style_over_independent']:.2f}" for f in e["later"]
        )
        lines.append(
            f"| {label} | {listed(e, 'start')} | {listed(e, 'at_auto')} ({e['auto_steps']} steps) "
            f"| {steps_list(e, 'first_steps_to_auto_loss', f'> {first_steps}')} | {listed(e, 'end')} "
            f"| {listed(e, 'independent')} | {steps_list(e, 'to_first')} | {steps_list(e, 'to_independent')} | {terms} |"
        )

    def within_auto(e: dict) -> bool:
        return all(f["to_first"] is not None and f["to_first"] <= e["auto_steps"] for f in e["later"])

    meets = [label for label, (e, _) in rows.items() if within_auto(e)]
    misses = [label for label, (e, _) in rows.items() if not within_auto(e)]
    lines += ["", "Reading it:", ""]
    for label in meets:
        e, first_steps = rows[label]
        worst = max(f["to_first"] for f in e["later"])
        cold = [f["independent"] for f in e["later"]]
        ends = [f["end"] for f in e["later"]]
        halfway = np.mean([f["independent_halfway"] for f in e["later"]])
        lines.append(
            f"- At {label} every later frame reaches the first frame's loss within {worst} step{'s' if worst > 1 else ''}, inside half the "
            f"first frame's steps (time_steps auto). That target is loose there, though: {first_steps} steps are far "
            f"from converged at this size (the independent runs are at {halfway:.2f}x the first frame's final loss "
            f"after {e['auto_steps']} steps): the independent runs of the later frames end at {min(cold):.2f} to "
            f"{max(cold):.2f}x the first frame's final loss and time mode's at {min(ends):.2f} to {max(ends):.2f}x, "
            "so where a first frame's run happens to stop sets the target as much as the frames do."
        )
    if misses:
        ends = [f["end"] for label in misses for f in rows[label][0]["later"]]
        lines.append(
            f"- At {'; '.join(misses)} they stop above it, even with all the steps: at {min(ends):.2f} to "
            f"{max(ends):.2f}x the first frame's loss."
        )
        lines += _leftover_reading({label: rows[label][0] for label in misses})
    demo_label = next((label for label, (e, _) in rows.items() if e is demo), None)
    if demo and f"{demo['size']} px" in meets and demo_label in misses:
        lines.append(
            f"- The same sequence at the same size with {demo['steps']} steps, where the first frame gets nearer "
            f"convergence (the demo's row), does not reach it: the {demo['size']} px row at {steps} steps reaches the "
            "first frame's loss because that frame stopped early, not because its later frames get further."
        )
    # the first frame's steps to each later frame's loss at time_steps auto; None (the later frame
    # ended below anywhere the first frame got) counts as all its steps, a lower bound
    spans, holds = [], []
    for label, (e, first_steps) in rows.items():
        values = [f["first_steps_to_auto_loss"] for f in e["later"]]
        bounds = [first_steps if v is None else v for v in values]
        auto, beyond = e["auto_steps"], None in values
        if all(v is None for v in values):
            spans.append(
                f"more than all its {first_steps} steps at {label} (time_steps auto over that: under {auto / first_steps:.2f})"
            )
        else:
            most = f"more than {first_steps}" if beyond else str(max(bounds))
            fewest = f"under {auto / first_steps:.2f}" if beyond else f"{auto / max(bounds):.2f}"
            spans.append(
                f"{min(bounds)} to {most} steps at {label} (time_steps auto over that: {fewest} to {auto / min(bounds):.2f})"
            )
        if auto / min(bounds) <= 0.5:
            holds.append(label)
    lines.append(
        "- What the warm start buys: the loss each later frame has at time_steps auto took the first frame "
        + "; ".join(spans)
        + '. Read as "for the same loss, no more than half the first frame\'s steps" (the last figures at '
        "most 0.5), that holds "
        + (f"at {'; '.join(holds)} only" if holds else "in no row")
        + "; read against the first frame's final loss, see the columns after it."
    )
    beaten = [
        label for label, (e, _) in rows.items() if any(f["to_independent"] is not None for f in e["later"])
    ]
    lines.append(
        "- Against the independent run of the same frame (the fairer target where frames' losses differ), "
        + (
            f"later frames get there within their steps at {'; '.join(beaten)} only."
            if beaten
            else "no later frame gets there within all the steps in any row here."
        )
    )
    return [*lines, ""]


def _leftover_reading(rows: dict) -> list[str]:
    """Which of the two terms keeps the later frames above the first frame's loss, row by row
    (``rows``: the sizes table's rows that stop above it)."""
    terms, by_term = [], {"content": [], "style": [], "both": []}
    for label, e in rows.items():
        content = float(np.mean([f["content_over_independent"] for f in e["later"]]))
        style_ratio = float(np.mean([f["style_over_independent"] for f in e["later"]]))
        terms.append(f"at {label} content {content:.2f}x, style {style_ratio:.2f}x")
        # within 0.03 of each other neither term is the one
        term = (
            "both" if abs(content - style_ratio) < 0.03 else "content" if content > style_ratio else "style"
        )
        by_term[term].append(label)
    which = "; ".join(
        f"{'both terms' if term == 'both' else f'the {term} term'} at {' and '.join(labels)}"
        for term, labels in by_term.items()
        if labels
    )
    reasons = {
        "content": "the held static pixels keep values fitted to the first frame's content features, while the deep "
        "content layer's features there also see the moving object (at 64 px conv4_2 is 8 x 8 and each of its "
        "positions sees the whole frame)",
        "style": "the pixels the object uncovered start from nearby styling and get only the later frames' steps, "
        "while the held pixels cannot rebalance the whole image's Gram statistics around them",
    }
    named = [f"for the {term} term, {reasons[term]}" for term in reasons if by_term[term] or by_term["both"]]
    return [
        "- What is left over after all the steps, each term of the later frames' final loss over the independent "
        f"runs': {'; '.join(terms)}. So it is {which}. Likely reasons (the terms are measured, the reasons are not): "
        + "; ".join(named)
        + "."
    ]


def _demo_sweep_table(sweep: dict) -> list[str]:
    """temporal_weight at the demo's size and steps: steadiness against old and the later
    frames' loss at time_steps auto, and which weights meet both goals there."""
    from napari_style_transfer.options import StyleOptions

    old, weights = sweep["old"], sweep["weights"]
    auto = StyleOptions(steps=sweep["steps"]).later_frame_steps

    def below(e: dict) -> tuple[float, float]:
        return old["flicker"] / e["flicker"], old["drift"] / e["drift"]

    def losses(e: dict) -> str:
        return ", ".join(f"{r:.3f}" for r in e["later_loss"])

    lines = [
        f"temporal_weight at the command-line demo's size and steps: the moving disc at {sweep['size']} px, "
        f"{sweep['frames']} frames, {sweep['steps']} steps for the first frame and time_steps auto ({auto}) for the "
        f"later ones; static pixels more than {sweep['margin']} px from the disc's path. Here a first frame is nearer "
        "convergence than at 64 px and 30 steps, so this asks again whether one weight meets both goals. "
        f"*x below old*: old's static flicker and drift over this weight's (the goal is {STEADY_GOAL:g}x); "
        "*later frames' loss*: each later frame's content + style loss at its last step over the first frame's "
        "final loss (the steps goal: at most 1 at half the first frame's steps).",
        "",
        "| temporal_weight | flicker (static) | drift (static) | x below old (flicker, drift) | warp error "
        "| later frames' loss at time_steps auto | their steps to the first frame's loss |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| old | {_f(old['flicker'])} | {_f(old['drift'])} | 1.0, 1.0 | {_f(old.get('warp_error'))} | - | - |",
    ]
    for weight, e in weights.items():
        flicker, drift = below(e)
        lines.append(
            f"| {weight} | {_f(e['flicker'])} | {_f(e['drift'])} | {flicker:.1f}, {drift:.1f} | {_f(e.get('warp_error'))} "
            f"| {losses(e)} | {_steps_text(e['later_steps_to_first_loss'])} |"
        )
    reaching = [w for w, e in weights.items() if None not in e["later_steps_to_first_loss"]]
    steady = [w for w, e in weights.items() if min(below(e)) >= STEADY_GOAL]
    both = [w for w in steady if w in reaching]
    lines += [
        "",
        "Reading it:",
        "",
        f"- At {sweep['size']} px and {sweep['steps']} steps, later frames reach the first frame's content + style "
        f"loss within time_steps auto at temporal_weight {', '.join(reaching) or 'none'}; static flicker and drift "
        f"are {STEADY_GOAL:g}x or more below old's at {', '.join(steady) or 'none'}; both at {', '.join(both) or 'none'}.",
    ]
    if steady:
        low = weights[steady[0]]
        lines.append(
            f"- The lowest weight {STEADY_GOAL:g}x steadier than old, {steady[0]}: flicker {below(low)[0]:.1f}x and "
            f"drift {below(low)[1]:.1f}x below old, the later frames' loss {losses(low)} of the first frame's."
        )
    highest, lowest = max(reaching, key=float, default=None), min(steady, key=float, default=None)
    if highest and lowest and float(highest) < float(lowest):
        between = [w for w in weights if float(highest) < float(w) < float(lowest)]
        lines.append(
            f"- No weight meets both here: the steps goal holds up to {highest}, the steadiness goal from {lowest} on"
            + "".join(
                f"; at {w}, between them, flicker {below(weights[w])[0]:.1f}x and drift {below(weights[w])[1]:.1f}x "
                f"below old with the later frames' loss {losses(weights[w])} of the first frame's"
                for w in between
            )
            + ". As at 64 px, holding static parts steadier costs the later frames content + style loss."
        )
    return lines + [""]


_PART_NAMES = {
    "modes": "the modes table",
    "sweep": "the temporal_weight sweep",
    "sizes": "the sizes table",
    "demo": "the sizes table's demo row",
    "default": "the sizes table's default row",
    "demo_sweep": "the temporal_weight sweep at the demo's size",
    "ahead": "reading ahead",
    "long": "the long run",
}


def _threads(by_part: dict, last: int) -> str:
    """The torch threads the parts were measured with, e.g. "1 torch thread (2 for ...)"."""

    def counted(n: int) -> str:
        return f"{n} torch thread{'' if n == 1 else 's'}"

    most = Counter(by_part.values()).most_common(1)[0][0] if by_part else last
    others = [
        "{} for {}".format(n, ", ".join(_PART_NAMES.get(part, part) for part, v in by_part.items() if v == n))
        for n in sorted(set(by_part.values()) - {most})
    ]
    return counted(most) + (f" ({'; '.join(others)})" if others else "")


def _ahead_table(ahead: dict, steps: int) -> list[str]:
    """Time mode's seconds with frames read ahead against read when needed, and the flows'."""
    flows = ", ".join(f"{seconds:.2f} s at {side} px" for side, seconds in ahead["flow_seconds"].items())
    lines = [
        f"Reading ahead: time mode can read each later frame and compute its two optical flows in a thread while the "
        f"frame before it optimises (*ahead*), rather than when the frame's turn comes (*when taken*, as before); "
        "which of the two the API does is in the readings below. "
        f"The moving disc, {ahead['frames']} frames, {steps} steps for the first frame, the later frames' steps as in "
        "the row; seconds of the faster of two runs each (alternating). One later frame's flows (link_frames: two "
        f"TV-L1 flows and the consistency tests) alone take {flows}.",
        "",
        "| torch threads | size | later frames' steps | s per later frame, when taken / ahead | saved per later frame "
        "| s for the run, when taken / ahead | results the same |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    one_thread = []  # (size, steps, seconds saved, share of the later frame's seconds)
    all_threads = []  # the same with torch's threads on every core, as shares of the run's seconds
    for threads, by_size in ahead["runs"].items():
        for side, by_steps in by_size.items():
            for later_steps, e in by_steps.items():
                taken, early = e["when taken"], e["ahead"]
                saved = taken["later"] - early["later"]
                if threads == "1":
                    one_thread.append((side, later_steps, saved, saved / taken["later"]))
                elif int(threads) == ahead.get("cpus"):
                    all_threads.append(early["run"] / taken["run"] - 1)
                lines.append(
                    f"| {threads} | {side} px | {later_steps} | {taken['later']:.2f} / {early['later']:.2f} | {saved:.2f} s "
                    f"({saved / taken['later'] * 100:.0f}%) | {taken['run']:.1f} / {early['run']:.1f} | {'yes' if e['identical'] else 'no'} |"
                )
    lines += ["", "Reading it:", ""]
    if one_thread:
        lines.append(
            "- With one torch thread (a core left free for the reading thread), reading ahead saves per later frame "
            + "; ".join(
                f"{saved:.2f} s at {side} px, {later_steps} steps ({share * 100:.0f}%)"
                for side, later_steps, saved, share in one_thread
            )
            + ", against flows of "
            + ", ".join(
                f"{ahead['flow_seconds'][side]:.2f} s at {side} px"
                for side in dict.fromkeys(r[0] for r in one_thread)
                if side in ahead["flow_seconds"]
            )
            + ". The flows are a small part of a later frame's seconds on this CPU, so the most it can save is small here."
        )
    if all_threads:
        lines.append(
            f"- With torch's threads on all {ahead['cpus']} cores, the reading thread takes a core from them: a run read "
            f"ahead took {min(all_threads) * 100:+.0f}% to {max(all_threads) * 100:+.0f}% more time than read when taken. "
            "So the "
            "API reads ahead beside a GPU, and on the CPU only where torch's threads leave a core free "
            "(`pipeline.reader.reads_ahead`)."
        )
    if all(
        e["identical"]
        for by_size in ahead["runs"].values()
        for by_steps in by_size.values()
        for e in by_steps.values()
    ):
        lines.append(
            "- The results are the same bit for bit either way: the thread changes when the flows are computed, not what."
        )
    lines.append(
        "- On a GPU the steps of a frame are much faster while the flows stay on the CPU, so the flows' share, and "
        "what reading ahead can hide, is larger there; it was not measured on a GPU."
    )
    return [*lines, ""]


def _long_table(long: dict) -> list[str]:
    """The long part's table and reading."""
    frames = long["frames"]
    at = list(LONG_AT) if frames > max(LONG_AT) else list(range(1, frames))
    numbers = ", ".join(str(t + 1) for t in at)
    lines = [
        f"A long time series: the rotating disc for {frames} frames at {long['size']} px ({frames - 1} turns of 6 degrees), "
        f"{long['steps']} steps for the first frame and time_steps auto (old: all the steps for every frame), the "
        f"static pixels as above. *drift*: mean |out_t - out_1| over the static pixels at frame t (counted from 1); "
        "*flicker*: mean |out_t - out_t-1| there, over the first and the last ten later frames; *loss*: each frame's "
        "content + style loss over the first frame's.",
        "",
        f"| mode | drift at frames {numbers} | flicker, frames 2-11 / last 10 | loss at frames {numbers} | s in all |",
        "| --- | --- | --- | --- | --- |",
    ]
    for mode in ("time", "old"):
        e = long[mode]
        drift = ", ".join(f"{e['drift'][t - 1]:.4f}" for t in at)
        loss = ", ".join(f"{e['loss'][t - 1]:.2f}" for t in at)
        lines.append(
            f"| {mode} | {drift} | {np.mean(e['flicker'][:10]):.4f} / {np.mean(e['flicker'][-10:]):.4f} "
            f"| {loss} | {e['seconds']:.0f} |"
        )
    timed, old = long["time"], long["old"]
    lines += [
        "",
        "Reading it:",
        "",
        f"- Static parts in time mode: drift {timed['drift'][0]:.4f} at frame 2 and {timed['drift'][-1]:.4f} at frame "
        f"{frames} ({timed['drift'][-1] / timed['drift'][0]:.1f}x); old's {old['drift'][0]:.4f} and {old['drift'][-1]:.4f} "
        f"({old['drift'][-1] / old['drift'][0]:.1f}x), {old['drift'][-1] / timed['drift'][-1]:.0f}x time mode's at "
        f"frame {frames}.",
        f"- The loss of time mode's frames: {timed['loss'][0]:.2f}x the first frame's at frame 2, {max(timed['loss']):.2f}x "
        f"at most, {timed['loss'][-1]:.2f}x at frame {frames}.",
    ]
    if timed["drift"][-1] > 1.5 * timed["drift"][0]:
        lines.append(
            "- Time mode's static drift still grows from frame to frame, if far less than old's. Where it grows: the "
            "pixels counted static here that lie within UNTRUSTED_MARGIN (a square) of the disc's edge, whose content "
            "changes in every frame, are left out of the temporal term in every frame, so each frame's steps add to them."
        )
    else:
        lines.append(
            f"- Time mode's static drift does not add up: at frame {frames} it is within 1.5x of frame 2's. The static "
            "pixels near the disc's edge are left out of the temporal term in every frame, but the next frame's reference "
            "there stays the value they were first given (frames.anchored), so each frame's steps start from it again."
        )
    lines.append("")
    return lines


def _f(value: float | None, digits: int = 4) -> str:
    """``value`` to ``digits`` decimals, or to two significant digits where those would show
    it as 0 (static flicker at 128 px is a few 1e-5)."""
    if value is None:
        return "-"
    if 0 < abs(value) < 0.5 * 10.0**-digits:
        return f"{value:.2g}"
    return f"{value:.{digits}f}"


if __name__ == "__main__":
    if "--quick" in sys.argv and "--output" not in sys.argv:
        folder = Path(tempfile.mkdtemp())
        sys.argv += [
            "--output",
            str(folder / "benchmarks.md"),
            "--json",
            str(folder / "stacks.json"),
            "--images",
            str(folder / "images"),
        ]
    raise SystemExit(main())
