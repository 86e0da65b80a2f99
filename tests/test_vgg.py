"""The feature extractor: hooks on torchvision's modules, the paper's names, the cut."""

from __future__ import annotations

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
    extractor = VGGFeatures(features, VGG19_LAYERS)
    with torch.no_grad():
        captured = extractor(image)
    assert list(captured) == list(VGG19_LAYERS)
    for name in VGG19_LAYERS:
        torch.testing.assert_close(captured[name], sliced(features, name, image), msg=name)


@pytest.mark.parametrize("name", ["conv1_1", "conv4_2", "conv5_1"])
def test_a_conv_layer_is_captured_before_the_in_place_relu(features, image, name):
    with torch.no_grad():
        captured = VGGFeatures(features, [name])(image)[name]
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


def test_the_original_modules_are_used_unchanged(features):
    before = [type(m) for m in features]
    extractor = VGGFeatures(features, ["conv5_1"], pooling="avg")
    assert extractor.body[0] is features[0]
    assert [type(m) for m in features] == before
    assert all(m.inplace for m in features if isinstance(m, nn.ReLU))


def test_avg_pooling_replaces_only_the_pools_of_the_extractor(features, image):
    extractor = VGGFeatures(features, ["pool2", "conv3_1"], pooling="avg")
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
