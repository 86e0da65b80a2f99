"""Weights that hold up: random weights without the global RNG, damaged or hostile weight
files refused with the file and the problem named, a shared hub cache, leftovers of a kill."""

from __future__ import annotations

import threading

import torch
from torch import nn

from napari_style_transfer.weights import load_vgg19_features


def same_parameters(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_random_weights_built_in_two_threads_at_once_match_a_build_alone():
    alone = load_vgg19_features("random").features
    barrier = threading.Barrier(2)
    built = [None, None]

    def build(slot: int) -> None:
        barrier.wait()
        built[slot] = load_vgg19_features("random").features

    threads = [threading.Thread(target=build, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert same_parameters(built[0], alone) and same_parameters(built[1], alone)


def test_random_weights_leave_the_global_random_stream_of_other_threads_alone(monkeypatch):
    """Another thread draws from torch's global RNG while the network is built: it must get
    the next values of its own stream, and no earlier value may come round again after."""
    torch.manual_seed(5)
    expected = torch.rand(3)
    drawn_meanwhile = []
    kaiming_normal = nn.init.kaiming_normal_

    def draw_while_building(*args, **kwargs):
        if not drawn_meanwhile:  # stands in for a draw in another thread in mid-build
            drawn_meanwhile.append(torch.rand(1))
        return kaiming_normal(*args, **kwargs)

    monkeypatch.setattr(nn.init, "kaiming_normal_", draw_while_building)
    torch.manual_seed(5)
    load_vgg19_features("random")
    after = torch.rand(2)
    torch.testing.assert_close(torch.cat([drawn_meanwhile[0], after]), expected)
