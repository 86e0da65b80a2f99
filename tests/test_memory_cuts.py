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
