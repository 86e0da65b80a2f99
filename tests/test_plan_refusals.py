"""Nasty option values and inputs are refused with the project's own error before any work.

Everything here goes through ``plan`` (what ``iter_stylize`` and ``stylize`` check before the
first step) or ``StyleOptions.validated``; an OverflowError, a ValueError from int() or a
RuntimeError from torch escaping instead is the failure these tests guard against.
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_style_transfer import StyleTransferError, stylize
from napari_style_transfer._image import describe_image
from napari_style_transfer.api import plan
from napari_style_transfer.options import MAX_SIZE, StyleOptions, option_names

RANDOM = {"weights": "random"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"size": 10**400}, f"size must be at most {MAX_SIZE} px, got a number of about 401 digits"),
        ({"size": -(10**5000)}, "too small"),  # str() of it would raise ValueError
        ({"style_scale": 1e300}, "style_scale must be at most"),
        ({"content_weight": 10**400}, "content_weight must be at most"),
        ({"style_weight": -(10**400)}, "style_weight must be 0 or more"),
        ({"learning_rate": 10**400}, "learning_rate must be at most"),
        ({"steps": 10**400, "size": 512}, "steps must be at most"),  # auto schedule: 128, 256, 512
        ({"steps": 10**400, "size": 128, "schedule": "64,128"}, "steps must be at most"),
        ({"seed": 10**5000}, "seed must be between"),
        ({"schedule": "²,32", "size": 32}, "schedule must be auto, none or sizes"),
        ({"schedule": "1" + "0" * 5000, "size": 32}, "schedule must be auto, none or sizes"),
        ({"device": "cuda:²"}, "device must be auto, cpu, cuda, cuda:N or mps"),
        ({"device": "cuda:" + "9" * 30}, "device must be auto, cpu, cuda, cuda:N or mps"),
    ],
)
def test_extreme_option_values_are_refused_before_any_work(content, style, options, message):
    with pytest.raises(StyleTransferError, match=message):
        plan(content, style, **{**RANDOM, **options})


@pytest.mark.parametrize(
    ("device", "fix"), [("cuda:00", "cuda:0"), ("cuda:٣", "cuda:3"), ("mps:01", "mps:1")]
)
def test_a_device_number_torch_cannot_read_is_refused_naming_the_fix(content, style, device, fix):
    with pytest.raises(StyleTransferError, match=f"got '{device}'; write {fix}"):
        plan(content, style, **RANDOM, device=device)


NASTY_NUMBERS = st.one_of(
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [10**400, -(10**400), 10**5000, 2**63, 2**64, 1e300, -1e300, 5e-324, -0.0, 1.7976931348623157e308]
    ),
    st.sampled_from(
        [np.int64(2**63 - 1), np.uint64(2**64 - 1), np.float64(1e300), np.float32(np.inf), np.float16(6e4)]
    ),
    st.sampled_from([True, "12", None, [3], 1j]),
)
NUMERIC_OPTIONS = (
    "steps",
    "size",
    "content_weight",
    "style_weight",
    "tv_weight",
    "learning_rate",
    "seed",
    "style_scale",
    "snapshot_every",
)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(NUMERIC_OPTIONS), value=NASTY_NUMBERS)
def test_any_number_for_a_numeric_option_validates_or_gives_the_projects_error(name, value):
    try:
        StyleOptions(**{name: value}).validated()
    except StyleTransferError as error:
        assert str(error)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(("steps", "size", "style_scale", "content_weight")),
    value=NASTY_NUMBERS,
    schedule=st.sampled_from(["auto", "none", "16,32"]),
)
def test_any_number_for_an_option_that_shapes_the_run_plans_or_gives_the_projects_error(
    content, style, name, value, schedule
):
    try:
        plan(content, style, **RANDOM, schedule=schedule, **{name: value})
    except StyleTransferError as error:
        assert str(error)


# --- inputs ------------------------------------------------------------------------------


def test_a_torch_tensor_that_needs_a_gradient_is_taken_as_content_and_left_untouched(style):
    import torch

    content = torch.linspace(0, 1, 32 * 40).reshape(32, 40).requires_grad_(True)
    before = content.detach().clone()
    result = stylize(content, style, **RANDOM, size=32, steps=1)
    assert result.shape == (26, 32)
    assert content.requires_grad and torch.equal(content.detach(), before)


def test_a_bfloat16_tensor_is_taken_as_an_image(style):
    import torch

    content = torch.linspace(0, 1, 32 * 40).reshape(32, 40).to(torch.bfloat16)
    assert plan(content, style, **RANDOM, size=32).content.shape == (32, 40)


def test_a_ragged_nested_list_is_refused_with_the_projects_error(style):
    with pytest.raises(StyleTransferError, match="the content image cannot be read as an array"):
        plan([[0.0, 1.0], [0.5]], style, **RANDOM)


def test_checking_a_float_image_for_nan_allocates_nothing_of_its_size():
    image = np.linspace(0, 2, 2000 * 2000, dtype=np.float32).reshape(2000, 2000)
    tracemalloc.start()
    describe_image(image, "content")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < image.nbytes / 16  # np.isfinite(image) alone is a quarter of it


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_infinite_values_are_still_refused(bad):
    image = np.linspace(0, 2, 40 * 40).reshape(40, 40)
    image[7, 9] = bad
    with pytest.raises(StyleTransferError, match="NaN or infinite"):
        describe_image(image, "content")


def test_nan_in_a_float_alpha_channel_is_refused():
    image = np.random.default_rng(0).random((40, 40, 4))
    image[3, 3, 3] = np.nan
    with pytest.raises(StyleTransferError, match="NaN or infinite"):
        describe_image(image, "content")


def extreme_image() -> np.ndarray:
    image = np.zeros((40, 40))
    image[:20] = -1.7e308
    image[20:] = 1.7e308
    image[10, 10] = 0.0
    return image


def test_values_near_the_float64_limits_map_to_zero_and_one():
    frame = describe_image(extreme_image(), "content").frame()
    values = frame.rgb[..., 0]
    assert np.isfinite(values).all()
    assert values[0, 0] == 0.0 and values[-1, -1] == 1.0
    assert values[10, 10] == pytest.approx(0.5, abs=1e-6)


def test_values_near_the_float64_limits_survive_shrinking_a_large_image():
    image = np.repeat(np.repeat(extreme_image(), 4, axis=0), 4, axis=1)  # 160 px: block means of 4 x 4
    frame = describe_image(image, "content").frame(longest_side=20)
    values = frame.rgb[..., 0]
    assert frame.shape == (40, 40)
    assert np.isfinite(values).all() and values.min() == 0.0 and values.max() == 1.0
    assert not math.isnan(float(values[10, 10]))


# --- any value for any option ------------------------------------------------------------


class Unequal:
    """A value whose comparisons fail, as a careless caller's own object's might."""

    def __eq__(self, other):
        raise RuntimeError("cannot compare")

    __hash__ = object.__hash__


ODD_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            b"conv1_1",
            1j,
            10**400,
            "",
            ",",
            "1,,2",
            "nan",
            "luminance",
            "conv4_2",
            "relu1_1,pool5",
            "128,256",
            np.float32(np.nan),
            np.int8(-3),
            np.uint64(2**64 - 1),
            np.bool_(True),
            np.str_("conv1_1"),
            np.array(2.0),
            np.array(0.0),
            np.array("conv1_1"),
            np.array(True),
            np.array([0.5, 1.0]),
            np.array([["conv1_1"]]),
            np.array([], dtype=np.float64),
            np.array([1.0, np.nan]),
            Unequal(),
            object(),
            float,
        ]
    ),
)
ODD_VALUES = st.one_of(
    ODD_SCALARS,
    st.lists(ODD_SCALARS, max_size=6),
    st.lists(ODD_SCALARS, max_size=4).map(tuple),
    st.lists(st.lists(st.floats(0, 2), max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=3), ODD_SCALARS, max_size=2),
    st.frozensets(st.integers(0, 3), max_size=3),
)


@settings(max_examples=600, deadline=None, derandomize=True, database=None)
@given(options=st.dictionaries(st.sampled_from(option_names()), ODD_VALUES, max_size=3))
def test_any_value_for_any_option_validates_or_gives_the_projects_error(options):
    try:
        checked = StyleOptions(**options).validated()
    except StyleTransferError as error:
        assert str(error)
    else:
        assert checked.validated() == checked  # what validation returns is itself valid


# --- plans that would fail late or run slow for nothing ----------------------------------


def test_ragged_style_regions_are_refused_with_the_projects_error(content, style):
    with pytest.raises(StyleTransferError, match="style_regions cannot be read as a label image"):
        plan(content, style, **RANDOM, size=32, style_regions=[[1, 0, 1], [1]])


def test_a_style_enlarged_with_a_tiny_content_is_warned_about_with_the_fix(style):
    with pytest.warns(UserWarning, match="the style is enlarged 32-fold, to 1152x1152 px") as caught:
        plan(np.array([[[0, 128, 255]]], np.uint8), style, **RANDOM, size=32)  # one RGB pixel
    assert "use a size near the content's own (16 px) or style_scale 0.0312" in str(caught[0].message)


def test_a_style_shrunk_to_the_working_size_is_not_warned_about(content, style):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan(content, style, **RANDOM, size=32)
        plan(content, style, **RANDOM, size=32, style_scale=50.0)  # enlarged as asked, not by the content


def test_a_run_whose_first_steps_lower_nothing_is_warned_about_with_the_fix(content, style):
    # init=content starts at the content term's minimum; this much content weight leaves no
    # step of the line search that lowers the loss (measured with the untrained weights)
    with pytest.warns(UserWarning, match="no L-BFGS step lowers the loss from the start image") as caught:
        stylize(content, style, **RANDOM, size=32, steps=4, content_weight=1e30)
    assert "raise style_weight or lower content_weight" in str(caught[0].message)


def test_an_ordinary_run_is_not_warned_about_stalling(content, style):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stylize(content, style, **RANDOM, size=32, steps=4)
