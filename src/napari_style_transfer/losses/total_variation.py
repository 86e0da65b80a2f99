"""The total-variation term: a smoothness prior on the image's pixels."""

from __future__ import annotations

import torch
from torch import nn


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between vertically and horizontally neighbouring pixels."""
    dy = image[..., 1:, :] - image[..., :-1, :]
    dx = image[..., :, 1:] - image[..., :, :-1]
    return dy.pow(2).mean() + dx.pow(2).mean()


class TotalVariationLoss(nn.Module):
    """:func:`total_variation` of the image as a part of the objective."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return total_variation(image)
