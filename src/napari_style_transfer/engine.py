"""The optimisation of Gatys, Ecker & Bethge (CVPR 2016) on torch tensors.

Everything here works on (1, 3, H, W) float tensors in [0, 1] (N frames for
:func:`optimize_frames`) that already sit on the run's device; ``api.py`` turns numpy arrays into such tensors and back.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from ._torch_compat import hide_triton

hide_triton()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from .errors import StyleTransferError  # noqa: E402
from .lbfgs import BatchBoxLBFGS, BoxLBFGS, CarriedCurvature  # noqa: E402
from .losses import gram_matrix as gram_matrix  # noqa: E402  (callers have found these here)
from .losses import total_variation as total_variation  # noqa: E402
from .memory import available_ram_bytes  # noqa: E402
from .objective import StyleObjective as StyleObjective  # noqa: E402  (api and scripts import it from here)
from .options import StyleOptions  # noqa: E402
from .speed_probe import channels_last_used, memory_format, onednn_has_native_bf16  # noqa: E402,F401 (re-exports)

T = TypeVar("T")


@dataclass(frozen=True)
class Losses:
    """Weighted loss terms of one evaluation (weights already applied); ``total`` is their sum."""

    total: float
    content: float
    style: float
    tv: float
    temporal: float = 0.0  # a time series' later frames: closeness to the warped previous result


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


#: L-BFGS curvature pairs kept. Each pair holds two images (12 bytes a pixel); 30 lose little
#: loss against 100 for 30% of the memory (docs/benchmarks.md, "Engine notes").
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
    features = objective.content_features(contents)
    targets = [{name: value[i : i + 1] for name, value in features.items()} for i in range(len(start))]

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
    ``_is_mkldnn_bf16_supported`` is no answer: it says yes for emulation too.) False too where
    ``ONEDNN_MAX_CPU_ISA`` caps oneDNN below them (an AVX2 emulation). Asked once per process;
    False where torch cannot tell."""
    if not torch.backends.mkldnn.is_available() or not onednn_has_native_bf16():
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
    while the caller has it, the flags are the caller's. Closing this closes ``steps`` (a
    generator)."""
    try:
        while True:
            with backend_flags(options, device):
                try:
                    item = next(steps)
                except StopIteration:
                    return
            yield item
    finally:
        if isinstance(steps, Generator):
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
