"""Every option of a style-transfer run, its default, its range and its help text.

This module is the single source of truth: the Python API, the command line and the napari
widget all read their defaults and help from :class:`StyleOptions`. It imports neither torch
nor napari, so the command line can build its ``--help`` quickly.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import StyleTransferError

#: The five convolution blocks of VGG19 and how many convolutions each holds.
_VGG19_BLOCKS = (2, 2, 4, 4, 4)


def _vgg19_layer_names() -> tuple[str, ...]:
    names: list[str] = []
    for block, n_convs in enumerate(_VGG19_BLOCKS, start=1):
        for i in range(1, n_convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return tuple(names)


#: The paper's names for the 37 modules of torchvision's ``vgg19().features``, in order.
VGG19_LAYERS: tuple[str, ...] = _vgg19_layer_names()

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise", "style")
POOLINGS = ("max", "avg")
WEIGHTS_MODES = ("auto", "imagenet", "random")
PRECISIONS = ("auto", "fp32", "tf32", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")
FRAMES = ("independent", "time")
#: Style losses: the paper's Gram matrices, Wasserstein-2 between Gaussians (means and
#: covariances), sliced Wasserstein (Heitz et al., CVPR 2021).
STYLE_LOSSES = ("gram", "mean_cov", "sliced")
#: content_colours besides False: the luminance transfer after the run, or the style's colours
#: matched to the content's histogram before it (Gatys et al., "Preserving color", 2016).
COLOUR_MODES = ("luminance", "histogram")

#: channels_last's words (the command line passes text): "auto" asks the machine's probe.
_LAYOUTS: dict[str, bool | str] = {"auto": "auto", "on": True, "true": True, "off": False, "false": False}

#: Default temporal_weight: measured with benchmarks/stacks.py (docs/benchmarks.md, "Stacks").
TEMPORAL_WEIGHT = 1e3

#: Adam works in pixel units (the image lies in [0, 1]); L-BFGS scales its own first step.
DEFAULT_LEARNING_RATE = {"lbfgs": 1.0, "adam": 0.02}


#: Largest working size (longest side, pixels). A strip 16 px across (the deepest layers'
#: minimum) still fits in about 5 GB at this length; the memory check refuses most images
#: well below it.
MAX_SIZE = 2**16
#: Most optimiser steps per frame (days of work even at a millisecond a step).
MAX_STEPS = 10**6
#: Largest loss weight and learning rate: the losses and the image are float32 (at most 3.4e38),
#: so larger factors turn every step's loss into infinity.
MAX_FACTOR = 1e30
#: Most frames in one batch (batch_frames): the memory check refuses far fewer of any useful size.
MAX_BATCH_FRAMES = 4096
#: Most passes over a time series (time_passes): each costs about half a run per frame.
MAX_TIME_PASSES = 100
#: Most CPU threads (threads): far more than any CPU has cores.
MAX_THREADS = 4096
#: Largest style_scale (a 16 px tile enlarged to 160,000 px); the memory check refuses far less.
MAX_STYLE_SCALE = 1e4


#: The command-line demo's own defaults: small enough to finish in a minute or two on a CPU.
DEMO_DEFAULTS = {"size": 256, "steps": 100, "snapshot_every": 25}


def min_side_for_layers(layers: Iterable[str]) -> int:
    """Smallest image side (pixels) for which every layer in ``layers`` is at least 1x1.

    Each pooling layer before (and including) the deepest layer halves the image.
    """
    deepest = max(VGG19_LAYERS.index(name) for name in layers)
    pools = sum(1 for name in VGG19_LAYERS[: deepest + 1] if name.startswith("pool"))
    return 2**pools


def _option(default: Any, help: str, **metadata: Any) -> Any:
    """A field with its help and metadata; ``execution=True`` marks an option that says how a
    run is carried out (device, threads, layout, snapshots), not what it computes: a stopped
    full-resolution run may be resumed with another value."""
    if isinstance(default, tuple | list):
        value = tuple(default)
        return field(default_factory=lambda: value, metadata={"help": help, **metadata})
    return field(default=default, metadata={"help": help, **metadata})


@dataclass(frozen=True)
class StyleOptions:
    """Settings of one style-transfer run (Gatys, Ecker & Bethge, CVPR 2016).

    Create it with keywords; :meth:`validated` checks every value and raises
    :class:`~napari_style_transfer.StyleTransferError` with what was wrong and how to fix it.
    """

    steps: int = _option(
        300,
        "optimiser iterations (>= 1); one step is one forward and backward pass",
        minimum=1,
        maximum=MAX_STEPS,
        label="steps",
        user_help="optimiser steps (1 or more): more steps, more style; each takes one pass through VGG19",
    )
    size: int = _option(
        512,
        "longest side of the working image in pixels; the content is resized to it and the "
        "result has this size (the deepest layer sets the minimum: 16 for conv5_1)",
        minimum=16,
        maximum=MAX_SIZE,
        label="size (px)",
        user_help="longest side of the result in pixels (16 to 65536); the content is resized to it, "
        "and the time a step takes grows with its square",
    )
    content_weight: float = _option(
        1.0,
        "weight of the content loss (>= 0)",
        minimum=0.0,
        maximum=MAX_FACTOR,
        label="content weight",
        user_help="how closely the result keeps the content's layout (0 or more; such as 1)",
    )
    style_weight: float = _option(
        1e6,
        "weight of the style loss (>= 0); the ratio style/content sets the strength: "
        "1e4 is subtle, 1e6 strong",
        minimum=0.0,
        maximum=MAX_FACTOR,
        label="strength",
        user_help="how strongly the style is applied: the style weight, against a content weight of 1 "
        "(1e4 subtle, 1e6 strong, 1e8 little of the content left)",
    )
    tv_weight: float = _option(
        0.0,
        "weight of the total-variation loss (>= 0); small values such as 1e-3 smooth noise",
        minimum=0.0,
        maximum=MAX_FACTOR,
        label="smoothing",
        user_help="smooths pixel noise in the result (the total-variation weight, 0 = off; such as 1e-3)",
    )
    content_layers: tuple[str, ...] = _option(
        ("conv4_2",),
        "VGG19 layers compared with the content image (names such as conv4_2)",
        label="content layers",
        user_help="the VGG19 layers whose features the result shares with the content, separated "
        "by commas (conv1_1 to conv5_4)",
    )
    style_layers: tuple[str, ...] = _option(
        ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"),
        "VGG19 layers whose Gram matrices are compared with the style image",
        label="style layers",
        user_help="the VGG19 layers whose statistics the result shares with the style, separated by "
        "commas; deeper layers (conv5_1) carry larger patterns",
    )
    optimizer: str = _option(
        "lbfgs", "lbfgs (the paper's, fewer steps) or adam", choices=OPTIMIZERS, label="optimiser"
    )
    learning_rate: float | None = _option(
        None,
        "optimiser step size (> 0); default 1.0 for lbfgs, 0.02 for adam",
        minimum=0.0,
        maximum=MAX_FACTOR,
        label="learning rate",
        user_help="the optimiser's step size; auto: 1.0 for lbfgs, 0.02 for adam (in pixel values, "
        "which lie between 0 and 1)",
    )
    init: str = _option(
        "content",
        "start image: the content, noise (seeded), or the style resized",
        choices=INITS,
        label="start from",
    )
    pooling: str = _option(
        "max", "VGG19 pooling: max (as trained) or avg (the paper's)", choices=POOLINGS, label="pooling"
    )
    weights: str = _option(
        "auto",
        "VGG19 weights: auto (imagenet if cached or downloadable, else random), imagenet, "
        "random (untrained, texture only), or the path of a state-dict file",
        presets=WEIGHTS_MODES,
        label="VGG19 weights",
    )
    device: str = _option(
        "auto",
        "auto (CUDA, then MPS, else CPU), cpu, cuda, cuda:N or mps",
        presets=DEVICES,
        execution=True,
        label="device",
    )
    seed: int | None = _option(
        0, "random seed for noise init; the same seed gives the same result", label="random seed"
    )
    style_scale: float | tuple[float, ...] = _option(
        1.0,
        "scale of the style image relative to the content's working scale (> 0); one value, or "
        "one per style such as 1,0.5",
        numbers=True,
        maximum=MAX_STYLE_SCALE,
        label="scale",
    )
    style_loss: str = _option(
        "gram",
        "how style statistics are compared: gram (the paper's Gram matrices), mean_cov "
        "(Wasserstein-2 between Gaussians fitted to the activations) or sliced (sliced "
        "Wasserstein distance of the activations' distributions, random projections each step)",
        choices=STYLE_LOSSES,
        label="style loss",
        user_help="how the style's look is measured: gram (the paper's), mean_cov (means and "
        "covariances of the features) or sliced (their whole distributions; often truer colours)",
    )
    style_layer_weights: tuple[float, ...] = _option(
        (),
        "one weight (>= 0) per style layer, such as 1,1,1,0.5,0.5; empty = 1 each",
        numbers=True,
        label="layer weights",
        user_help="one weight per style layer, separated by commas, such as 1,1,1,0.5,0.5; empty: 1 each",
    )
    style_blend: tuple[float, ...] = _option(
        (),
        "weights (>= 0, not all 0) of several styles, one per style, such as 0.7,0.3; they are "
        "normalised to sum to 1; empty = equal (with style_regions each region takes its own "
        "style whole, so leave it empty)",
        numbers=True,
    )
    content_colours: bool | str = _option(
        False,
        "keep the content's colours: luminance (also True: the result takes the style's brightness "
        "pattern only, recoloured with the content's chroma; RGB content) or histogram (the style's "
        "colours matched to the content's before the run); False keeps the style's colours",
        choices=COLOUR_MODES,
        label="content colours",
        user_help="keep the content's colours (RGB content): off takes the style's colours; luminance "
        "takes only the style's light and dark pattern; histogram recolours the style like the content",
    )
    average: float | None = _option(
        None,
        "optimizer=adam: show the exponential moving average of the image with this decay "
        "(0 < average < 1, such as 0.99; None or 0 = off): smoother, less noisy results",
        minimum=0.0,
        maximum=1.0,
        label="averaging",
        user_help="Adam only: show a running average of the image with this decay (0 = off; such as "
        "0.99): smoother, less noisy results",
    )
    keep_grey: bool = _option(
        True,
        "grey content gives a grey result (the luma of the styled image); off gives the styled "
        "colour image, e.g. to stain a fluorescence image like an H&E slide",
        label="grey result for grey content",
    )
    frames: str = _option(
        "independent",
        "how the frames of a stack relate: independent (Z slices, channels, unrelated images: each "
        "styled as if alone) or time (a time series: each frame starts from the previous result "
        "warped by the optical flow, and stays close to it)",
        choices=FRAMES,
        label="frames",
    )
    temporal_weight: float = _option(
        TEMPORAL_WEIGHT,
        "frames=time: weight of the temporal loss (>= 0) that keeps each frame near the previous "
        "result warped by the optical flow, where the flow is reliable; higher holds static parts "
        "steadier, 0 only warm-starts",
        minimum=0.0,
        maximum=MAX_FACTOR,
        label="steadiness",
        user_help="time series: how strongly each frame keeps to the previous result where the motion is "
        "reliable (0 or more): higher holds still parts steadier, 0 only starts from it",
    )
    time_steps: int = _option(
        0,
        "frames=time: optimiser steps of each frame after the first (>= 0), which starts from the "
        "warped previous result; 0 = auto (half of steps, at least 1)",
        minimum=0,
        maximum=MAX_STEPS,
        label="time steps",
        zero="auto",
        user_help="time series: steps of each frame after the first, which starts from the previous "
        "result; auto: half of steps",
    )
    time_passes: int = _option(
        2,
        "frames=time: passes over the series after each frame is styled alone (0 to "
        f"{MAX_TIME_PASSES}), in alternating directions (Ruder et al.'s multi-pass): each frame "
        "blends with its neighbour's result warped by the optical flow and takes time_steps steps "
        "held near it; new or uncovered content keeps its own styling instead of copies from "
        "nearby (fewer wakes and bands behind moving objects), for about twice the time of "
        "independent frames at 2 passes (3 to 4 times at 512 px, where a frame alone starts "
        "coarse and a pass runs at full size); 0 = off (one forward pass from the first frame)",
        minimum=0,
        maximum=MAX_TIME_PASSES,
        label="time passes",
        zero="off",
        user_help="time series: style each frame alone first, then pass this many times over the "
        "series both ways to make neighbours agree (2: cleaner wakes behind moving objects, about "
        "twice the time of independent frames); off: one pass, each frame from the previous",
    )
    batch_frames: int = _option(
        0,
        "frames=independent: how many frames go through the network together as one batch (>= 0), "
        "each with its own optimiser state, so each comes out as if styled alone (to float rounding); 0 = auto "
        "(on a GPU as many as free memory holds, at most 16 and 1 Mpx in all; 1 on the CPU). A run stopped "
        "in the middle of a batch keeps its finished frames and the one it was on. "
        "frames=time goes frame by frame",
        minimum=0,
        maximum=MAX_BATCH_FRAMES,
        execution=True,
        label="batch frames",
        zero="auto",
        user_help="independent frames: how many go through the network together (faster on a GPU, same "
        "result); auto: as many as the GPU's free memory holds (up to 16), 1 on the CPU",
    )
    snapshot_every: int = _option(
        50,
        "mark every N-th step as a snapshot with its image (0 = no snapshots)",
        minimum=0,
        maximum=MAX_STEPS,
        execution=True,
        label="snapshot every",
        zero="off",
        user_help="add the image as a new layer every this many steps, to watch the run (single images "
        "only; off: only the result)",
    )
    tile_size: int = _option(
        0,
        "size='full': the side in pixels of the tiles the full-resolution result is computed in, a "
        "multiple of the deepest layer's stride (16 for conv5_1); the composition is set at this size; "
        "0 = auto (the largest that the free memory holds, at most 512 on the CPU)",
        minimum=0,
        maximum=MAX_SIZE,
        label="tile size",
        zero="auto",
    )
    schedule: str = _option(
        "auto",
        "coarse-to-fine sizes, e.g. 128,256,512 (the last is the working size): the first steps run "
        "small and cheap, then the image is enlarged; auto picks from size, none runs at size only",
        label="coarse to fine",
    )
    precision: str = _option(
        "auto",
        "convolution arithmetic: auto (bf16 where it is native: CUDA GPUs from Ampere on, CPUs with "
        "AVX-512 BF16 or AMX; else fp32; fp32 for size full, whose short runs per tile bf16 can stall), "
        "fp32, tf32 (CUDA) or bf16; Gram matrices and losses stay fp32",
        choices=PRECISIONS,
        label="precision",
    )
    channels_last: bool | str = _option(
        "auto",
        "channels-last memory layout for the convolutions: auto (whichever a short probe at first "
        "use finds faster on this machine and device, remembered in the user's cache), True or False",
        presets=("auto", True, False),
        execution=True,
        label="channels last",
    )
    threads: int = _option(
        0,
        "torch's CPU threads for the run's convolutions; 0 = auto: the physical cores this process may "
        "use (its CPU affinity and cgroup quota; never more than torch's own count, so an OMP_NUM_THREADS "
        "or torch.set_num_threads set before the run holds)",
        minimum=0,
        maximum=MAX_THREADS,
        execution=True,
        label="CPU threads",
        zero="auto",
    )
    cudnn_benchmark: bool = _option(
        True,
        "let cuDNN time its convolution algorithms on the first step (CUDA)",
        execution=True,
        label="cuDNN autotuning",
    )

    # --- validation -----------------------------------------------------------------------

    def validated(self) -> StyleOptions:
        """Return a normalised copy, or raise ``StyleTransferError`` naming every bad value."""
        errors: list[str] = []
        counts = self._checked_counts(errors)
        weights = self._checked_weights(errors)
        modes = self._checked_modes(errors)
        schedule = _as_schedule(self.schedule, counts["size"], errors)
        self._check_choices(errors)
        layers = self._checked_layers(counts["size"], weights["style_layer_weights"], errors)
        source = self._checked_source(errors)
        if errors:
            raise StyleTransferError("; ".join(errors))
        return dataclasses.replace(self, **counts, **weights, **modes, schedule=schedule, **layers, **source)

    def _checked_counts(self, errors: list[str]) -> dict[str, Any]:
        """steps, size, snapshot_every, time_steps, time_passes, batch_frames, tile_size, threads:
        whole numbers in range."""
        counts = {
            name: _as_int(getattr(self, name), name, errors)
            for name in (
                "steps",
                "size",
                "snapshot_every",
                "time_steps",
                "time_passes",
                "batch_frames",
                "tile_size",
                "threads",
            )
        }
        _at_least(counts["time_steps"], 0, "time_steps must be 0 (auto) or more", errors)
        _at_most(counts["time_steps"], MAX_STEPS, "time_steps", errors)
        _at_least(counts["time_passes"], 0, "time_passes must be 0 (off) or more", errors)
        _at_most(counts["time_passes"], MAX_TIME_PASSES, "time_passes", errors)
        _at_least(counts["batch_frames"], 0, "batch_frames must be 0 (auto) or more", errors)
        _at_most(counts["batch_frames"], MAX_BATCH_FRAMES, "batch_frames", errors)
        _at_least(counts["steps"], 1, "steps must be at least 1", errors)
        _at_most(counts["steps"], MAX_STEPS, "steps", errors)
        _at_most(counts["size"], MAX_SIZE, "size", errors, unit=" px")
        _at_least(counts["snapshot_every"], 0, "snapshot_every must be 0 (off) or more", errors)
        _at_least(counts["tile_size"], 0, "tile_size must be 0 (auto) or more", errors)
        _at_most(counts["tile_size"], MAX_SIZE, "tile_size", errors, unit=" px")
        _at_least(counts["threads"], 0, "threads must be 0 (auto) or more", errors)
        _at_most(counts["threads"], MAX_THREADS, "threads", errors)
        return counts

    def _checked_weights(self, errors: list[str]) -> dict[str, Any]:
        """The loss weights, style_scale, style_blend, style_layer_weights and average."""
        weights: dict[str, Any] = {
            name: _as_float(getattr(self, name), name, errors, MAX_FACTOR)
            for name in ("content_weight", "style_weight", "tv_weight", "temporal_weight")
        }
        scales = _as_numbers(self.style_scale, "style_scale", errors, MAX_STYLE_SCALE, above_zero=True)
        if scales == ():
            errors.append("style_scale needs at least one number")
        style_scale = scales[0] if scales is not None and len(scales) == 1 else scales
        style_blend = _as_numbers(self.style_blend, "style_blend", errors, MAX_FACTOR)
        if style_blend and not any(style_blend):
            errors.append("style_blend weights are all 0: give at least one style a weight above 0")
        layer_weights = _as_numbers(self.style_layer_weights, "style_layer_weights", errors, MAX_FACTOR)
        weights.update(
            style_scale=style_scale, style_blend=style_blend or (), style_layer_weights=layer_weights or ()
        )
        weights["average"] = self._checked_average(errors)
        return weights

    def _checked_average(self, errors: list[str]) -> float | None:
        if self.average is None:
            return None
        average = _as_float(self.average, "average", errors, 1.0)
        if average is not None:
            if average >= 1:
                errors.append(f"average must be below 1 (such as 0.99), got {_shown(self.average)}")
            average = average or None  # 0 is off
        if average and self.optimizer != "adam":
            errors.append(
                "average (averaged iterates) works with optimizer='adam' only; leave it out for lbfgs"
            )
        return average

    def _checked_modes(self, errors: list[str]) -> dict[str, Any]:
        """style_loss, content_colours, learning_rate, seed and the on/off switches."""
        if not (isinstance(self.style_loss, str) and self.style_loss in STYLE_LOSSES):
            errors.append(f"style_loss must be one of {', '.join(STYLE_LOSSES)}, got {self.style_loss!r}")
        modes: dict[str, Any] = {"content_colours": _as_colours(self.content_colours, errors)}
        modes["learning_rate"] = (
            None
            if self.learning_rate is None
            else _as_float(self.learning_rate, "learning_rate", errors, MAX_FACTOR, above_zero=True)
        )
        seed = None if self.seed is None else _as_int(self.seed, "seed", errors)
        if seed is not None and not -(2**63) <= seed < 2**64:  # what torch's generators take
            errors.append(f"seed must be between -2**63 and 2**64 - 1, got {_shown(seed)}")
        modes["seed"] = seed
        for name in ("keep_grey", "cudnn_benchmark"):
            value = getattr(self, name)
            if not _is_bool(value):
                errors.append(f"{name} must be True or False, got {value!r}")
            modes[name] = bool(value) if _is_bool(value) else value
        modes["channels_last"] = _as_layout(self.channels_last, errors)
        return modes

    def _check_choices(self, errors: list[str]) -> None:
        """The options that name one of a few choices (their field's ``choices``)."""
        for name in ("optimizer", "init", "pooling", "precision", "frames"):
            value = getattr(self, name)
            choices = _field_metadata(name)["choices"]
            if not (isinstance(value, str) and value in choices):
                errors.append(f"{name} must be one of {', '.join(choices)}, got {value!r}")

    def _checked_layers(
        self, size: int | None, layer_weights: tuple[float, ...] | None, errors: list[str]
    ) -> dict[str, Any]:
        """content_layers and style_layers, and what they ask of the layer weights and size."""
        content_layers = _as_layers(self.content_layers, "content_layers", errors)
        style_layers = _as_layers(self.style_layers, "style_layers", errors)
        if layer_weights and style_layers and len(layer_weights) != len(style_layers):
            errors.append(
                f"style_layer_weights needs one weight per style layer: {len(style_layers)} "
                f"({', '.join(style_layers)}), got {len(layer_weights)}"
            )
        layers = content_layers + style_layers
        if not layers:
            errors.append("give at least one content or style layer")
        elif size is not None and size < min_side_for_layers(layers):
            errors.append(
                f"size {_shown(size)} is too small for layers up to "
                f"{_deepest(layers)}: use size >= {min_side_for_layers(layers)}"
            )
        return {"content_layers": content_layers, "style_layers": style_layers}

    def _checked_source(self, errors: list[str]) -> dict[str, Any]:
        """weights (a mode or a file) and device."""
        if not (isinstance(self.weights, str | os.PathLike) and str(self.weights) != ""):
            errors.append(
                f"weights must be one of {', '.join(WEIGHTS_MODES)} or a file path, got {self.weights!r}"
            )
        if not _is_device_name(self.device):
            errors.append(_device_message(self.device))
        return {"weights": str(self.weights), "device": str(self.device)}

    @property
    def resolved_learning_rate(self) -> float:
        """``learning_rate``, or the optimiser's default where it is None."""
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return DEFAULT_LEARNING_RATE[self.optimizer]

    @property
    def layer_weights(self) -> tuple[float, ...]:
        """The weight of each style layer (1 each unless ``style_layer_weights`` says)."""
        return self.style_layer_weights or (1.0,) * len(self.style_layers)

    def style_scales(self, styles: int) -> tuple[float, ...]:
        """``style_scale`` for each of ``styles`` styles (a validated copy's)."""
        return self.style_scale if isinstance(self.style_scale, tuple) else (self.style_scale,) * styles

    def blend(self, styles: int) -> tuple[float, ...]:
        """The normalised weight of each of ``styles`` styles (equal unless ``style_blend``)."""
        weights = self.style_blend or (1.0,) * styles
        total = sum(weights)
        return tuple(weight / total for weight in weights)

    @property
    def later_frame_steps(self) -> int:
        """Steps of a time series' frames after the first: ``time_steps``, or half of
        ``steps`` for 0 (auto; measured in docs/benchmarks.md, "Stacks")."""
        return self.time_steps or max(1, self.steps // 2)

    @property
    def layers(self) -> tuple[str, ...]:
        """Every layer the run reads, content and style, without repeats, in network order."""
        wanted = set(self.content_layers) | set(self.style_layers)
        return tuple(name for name in VGG19_LAYERS if name in wanted)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists for layer tuples), for metadata and JSON."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_kwargs(cls, options: Mapping[str, Any]) -> StyleOptions:
        """Build from keyword options, rejecting unknown names with the list of known ones."""
        known = option_names()
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise StyleTransferError(
                f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                f"known options are {', '.join(known)}"
            )
        return cls(**options).validated()


def schedule_sizes(schedule: str, size: int) -> tuple[int, ...]:
    """The sizes a run goes through, coarse to fine, ending at ``size``.

    ``auto`` halves the size while the coarsest level stays at least 128 px, for at most
    three levels (512 -> 128, 256, 512; 1024 -> 256, 512, 1024); below 512 px it runs at one
    size.
    """
    if schedule == "none":
        return (size,)
    if schedule == "auto":
        levels = [size]
        while len(levels) < 3 and levels[0] // 2 >= 128 and size >= 512:
            levels.insert(0, levels[0] // 2)
        return tuple(levels)
    return tuple(int(part) for part in schedule.split(","))


def frame_in_stack(frame_number: int, frames: int, pass_number: int = 0) -> str:
    """A stack's frame in words, for where a run stopped (CLI, napari): "frame 3 of 5", or "frame 3 of 5 in
    pass 1" in time passes (where every frame was styled once before the first pass)."""
    where = f"frame {frame_number + 1} of {frames}"
    return f"{where} in pass {pass_number}" if pass_number else where


def option_names() -> tuple[str, ...]:
    """The names of every option, in the order StyleOptions declares them."""
    return tuple(f.name for f in dataclasses.fields(StyleOptions))


def execution_options() -> frozenset[str]:
    """The options that say how a run is carried out, not what it computes (``execution``
    in their metadata): a resumed full-resolution run may change them."""
    return frozenset(f.name for f in dataclasses.fields(StyleOptions) if f.metadata.get("execution"))


def default(name: str) -> Any:
    """The default value of option ``name``."""
    return getattr(StyleOptions(), name)


def help_text(name: str) -> str:
    """Option ``name``'s help, in the API's words (the CLI's --help and the docs show it)."""
    return _field_metadata(name)["help"]


def choices(name: str) -> tuple[str, ...] | None:
    """The values option ``name`` takes, for an option with a fixed set; else None."""
    return _field_metadata(name).get("choices")


def limits(name: str) -> tuple[float | None, float | None]:
    """The smallest and largest value option ``name`` takes (None: no such bound)."""
    metadata = _field_metadata(name)
    return metadata.get("minimum"), metadata.get("maximum")


def label(name: str) -> str:
    """A short name of option ``name`` for a form (the widget's label)."""
    return _field_metadata(name).get("label", name.replace("_", " "))


def user_help(name: str) -> str:
    """Option ``name`` explained to a user of the widget (its help text where that says it)."""
    metadata = _field_metadata(name)
    return metadata.get("user_help", metadata["help"])


def presets(name: str) -> tuple[str, ...]:
    """The usual values of option ``name``, where it also takes others (a device's index, a
    weights file's path); its choices otherwise."""
    metadata = _field_metadata(name)
    return tuple(metadata.get("presets", metadata.get("choices", ())))


def zero_means(name: str) -> str | None:
    """What 0 stands for in option ``name`` ("auto", "off"), or None where 0 is a number."""
    return _field_metadata(name).get("zero")


def _field_metadata(name: str) -> Mapping[str, Any]:
    return {f.name: f.metadata for f in dataclasses.fields(StyleOptions)}[name]


def _is_number(value: Any) -> bool:
    """int, float and numpy's scalars, but not bool (``True`` is no step count; numpy's bool
    is no ``numbers.Real``)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_bool(value: Any) -> bool:
    kind = type(value)  # numpy's bool (named bool_ before numpy 2), without importing numpy
    return isinstance(value, bool) or (kind.__module__ == "numpy" and kind.__name__ in ("bool", "bool_"))


def _plain(value: Any) -> Any:
    """A 0-d array (numpy's, torch's) or a numpy scalar as the Python value it holds."""
    if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)):
        return value.item()
    return value


def _as_int(value: Any, name: str, errors: list[str]) -> int | None:
    value = _plain(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)  # any size: float() of 10**400 would overflow
    if not _is_number(value) or not math.isfinite(value) or not float(value).is_integer():
        errors.append(f"{name} must be a whole number, got {value!r}")
        return None
    return int(value)


def _as_float(
    value: Any, name: str, errors: list[str], largest: float, above_zero: bool = False
) -> float | None:
    """``value`` as a float in 0..``largest`` (more than 0 with ``above_zero``), else None
    with the error noted."""
    value = _plain(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        whole = int(value)  # float() of 10**400 overflows: an int beyond the range is only its sign
        number = float(whole) if abs(whole) <= largest else (math.inf if whole > 0 else -math.inf)
    elif _is_number(value):
        number = float(value)
    else:
        number = math.nan
    if math.isnan(number) or (math.isinf(number) and not isinstance(value, numbers.Integral)):
        errors.append(f"{name} must be a finite number, got {value!r}")
    elif number > largest:
        errors.append(f"{name} must be at most {largest:g}, got {_shown(value)}")
    elif above_zero and number <= 0:
        errors.append(f"{name} must be more than 0, got {_shown(value)}")
    elif number < 0:
        errors.append(f"{name} must be 0 or more, got {_shown(value)}")
    else:
        return number
    return None


def _at_least(value: int | None, lowest: int, message: str, errors: list[str]) -> None:
    if value is not None and value < lowest:
        errors.append(f"{message}, got {_shown(value)}")


def _at_most(value: int | None, largest: int, name: str, errors: list[str], unit: str = "") -> None:
    if value is not None and value > largest:
        errors.append(f"{name} must be at most {largest}{unit}, got {_shown(value)}")


def _shown(value: Any) -> str:
    """``value`` for a message; an int too long to print in full (str() refuses past 4300
    digits) by its number of digits."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)
        if value.bit_length() > 256:  # about 77 digits: longer numbers are no use in a message
            digits = int(value.bit_length() * math.log10(2)) + 1
            return f"a {'negative ' if value < 0 else ''}number of about {digits} digits"
        return str(value)
    return str(value) if _is_number(value) else repr(value)


def _as_numbers(
    value: Any, name: str, errors: list[str], largest: float, above_zero: bool = False
) -> tuple[float, ...] | None:
    """One number or several (a sequence, or text such as "0.7,0.3") as a tuple, each checked
    as :func:`_as_float` does. None when wrong (noted)."""
    value = _plain(value)
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",") if part.strip()]
        try:
            value = [float(part) for part in parts]
        except ValueError:
            errors.append(f"{name} must be numbers separated by commas, got {_clipped(value)}")
            return None
    if not isinstance(value, Iterable):
        value = [value]
    checked = [_as_float(item, name, errors, largest, above_zero) for item in value]
    good = [number for number in checked if number is not None]
    return tuple(good) if len(good) == len(checked) else None


def _as_layout(value: Any, errors: list[str]) -> bool | str | None:
    """channels_last: True, False or "auto" (words on the command line: auto, on, off)."""
    if _is_bool(value):
        return bool(value)
    layout = _LAYOUTS.get(value.lower()) if isinstance(value, str) else None
    if layout is None:
        errors.append(
            f"channels_last must be True, False or 'auto' (on the command line auto, on or off), got {value!r}"
        )
    return layout


def _as_colours(value: Any, errors: list[str]) -> bool | str:
    if _is_bool(value):
        return "luminance" if value else False  # True was the luminance transfer before modes
    if isinstance(value, str) and value in COLOUR_MODES:
        return value
    if value is None or (isinstance(value, str) and value in ("none", "off", "false")):
        return False
    errors.append(f"content_colours must be False, luminance (or True) or histogram, got {value!r}")
    return False


def _as_layers(value: Any, name: str, errors: list[str]) -> tuple[str, ...]:
    value = _plain(value)
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, Iterable):
        errors.append(f"{name} must be a list of VGG19 layer names, got {value!r}")
        return ()
    layers = tuple(value)
    bad = [layer for layer in layers if not (isinstance(layer, str) and layer in VGG19_LAYERS)]
    if bad:
        errors.append(
            f"{name} has unknown layer{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad))}; "
            "VGG19 layers are conv1_1..conv5_4, relu1_1..relu5_4 and pool1..pool5"
        )
        return ()
    return tuple(dict.fromkeys(str(layer) for layer in layers))


def _as_schedule(value: Any, size: int | None, errors: list[str]) -> str:
    if not isinstance(value, str):
        errors.append(f"schedule must be auto, none or sizes such as 128,256,512, got {value!r}")
        return "auto"
    text = value.replace(" ", "")
    if text in ("auto", "none"):
        return text
    parts = text.split(",")
    if not all(_is_whole_number(part) and 16 <= int(part) <= MAX_SIZE for part in parts):
        errors.append(
            f"schedule must be auto, none or sizes of 16 to {MAX_SIZE} such as 128,256,512, got {_clipped(value)}"
        )
        return "auto"
    sizes = [int(part) for part in parts]
    if sizes != sorted(set(sizes)):
        errors.append(f"schedule sizes must grow from coarse to fine, got {value!r}")
    elif size is not None and sizes[-1] != size:
        errors.append(f"the schedule's last size must be the working size {_shown(size)}, got {sizes[-1]}")
    return text


def _deepest(layers: Iterable[str]) -> str:
    return max(layers, key=VGG19_LAYERS.index)


def _is_whole_number(text: str) -> bool:
    """Plain ASCII digits, few enough for int(): str.isdigit also takes "²" and "٣"."""
    return text.isascii() and text.isdigit() and len(text) <= 9


def _clipped(text: str, length: int = 60) -> str:
    return repr(text) if len(text) <= length else repr(text[:length]) + "..."


def _is_device_name(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    if value in DEVICES:
        return True
    kind, _, index = value.partition(":")
    # "cuda:00" is no name torch takes; only the digits of a plain count
    return kind in ("cuda", "mps") and _is_whole_number(index) and str(int(index)) == index


def _device_message(value: Any) -> str:
    message = f"device must be auto, cpu, cuda, cuda:N or mps, got {_clipped(value) if isinstance(value, str) else repr(value)}"
    kind, _, index = value.partition(":") if isinstance(value, str) else ("", "", "")
    if kind in ("cuda", "mps") and index.isdecimal() and len(index) <= 9:  # "cuda:00", "cuda:٣"
        message += f"; write {kind}:{int(index)}"
    return message
