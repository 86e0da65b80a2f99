"""The loss terms: Gram matrices and their style loss, total variation, and the temporal
loss of a time series."""

from __future__ import annotations

import torch


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Gram matrices of (N, C, H, W) activations: (N, C, C), divided by C*H*W.

    Dividing by the number of positions H*W makes the style loss independent of image size;
    the extra 1/C keeps the seed report's (and PyTorch tutorial's) scale, so its style/content
    ratios such as 1e4 and 1e6 mean the same here.
    """
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


class _GramMSE(torch.autograd.Function):
    """mean((gram_matrix(F) - A)^2) with a hand-written backward.

    Autograd differentiates the Gram matrix's batched product with two more products; since
    the Gram matrix is symmetric one suffices: dL/dF = 4 (G - A) F / (C^3 H W). At 256 px
    this takes about a tenth off a step on the CPU.
    """

    @staticmethod
    def forward(ctx, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n, c, h, w = features.shape
        flat = features.reshape(n, c, h * w)
        difference = torch.bmm(flat, flat.transpose(1, 2)).div_(c * h * w).sub_(target)
        ctx.save_for_backward(flat, difference)
        ctx.shape = features.shape
        return difference.pow(2).mean()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        flat, difference = ctx.saved_tensors
        n, c, h, w = ctx.shape
        scale = grad_output * 4.0 / (n * c**3 * h * w)
        return torch.bmm(difference, flat).mul_(scale).reshape(n, c, h, w), None


def gram_mse(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The style loss of one layer: mean squared error between its Gram matrix and ``target``."""
    return _GramMSE.apply(features, target)


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between vertically and horizontally neighbouring pixels."""
    dy = image[..., 1:, :] - image[..., :-1, :]
    dx = image[..., :, 1:] - image[..., :, :-1]
    return dy.pow(2).mean() + dx.pow(2).mean()


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
