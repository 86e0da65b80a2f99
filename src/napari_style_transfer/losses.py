"""The loss terms: Gram matrices and their style loss, total variation, and the temporal
loss of a time series."""

from __future__ import annotations

from dataclasses import dataclass

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


# --- the other style losses, blended and regional targets --------------------------------
#
# Each style loss compares the image's activations at one layer with *target statistics* of
# the style image(s). Several styles blend by blending those statistics with the normalised
# ``style_blend`` weights (Gram matrices, means and covariances, or sorted projections): for
# the Gram loss this has the same gradient as the weighted sum of per-style losses, and a
# blend of 1:0 is exactly the first style alone. Regions (guided losses, Gatys et al., CVPR
# 2017) weight each position of a layer by the share of its receptive field that lies in the
# region (``weights``, (N, 1, H*W)); statistics are then normalised by the region's area.


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
    mean = covariance = None
    for feature, weight in zip(features, blend, strict=True):
        m, cov = mean_covariance(feature)
        m, cov = m[0].to(dtype) * weight, cov[0].to(dtype) * weight
        mean = m if mean is None else mean + m
        covariance = cov if covariance is None else covariance + cov
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
    as the Gram loss's backward does. Eigenvalues clamped at r^2 get no gradient. On the CPU
    this costs about a quarter of the autograd version's time at conv1_1 (64 channels, many
    positions); at 512 channels the float64 eigendecomposition, which the squared condition
    number of M needs, is most of what is left (docs/benchmarks.md, "Style controls")."""

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
    target = None
    for values, weight in zip(sorted_styles, blend, strict=True):
        part = quantiles(values, count) * weight
        target = part if target is None else target + part
    return target


def sliced_wasserstein_loss(projected: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sliced Wasserstein distance (Heitz et al., CVPR 2021): the mean squared difference of
    the image's sorted projections (K, P) and the target's quantiles (K, P)."""
    return (torch.sort(projected, dim=-1).values - target).pow(2).mean()
