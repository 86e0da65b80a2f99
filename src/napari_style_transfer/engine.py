"""The optimisation of Gatys, Ecker & Bethge (CVPR 2016) on torch tensors.

Everything here works on (1, 3, H, W) float tensors in [0, 1] (N frames for
:func:`optimize_frames`) that already sit on the run's device; ``api.py`` turns numpy arrays into such tensors and back.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from ._torch_compat import hide_triton

hide_triton()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from .errors import StyleTransferError  # noqa: E402
from .lbfgs import BatchBoxLBFGS, BoxLBFGS, CarriedCurvature  # noqa: E402
from .losses import (  # noqa: E402
    gaussian_target,
    gram_matrix,
    gram_mse,
    random_directions,
    sliced_target,
    sliced_wasserstein_loss,
    sorted_projections,
    temporal_loss,
    total_variation,
    wasserstein2_loss,
    weighted_gram_mse,
)
from .memory import available_ram_bytes  # noqa: E402
from .options import StyleOptions  # noqa: E402
from .vgg import VGGFeatures  # noqa: E402

T = TypeVar("T")


@dataclass(frozen=True)
class Losses:
    """Weighted loss terms of one evaluation (weights already applied); ``total`` is their sum."""

    total: float
    content: float
    style: float
    tv: float
    temporal: float = 0.0  # a time series' later frames: closeness to the warped previous result


#: Factors that put each style loss's strength at a given style_weight near the Gram loss's:
#: the other losses are about 3e5 times larger at the same images (measured on the bundled
#: samples at 64 and 128 px with untrained weights: 1.4e-6 to 3.5e-6 of the Gram loss).
STYLE_LOSS_SCALE = {"gram": 1.0, "mean_cov": 3e-6, "sliced": 3e-6}


class StyleObjective(nn.Module):
    """The loss of the paper: content_weight * L_content + style_weight * L_style (+ TV),
    plus temporal_weight * L_temporal for a time series' later frames (:meth:`set_temporal`).

    L_content is the mean squared error between activations of the image and of the content
    image, summed over ``content_layers``; L_style is the mean squared error between Gram
    matrices of the image and of the style image, summed over ``style_layers`` (each times its
    ``style_layer_weights``), or with ``style_loss`` the Wasserstein-2 distance of fitted
    Gaussians or the sliced Wasserstein distance (times :data:`STYLE_LOSS_SCALE`). Several
    styles compare with their blended statistics; regions (:meth:`set_regions`) with their
    own style's statistics, over their positions (see ``losses.py``). L_temporal is
    :func:`~napari_style_transfer.losses.temporal_loss`. With ``compute_dtype`` bfloat16 the
    convolutions run under autocast; activations are cast to float32 before Gram matrices
    and losses.
    """

    def __init__(
        self,
        extractor: VGGFeatures,
        content: torch.Tensor,
        style: torch.Tensor | Sequence[torch.Tensor],
        options: StyleOptions,
        compute_dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.extractor = extractor
        self.content_layers = options.content_layers
        self.style_layers = options.style_layers
        self.content_weight = options.content_weight
        self.style_weight = options.style_weight
        self.tv_weight = options.tv_weight
        self.temporal_weight = options.temporal_weight
        self.temporal: tuple[torch.Tensor, torch.Tensor] | None = None  # (target, reliable)
        self.compute_dtype = compute_dtype
        self.memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
        self.style_loss = options.style_loss
        self.layer_weights = dict(zip(self.style_layers, options.layer_weights, strict=True))
        styles = [style] if isinstance(style, torch.Tensor) else list(style)
        # a style of weight 0 takes no part, so a blend of 1:0 is the first style's run exactly
        self.blend = [(index, weight) for index, weight in enumerate(options.blend(len(styles))) if weight]
        self.regions: torch.Tensor | None = None  # (N, 1, H, W) labels, 0 = no style
        self._region_weights: dict[tuple[int, int], torch.Tensor] = {}
        self.directions_generator = torch.Generator()
        if options.seed is None:
            self.directions_generator.seed()
        else:
            self.directions_generator.manual_seed(options.seed % 2**63)
        with torch.no_grad():
            style_features = [self.features(image) for image in styles] if self.style_layers else []
            self._style_features = style_features
            # statistics of the blend (for the whole image) and of each style alone (for its region)
            self.style_targets = self._targets([i for i, _ in self.blend], [w for _, w in self.blend])
            self._region_targets: dict[int, dict[str, Any]] = {}
        self.new_directions()
        self.set_content(content)

    def _targets(self, indices: list[int], blend: list[float]) -> dict[str, Any]:
        """Per style layer, the target statistics of styles ``indices`` blended by ``blend``."""
        targets: dict[str, Any] = {}
        for name in self.style_layers:
            features = [self._style_features[i][name] for i in indices]
            if self.style_loss == "gram":
                target = None
                for feature, weight in zip(features, blend, strict=True):
                    gram = gram_matrix(feature) if weight == 1.0 else gram_matrix(feature) * weight
                    target = gram if target is None else target + gram
                targets[name] = target
            elif self.style_loss == "mean_cov":
                dtype = torch.float32 if features[0].device.type == "mps" else torch.float64
                targets[name] = gaussian_target(features, blend, dtype)
            else:  # sliced: the flattened activations; projected afresh with each step's directions
                targets[name] = ([f[0].reshape(f.shape[1], -1) for f in features], blend)
        return targets

    def region_targets(self, label: int) -> dict[str, Any]:
        if label not in self._region_targets:
            with torch.no_grad():
                self._region_targets[label] = self._targets([label - 1], [1.0])
        return self._region_targets[label]

    def new_directions(self) -> None:
        """Draw the sliced loss's random projections afresh (once per step: the same
        directions within a step keep L-BFGS's line search on one function)."""
        if self.style_loss != "sliced":
            return
        self.directions = {}
        self._sorted_styles: dict[tuple[int, str], torch.Tensor] = {}
        for name in self.style_layers:
            channels = self._style_features[0][name].shape[1]
            device = self._style_features[0][name].device
            self.directions[name] = random_directions(channels, channels, self.directions_generator).to(
                device
            )

    def _sorted_style(self, index: int, name: str, flat: torch.Tensor) -> torch.Tensor:
        key = (index, name)
        if key not in self._sorted_styles:
            self._sorted_styles[key] = sorted_projections(flat, self.directions[name])
        return self._sorted_styles[key]

    def set_regions(self, labels: torch.Tensor | None) -> None:
        """Give label k >= 1 the k-th style and label 0 none, from now on; ``labels`` is
        (N, 1, H, W) integers at the image's size (N = 1 for all images alike), or None for
        the whole image in the blend of the styles."""
        self.regions = labels
        self._region_weights = {}

    def _weights(self, shape: tuple[int, int]) -> dict[int, torch.Tensor]:
        """Per label present, (N, 1, h*w) shares of each position of an (h, w) layer that lie
        in the region (the guides of Gatys et al. 2017, downsampled by area)."""
        if shape not in self._region_weights:
            labels = self.regions
            guides = {}
            for label in torch.unique(labels).tolist():
                if label == 0:
                    continue
                mask = (labels == label).float()
                guides[label] = F.interpolate(mask, size=shape, mode="area").flatten(2)
            self._region_weights[shape] = guides
        return self._region_weights[shape]

    def _layer_style_loss(self, name: str, feature: torch.Tensor) -> torch.Tensor:
        if self.regions is None:
            return self._loss(name, feature, self.style_targets[name], None, [i for i, _ in self.blend])
        total = feature.new_zeros(feature.shape[0])
        positions = feature.shape[2] * feature.shape[3]
        for label, weights in self._weights(tuple(feature.shape[-2:])).items():
            # weighted by the region's share of the image: a region covering everything is
            # the plain loss, and a small region pulls each of its pixels no harder than a large one
            share = weights.sum(-1)[:, 0] / positions
            loss = self._loss(name, feature, self.region_targets(label)[name], weights, [label - 1])
            total = total + share * loss
        return total.mean()

    def _loss(
        self, name: str, feature: torch.Tensor, target: Any, weights: torch.Tensor | None, indices: list[int]
    ) -> torch.Tensor:
        if self.style_loss == "gram":
            return (
                gram_mse(feature, target) if weights is None else weighted_gram_mse(feature, target, weights)
            )
        if self.style_loss == "mean_cov":
            loss = wasserstein2_loss(feature, target, weights)
            return loss.mean() if weights is None else loss
        flats, blend = target
        sorted_styles = [self._sorted_style(i, name, flat) for i, flat in zip(indices, flats, strict=True)]
        n, c = feature.shape[:2]
        projected = self.directions[name].transpose(0, 1) @ feature.reshape(n, c, -1)
        losses = []
        for item in range(n):
            values = projected[item]
            if weights is not None:  # the positions mostly inside the region
                values = values[:, weights[item, 0] >= 0.5]
                if values.shape[-1] == 0:
                    losses.append(feature.new_zeros(()))
                    continue
            losses.append(
                sliced_wasserstein_loss(values, sliced_target(sorted_styles, blend, values.shape[-1]))
            )
        loss = torch.stack(losses)
        return loss.mean() if weights is None else loss

    def features(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Activations of the layers in use, as float32."""
        image = image.contiguous(memory_format=self.memory_format)
        with torch.autocast(
            image.device.type, dtype=self.compute_dtype, enabled=self.compute_dtype != torch.float32
        ):
            features = self.extractor(image)
        return {name: value.float() for name, value in features.items()}

    @torch.no_grad()
    def set_content(self, content: torch.Tensor) -> None:
        """Compare with another content image (the next frame of a stack) from now on."""
        features = self.features(content) if self.content_layers else {}
        self.content_targets = {name: features[name] for name in self.content_layers}

    def temporal_curvature(self, image: torch.Tensor) -> torch.Tensor | None:
        """The temporal term's second derivative per value of ``image`` (its weight times
        2 reliable / the number of values, as the loss is a mean), (N, 1, H, W) to broadcast
        over the channels, or None without one: the optimiser's starting Hessian takes it in
        (lbfgs.BoxLBFGS)."""
        if self.temporal is None or not self.temporal_weight:
            return None
        reliable = self.temporal[1].to(image.device, torch.float32)
        return (2.0 * self.temporal_weight / image.numel()) * reliable

    def set_temporal(self, target: torch.Tensor | None, reliable: torch.Tensor | None = None) -> None:
        """Keep the image near ``target`` (N, 3, H, W) where ``reliable`` (N, 1, H, W, 0..1) is
        high, from now on; None turns the temporal term off (a stack's first frame)."""
        self.temporal = None if target is None else (target.detach(), reliable.detach())

    def forward(
        self,
        image: torch.Tensor,
        features: dict[str, torch.Tensor] | None = None,
        content_targets: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the total loss (a scalar to differentiate) and the weighted terms
        stacked as [content, style, tv, temporal], for reporting. A frame of a batch that
        went through the network together (:func:`optimize_frames`) brings its slice of the
        batch's ``features`` and its own ``content_targets``."""
        features = self.features(image) if features is None else features
        targets = self.content_targets if content_targets is None else content_targets
        zero = image.new_zeros((), dtype=torch.float32)
        content = sum((F.mse_loss(features[name], target) for name, target in targets.items()), zero)
        if (
            self.style_loss == "gram"
            and self.regions is None
            and all(w == 1.0 for w in self.layer_weights.values())
        ):
            style = sum(
                (gram_mse(features[name], target) for name, target in self.style_targets.items()), zero
            )
        else:
            style = sum(
                (
                    self.layer_weights[name] * self._layer_style_loss(name, features[name])
                    for name in self.style_layers
                ),
                zero,
            )
        tv = total_variation(image) if self.tv_weight else zero
        temporal = zero
        if self.temporal is not None and self.temporal_weight:
            temporal = temporal_loss(image, *self.temporal)
        terms = torch.stack(
            [
                self.content_weight * content,
                self.style_weight * STYLE_LOSS_SCALE[self.style_loss] * style,
                self.tv_weight * tv,
                self.temporal_weight * temporal,
            ]
        )
        return terms.sum(), terms.detach()


#: RGB to YIQ (NTSC): Y is the luminance, I and Q the chroma; and back.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def with_content_colours(styled: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """``styled``'s luminance with ``content``'s chroma (both (N, 3, H, W) in [0, 1], same
    size): the colour-preserving variant of Gatys et al., "Preserving color in neural
    artistic style transfer" (2016), done after the optimisation."""
    to_yiq, to_rgb = _RGB_TO_YIQ.to(styled.device), _YIQ_TO_RGB.to(styled.device)
    luminance = torch.einsum("ij,njhw->nihw", to_yiq[:1], styled.float())
    chroma = torch.einsum("ij,njhw->nihw", to_yiq[1:], content.float())
    return torch.einsum("ij,njhw->nihw", to_rgb, torch.cat([luminance, chroma], dim=1)).clamp(0.0, 1.0)


def initial_image(content: torch.Tensor, style: torch.Tensor, init: str, seed: int | None) -> torch.Tensor:
    """The starting image: a copy of the content, seeded uniform noise, or the style resized."""
    if init == "content":
        return content.clone()
    if init == "style":
        return F.interpolate(
            style, size=content.shape[-2:], mode="bilinear", antialias=True, align_corners=False
        )
    generator = torch.Generator()
    if seed is None:
        generator.seed()  # fresh entropy, leaving torch's global generator alone
    else:
        generator.manual_seed(seed)
    noise = torch.rand(content.shape, generator=generator)
    return noise.to(content.device)


#: L-BFGS curvature pairs kept. Each pair holds two images (24 bytes a pixel); 30 reached
#: within 1% of the loss of 100 after 150 steps at 128 px, for 30% of the memory.
LBFGS_HISTORY = 30


def optimize(
    objective: StyleObjective,
    start: torch.Tensor,
    options: StyleOptions,
    steps: int | None = None,
    carried: CarriedCurvature | None = None,
) -> Iterator[tuple[int, Losses, torch.Tensor]]:
    """Run ``steps`` (default ``options.steps``) optimiser iterations from ``start``, keeping
    pixels in [0, 1].

    Yields ``(step, losses, image)`` after every step; ``image`` is the image after the step
    (copy it to keep it); with ``options.average`` (Adam) it is the exponential moving average
    of the iterates. With L-BFGS ``losses`` are those of that image; with Adam they are
    those of the iterate the step started from (the evaluation that gave its gradient).
    Closing the generator stops the run at once. With ``carried`` (L-BFGS only; a time
    series' frames) the run starts from the curvature pairs ``carried`` holds and leaves its
    own there when it has run all its steps.
    """
    steps = options.steps if steps is None else steps
    if options.optimizer == "lbfgs":
        lbfgs = BoxLBFGS(
            start,
            objective,
            history_size=LBFGS_HISTORY,
            lr=options.resolved_learning_rate,
            curvature=objective.temporal_curvature(start),
        )
        if carried is not None:
            carried.give(lbfgs)
        for step in range(1, steps + 1):
            objective.new_directions()
            yield step, _checked(_as_losses(lbfgs.step()), step), lbfgs.x
        if carried is not None:
            carried.take(lbfgs)
        return

    for step, terms, image in _adam(objective, start, options, steps, objective.new_directions):
        yield step, _checked(to_losses(terms), step), image


def _adam(
    objective: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    start: torch.Tensor,
    options: StyleOptions,
    steps: int,
    before_step: Callable[[], None],
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Adam on ``start`` with pixels kept in [0, 1]: (step, the terms ``objective`` gave for
    the image the step started from, the image after the step). The objective's totals are
    summed: for a batch of frames each frame's total depends on that frame alone, so each
    gets its own gradient, and Adam's moments are per pixel anyway. With ``options.average``
    the image yielded is the iterates' exponential moving average."""
    image = start.detach().clone().requires_grad_(True)
    adam = torch.optim.Adam([image], lr=options.resolved_learning_rate)
    average = None
    for step in range(1, steps + 1):
        before_step()  # the sliced loss's fresh projections
        adam.zero_grad(set_to_none=True)
        totals, terms = objective(image)
        totals.sum().backward()
        adam.step()
        with torch.no_grad():
            image.clamp_(0.0, 1.0)
            if options.average:
                # bias-corrected (as Adam's moments are), so the start image has no share in it
                decay = options.average
                average = (
                    image.detach() * (1 - decay)
                    if average is None
                    else average.mul_(decay).add_(image, alpha=1 - decay)
                )
                shown = average / (1 - decay**step)
            else:
                shown = (
                    image.detach().clone()
                )  # a copy: Adam updates ``image`` in place, and a caller may keep the yielded one
        yield step, terms, shown


def optimize_frames(
    objective: StyleObjective, contents: torch.Tensor, start: torch.Tensor, options: StyleOptions, steps: int
) -> Iterator[tuple[int, list[Losses], torch.Tensor]]:
    """Run ``steps`` optimiser iterations of N independent frames ``start`` (N, 3, H, W),
    frame i held to its own content ``contents[i]`` and to ``objective``'s style, sent
    through the network as one batch (the objective's content and temporal terms are not
    used).

    Every frame keeps its own optimiser state (:class:`~napari_style_transfer.lbfgs.BatchBoxLBFGS`;
    Adam's state is per pixel anyway), so it takes the iterates it takes alone, up to the
    rounding of batched convolutions. Yields ``(step, losses of each frame, images (N, ...))``
    after every step, with the losses as :func:`optimize` gives them.
    """
    with torch.no_grad():
        features = objective.features(contents) if objective.content_layers else {}
    targets = [
        {name: features[name][i : i + 1] for name in objective.content_layers} for i in range(len(start))
    ]

    def frames_objective(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = objective.features(images)
        results = [
            objective(
                images[i : i + 1], {name: value[i : i + 1] for name, value in batch.items()}, frame_targets
            )
            for i, frame_targets in enumerate(targets)
        ]
        return torch.stack([total for total, _ in results]), torch.stack([terms for _, terms in results])

    if options.optimizer == "lbfgs":
        lbfgs = BatchBoxLBFGS(
            start, frames_objective, history_size=LBFGS_HISTORY, lr=options.resolved_learning_rate
        )
        for step in range(1, steps + 1):
            objective.new_directions()
            yield step, [_checked(_as_losses(report), step) for report in lbfgs.step()], lbfgs.x
        return

    for step, terms, images in _adam(frames_objective, start, options, steps, objective.new_directions):
        yield step, [_checked(_as_losses(row), step) for row in terms.tolist()], images


def _checked(losses: Losses, step: int) -> Losses:
    if not math.isfinite(losses.total):
        raise StyleTransferError(
            f"the loss became {losses.total} at step {step}; lower learning_rate or the weights"
        )
    return losses


def to_losses(terms: torch.Tensor) -> Losses:
    return _as_losses(terms.tolist())  # the one host sync of an Adam step


def _as_losses(terms: list[float]) -> Losses:
    content, style, tv, temporal = terms
    return Losses(content + style + tv + temporal, content, style, tv, temporal)


def compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The convolutions' dtype: bf16 for ``bf16``, and for ``auto`` where bf16 is native: CUDA
    GPUs from Ampere on, CPUs with AVX-512 BF16 or AMX (:func:`cpu_has_native_bf16`). Elsewhere
    fp32: emulated bf16 is slower than fp32."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8:
            return torch.bfloat16  # Ampere and newer compute bf16 natively
        if device.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
    return torch.float32


def precision_used(precision: str, device: torch.device) -> str:
    """What the convolutions of a run with ``precision`` compute in on ``device``: ``"bf16"``,
    ``"tf32"`` (CUDA only) or ``"fp32"``; what ``auto`` became, for a run's record."""
    if compute_dtype(precision, device) == torch.bfloat16:
        return "bf16"
    return "tf32" if precision == "tf32" and device.type == "cuda" else "fp32"


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware that oneDNN uses (AVX-512 BF16 or AMX);
    without it, oneDNN emulates bf16 convolutions with fp32 instructions. (oneDNN's own
    ``_is_mkldnn_bf16_supported`` is no answer: it says yes for emulation too.) Asked once
    per process; False where torch cannot tell."""
    if not torch.backends.mkldnn.is_available():
        return False
    checks = [
        getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    try:
        return any(bool(check()) for check in checks if check is not None)
    except RuntimeError:  # a torch build without the CPU feature probe
        return False


#: Device types whose runs set the flags below (a test adds the CPU, to watch them there).
_FLAG_DEVICES = ("cuda",)
# cuDNN autotuning and TF32 are process-wide switches, so a run may hold them only while it
# computes, never across a yield, and two runs may not hold them at once. Concurrent CUDA
# runs therefore take turns step by step under this lock; their kernels queue on the same
# default stream anyway, so little overlap is lost. Re-entrant: a caller may wrap a whole
# loop of steps that take it again (benchmarks/gpu.py).
_FLAGS_LOCK = threading.RLock()
_END = object()


def _read_flags() -> tuple[bool, bool, bool]:
    return (
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
    )


def _write_flags(flags: tuple[bool, bool, bool]) -> None:
    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = (
        flags
    )


@contextmanager
def backend_flags(options: StyleOptions, device: torch.device) -> Iterator[None]:
    """Set cuDNN autotuning and TF32 for the work inside and put them back afterwards. Other
    runs' steps wait meanwhile (the flags are global): hold it for one step, not across a
    ``yield`` (see :func:`with_backend_flags`)."""
    if device.type not in _FLAG_DEVICES:
        yield
        return
    tf32 = options.precision == "tf32"
    with _FLAGS_LOCK:
        saved = _read_flags()
        _write_flags((options.cudnn_benchmark, tf32, tf32))
        try:
            yield
        finally:
            _write_flags(saved)


def with_backend_flags(steps: Iterator[T], options: StyleOptions, device: torch.device) -> Iterator[T]:
    """What ``steps`` yields, computing each item under :func:`backend_flags`; between items,
    while the caller has it, the flags are the caller's. Closing this closes ``steps``."""
    try:
        while True:
            with backend_flags(options, device):
                item = next(steps, _END)
            if item is _END:
                return
            yield item
    finally:
        steps.close()


@torch.no_grad()
def evaluate(objective: StyleObjective, image: torch.Tensor) -> Losses:
    """The losses of ``image`` without a gradient (for the final result)."""
    return to_losses(objective(image)[1])


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA, then MPS, then the CPU; an explicit device must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise StyleTransferError(
                f"device {name!r} asked for, but CUDA is not available here; use device='cpu' or device='auto'"
            )
        if device.index is not None and device.index >= count:
            raise StyleTransferError(
                f"device {name!r} does not exist: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise StyleTransferError(
            f"device {name!r} asked for, but MPS is not available here; use device='cpu' or device='auto'"
        )
    return device


def free_memory_bytes(device: torch.device) -> int:
    """Memory a run can still take on ``device``: free GPU memory, else available RAM
    (within the process's cgroup and address-space limits)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return available_ram_bytes()


def resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Antialiased bilinear resize of (N, C, H, W)."""
    if tuple(image.shape[-2:]) == (height, width):
        return image
    return F.interpolate(image, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
