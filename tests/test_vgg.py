"""The feature extractor: its own convolutions on the loaded weights, the paper's names, the cut."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from napari_style_transfer.options import VGG19_LAYERS
from napari_style_transfer.vgg import IMAGENET_MEAN, IMAGENET_STD, VGGFeatures
from napari_style_transfer.weights import load_vgg19_features


@pytest.fixture(scope="module")
def features() -> nn.Sequential:
    return load_vgg19_features("random").features


@pytest.fixture
def image() -> torch.Tensor:
    return torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def sliced(features: nn.Sequential, name: str, image: torch.Tensor) -> torch.Tensor:
    """The reference: run the network up to ``name`` by slicing it."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return features[: VGG19_LAYERS.index(name) + 1]((image - mean) / std)


def test_hooks_capture_the_same_activations_as_slicing_for_every_layer(features, image):
    extractor = VGGFeatures(features, VGG19_LAYERS, padding="zeros")
    with torch.no_grad():
        captured = extractor(image)
    assert list(captured) == list(VGG19_LAYERS)
    for name in VGG19_LAYERS:
        torch.testing.assert_close(captured[name], sliced(features, name, image), msg=name)


@pytest.mark.parametrize("name", ["conv1_1", "conv4_2", "conv5_1"])
def test_a_conv_layer_is_captured_before_the_in_place_relu(features, image, name):
    with torch.no_grad():
        captured = VGGFeatures(features, [name], padding="zeros")(image)[name]
    assert (captured < 0).any(), "a conv output without negatives was overwritten by the ReLU"
    torch.testing.assert_close(captured, sliced(features, name, image))


def test_the_network_is_cut_after_the_deepest_requested_layer(features):
    extractor = VGGFeatures(features, ["conv1_1", "conv3_1"])
    assert extractor.depth == VGG19_LAYERS.index("conv3_1") + 1
    assert isinstance(extractor.body[-1], nn.Conv2d)


def test_the_cut_network_does_not_run_modules_past_the_deepest_layer(features, image):
    calls = []
    handle = features[VGG19_LAYERS.index("relu3_1")].register_forward_hook(lambda *args: calls.append(1))
    try:
        VGGFeatures(features, ["conv3_1"])(image)
    finally:
        handle.remove()
    assert calls == []


def test_a_forward_down_to_a_layer_runs_no_module_past_it_and_gives_the_same_activations(features, image):
    extractor = VGGFeatures(features, ["conv1_1", "conv4_2", "conv5_1"])
    ran = []
    handles = [
        module.register_forward_hook(lambda *args, index=index: ran.append(index))
        for index, module in enumerate(extractor.body)
    ]
    try:
        with torch.no_grad():
            cut = extractor(image, "conv4_2")
            whole = extractor(image)
    finally:
        for handle in handles:
            handle.remove()
    deepest = VGG19_LAYERS.index("conv4_2")
    assert list(cut) == ["conv1_1", "conv4_2"]
    assert max(ran[: deepest + 1]) == deepest and len(ran) == deepest + 1 + extractor.depth
    for name in cut:
        torch.testing.assert_close(cut[name], whole[name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("padding", ["reflect", "replicate"])
def test_the_convolutions_pad_with_the_mode_asked_for_on_the_loaded_weights(features, image, padding):
    padded = copy.deepcopy(features)
    for module in padded:
        if isinstance(module, nn.Conv2d):
            module.padding_mode = padding
    with torch.no_grad():
        captured = VGGFeatures(features, ["conv1_1", "conv3_1"], padding=padding)(image)
    for name in ("conv1_1", "conv3_1"):
        torch.testing.assert_close(captured[name], sliced(padded, name, image), msg=name)


def _spread_of_flat_image_features(features, padding: str) -> float:
    """How far any activation of a flat grey image lies from its channel's mean, over layers."""
    layers = ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]
    with torch.no_grad():
        captured = VGGFeatures(features, layers, padding=padding)(torch.full((1, 3, 48, 48), 0.5))
    return max(float((v - v.mean((2, 3), keepdim=True)).abs().max()) for v in captured.values())


@pytest.mark.parametrize("padding", ["reflect", "replicate"])
def test_padding_from_the_image_gives_a_flat_image_flat_features(features, padding):
    # measured: about 3e-8 (float32 rounding) against 0.2 with zero padding
    assert _spread_of_flat_image_features(features, padding) < 1e-5


def test_zero_padding_makes_the_border_of_a_flat_image_an_edge(features):
    assert _spread_of_flat_image_features(features, "zeros") > 1e-2


def test_the_extractors_convolutions_share_the_loaded_parameters(features):
    extractor = VGGFeatures(features, ["conv5_1"], pooling="avg")
    for mine, loaded in zip(extractor.body, features, strict=False):
        if isinstance(loaded, nn.Conv2d):
            assert mine is not loaded
            assert mine.weight is loaded.weight and mine.bias is loaded.bias


def test_the_loaded_network_is_unchanged_by_building_and_running_an_extractor(features, image):
    before = {key: value.clone() for key, value in features.state_dict().items()}
    extractor = VGGFeatures(features, VGG19_LAYERS, pooling="avg")
    extractor(image.clone().requires_grad_(True))["conv5_1"].pow(2).mean().backward()
    assert all(not module._forward_hooks for module in features)
    assert all(m.padding_mode == "zeros" for m in features if isinstance(m, nn.Conv2d))
    assert all(isinstance(features[VGG19_LAYERS.index(f"pool{i}")], nn.MaxPool2d) for i in range(1, 6))
    assert all(m.inplace for m in features if isinstance(m, nn.ReLU))
    for key, value in features.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=key)


def test_two_extractors_of_one_network_capture_only_their_own_layers(features, image):
    first = VGGFeatures(features, ["conv1_1"], padding="replicate")
    second = VGGFeatures(features, ["conv1_1", "conv2_1"], padding="zeros")
    with torch.no_grad():
        alone = first(image)["conv1_1"]
        both = second(image)
        again = first(image)
    assert list(again) == ["conv1_1"] and list(both) == ["conv1_1", "conv2_1"]
    torch.testing.assert_close(again["conv1_1"], alone, rtol=0, atol=0)
    assert not torch.equal(both["conv1_1"], alone), "the zero-padded extractor ran the other's convolutions"


def test_avg_pooling_replaces_only_the_pools_of_the_extractor(features, image):
    extractor = VGGFeatures(features, ["pool2", "conv3_1"], pooling="avg", padding="zeros")
    pools = [m for m in extractor.body if "Pool" in type(m).__name__]
    assert pools and all(isinstance(m, nn.AvgPool2d) for m in pools)
    averaged = nn.Sequential(*[nn.AvgPool2d(2, 2) if isinstance(m, nn.MaxPool2d) else m for m in features])
    with torch.no_grad():
        got = extractor(image)["pool2"]
    torch.testing.assert_close(got, sliced(averaged, "pool2", image))
    assert isinstance(features[VGG19_LAYERS.index("pool1")], nn.MaxPool2d)


def test_parameters_are_frozen_and_the_module_stays_in_eval_mode(features):
    extractor = VGGFeatures(features, ["conv2_1"])
    extractor.train()
    assert not extractor.training
    assert not any(p.requires_grad for p in extractor.parameters())


def test_gradients_flow_to_the_image(features, image):
    image = image.clone().requires_grad_(True)
    VGGFeatures(features, ["conv2_1"])(image)["conv2_1"].pow(2).mean().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_our_vgg19_features_have_torchvisions_layout():
    from napari_style_transfer._torch_compat import import_torchvision
    from napari_style_transfer.vgg import vgg19_features_module

    reference = import_torchvision().models.vgg19(weights=None).features
    ours = vgg19_features_module()
    assert [type(m) for m in ours] == [type(m) for m in reference]
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    for mine, theirs in zip(ours, reference, strict=True):
        assert repr(mine) == repr(theirs)


def test_the_imagenet_url_is_torchvisions():
    from napari_style_transfer._torch_compat import import_torchvision
    from napari_style_transfer.weights import IMAGENET_URL

    assert import_torchvision().models.VGG19_Weights.IMAGENET1K_V1.url == IMAGENET_URL


def test_loading_cached_weights_does_not_import_torchvision(tmp_path, untrained_vgg19_state):
    import subprocess
    import sys

    path = tmp_path / "vgg19.pth"
    torch.save(untrained_vgg19_state, path)
    code = (
        "import sys; from napari_style_transfer.weights import load_vgg19_features; "
        f"load_vgg19_features({str(path)!r}); print('torchvision' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_run_with_adam_does_not_import_torchvision():
    """Adam brings torch._dynamo along; torchvision (and with it triton) must still stay out."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from napari_style_transfer import stylize; "
        "rng = np.random.default_rng(0); "
        "stylize(rng.random((32, 32, 3)), rng.random((32, 32, 3)), size=32, steps=2, weights='random', "
        "optimizer='adam', snapshot_every=0); print('torchvision' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"
