"""The temporal term of a time series' later frames (Ruder, Dosovitskiy & Brox, GCPR 2016)."""

from __future__ import annotations

import torch
from torch import nn


def temporal_loss(image: torch.Tensor, target: torch.Tensor, reliable: torch.Tensor) -> torch.Tensor:
    """Ruder, Dosovitskiy & Brox (GCPR 2016), eq. 7: the mean over pixels and channels of
    ``reliable * (image - target)^2``.

    ``image`` and ``target`` are (N, C, H, W) in [0, 1] (the target is the previous frame's
    result warped onto this frame); ``reliable`` is (N, 1, H, W) in [0, 1], 0 where the flow
    cannot be trusted (those pixels are left to the other losses). Dividing by every pixel,
    trusted or not, as the paper does, keeps the weight's meaning when a frame has large
    disocclusions.
    """
    return (reliable * (image - target).pow(2)).mean()


class TemporalLoss(nn.Module):
    """:func:`temporal_loss` towards ``target`` (N, 3, H, W) where ``reliable`` (N, 1, H, W,
    0..1) is high, as a part of the objective; it also knows its own curvature."""

    def __init__(self, target: torch.Tensor, reliable: torch.Tensor) -> None:
        super().__init__()
        self.target = target.detach()
        self.reliable = reliable.detach()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return temporal_loss(image, self.target, self.reliable)

    def curvature(self, image: torch.Tensor, weight: float) -> torch.Tensor:
        """The second derivative of ``weight`` times this term per value of ``image``: 2 weight
        reliable / the number of values (the loss is a mean), (N, 1, H, W) to broadcast over
        the channels."""
        reliable = self.reliable.to(image.device, torch.float32)
        return (2.0 * weight / image.numel()) * reliable
