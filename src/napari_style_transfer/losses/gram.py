"""The style loss of Gatys et al.: the mean squared error between Gram matrices."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .style import Blend, StyleLoss


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Gram matrices of (N, C, H, W) activations: (N, C, C), divided by C*H*W.

    Dividing by the number of positions H*W makes the style loss independent of image size;
    the extra 1/C keeps the seed report's (and PyTorch tutorial's) scale, so its style/content
    ratios such as 1e4 and 1e6 mean the same here.
    """
    n, c, h, w = features.shape
    flat = positions_flat(features)
    return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


def positions_flat(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) activations as (N, C, H*W), a view in either layout: reshaping a
    channels-last tensor so would copy it, and the copy would be kept for the backward pass
    beside the activation itself (120 MB at 512 px in fp32)."""
    n, c, h, w = features.shape
    if features.is_contiguous() or not features.is_contiguous(memory_format=torch.channels_last):
        return features.reshape(n, c, h * w)
    return features.permute(0, 2, 3, 1).reshape(n, h * w, c).transpose(1, 2)


class _GramMSE(torch.autograd.Function):
    """mean((gram_matrix(F) - A)^2) with a hand-written backward.

    Autograd differentiates the Gram matrix's batched product with two more products; since
    the Gram matrix is symmetric one suffices: dL/dF = 4 (G - A) F / (C^3 H W), which saves
    time on every step (docs/benchmarks.md, "Engine notes").
    """

    @staticmethod
    def forward(ctx, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n, c, h, w = features.shape
        flat = positions_flat(features)
        difference = torch.bmm(flat, flat.transpose(1, 2)).div_(c * h * w).sub_(target)
        ctx.save_for_backward(flat, difference)
        ctx.shape = features.shape
        ctx.channels_last = not features.is_contiguous() and features.is_contiguous(
            memory_format=torch.channels_last
        )
        return difference.pow(2).mean()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        flat, difference = ctx.saved_tensors
        n, c, h, w = ctx.shape
        scale = grad_output * 4.0 / (n * c**3 * h * w)
        if not ctx.channels_last:
            return torch.bmm(difference, flat).mul_(scale).reshape(n, c, h, w), None
        # the gradient in the features' own layout, (N, H*W, C): autograd adds it to the next
        # layer's channels-last gradient, where an NCHW one takes a strided path (3x the time of
        # a same-layout sum on AVX2); 2-3% of an evaluation at 256 px (docs/benchmarks.md)
        transposed = torch.bmm(flat.transpose(1, 2), difference.transpose(1, 2)).mul_(scale)
        return transposed.view(n, h, w, c).permute(0, 3, 1, 2), None


def gram_mse(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The style loss of one layer: mean squared error between its Gram matrix and ``target``."""
    return _GramMSE.apply(features, target)


class _WeightedGramMSE(torch.autograd.Function):
    """Per image, mean((G_w - A)^2) for the region's Gram matrix G_w = F diag(w) F^T / (C sum w),
    with a hand-written backward as :class:`_GramMSE`'s: dL/dF = 4 (G_w - A) F diag(w) / (C^3 sum w)."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        n, c, h, w = features.shape
        flat = features.reshape(n, c, h * w)
        area = weights.sum(-1, keepdim=True).clamp_min(1e-12)  # (N, 1, 1)
        difference = torch.bmm(flat * weights, flat.transpose(1, 2)).div_(c * area).sub_(target)
        ctx.save_for_backward(flat, difference, weights, area)
        ctx.shape = features.shape
        return difference.pow(2).mean(dim=(1, 2))

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        flat, difference, weights, area = ctx.saved_tensors
        c = ctx.shape[1]
        scale = grad_output[:, None, None] * 4.0 / (c**3 * area)
        return (torch.bmm(difference, flat).mul_(weights).mul_(scale).reshape(ctx.shape), None, None)


def weighted_gram_mse(features: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per image (N,): mean squared error between the region's Gram matrix and ``target``;
    the Gram matrix weights each position by ``weights`` (N, 1, H*W) and divides by C times
    their sum, so a region covering everything gives :func:`gram_matrix`."""
    return _WeightedGramMSE.apply(features, target, weights)


class GramLoss(StyleLoss):
    """``gram``: Gatys et al.'s style loss, the mean squared error between the Gram matrices
    of the image and of the blended styles (a region: the Gram matrix over its positions)."""

    def __init__(
        self, styles: Sequence[Mapping[str, torch.Tensor]], layers: Sequence[str], seed: int | None = None
    ) -> None:
        super().__init__(styles, layers, seed)
        # every target is made of each style's Gram matrices: keep those (C x C) and let the
        # styles' activations go (130 MB at 512 px, kept for the whole run otherwise)
        self.grams = [{layer: gram_matrix(style[layer]) for layer in self.layers} for style in self.styles]
        self.styles = []

    def target(self, layer: str, blend: Blend) -> torch.Tensor:
        target: torch.Tensor | None = None
        for index, weight in blend:
            gram = self.grams[index][layer]
            gram = gram if weight == 1.0 else gram * weight
            target = gram if target is None else target + gram
        assert target is not None, "a blend names at least one style"
        return target

    def forward(
        self, layer: str, features: torch.Tensor, target: Any, guide: torch.Tensor | None = None
    ) -> torch.Tensor:
        if guide is None:
            return gram_mse(features, target)
        return weighted_gram_mse(features, target, guide)
