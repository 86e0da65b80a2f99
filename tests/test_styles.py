"""Style controls: style losses, several styles, regions, colour modes, averaged iterates
(tiny images, untrained weights)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from tiny_runs import objective_for, tiny_options

from napari_style_transfer import StyleTransferError, iter_stylize, stylize
from napari_style_transfer.api import StyleResult
from napari_style_transfer.engine import optimize
from napari_style_transfer.losses import (
    gram_matrix,
    quantiles,
    weighted_gram_mse,
)
from napari_style_transfer.options import StyleOptions

FAST = tiny_options(steps=4)
LOSSES = ("gram", "mean_cov", "sliced")


def result_of(content, style, **options) -> StyleResult:
    *_, result = iter_stylize(content, style, **{**FAST, **options})
    return result


@pytest.fixture
def red() -> np.ndarray:
    image = np.full((36, 36, 3), 0.1, np.float32)
    image[..., 0] = np.linspace(0.7, 1.0, 36)[None, :]
    return image


@pytest.fixture
def blue() -> np.ndarray:
    image = np.full((36, 36, 3), 0.1, np.float32)
    image[..., 2] = 0.9
    image[::3, :, 2] = 0.4
    return image


def image_tensor(seed: int, size: int = 32) -> torch.Tensor:
    return torch.rand((1, 3, size, size), generator=torch.Generator().manual_seed(seed))


# --- defaults -----------------------------------------------------------------------------


def test_default_options_give_the_same_image_as_explicit_paper_settings(content, style):
    plain = stylize(content, style, **FAST)
    explicit = stylize(
        content,
        [style],
        **FAST,
        style_loss="gram",
        style_blend=(1.0,),
        style_layer_weights=(1.0,) * 5,
        style_scale=(1.0,),
        content_colours=False,
        average=None,
    )
    np.testing.assert_array_equal(plain, explicit)


# --- the losses -------------------------------------------------------------------------


@pytest.mark.parametrize("loss", LOSSES)
def test_style_loss_is_zero_when_image_and_style_statistics_match(loss):
    image, other = image_tensor(1), image_tensor(2)
    objective = objective_for(other, image, style_loss=loss, content_weight=0.0)
    with torch.no_grad():
        same = objective(image)[1][1].item()
        different = objective(other)[1][1].item()
    assert different > 0
    assert abs(same) < 1e-5 * different


@pytest.mark.parametrize("loss", LOSSES)
def test_style_loss_decreases_in_a_short_run(content, style, loss):
    steps = [r for r in iter_stylize(content, style, **{**FAST, "steps": 8}, style_loss=loss, init="noise")][
        :-1
    ]
    assert steps[-1].losses.style < 0.8 * steps[0].losses.style


def test_quantiles_compare_distributions_of_different_sizes():
    values = torch.sort(torch.rand(4, 10, generator=torch.Generator().manual_seed(0)), dim=-1).values
    doubled = torch.sort(torch.cat([values, values], dim=-1), dim=-1).values
    torch.testing.assert_close(quantiles(doubled, 10), values, rtol=0, atol=0)


def test_sliced_loss_compares_a_style_of_another_size():
    image = image_tensor(3, 32)
    tiled = image.repeat(1, 1, 2, 2)  # the same distribution over four times the positions
    objective = objective_for(
        image_tensor(4), tiled, style_loss="sliced", style_layers=("conv1_1",), content_weight=0.0
    )
    with torch.no_grad():
        same = objective(image)[1][1].item()
        different = objective(image_tensor(4))[1][1].item()
    assert same < 0.05 * different  # borders differ: padding sees other neighbours


def test_sliced_directions_are_drawn_afresh_each_step_from_the_seed():
    first = objective_for(image_tensor(1), image_tensor(2), style_loss="sliced", seed=7)
    again = objective_for(image_tensor(1), image_tensor(2), style_loss="sliced", seed=7)
    before = first.style_loss.directions["conv1_1"].clone()
    torch.testing.assert_close(again.style_loss.directions["conv1_1"], before, rtol=0, atol=0)
    first.new_directions()
    assert not torch.equal(first.style_loss.directions["conv1_1"], before)


def test_style_layer_weights_scale_each_layers_style_loss():
    image, style = image_tensor(1), image_tensor(2)
    only_first = objective_for(image, style, style_layer_weights=(1, 0, 0, 0, 0), content_weight=0.0)
    first_layer = objective_for(image, style, style_layers=("conv1_1",), content_weight=0.0)
    with torch.no_grad():
        torch.testing.assert_close(only_first(image)[1], first_layer(image)[1])


def test_a_region_covering_everything_has_the_plain_gram_matrix():
    features = torch.rand(1, 8, 5, 6, generator=torch.Generator().manual_seed(0))
    target = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(1))
    plain = (gram_matrix(features) - target).pow(2).mean()
    torch.testing.assert_close(weighted_gram_mse(features, target, torch.ones(1, 1, 30))[0], plain)


# --- several styles -----------------------------------------------------------------------


@pytest.mark.parametrize("loss", LOSSES)
def test_blend_one_to_zero_equals_the_single_style_run(content, red, blue, loss):
    single = stylize(content, red, **FAST, style_loss=loss)
    blended = stylize(content, [red, blue], **FAST, style_loss=loss, style_blend=(1.0, 0.0))
    np.testing.assert_array_equal(single, blended)


def test_an_equal_blend_compares_with_the_mean_of_the_styles_gram_matrices():
    first, second = image_tensor(1), image_tensor(2)
    blended = objective_for(image_tensor(3), [first, second])
    one, two = objective_for(image_tensor(3), first), objective_for(image_tensor(3), second)
    for name, target in blended.style_targets.items():
        torch.testing.assert_close(target, 0.5 * one.style_targets[name] + 0.5 * two.style_targets[name])


def test_style_scale_applies_per_style(content, red, blue):
    *_, result = iter_stylize(content, [red, blue], **{**FAST, "steps": 1}, style_scale=(1.0, 2.0))
    assert result.options.style_scale == (1.0, 2.0)
    with pytest.raises(StyleTransferError, match="style_scale has 3 values but there are 2 styles"):
        stylize(content, [red, blue], **FAST, style_scale=(1.0, 2.0, 3.0))


@pytest.mark.parametrize(
    "styles, blend, message",
    [
        (0, (), "the style list is empty"),
        (2, (1.0,), "style_blend has 1 weight but there are 2 styles"),
        (2, (1.0, -1.0), "style_blend must be 0 or more"),
        (2, (0.0, 0.0), "style_blend weights are all 0"),
    ],
)
def test_bad_style_lists_and_blends_are_refused(content, red, styles, blend, message):
    with pytest.raises(StyleTransferError, match=message):
        iter_stylize(content, [red] * styles, **FAST, style_blend=blend)


def test_unknown_style_loss_is_refused(content, style):
    with pytest.raises(StyleTransferError, match="style_loss must be one of gram, mean_cov, sliced"):
        iter_stylize(content, style, **FAST, style_loss="wasserstein")


# --- regions ------------------------------------------------------------------------------


def three_bands(shape=(40, 48)) -> np.ndarray:
    labels = np.zeros(shape, np.int32)
    third = shape[1] // 3
    labels[:, :third] = 1
    labels[:, -third:] = 2
    return labels  # style 1 left, content middle, style 2 right


# With untrained weights the Gram loss does not carry colour (a plain red-style run gets no
# redder in 12 steps); the Gram loss is checked with colour-passing weights further down.
@pytest.mark.parametrize("loss", ["mean_cov", "sliced"])
def test_each_region_moves_toward_its_own_style_and_label_0_stays_nearest_the_content(
    content, red, blue, loss
):
    result = stylize(
        content,
        [red, blue],
        style_regions=three_bands(),
        **{**FAST, "size": 64, "steps": 12},
        style_loss=loss,
    )
    start = stylize(content, red, **{**FAST, "size": 64, "steps": 1, "style_weight": 0.0})
    parts = {"left": np.s_[:, :16], "middle": np.s_[:, 24:29], "right": np.s_[:, -16:]}

    def redness(image):
        return image[..., 0].mean() - image[..., 2].mean()

    moved = {name: redness(result[part]) - redness(start[part]) for name, part in parts.items()}
    assert moved["left"] > 0 > moved["right"]  # left toward red, right toward blue
    distance = {name: np.abs(result[part] - start[part]).mean() for name, part in parts.items()}
    assert min(distance, key=distance.get) == "middle"


@pytest.fixture
def colour_vgg19(tmp_path, untrained_vgg19_state) -> str:
    """Untrained VGG19 weights whose conv1_1 passes R, G and B through in its first three
    channels, so that a Gram matrix of conv1_1 carries colour (written by the test)."""
    state = {name: tensor.clone() for name, tensor in untrained_vgg19_state.items()}
    weight, bias = state["features.0.weight"], state["features.0.bias"]
    for channel in range(3):
        weight[channel].zero_()
        weight[channel, channel, 1, 1] = 1.0
        bias[channel] = 3.0  # above the normalised colours' range: the channel stays linear
    path = tmp_path / "colour_vgg19.pth"
    torch.save(state, path)
    return str(path)


def test_gram_regions_move_toward_their_own_styles_colours(content, red, blue, colour_vgg19):
    options = {**FAST, "size": 64, "weights": colour_vgg19, "style_layers": ("conv1_1",)}
    result = stylize(content, [red, blue], style_regions=three_bands(), **{**options, "steps": 12})
    start = stylize(content, red, **{**options, "steps": 1, "style_weight": 0.0})
    parts = {"left": np.s_[:, :16], "middle": np.s_[:, 24:29], "right": np.s_[:, -16:]}

    def redness(image):
        return image[..., 0].mean() - image[..., 2].mean()

    moved = {name: redness(result[part]) - redness(start[part]) for name, part in parts.items()}
    assert moved["left"] > 0.2 and moved["right"] < -0.2  # left toward red, right toward blue
    assert abs(moved["middle"]) < 0.1


@pytest.mark.parametrize("loss", LOSSES)
def test_one_region_over_the_whole_image_is_the_plain_loss(loss):
    image, style = image_tensor(1, 64), image_tensor(2)
    plain = objective_for(image_tensor(3, 64), style, style_loss=loss)
    regional = objective_for(
        image_tensor(3, 64), [style, image_tensor(4)], style_loss=loss, style_blend=(1, 0)
    )
    regional.set_regions(torch.ones((1, 1, 64, 64), dtype=torch.int64))
    with torch.no_grad():
        torch.testing.assert_close(regional(image)[1], plain(image)[1], rtol=1e-4, atol=0)


def test_region_labels_of_any_size_are_resized_by_nearest_neighbour(content, red, blue):
    options = {**FAST, "size": 64}
    small = stylize(content, [red, blue], style_regions=three_bands((40, 48)), **options)
    large = stylize(
        content, [red, blue], style_regions=np.repeat(np.repeat(three_bands((40, 48)), 2, 0), 2, 1), **options
    )
    np.testing.assert_array_equal(small, large)


def test_a_stack_takes_one_label_image_per_frame(content, red, blue):
    stack = np.stack([content, content])
    labels = np.stack([three_bands(), np.zeros((40, 48), np.int32)])
    result = stylize(stack, [red, blue], style_regions=labels, **{**FAST, "size": 64})
    plain_second = stylize(content, [red, blue], style_regions=labels[1], **{**FAST, "size": 64})
    np.testing.assert_array_equal(result[1], plain_second)
    assert not np.array_equal(result[0], result[1])


def test_a_region_too_small_for_the_deepest_layer_is_warned_and_styled_as_label_0(content, red, blue):
    labels = three_bands()
    labels[0, 0] = 2  # a label 1 pixel: well below one conv5_1 position
    tiny = np.zeros_like(labels)
    tiny[0, 0] = 1
    with pytest.warns(UserWarning, match="label 1 covers less than one position of the deepest style layer"):
        warned = stylize(content, [red, blue], style_regions=tiny, **{**FAST, "size": 64})
    plain = stylize(content, [red, blue], style_regions=np.zeros_like(labels), **{**FAST, "size": 64})
    np.testing.assert_array_equal(warned, plain)


def test_style_regions_are_not_modified(content, red, blue):
    labels = three_bands()
    labels[0, 0] = 1
    labels[0:2, 20] = 2
    before = labels.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stylize(content, [red, blue], style_regions=labels, **{**FAST, "size": 64, "steps": 1})
    np.testing.assert_array_equal(labels, before)


@pytest.mark.parametrize(
    "labels, message",
    [
        (three_bands().astype(np.float32), "style_regions must be an integer label image"),
        (three_bands() * 2, "style_regions has label 4 but there are 2 styles"),
        (three_bands() - 1, "style_regions has label -1"),
        (three_bands((40, 80)), "aspect ratios differ"),
        (np.zeros((3, 40, 48), np.int32), "style_regions has shape"),
    ],
)
def test_bad_style_regions_are_refused_before_any_work(content, red, blue, labels, message):
    with pytest.raises(StyleTransferError, match=message):
        iter_stylize(content, [red, blue], style_regions=labels, **FAST)


def test_style_blend_with_regions_is_refused(content, red, blue):
    with pytest.raises(StyleTransferError, match="leave out style_blend"):
        iter_stylize(content, [red, blue], style_regions=three_bands(), style_blend=(1, 1), **FAST)


# --- colour -------------------------------------------------------------------------------


def test_histogram_colours_match_the_styles_colours_to_the_content_before_the_run(content, style):
    from skimage.exposure import match_histograms

    from napari_style_transfer._image import describe_image

    rgb = describe_image(content, "content").frame(longest_side=32).rgb
    matched = match_histograms(
        describe_image(style, "style").frame(longest_side=32).rgb, rgb, channel_axis=-1
    )
    np.testing.assert_array_equal(
        stylize(content, style, **FAST, content_colours="histogram"),
        stylize(content, matched.astype(np.float32), **FAST),
    )


def test_content_colours_true_is_the_luminance_mode(content, style):
    assert StyleOptions(content_colours=True).validated().content_colours == "luminance"
    np.testing.assert_array_equal(
        stylize(content, style, **FAST, content_colours=True),
        stylize(content, style, **FAST, content_colours="luminance"),
    )


# --- averaged iterates ---------------------------------------------------------------------


def test_average_yields_the_moving_average_of_the_adam_iterates():
    content, style = image_tensor(1), image_tensor(2)
    plain = StyleOptions(weights="random", optimizer="adam", steps=5).validated()
    averaged = StyleOptions(weights="random", optimizer="adam", steps=5, average=0.5).validated()
    iterates = [image.clone() for _, _, image in optimize(objective_for(content, style), content, plain)]
    shown = [image.clone() for _, _, image in optimize(objective_for(content, style), content, averaged)]
    expected, total = torch.zeros_like(content), 0.0
    for step, iterate in enumerate(iterates, start=1):
        expected = 0.5 * expected + 0.5 * iterate
        total = 0.5 * total + 0.5
        torch.testing.assert_close(shown[step - 1], expected / total)


def test_average_with_lbfgs_is_refused(content, style):
    with pytest.raises(StyleTransferError, match="optimizer='adam' only"):
        iter_stylize(content, style, **FAST, average=0.99)


# --- settings -----------------------------------------------------------------------------


def test_results_record_every_style_control_but_not_the_label_image(content, red, blue):
    result = result_of(
        content,
        [red, blue],
        size=64,
        style_regions=three_bands(),
        style_loss="mean_cov",
        content_colours="histogram",
        optimizer="adam",
        average=0.9,
        style_layer_weights=(1, 1, 1, 1, 0.5),
    )
    metadata = result.metadata()
    options = metadata["options"]
    assert options["style_loss"] == "mean_cov" and options["content_colours"] == "histogram"
    assert options["average"] == 0.9 and options["style_layer_weights"] == [1, 1, 1, 1, 0.5]
    assert metadata["styles"] == 2
    assert metadata["style_regions"] == {"shape": [40, 48], "labels": [0, 1, 2], "dropped": []}
    assert len(json.dumps(metadata)) < 2000  # plain values, no pixels


def test_the_region_gram_loss_gradient_is_that_of_autograd():
    features = torch.rand(
        2, 6, 4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64, requires_grad=True
    )
    target = torch.rand(1, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    target = target + target.transpose(1, 2)  # a Gram matrix is symmetric (the backward relies on it)
    weights = torch.rand(2, 1, 20, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: weighted_gram_mse(f, target, weights), (features,))


def test_the_objective_is_the_weighted_sum_of_its_parts():
    from napari_style_transfer.losses import temporal_loss, total_variation

    content, image = image_tensor(1), image_tensor(3)
    objective = objective_for(content, image_tensor(2), content_weight=2.0, style_weight=3.0, tv_weight=5.0)
    objective.temporal_weight = 7.0
    target, reliable = image_tensor(4), torch.ones(1, 1, 32, 32)
    objective.set_temporal(target, reliable)
    with torch.no_grad():
        total, terms = objective(image)
        features = objective.features(image)
        content_part = objective.content_loss(features)
        style_part = sum(
            objective.style_loss(name, features[name], objective.style_targets[name])
            for name in objective.style_layers
        )
    expected = torch.stack(
        [
            2.0 * content_part,
            3.0 * style_part,
            5.0 * total_variation(image),
            7.0 * temporal_loss(image, target, reliable),
        ]
    )
    torch.testing.assert_close(terms, expected)
    torch.testing.assert_close(total, expected.sum())
