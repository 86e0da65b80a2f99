"""Options: one source of defaults, and every bad value rejected with a clear message."""

from __future__ import annotations

import dataclasses

import pytest

from napari_style_transfer import StyleOptions, StyleTransferError
from napari_style_transfer.options import VGG19_LAYERS, default, min_side_for_layers, option_names


def test_vgg19_layer_names_follow_the_paper():
    assert len(VGG19_LAYERS) == 37
    assert VGG19_LAYERS[:5] == ("conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1")
    assert VGG19_LAYERS.index("conv4_2") == 21
    assert VGG19_LAYERS[-3:] == ("conv5_4", "relu5_4", "pool5")


def test_defaults_follow_the_paper_layers():
    options = StyleOptions()
    assert options.content_layers == ("conv4_2",)
    assert options.style_layers == ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
    assert options.optimizer == "lbfgs"
    assert options.validated() == options


def test_every_option_has_help_and_a_default():
    for field in dataclasses.fields(StyleOptions):
        assert field.metadata["help"], field.name
        assert default(field.name) == getattr(StyleOptions(), field.name)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("steps", 0, "steps must be at least 1"),
        ("steps", 2.5, "steps must be a whole number"),
        ("steps", "10", "steps must be a whole number"),
        ("size", -4, "too small"),
        ("size", 8, "use size >= 16"),
        ("content_weight", -1.0, "content_weight must be 0 or more"),
        ("style_weight", float("nan"), "style_weight must be a finite number"),
        ("tv_weight", "a lot", "tv_weight must be a finite number"),
        ("content_layers", ["conv6_1"], "unknown layer 'conv6_1'"),
        ("style_layers", 3, "must be a list of VGG19 layer names"),
        ("optimizer", "sgd", "optimizer must be one of lbfgs, adam"),
        ("learning_rate", 0.0, "learning_rate must be more than 0"),
        ("init", "zeros", "init must be one of content, noise, style"),
        ("pooling", "min", "pooling must be one of max, avg"),
        ("weights", "", "weights must be one of auto, imagenet, random or a file path"),
        ("device", "gpu", "device must be auto, cpu, cuda, cuda:N or mps"),
        ("seed", 1.5, "seed must be a whole number"),
        ("seed", 2**70, "seed must be between -2\\*\\*63 and 2\\*\\*64 - 1"),
        ("style_scale", 0, "style_scale must be more than 0"),
        ("snapshot_every", -1, "snapshot_every must be 0 (off) or more"),
        ("schedule", "512,256", "schedule sizes must grow from coarse to fine"),
        ("precision", "fp8", "precision must be one of auto, fp32, tf32, bf16"),
        ("content_colours", 1, "content_colours must be False, luminance (or True) or histogram"),
        ("style_loss", "fancy", "style_loss must be one of gram, mean_cov, sliced"),
        ("style_blend", (1.0, -1.0), "style_blend must be 0 or more"),
        ("style_blend", (0.0, 0.0), "style_blend weights are all 0"),
        ("style_layer_weights", (1.0, 1.0), "style_layer_weights needs one weight per style layer"),
        ("average", 1.5, "average must be at most 1"),
        ("keep_grey", "no", "keep_grey must be True or False"),
        ("channels_last", "yes", "channels_last must be True, False or 'auto'"),
        ("cudnn_benchmark", 1, "cudnn_benchmark must be True or False"),
        ("frames", "movie", "frames must be one of independent, time"),
        ("temporal_weight", -1.0, "temporal_weight must be 0 or more"),
        ("time_steps", -2, "time_steps must be 0 (auto) or more"),
        ("time_passes", -1, "time_passes must be 0 (off) or more"),
        ("time_passes", 101, "time_passes must be at most 100"),
        ("batch_frames", -1, "batch_frames must be 0 (auto) or more"),
        ("tile_size", -16, "tile_size must be 0 (auto) or more"),
        ("threads", -1, "threads must be 0 (auto) or more"),
    ],
)
def test_bad_value_is_rejected_with_a_message(name, value, message):
    with pytest.raises(StyleTransferError, match=message.replace("(", r"\(").replace(")", r"\)")):
        StyleOptions.from_kwargs({name: value})


def test_every_option_is_covered_by_the_bad_value_test():
    tested = {p[0] for p in test_bad_value_is_rejected_with_a_message.pytestmark[0].args[1]}
    assert tested == set(option_names())


def test_unknown_option_names_the_known_ones():
    with pytest.raises(StyleTransferError, match="unknown option stpes; known options are steps"):
        StyleOptions.from_kwargs({"stpes": 3})


def test_no_layers_at_all_is_rejected():
    with pytest.raises(StyleTransferError, match="at least one content or style layer"):
        StyleOptions.from_kwargs({"content_layers": [], "style_layers": []})


def test_layers_accept_a_comma_separated_string_and_drop_repeats():
    options = StyleOptions.from_kwargs({"style_layers": "conv1_1, relu2_1,conv1_1"})
    assert options.style_layers == ("conv1_1", "relu2_1")


def test_layers_property_is_in_network_order():
    options = StyleOptions(content_layers=("conv4_2",), style_layers=("conv5_1", "conv1_1"))
    assert options.layers == ("conv1_1", "conv4_2", "conv5_1")


@pytest.mark.parametrize(
    ("layers", "side"), [(["conv1_1"], 1), (["pool1"], 2), (["conv4_2"], 8), (["conv5_1"], 16)]
)
def test_min_side_counts_the_poolings_before_the_deepest_layer(layers, side):
    assert min_side_for_layers(layers) == side


@pytest.mark.parametrize(
    ("schedule", "size", "sizes"),
    [
        ("auto", 512, (128, 256, 512)),
        ("auto", 1024, (256, 512, 1024)),
        ("auto", 384, (384,)),
        ("auto", 32, (32,)),
        ("none", 512, (512,)),
        ("64,512", 512, (64, 512)),
    ],
)
def test_schedule_sizes(schedule, size, sizes):
    from napari_style_transfer.options import schedule_sizes

    assert schedule_sizes(schedule, size) == sizes


def test_an_explicit_schedule_must_end_at_the_working_size():
    with pytest.raises(StyleTransferError, match="the schedule's last size must be the working size 512"):
        StyleOptions.from_kwargs({"schedule": "128,256", "size": 512})


def test_learning_rate_defaults_per_optimizer():
    assert StyleOptions(optimizer="lbfgs").resolved_learning_rate == 1.0
    assert StyleOptions(optimizer="adam").resolved_learning_rate == 0.02
    assert StyleOptions(optimizer="adam", learning_rate=0.1).resolved_learning_rate == 0.1


def test_numpy_scalars_are_accepted_as_numbers():
    import numpy as np

    options = StyleOptions.from_kwargs(
        {"steps": np.int64(3), "style_weight": np.float32(1e5), "seed": np.uint32(7)}
    )
    assert (options.steps, options.style_weight, options.seed) == (3, 1e5, 7)
    assert type(options.steps) is int and type(options.style_weight) is float
    with pytest.raises(StyleTransferError, match="steps must be a whole number"):
        StyleOptions.from_kwargs({"steps": np.bool_(True)})
    switched = StyleOptions.from_kwargs({"keep_grey": np.bool_(False)})
    assert switched.keep_grey is False


def test_a_huge_seed_is_refused_with_a_message_not_an_overflow():
    with pytest.raises(StyleTransferError, match="seed must be between"):
        StyleOptions.from_kwargs({"seed": 10**400})


def test_a_zero_dimensional_array_counts_as_the_number_it_holds():
    import numpy as np

    options = StyleOptions.from_kwargs(
        {
            "style_scale": np.array(2.0),
            "style_blend": np.array(1.0),
            "style_layer_weights": np.array(0.5),
            "style_layers": "conv1_1",
            "steps": np.array(3),
        }
    )
    assert (options.style_scale, options.style_blend, options.style_layer_weights) == (2.0, (1.0,), (0.5,))
    assert options.steps == 3 and type(options.steps) is int


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("content_colours", "array", "content_colours must be False, luminance (or True) or histogram"),
        ("style_layers", "array in a list", "style_layers has unknown layer array"),
        ("content_layers", "array", "content_layers has unknown layer array"),
        ("style_scale", "empty list", "style_scale needs at least one number"),
        ("style_blend", "2-d array", "style_blend must be a finite number, got array"),
    ],
)
def test_an_array_where_a_value_belongs_is_refused_with_a_message(name, value, message):
    import numpy as np

    values = {
        "array": np.array([0.5, 1.0]) if name == "content_colours" else np.array([["conv1_1"]]),
        "array in a list": [np.array(["conv1_1", "conv2_1"])],
        "empty list": [],
        "2-d array": np.ones((2, 2)),
    }
    with pytest.raises(StyleTransferError, match=message.replace("(", r"\(").replace(")", r"\)")):
        StyleOptions.from_kwargs({name: values[value]})
