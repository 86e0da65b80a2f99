"""Region guides (Gatys et al., CVPR 2017): a style loss over each labelled region of the image."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class RegionGuide(nn.Module):
    """Label k >= 1 of ``labels`` (N, 1, H, W integers at the image's size; N = 1 for all
    images alike) takes the k-th style, label 0 none."""

    def __init__(self, labels: torch.Tensor) -> None:
        super().__init__()
        self.labels = labels
        self._guides: dict[tuple[int, int], dict[int, torch.Tensor]] = {}

    def guides(self, shape: tuple[int, int]) -> dict[int, torch.Tensor]:
        """Per label present, (N, 1, h*w) shares of each position of an (h, w) layer that lie
        in the region (the guides of Gatys et al. 2017, downsampled by area)."""
        if shape not in self._guides:
            guides = {}
            for label in torch.unique(self.labels).tolist():
                if label == 0:
                    continue
                mask = (self.labels == label).float()
                guides[label] = F.interpolate(mask, size=shape, mode="area").flatten(2)
            self._guides[shape] = guides
        return self._guides[shape]

    def forward(
        self, features: torch.Tensor, region_loss: Callable[[int, torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """The style loss of (N, C, h, w) activations over the regions: ``region_loss(label,
        guide)`` gives each image's loss (N,) of one region, weighted by the region's share of
        the image, so a region covering everything is the plain loss and a small region pulls
        each of its pixels no harder than a large one."""
        total = features.new_zeros(features.shape[0])
        positions = features.shape[2] * features.shape[3]
        for label, guide in self.guides((features.shape[2], features.shape[3])).items():
            share = guide.sum(-1)[:, 0] / positions
            total = total + share * region_loss(label, guide)
        return total.mean()
