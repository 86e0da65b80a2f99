"""The mean-covariance style loss: the Wasserstein-2 distance between Gaussians fitted to the
activations of the image and of the styles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .style import Blend, StyleLoss


def mean_covariance(
    features: torch.Tensor, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Means (N, C) and covariances (N, C, C) of (N, C, H, W) activations over positions,
    each position counted by ``weights`` (N, 1, H*W) when given."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    if weights is None:
        mean = flat.mean(-1)
        centred = flat - mean[..., None]
        return mean, torch.bmm(centred, centred.transpose(1, 2)) / (h * w)
    area = weights.sum(-1).clamp_min(1e-12)  # (N, 1)
    mean = (flat * weights).sum(-1) / area
    centred = flat - mean[..., None]
    return mean, torch.bmm(centred * weights, centred.transpose(1, 2)) / area[..., None]


@dataclass(frozen=True)
class GaussianTarget:
    """A style layer's Gaussian: mean (C,), covariance (C, C) with ``ridge`` on its diagonal,
    and that covariance's square root, in ``dtype`` (float64 where the device has it)."""

    mean: torch.Tensor
    covariance: torch.Tensor
    root: torch.Tensor
    ridge: float


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp_min(0).sqrt().unsqueeze(-2)) @ vectors.transpose(-1, -2)


def gaussian_target(features: list[torch.Tensor], blend: list[float], dtype: torch.dtype) -> GaussianTarget:
    """The blend of the styles' Gaussians (weights ``blend``, summing to 1) at one layer.

    The ridge (1e-4 of the mean variance) keeps the matrix square roots' gradients finite
    where a layer has fewer positions than channels (the covariance is then singular)."""
    mean: torch.Tensor | None = None
    covariance: torch.Tensor | None = None
    for feature, weight in zip(features, blend, strict=True):
        m, cov = mean_covariance(feature)
        m, cov = m[0].to(dtype) * weight, cov[0].to(dtype) * weight
        mean = m if mean is None else mean + m
        covariance = cov if covariance is None else covariance + cov
    assert mean is not None and covariance is not None, "a blend names at least one style"
    ridge = 1e-4 * float(covariance.diagonal().mean()) + 1e-12
    covariance = covariance + ridge * torch.eye(len(covariance), dtype=dtype, device=covariance.device)
    return GaussianTarget(mean, covariance, _psd_sqrt(covariance), ridge)


class _Wasserstein2(torch.autograd.Function):
    """:func:`wasserstein2_loss` with a hand-written backward.

    Through autograd the loss differentiates the centring, the covariance's product and two
    products with the target's root (each backward product twice the forward's), and the
    eigendecomposition. By hand: with M = R (S + rI) R (R = S_t^1/2) = V diag(l) V^T, the
    gradient of the loss (times C) is I - R V diag(l^-1/2) V^T R for the covariance S and
    2 (m - m_t) for the mean, and both reach the activations through one product with them,
    as the Gram loss's backward does. Eigenvalues clamped at r^2 get no gradient. It is much
    cheaper than autograd's (docs/benchmarks.md, "Style controls")."""

    @staticmethod
    def forward(ctx, features, weights, mean_t, covariance_t, root, ridge):
        n, c, h, w = features.shape
        flat = features.reshape(n, c, h * w)
        dtype = mean_t.dtype
        # centred before the product: E[x x^T] - m m^T cancels in float32 where the means are
        # large against the spread
        if weights is None:
            area = flat.new_full((n, 1), float(h * w))
            mean = flat.mean(-1)
            centred = flat - mean[..., None]
            covariance = torch.bmm(centred, centred.transpose(1, 2)).div_(h * w)
        else:
            area = weights.sum(-1).clamp_min(1e-12)  # (N, 1)
            mean = (flat * weights).sum(-1) / area
            centred = flat - mean[..., None]
            covariance = torch.bmm(centred * weights, centred.transpose(1, 2)).div_(area[..., None])
        eye = torch.eye(c, dtype=dtype, device=covariance.device)
        covariance = covariance.to(dtype) + ridge * eye
        mean = mean.to(dtype)
        product = root @ covariance @ root
        if ctx.needs_input_grad[0]:
            values, vectors = torch.linalg.eigh(product)
        else:
            values, vectors = torch.linalg.eigvalsh(product), None
        kept = values > ridge**2
        roots = values.clamp_min(ridge**2).sqrt()
        trace = covariance.diagonal(dim1=-2, dim2=-1).sum(-1) + covariance_t.diagonal().sum()
        distance = (mean - mean_t).pow(2).sum(-1) + trace - 2 * roots.sum(-1)
        ctx.save_for_backward(centred, weights, area, mean, mean_t, root, vectors, kept, roots)
        ctx.shape = features.shape
        return (distance / c).float()

    @staticmethod
    def backward(ctx, grad_output):
        centred, weights, area, mean, mean_t, root, vectors, kept, roots = ctx.saved_tensors
        n, c = ctx.shape[:2]
        dtype = mean.dtype
        inverse_roots = torch.where(kept, 1.0 / roots, torch.zeros_like(roots))
        rotated = root @ vectors  # R V: R V diag(l^-1/2) V^T R in two products
        inner = (rotated * inverse_roots.unsqueeze(-2)) @ rotated.transpose(-1, -2)
        scale = grad_output.to(dtype)[:, None, None] / c
        grad_covariance = (torch.eye(c, dtype=dtype, device=root.device) - inner) * scale
        # S = E[(x - m)(x - m)^T]: through the centring the mean gains nothing from S, since the
        # weighted centred activations sum to 0
        grad_mean = 2 * (mean - mean_t) * scale[:, :, 0]
        kind = centred.dtype  # the activations' (float32 in the engine)
        grad = torch.bmm(grad_covariance.to(kind), centred).mul_(2).add_(grad_mean.to(kind)[..., None])
        if weights is not None:
            grad = grad.mul_(weights)
        return grad.div_(area[..., None]).reshape(ctx.shape), None, None, None, None, None


def wasserstein2_loss(
    features: torch.Tensor, target: GaussianTarget, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Per image (N,): squared Wasserstein-2 distance between the Gaussian fitted to the
    activations (over ``weights``' positions) and ``target``, divided by the channels:

        |m - m_t|^2 + tr(S + S_t - 2 (S_t^1/2 S S_t^1/2)^1/2)

    with the ridge added to S as to S_t. The trace of the square root is the sum of the square
    roots of the eigenvalues, whose gradient needs only eigenvectors (stable where eigenvalues
    repeat); the statistics are taken in float32, the rest in the target's dtype."""
    return _Wasserstein2.apply(features, weights, target.mean, target.covariance, target.root, target.ridge)


class MeanCovarianceLoss(StyleLoss):
    """``mean_cov``: the squared Wasserstein-2 distance between the Gaussians fitted to the
    image's activations (over a region's positions) and to the blended styles'."""

    scale = 3e-6

    def target(self, layer: str, blend: Blend) -> GaussianTarget:
        features = [self.styles[index][layer] for index, _ in blend]
        # float64 for the matrix square roots (the squared condition number), where the device has it
        dtype = torch.float32 if features[0].device.type == "mps" else torch.float64
        return gaussian_target(features, [weight for _, weight in blend], dtype)

    def forward(
        self, layer: str, features: torch.Tensor, target: Any, guide: torch.Tensor | None = None
    ) -> torch.Tensor:
        loss = wasserstein2_loss(features, target, guide)
        return loss.mean() if guide is None else loss
