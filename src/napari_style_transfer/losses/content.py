"""The content loss of Gatys et al.: how far the image's activations are from the content's."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ContentLoss(nn.Module):
    """The mean squared error between the image's activations and ``targets`` (the content's,
    by layer), summed over the layers."""

    def __init__(self, targets: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.targets = targets

    def forward(
        self, features: dict[str, torch.Tensor], targets: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """The loss against ``targets`` when given (a frame of a batch brings its own), else
        against this part's; at least one layer."""
        targets = self.targets if targets is None else targets
        losses = [F.mse_loss(features[name], target) for name, target in targets.items()]
        return sum(losses[1:], losses[0])
