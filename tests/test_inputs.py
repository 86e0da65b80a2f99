"""Every kind of input a napari user brings, through the API: it works or fails clearly."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tiny_runs import tiny_options

from napari_style_transfer import OutOfMemoryError, StyleTransferError, WeightsError, iter_stylize, stylize
from napari_style_transfer.api import StyleResult

FAST = tiny_options(steps=3)
#: Shallow layers: lets the property test run many tiny examples quickly.
SHALLOW = {
    "size": 16,
    "steps": 1,
    "weights": "random",
    "content_layers": ["conv1_1"],
    "style_layers": ["conv1_1"],
}


def result_of(content, style, **options):
    return [r for r in iter_stylize(content, style, **{**FAST, **options}) if isinstance(r, StyleResult)][0]


def ramp(shape, dtype, low, high):
    values = np.linspace(low, high, int(np.prod(shape))).reshape(shape)
    return values.astype(dtype)


@pytest.mark.parametrize(
    ("dtype", "low", "high", "scaling"),
    [
        (np.uint8, 0, 255, "dtype range 0..255"),
        (np.uint16, 100, 4000, "data range 100..4000"),
        (np.int32, -50, 70, "data range -50..70"),
        (np.float32, 0.0, 1.0, "float values taken as they are"),
        (np.float64, -5.0, 300.0, "data range -5..300"),
    ],
)
def test_grey_images_of_any_dtype_come_back_grey(style, dtype, low, high, scaling):
    result = result_of(ramp((40, 48), dtype, low, high), style)
    assert result.image.shape == (27, 32) and result.image.dtype == np.float32
    assert scaling in result.value_scaling


def test_grey_content_gives_colour_when_asked_to(style):
    grey = ramp((40, 48), np.uint16, 0, 4095)
    result = result_of(grey, style, keep_grey=False).image
    assert result.shape == (27, 32, 3)
    assert not np.allclose(result[..., 0], result[..., 1])  # coloured by the style, not grey


def test_a_boolean_mask_works_as_a_grey_image(style):
    mask = np.zeros((40, 48), bool)
    mask[10:30, 12:40] = True
    assert result_of(mask, style).image.shape == (27, 32)


def test_rgba_alpha_is_carried_through_unchanged(content, style):
    alpha = np.zeros((40, 48), np.uint8)
    alpha[:, 24:] = 255
    result = result_of(np.dstack([content, alpha]), style).image
    assert result.shape == (27, 32, 4)
    np.testing.assert_allclose(result[:, :14, 3], 0.0, atol=1e-6)
    np.testing.assert_allclose(result[:, 18:, 3], 1.0, atol=1e-6)


def test_float_alpha_within_0_1_is_kept_whatever_the_colour_range(style):
    colour = np.random.default_rng(0).uniform(-1.0, 1.0, (40, 48, 3))  # mapped by its data range
    alpha = np.zeros((40, 48))
    alpha[:, 24:] = 1.0
    result = result_of(np.dstack([colour, alpha]), style).image
    np.testing.assert_allclose(result[:, :14, 3], 0.0, atol=1e-6)
    np.testing.assert_allclose(result[:, 18:, 3], 1.0, atol=1e-6)


def test_float_rgba_alpha_beyond_1_is_mapped_like_its_colour(content, style):
    alpha = np.zeros((40, 48), np.float32)
    alpha[:, 24:] = 255.0
    result = result_of(np.dstack([content, alpha]).astype(np.float32), style).image  # 0..255 floats
    np.testing.assert_allclose(result[:, :14, 3], 0.0, atol=1e-6)
    np.testing.assert_allclose(result[:, 18:, 3], 1.0, atol=1e-6)


@pytest.mark.parametrize("channels", [2, 5])
def test_channels_last_other_than_rgb_or_rgba_is_refused_with_the_fix(style, channels):
    image = np.random.default_rng(0).random((40, 48, channels))
    with pytest.raises(StyleTransferError, match=r"looks like channels.*np.moveaxis\(image, -1, 0\)"):
        iter_stylize(image, style, **FAST)


def test_float_rgb_works(content, style):
    assert result_of(content / 255.0, style).image.shape == (27, 32, 3)


def test_channel_first_multichannel_is_styled_channel_by_channel(style):
    channels = np.stack([ramp((40, 48), np.uint16, 0, 1000), ramp((40, 48), np.uint16, 1000, 0)])
    result = result_of(channels, style)
    assert result.image.shape == (2, 27, 32) and result.frames == 2
    assert not np.array_equal(result.image[0], result.image[1])


def test_a_z_stack_keeps_its_shape_and_is_mapped_by_one_range(style):
    stack = np.stack([ramp((40, 48), np.uint16, 0, 1000 * (z + 1)) for z in range(3)])
    result = result_of(stack, style)
    assert result.image.shape == (3, 27, 32)
    assert "data range 0..3000" in result.value_scaling
    # one mapping for the whole stack: the dim first slice stays darker than the bright last one
    assert result.image[0].mean() < result.image[2].mean()


def test_an_rgb_time_series_keeps_its_shape(content, style):
    movie = np.stack([content, np.roll(content, 3, axis=1)])
    result = result_of(movie, style, snapshot_every=0)
    assert result.image.shape == (2, 27, 32, 3)


def test_each_frame_of_a_time_series_starts_from_the_previous_result(content, style):
    movie = np.stack([content, content])
    options = {**FAST, "steps": 6, "frames": "time", "time_steps": 6, "time_passes": 0}
    records = [r for r in iter_stylize(movie, style, **options) if not isinstance(r, StyleResult)]
    first, second = [r for r in records if r.frame_number == 0], [r for r in records if r.frame_number == 1]
    assert [r.frame for r in (first[0], second[0])] == [(0,), (1,)]
    assert second[0].losses.total < first[0].losses.total  # it starts where frame 0 ended
    assert second[-1].progress == 1.0 and first[-1].progress == 0.5


def test_each_slice_of_a_stack_keeps_its_own_structure(style):
    yy, xx = np.mgrid[0:48, 0:48]
    slices = np.stack([np.sin(xx / 3.0), np.sin(yy / 3.0), np.sin((xx + yy) / 4.0)])  # unlike each other
    result = result_of(slices, style, size=48, steps=10).image

    def likeness(a, b):  # untrained weights may invert grey levels: the sign says nothing
        return abs(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    for z in (1, 2):
        assert likeness(result[z], slices[z]) > 0.5
        assert likeness(result[z], slices[z]) > max(likeness(result[z], slices[k]) for k in range(z)) + 0.3


def test_a_huge_image_is_shrunk_before_it_is_converted(style):
    import tracemalloc

    from napari_style_transfer._image import describe_image

    big = np.zeros((4000, 3200, 3), np.uint8)  # 38 MB; as float32 it would be 154 MB
    big[:2000] = 200
    big[:, :1600, 1] = 90
    tracemalloc.start()
    frame = describe_image(big, "content").frame(longest_side=32)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert frame.rgb.shape == (64, 51, 3)  # block means of 62 x 62 pixels
    assert peak < 40 * 2**20
    np.testing.assert_allclose(frame.rgb[0, 0], np.array([200, 90, 200]) / 255, atol=1e-6)
    np.testing.assert_allclose(frame.rgb[-1, -1], np.array([0, 0, 0]), atol=1e-6)
    # the style is scaled like the content (by 32/4000), so it needs a larger style_scale here
    assert stylize(big, style, **FAST, style_scale=100).shape == (32, 26, 3)


def test_a_run_that_cannot_fit_in_memory_is_refused_with_the_size_that_fits(content, style, monkeypatch):
    monkeypatch.setattr(
        "napari_style_transfer.pipeline.memory_checks.free_memory_bytes", lambda device: 600 * 2**20
    )
    with pytest.raises(
        OutOfMemoryError,
        match=r"needs about .*, more than the 540 MB usable of 600 MB free \(a tenth is kept in reserve\) on cpu: "
        r"use size \d+ or less",
    ):
        iter_stylize(content, style, size=4096, weights="random")


def test_a_style_too_large_for_memory_names_the_style_scale_that_fits(content, style, monkeypatch):
    monkeypatch.setattr(
        "napari_style_transfer.pipeline.memory_checks.free_memory_bytes", lambda device: 2 * 2**30
    )
    with pytest.raises(OutOfMemoryError, match=r"use style_scale [\d.]+ or less"):
        iter_stylize(content, style, **{**FAST, "style_scale": 100})


def test_out_of_memory_during_a_run_becomes_a_message(content, style, monkeypatch):
    import torch

    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        yield  # pragma: no cover

    monkeypatch.setattr("napari_style_transfer.pipeline.optimise.optimize", exhausted)
    with pytest.raises(
        OutOfMemoryError, match="ran out of memory at a working size of 32 px: use a smaller size"
    ):
        stylize(content, style, **FAST)


def test_imagenet_weights_offline_fail_with_a_message(content, style, torch_home, offline):
    with pytest.raises(WeightsError, match="could not download the VGG19 ImageNet weights"):
        stylize(content, style, **{**FAST, "weights": "imagenet"})


def test_a_stack_style_is_refused(content, style):
    with pytest.raises(
        StyleTransferError, match="the style image has shape \\(2, 36, 36, 3\\); give one 2D image"
    ):
        iter_stylize(content, np.stack([style, style]), **FAST)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.array([[np.inf, 1.0], [0.0, 2.0]] * 20), "NaN or infinite"),
        (np.zeros((3, 0, 4)), "is empty"),
        (np.full((40, 40, 3), 128, np.uint8), "is constant"),
        (np.zeros((40, 40), complex), "dtype complex128"),
    ],
)
def test_bad_style_images_are_refused_too(content, bad, message):
    with pytest.raises(StyleTransferError, match=message):
        iter_stylize(content, bad, **FAST)


DTYPES = st.sampled_from([np.uint8, np.uint16, np.int16, np.int64, np.float32, np.float64, np.bool_])


@st.composite
def images(draw):
    dtype = draw(DTYPES)
    shape = draw(
        st.one_of(
            hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=24),
            st.tuples(st.integers(0, 24), st.integers(0, 24), st.sampled_from([1, 2, 3, 4, 5])),
        )
    )
    elements = None
    if np.dtype(dtype).kind == "f":
        elements = st.floats(allow_nan=True, allow_infinity=True, width=np.dtype(dtype).itemsize * 8)
    return draw(hnp.arrays(dtype, shape, elements=elements))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(content=images(), style=images())
def test_any_array_gives_a_valid_image_or_the_projects_own_error(content, style):
    try:
        result = stylize(content, style, **SHALLOW)
    except StyleTransferError as error:
        assert str(error)
        return
    assert result.dtype == np.float32
    assert np.isfinite(result).all() and result.min() >= 0.0 and result.max() <= 1.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc/meminfo")
def test_available_memory_without_psutil_counts_what_the_page_cache_can_give_back(monkeypatch):
    import torch

    from napari_style_transfer.engine import free_memory_bytes

    with_psutil = free_memory_bytes(torch.device("cpu"))
    monkeypatch.setitem(sys.modules, "psutil", None)  # a plain install without napari
    without = free_memory_bytes(torch.device("cpu"))
    assert 0.5 * with_psutil < without < 2 * with_psutil


def test_following_the_style_scale_advice_fits(content, style, monkeypatch):
    import re

    monkeypatch.setattr(
        "napari_style_transfer.pipeline.memory_checks.free_memory_bytes", lambda device: 2 * 2**30
    )
    with pytest.raises(OutOfMemoryError, match=r"use style_scale [\d.]+ or less") as refused:
        iter_stylize(content, style, **{**FAST, "style_scale": 100})
    advised = float(re.search(r"style_scale ([\d.]+) or less", str(refused.value)).group(1))
    iter_stylize(content, style, **{**FAST, "style_scale": advised}).close()  # accepted: no error
