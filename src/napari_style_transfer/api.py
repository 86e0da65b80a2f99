"""numpy in, numpy out: ``stylize`` and ``iter_stylize``."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._image import PreparedImage, finish_image, prepare_image, working_shape
from ._torch_compat import hide_triton
from .errors import OutOfMemoryError, StyleTransferError, WeightsError
from .options import WEIGHTS_MODES, StyleOptions, min_side_for_layers

hide_triton()

import torch  # noqa: E402

from .engine import Losses, StyleObjective, evaluate, initial_image, optimize, resize, resolve_device  # noqa: E402
from .vgg import VGGFeatures  # noqa: E402
from .weights import load_vgg19_features  # noqa: E402


@dataclass
class StepRecord:
    """Progress after one optimiser step.

    ``image`` is filled on snapshot steps (every ``snapshot_every`` steps) and on the last
    step; on other steps call :meth:`render` before advancing the generator.
    """

    step: int  # 1-based
    steps: int  # steps requested
    losses: Losses  # evaluated during this step
    seconds: float  # since the run started (weights and model loading included)
    is_snapshot: bool
    device: str
    weights: str
    image: np.ndarray | None = None
    _live: torch.Tensor | None = field(default=None, repr=False)
    _cursor: _Cursor | None = field(default=None, repr=False)
    _finish: Any = field(default=None, repr=False)

    def render(self) -> np.ndarray:
        """This step's image as numpy (same kind as the final result)."""
        if self.image is not None:
            return self.image
        if self._cursor is None or self._cursor.step != self.step:
            raise RuntimeError(
                f"the image of step {self.step} is gone: call render() before advancing the run"
            )
        self.image = self._finish(self._live)
        return self.image


@dataclass(frozen=True)
class StyleResult:
    """The outcome of a run: the image and everything needed to say how it was made."""

    image: np.ndarray  # float32 in [0, 1]; (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA
    losses: Losses  # of the final image
    steps_done: int
    steps: int
    seconds: float
    device: str
    weights: str  # where the VGG19 weights came from, in words
    weights_kind: str  # imagenet, file or random
    options: StyleOptions
    content_scale: float  # working size / content size (multiply pixel spacing by 1/this)
    value_scaling: str  # how the content's values were mapped to [0, 1]

    def metadata(self) -> dict[str, Any]:
        """Plain values describing the run, for layer metadata or PNG text chunks."""
        return {
            "weights": self.weights,
            "device": self.device,
            "steps_done": self.steps_done,
            "seconds": round(self.seconds, 3),
            "losses": vars(self.losses).copy(),
            "content_scale": self.content_scale,
            "value_scaling": self.value_scaling,
            "options": self.options.to_dict(),
        }


@dataclass
class _Cursor:
    step: int = 0


def iter_stylize(content: Any, style: Any, **options: Any) -> Iterator[StepRecord | StyleResult]:
    """Style transfer as a generator: one :class:`StepRecord` per step, then a :class:`StyleResult`.

    ``content`` and ``style`` are numpy arrays: (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA,
    of any integer or float dtype (see ``prepare_image`` for how values map to [0, 1]).
    ``options`` are the fields of :class:`~napari_style_transfer.options.StyleOptions`.
    Options, images and device are checked now, raising ``StyleTransferError``; the weights
    load and the network is built on the first ``next()``. Stop early by leaving the loop or
    calling ``close()``: the last record still renders its image.
    """
    opts = StyleOptions.from_kwargs(options)
    content_image = prepare_image(content, "content")
    style_image = prepare_image(style, "style")
    content_shape = working_shape(*content_image.shape, opts.size)
    scale = max(content_shape) / max(content_image.shape)
    style_shape = tuple(max(1, round(side * scale * opts.style_scale)) for side in style_image.shape)
    _check_large_enough(content_shape, opts.content_layers + opts.style_layers, "content")
    _check_large_enough(style_shape, opts.style_layers, "style", hint=" or a larger style_scale")
    if opts.weights not in WEIGHTS_MODES and not os.path.isfile(os.path.expanduser(opts.weights)):
        raise WeightsError(
            f"weights file {opts.weights} does not exist; give an existing .pth file or one of "
            f"{', '.join(WEIGHTS_MODES)}"
        )
    device = resolve_device(opts.device)
    return _run(content_image, style_image, opts, device, content_shape, style_shape, scale)


def stylize(content: Any, style: Any, **options: Any) -> np.ndarray:
    """Style transfer of numpy images; returns the result as float32 in [0, 1].

    The result has the working size (longest side ``size``) and the content's kind: grey in,
    grey out; RGB in, RGB out; RGBA in, RGBA out with the alpha carried through. Options are
    those of :func:`iter_stylize`. Use ``iter_stylize`` to see progress, snapshots and which
    weights were used.
    """
    for item in iter_stylize(content, style, **options):
        if isinstance(item, StyleResult):
            return item.image
    raise AssertionError("iter_stylize ended without a result")  # pragma: no cover


def _check_large_enough(shape: tuple[int, ...], layers: tuple[str, ...], role: str, hint: str = "") -> None:
    if not layers:
        return
    needed = min_side_for_layers(layers)
    if min(shape) < needed:
        raise StyleTransferError(
            f"the {role} image would be {shape[0]}x{shape[1]} px at the working size, too small for "
            f"the chosen layers: its shorter side must be at least {needed} px; use a larger "
            f"size{hint}, or shallower layers"
        )


def _to_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0).contiguous().to(device)


def _run(
    content: PreparedImage,
    style: PreparedImage,
    opts: StyleOptions,
    device: torch.device,
    content_shape: tuple[int, int],
    style_shape: tuple[int, ...],
    scale: float,
) -> Iterator[StepRecord | StyleResult]:
    started = time.perf_counter()
    try:
        loaded = load_vgg19_features(opts.weights)
        extractor = VGGFeatures(loaded.features, opts.layers, opts.pooling).to(device)
        content_t = resize(_to_tensor(content.rgb, device), *content_shape)
        style_t = resize(_to_tensor(style.rgb, device), *style_shape)
        alpha = None
        if content.alpha is not None:
            alpha_t = resize(torch.from_numpy(content.alpha)[None, None].to(device), *content_shape)
            alpha = alpha_t[0, 0].clamp(0, 1).cpu().numpy()
        objective = StyleObjective(extractor, content_t, style_t, opts)
        start = initial_image(content_t, style_t, opts.init, opts.seed)

        def finish(image: torch.Tensor) -> np.ndarray:
            return finish_image(image[0].permute(1, 2, 0).float().cpu().numpy(), content, alpha)

        cursor = _Cursor()
        image = start
        for step, losses, image in optimize(objective, start, opts):
            cursor.step = step
            snapshot = bool(opts.snapshot_every) and step % opts.snapshot_every == 0
            record = StepRecord(
                step=step,
                steps=opts.steps,
                losses=losses,
                seconds=time.perf_counter() - started,
                is_snapshot=snapshot,
                device=str(device),
                weights=loaded.description,
                _live=image,
                _cursor=cursor,
                _finish=finish,
            )
            if snapshot or step == opts.steps:
                record.render()
            yield record
        final = evaluate(objective, image)
        yield StyleResult(
            image=finish(image),
            losses=final,
            steps_done=opts.steps,
            steps=opts.steps,
            seconds=time.perf_counter() - started,
            device=str(device),
            weights=loaded.description,
            weights_kind=loaded.kind,
            options=opts,
            content_scale=scale,
            value_scaling=content.scaling,
        )
    except torch.OutOfMemoryError as error:
        raise OutOfMemoryError(
            f"{device} ran out of memory at a working size of {max(content_shape)} px: use a smaller "
            f"size (for example {max(16, max(content_shape) // 2)}) or device='cpu'"
        ) from error
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
