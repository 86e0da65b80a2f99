"""What every style loss offers: targets for a blend of styles, and the loss of an image.

A style loss compares the image's activations at one layer with *target statistics* of the
style image(s). Several styles blend by blending those statistics with the normalised
``style_blend`` weights (Gram matrices, means and covariances, or sorted projections): for the
Gram loss this has the same gradient as the weighted sum of per-style losses, and a blend of
1:0 is exactly the first style alone. Regions (guided losses, Gatys et al., CVPR 2017) weight
each position of a layer by the share of its receptive field that lies in the region (a
``guide``, (N, 1, H*W), see :class:`~napari_style_transfer.losses.regions.RegionGuide`);
statistics are then normalised by the region's area.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

#: Style images by index with their weights in a blend (weights of a blend sum to 1).
Blend = Sequence[tuple[int, float]]


class StyleLoss(nn.Module, ABC):
    """One style loss over the style layers. A new one is a subclass with ``target`` and
    ``forward``, and an entry in :data:`~napari_style_transfer.losses.STYLE_LOSS_REGISTRY`.

    ``styles`` holds each style image's activations by layer (float32, no gradient);
    ``layers`` are the style layers; ``seed`` is for losses that draw at random (None:
    fresh entropy).
    """

    #: The factor that puts this loss's strength at a given style_weight near the Gram loss's
    #: (docs/benchmarks.md, "Engine notes").
    scale: ClassVar[float] = 1.0

    def __init__(
        self, styles: Sequence[Mapping[str, torch.Tensor]], layers: Sequence[str], seed: int | None = None
    ) -> None:
        super().__init__()
        self.styles = list(styles)
        self.layers = tuple(layers)

    def targets(self, blend: Blend) -> dict[str, Any]:
        """Per style layer, the target statistics of the styles in ``blend``."""
        return {layer: self.target(layer, blend) for layer in self.layers}

    @abstractmethod
    def target(self, layer: str, blend: Blend) -> Any:
        """The statistics of the styles in ``blend`` at ``layer``, blended by their weights."""

    def targets_of(self, features: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """Per style layer, the target statistics of an image of its own: its activations
        ``features`` by layer ((1, C, H, W) float32, no gradient), as :meth:`targets` gives a
        style's (a time series' later frame compares with the previous result's)."""
        return type(self)([features], self.layers, None).targets([(0, 1.0)])

    @abstractmethod
    def forward(
        self, layer: str, features: torch.Tensor, target: Any, guide: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The loss of (N, C, H, W) activations at ``layer`` against ``target``: a scalar (the
        mean over images), or with ``guide`` (N, 1, H*W) the loss of each image's region (N,)."""

    def start_step(self) -> None:
        """Called before each optimiser step (the sliced loss draws its projections afresh)."""
