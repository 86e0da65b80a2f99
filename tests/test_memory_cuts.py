"""What a run keeps in memory: each activation once, no copies of the network or the style.

Each test names the cut it guards (docs/benchmarks.md, "Memory by stage at 512 px", says what
each saves). Tiny tensors: what is checked is what is kept, not how much.
"""

from __future__ import annotations

import torch

from napari_style_transfer.losses.gram import GramLoss, gram_matrix, positions_flat

LAYERS = ("conv1_1", "conv2_1")


def _activations(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        name: torch.rand(1, channels, side, side, generator=generator).contiguous(
            memory_format=torch.channels_last
        )
        for name, channels, side in (("conv1_1", 8, 16), ("conv2_1", 16, 8))
    }


def test_a_channels_last_activation_is_flattened_without_a_copy():
    features = _activations(0)["conv1_1"]
    flat = positions_flat(features)
    assert flat.data_ptr() == features.data_ptr()
    assert torch.equal(flat, features.contiguous().reshape(1, 8, 256))


def test_the_gram_loss_keeps_the_styles_gram_matrices_not_their_activations():
    styles = [_activations(1), _activations(2)]
    loss = GramLoss(styles, LAYERS)
    assert loss.styles == []
    blended = loss.targets([(0, 0.25), (1, 0.75)])
    for layer in LAYERS:
        expected = gram_matrix(styles[0][layer]) * 0.25 + gram_matrix(styles[1][layer]) * 0.75
        assert torch.equal(blended[layer], expected)


def test_max_pooling_keeps_int32_indices_for_the_backward_and_gives_torchs_gradient():
    from napari_style_transfer.vgg import MaxPool2x2

    image = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    kept: list[torch.Tensor] = []
    gradients = []
    for pool in (MaxPool2x2(), torch.nn.MaxPool2d(2, 2)):
        x = image.clone().requires_grad_(True)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
            pooled = pool(x)
        (pooled * torch.arange(pooled.numel()).view_as(pooled)).sum().backward()
        gradients.append(x.grad)
        if isinstance(pool, MaxPool2x2):
            # torch's keeps int64 indices; the input is no longer kept by the ReLU before either
            assert [t.dtype for t in kept] == [torch.int32]
    assert torch.equal(gradients[0], gradients[1])


def test_the_convolutions_after_the_deepest_layer_used_hold_no_weights():
    from napari_style_transfer.options import VGG19_LAYERS
    from napari_style_transfer.weights import load_vgg19_features

    full = load_vgg19_features("random").features
    cut = load_vgg19_features("random", deepest="conv4_2").features
    index = VGG19_LAYERS.index("conv4_2")
    convs = [i for i, module in enumerate(cut) if isinstance(module, torch.nn.Conv2d)]
    assert all(cut[i].weight.is_meta for i in convs if i > index)
    assert all(torch.equal(cut[i].weight, full[i].weight) for i in convs if i <= index)


def test_a_runs_network_holds_no_weights_past_the_deepest_layer_it_uses():
    import numpy as np
    from tiny_runs import tiny_options

    from napari_style_transfer.pipeline.optimise import load_model
    from napari_style_transfer.pipeline.plan import plan

    image = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    options = tiny_options(
        content_layers=("conv2_1",), style_layers=("conv1_1", "conv2_1"), channels_last=True
    )
    model = load_model(plan(image, image, **options))
    held = [module.weight.is_meta for module in model.weights.features if isinstance(module, torch.nn.Conv2d)]
    assert held == [False] * 3 + [True] * 13  # conv1_1, conv1_2, conv2_1 of VGG19's 16 convolutions


def _plain_features(network: torch.nn.Sequential, image: torch.Tensor, layers) -> dict[str, torch.Tensor]:
    """The layers' activations through torch's own modules (in-place ReLUs, nn.MaxPool2d)."""
    from napari_style_transfer.options import VGG19_LAYERS

    captured = {}
    x = (image - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    for name, module in zip(VGG19_LAYERS, network, strict=False):
        x = module(x)
        if name in layers:
            captured[name] = x.clone()
        if name == layers[-1]:
            return captured
    return captured


def test_the_extractor_keeps_masks_and_int32_indices_and_gives_torchs_gradients():
    # the convolutions keep no input, the ReLUs a bool mask, the pools int32 positions: the
    # image's gradient is still torch's own modules' bit for bit
    from napari_style_transfer.vgg import VGGFeatures, vgg19_features_module

    layers = ("conv1_1", "relu1_2", "conv2_1", "pool2", "conv3_1")
    network = vgg19_features_module(generator=torch.Generator().manual_seed(0)).requires_grad_(False)
    extractor = VGGFeatures(network, layers)
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    gradients, kept = [], []
    for run in ("ours", "torch's"):
        x = image.clone().requires_grad_(True)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
            features = extractor(x) if run == "ours" else _plain_features(network, x, layers)
        total = sum(
            (value * torch.linspace(-1, 1, value.numel()).view_as(value)).sum() for value in features.values()
        )
        total.backward()
        gradients.append(x.grad)
        if run == "ours":
            maps = [t for t in kept if t.dim() == 4 and t.shape[-1] > 3]  # not weights nor mean/std
            assert maps and {t.dtype for t in maps} == {torch.bool, torch.int32}
            kept.clear()
    assert torch.equal(gradients[0], gradients[1])
