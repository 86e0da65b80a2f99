"""The sliced Wasserstein style loss (Heitz et al., CVPR 2021): the distributions of the
activations of the image and of the styles compared along random directions, drawn afresh
each step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .style import Blend, StyleLoss


def random_directions(channels: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random unit vectors in activation space, (C, count), drawn on the CPU."""
    directions = torch.randn(channels, count, generator=generator)
    return directions / directions.norm(dim=0, keepdim=True)


def sorted_projections(flat: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """(..., C, P) activations projected on ``directions`` (C, K) and sorted: (..., K, P)."""
    return torch.sort(directions.transpose(0, 1) @ flat, dim=-1).values


def quantiles(sorted_values: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` evenly spaced quantiles of each row of ``sorted_values`` (..., M), by linear
    interpolation between order statistics, so that distributions of different numbers of
    positions can be compared; the rows themselves when ``count`` is M."""
    m = sorted_values.shape[-1]
    if m == count:
        return sorted_values
    position = (
        (torch.arange(count, device=sorted_values.device, dtype=torch.float32) + 0.5) * (m / count) - 0.5
    ).clamp(0, m - 1)
    low = position.floor().long()
    high = (low + 1).clamp(max=m - 1)
    return torch.lerp(sorted_values[..., low], sorted_values[..., high], position - low)


def sliced_target(sorted_styles: list[torch.Tensor], blend: list[float], count: int) -> torch.Tensor:
    """The blend of the styles' sorted projections (each (K, M_s)) at ``count`` quantiles:
    per direction the 1-D Wasserstein barycentre of the styles' distributions."""
    target: torch.Tensor | None = None
    for values, weight in zip(sorted_styles, blend, strict=True):
        part = quantiles(values, count) * weight
        target = part if target is None else target + part
    assert target is not None, "a blend names at least one style"
    return target


def sliced_wasserstein_loss(projected: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sliced Wasserstein distance (Heitz et al., CVPR 2021): the mean squared difference of
    the image's sorted projections (K, P) and the target's quantiles (K, P)."""
    return (torch.sort(projected, dim=-1).values - target).pow(2).mean()


@dataclass(frozen=True)
class SlicedTarget:
    """The styles of a blend (indices into the loss's ``styles``) and their weights: they are
    projected afresh along each step's directions."""

    styles: tuple[int, ...]
    blend: tuple[float, ...]
    #: or the activations (1, C, H, W) of an image of its own (StyleLoss.targets_of), projected
    #: along the loss's own directions in place of the styles'
    activations: torch.Tensor | None = None


class SlicedLoss(StyleLoss):
    """``sliced``: per layer, the image's activations and the blended styles' projected on as
    many random directions as there are channels, sorted and compared. The directions come
    from a generator seeded with ``seed``, drawn layer by layer at the start and at each
    :meth:`start_step`: the same directions within a step keep L-BFGS's line search on one
    function."""

    scale = 3e-6

    def __init__(
        self, styles: Sequence[Mapping[str, torch.Tensor]], layers: Sequence[str], seed: int | None = None
    ) -> None:
        super().__init__(styles, layers, seed)
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()  # fresh entropy, leaving torch's global generator alone
        else:
            self.generator.manual_seed(seed % 2**63)
        self.directions: dict[str, torch.Tensor] = {}
        self._sorted_styles: dict[tuple[int, str], torch.Tensor] = {}
        self.start_step()

    def start_step(self) -> None:
        """Draw every layer's projections afresh, in layer order."""
        self.directions = {}
        self._sorted_styles = {}
        for layer in self.layers:
            style = self.styles[0][layer]
            channels = style.shape[1]
            self.directions[layer] = random_directions(channels, channels, self.generator).to(style.device)

    def target(self, layer: str, blend: Blend) -> SlicedTarget:
        return SlicedTarget(tuple(index for index, _ in blend), tuple(weight for _, weight in blend))

    def targets_of(self, features: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        return {layer: SlicedTarget((), (1.0,), features[layer]) for layer in self.layers}

    def _sorted_style(self, index: int, layer: str) -> torch.Tensor:
        """Style ``index``'s sorted projections at ``layer`` with this step's directions."""
        key = (index, layer)
        if key not in self._sorted_styles:
            style = self.styles[index][layer]
            flat = style[0].reshape(style.shape[1], -1)
            self._sorted_styles[key] = sorted_projections(flat, self.directions[layer])
        return self._sorted_styles[key]

    def forward(
        self, layer: str, features: torch.Tensor, target: Any, guide: torch.Tensor | None = None
    ) -> torch.Tensor:
        if target.activations is None:
            sorted_styles = [self._sorted_style(index, layer) for index in target.styles]
        else:
            own = target.activations
            sorted_styles = [sorted_projections(own[0].reshape(own.shape[1], -1), self.directions[layer])]
        blend = list(target.blend)
        n, c = features.shape[:2]
        projected = self.directions[layer].transpose(0, 1) @ features.reshape(n, c, -1)
        losses = []
        for item in range(n):
            values = projected[item]
            if guide is not None:  # the positions mostly inside the region
                values = values[:, guide[item, 0] >= 0.5]
                if values.shape[-1] == 0:
                    losses.append(features.new_zeros(()))
                    continue
            losses.append(
                sliced_wasserstein_loss(values, sliced_target(sorted_styles, blend, values.shape[-1]))
            )
        loss = torch.stack(losses)
        return loss.mean() if guide is None else loss
