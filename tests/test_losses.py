"""Gram matrices and losses against explicit formulas."""

from __future__ import annotations

import pytest
import torch

from napari_style_transfer.losses import gram_matrix, total_variation


def test_gram_matrix_matches_the_explicit_sum():
    features = torch.randn(2, 4, 5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    n, c, h, w = features.shape
    expected = torch.zeros(n, c, c, dtype=torch.float64)
    for b in range(n):
        for i in range(c):
            for j in range(c):
                expected[b, i, j] = sum(
                    features[b, i, y, x] * features[b, j, y, x] for y in range(h) for x in range(w)
                ) / (c * h * w)
    torch.testing.assert_close(gram_matrix(features), expected)


def test_gram_matrix_does_not_depend_on_image_size():
    tile = torch.randn(1, 8, 6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    tiled = tile.repeat(1, 1, 3, 2)  # the same statistics over 6x as many positions
    torch.testing.assert_close(gram_matrix(tiled), gram_matrix(tile))


def test_gram_matrix_is_symmetric():
    g = gram_matrix(torch.randn(1, 6, 7, 9, generator=torch.Generator().manual_seed(3)))
    torch.testing.assert_close(g, g.transpose(1, 2))


def test_total_variation_of_a_constant_image_is_zero_and_of_stripes_is_known():
    assert total_variation(torch.full((1, 3, 8, 8), 0.3)).item() == 0.0
    stripes = torch.zeros(1, 1, 4, 4)
    stripes[..., 1::2] = 1.0  # every horizontal neighbour differs by 1, no vertical one does
    assert total_variation(stripes).item() == 1.0


def test_the_gram_style_loss_has_the_gradient_autograd_would_compute():
    from napari_style_transfer.losses import gram_mse

    generator = torch.Generator().manual_seed(4)
    features = torch.randn(2, 5, 4, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 5, 5, generator=generator, dtype=torch.float64)
    target = target + target.transpose(1, 2)
    expected = torch.nn.functional.mse_loss(gram_matrix(features), target)
    torch.testing.assert_close(gram_mse(features, target), expected)
    torch.autograd.gradcheck(lambda f: gram_mse(f, target), (features,))
    (ours,) = torch.autograd.grad(gram_mse(features, target), features)
    (reference,) = torch.autograd.grad(expected, features)
    torch.testing.assert_close(ours, reference)


def test_the_gram_style_loss_gives_a_channels_last_gradient_to_channels_last_features():
    from napari_style_transfer.losses import gram_mse

    generator = torch.Generator().manual_seed(6)
    values = torch.randn(2, 5, 4, 3, generator=generator, dtype=torch.float64)
    features = values.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    target = torch.randn(2, 5, 5, generator=generator, dtype=torch.float64)
    target = target + target.transpose(1, 2)  # a Gram matrix's target is symmetric
    (ours,) = torch.autograd.grad(gram_mse(features, target), features)
    (reference,) = torch.autograd.grad(torch.nn.functional.mse_loss(gram_matrix(features), target), features)
    assert ours.is_contiguous(memory_format=torch.channels_last) and not ours.is_contiguous()
    torch.testing.assert_close(ours, reference)
    torch.autograd.gradcheck(lambda f: gram_mse(f, target), (features,))


def test_the_temporal_loss_is_zero_when_the_image_equals_the_warped_target():
    from napari_style_transfer.losses import temporal_loss

    image = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    reliable = torch.ones(1, 1, 8, 8)
    assert temporal_loss(image, image.clone(), reliable).item() == 0.0


def test_the_temporal_loss_ignores_unreliable_pixels_and_averages_over_all():
    from napari_style_transfer.losses import temporal_loss

    image, target = torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    target[..., :2, :] = 1.0  # the top half differs by 1 ...
    reliable = torch.ones(1, 1, 4, 4)
    reliable[..., 0, :] = 0.0  # ... of which only row 1 is trusted: 4 of 16 pixels
    assert temporal_loss(image, target, reliable).item() == pytest.approx(0.25)
    reliable[..., 1, :] = 0.0
    assert temporal_loss(image, target, reliable).item() == 0.0


def test_the_engine_still_offers_gram_matrix():
    from napari_style_transfer import gram_matrix as from_package
    from napari_style_transfer.engine import gram_matrix as from_engine

    assert from_engine is gram_matrix and from_package is gram_matrix


def _wasserstein2_through_autograd(features, target, weights=None):
    """The mean_cov loss written plainly, for autograd to differentiate."""
    from napari_style_transfer.losses import mean_covariance

    c = features.shape[1]
    mean, covariance = mean_covariance(features, weights)
    covariance = covariance.to(target.mean.dtype) + target.ridge * torch.eye(c, dtype=target.mean.dtype)
    product = target.root @ covariance @ target.root
    cross = torch.linalg.eigvalsh(product).clamp_min(target.ridge**2).sqrt().sum(-1)
    trace = covariance.diagonal(dim1=-2, dim2=-1).sum(-1) + target.covariance.diagonal().sum()
    return ((mean.to(target.mean.dtype) - target.mean).pow(2).sum(-1) + trace - 2 * cross) / c


MEAN_COV_CASES = {
    # name: (image shape, style shape, region weights: None, "own" per image, "shared" (1, 1, HW), "empty")
    "plain": ((2, 6, 5, 4), (1, 6, 6, 6), None),
    "regions": ((2, 6, 5, 4), (1, 6, 6, 6), "own"),
    "one-region-for-all-images": ((2, 6, 5, 4), (1, 6, 6, 6), "shared"),
    "an-empty-region": ((2, 6, 5, 4), (1, 6, 6, 6), "empty"),
    "fewer-positions-than-channels": ((1, 8, 2, 2), (1, 8, 6, 6), None),
    "fewer-positions-with-regions": ((2, 8, 2, 2), (1, 8, 6, 6), "own"),
    "a-style-with-fewer-positions-than-channels": ((2, 8, 5, 4), (1, 8, 2, 2), None),
}


def _mean_cov_case(name, dtype, offset=0.0):
    from napari_style_transfer.losses import gaussian_target

    shape, style_shape, kind = MEAN_COV_CASES[name]
    generator = torch.Generator().manual_seed(7)
    n, c, h, w = shape
    style = torch.randn(style_shape, generator=generator, dtype=torch.float64).relu() + 0.1 + offset
    target = gaussian_target([style], [1.0], torch.float64)
    features = torch.randn(shape, generator=generator, dtype=torch.float64).relu() + 0.2 + offset
    weights = {
        None: None,
        "own": torch.rand(n, 1, h * w, generator=generator, dtype=torch.float64),
        "shared": torch.rand(1, 1, h * w, generator=generator, dtype=torch.float64),
        "empty": torch.zeros(n, 1, h * w, dtype=torch.float64),
    }[kind]
    return features.to(dtype), target, None if weights is None else weights.to(dtype)


@pytest.mark.parametrize("name", list(MEAN_COV_CASES))
def test_the_mean_cov_loss_has_the_value_and_gradient_autograd_would_compute(name):
    from napari_style_transfer.losses import wasserstein2_loss

    features, target, weights = _mean_cov_case(name, torch.float64)
    features.requires_grad_(True)
    ours = wasserstein2_loss(features, target, weights)
    expected = _wasserstein2_through_autograd(features, target, weights)
    torch.testing.assert_close(ours.double(), expected, rtol=1e-6, atol=1e-7)
    scale = torch.arange(
        1.0, features.shape[0] + 1, dtype=torch.float64
    )  # each image's loss counted differently
    (gradient,) = torch.autograd.grad((ours.double() * scale).sum(), features)
    (reference,) = torch.autograd.grad((expected * scale).sum(), features)
    torch.testing.assert_close(gradient, reference, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("offset", [0.0, 15.0], ids=["means-like-the-spread", "means-15x-the-spread"])
def test_the_mean_cov_gradient_of_float32_activations_is_that_of_float64_ones(offset):
    # the engine's case: float32 activations, a float64 target; large means must not cancel
    from napari_style_transfer.losses import wasserstein2_loss

    features, target, weights = _mean_cov_case("regions", torch.float64, offset)
    reference_input = features.clone().requires_grad_(True)
    (reference,) = torch.autograd.grad(
        _wasserstein2_through_autograd(reference_input, target, weights).sum(), reference_input
    )
    single = features.float().requires_grad_(True)
    (gradient,) = torch.autograd.grad(wasserstein2_loss(single, target, weights.float()).sum(), single)
    assert gradient.dtype == torch.float32
    torch.testing.assert_close(
        gradient.double(), reference, rtol=1e-4, atol=1e-4 * float(reference.abs().max())
    )


def test_the_mean_cov_loss_is_zero_for_the_styles_own_activations():
    from napari_style_transfer.losses import gaussian_target, wasserstein2_loss

    style = torch.randn(1, 16, 9, 9, generator=torch.Generator().manual_seed(8)).relu()
    loss = wasserstein2_loss(style, gaussian_target([style], [1.0], torch.float64))
    assert abs(loss.item()) < 1e-5 * float(style.var(dim=(2, 3)).mean())


# --- the style losses as parts ------------------------------------------------------------


def test_every_style_loss_option_has_its_class_in_the_registry():
    from napari_style_transfer.losses import STYLE_LOSS_REGISTRY, StyleLoss
    from napari_style_transfer.options import STYLE_LOSSES

    assert tuple(STYLE_LOSS_REGISTRY) == STYLE_LOSSES
    assert all(issubclass(kind, StyleLoss) for kind in STYLE_LOSS_REGISTRY.values())


def _style_activations(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "small": torch.rand(1, 4, 6, 5, generator=generator),
        "large": torch.rand(1, 8, 3, 4, generator=generator),
    }


@pytest.mark.parametrize("name", ["gram", "mean_cov", "sliced"])
def test_a_style_loss_is_zero_at_its_styles_own_activations_and_positive_elsewhere(name):
    from napari_style_transfer.losses import STYLE_LOSS_REGISTRY

    styles = [_style_activations(1), _style_activations(2)]
    loss = STYLE_LOSS_REGISTRY[name](styles, ("small", "large"), seed=0)
    targets = loss.targets([(0, 1.0)])
    for layer in ("small", "large"):
        same = float(loss(layer, styles[0][layer], targets[layer]))
        other = float(loss(layer, styles[1][layer], targets[layer]))
        assert other > 0 and abs(same) < 1e-5 * other


@pytest.mark.parametrize("name", ["gram", "mean_cov", "sliced"])
def test_a_style_loss_guided_over_every_position_is_its_plain_loss_per_image(name):
    from napari_style_transfer.losses import STYLE_LOSS_REGISTRY

    styles = [_style_activations(1), _style_activations(2)]
    loss = STYLE_LOSS_REGISTRY[name](styles, ("small", "large"), seed=0)
    target = loss.targets([(0, 0.25), (1, 0.75)])["small"]
    images = torch.rand(2, 4, 6, 5, generator=torch.Generator().manual_seed(3))
    guided = loss("small", images, target, torch.ones(2, 1, 30))
    assert guided.shape == (2,)
    plain = torch.stack([loss("small", images[i : i + 1], target) for i in range(2)])
    torch.testing.assert_close(guided, plain, rtol=1e-4, atol=1e-7)


def test_the_sliced_loss_draws_the_same_projections_for_the_same_seed_and_new_ones_each_step():
    from napari_style_transfer.losses import SlicedLoss

    styles = [_style_activations(1)]
    first, again = (
        SlicedLoss(styles, ("small", "large"), seed=5),
        SlicedLoss(styles, ("small", "large"), seed=5),
    )
    for layer in ("small", "large"):
        torch.testing.assert_close(first.directions[layer], again.directions[layer], rtol=0, atol=0)
    before = dict(first.directions)
    first.start_step()
    assert all(not torch.equal(first.directions[layer], before[layer]) for layer in before)


def test_a_region_guide_weights_each_region_by_its_share_of_the_image():
    from napari_style_transfer.losses import RegionGuide

    labels = torch.zeros(1, 1, 4, 4, dtype=torch.int64)
    labels[..., :, :1] = 1  # a quarter of the image
    labels[..., :, 1:] = 2
    guide = RegionGuide(labels)
    guides = guide.guides((4, 4))
    assert sorted(guides) == [1, 2] and guides[1].shape == (1, 1, 16)
    losses = {1: torch.tensor([8.0]), 2: torch.tensor([4.0])}
    total = guide(torch.zeros(1, 3, 4, 4), lambda label, _: losses[label])
    assert total.item() == pytest.approx(0.25 * 8.0 + 0.75 * 4.0)


def test_the_temporal_term_knows_its_curvature():
    from napari_style_transfer.losses import TemporalLoss

    target = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(6))
    reliable = (torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(7)) > 0.5).float()
    term = TemporalLoss(target, reliable)
    image = torch.zeros(1, 3, 4, 4, requires_grad=True)
    (gradient,) = torch.autograd.grad(3.0 * term(image), image)
    # a quadratic: its gradient at the image is the curvature times (image - target)
    torch.testing.assert_close(gradient, term.curvature(image, 3.0) * (image - target).detach())
