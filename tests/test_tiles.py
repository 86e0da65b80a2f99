"""The tile geometry of full-resolution runs: margins that make tiles exact, grids that cover
the image once (or blend to exactly 1), levels that double, tile sizes that fit."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from napari_style_transfer import memory
from napari_style_transfer.errors import OutOfMemoryError, StyleTransferError
from napari_style_transfer.options import StyleOptions
from napari_style_transfer.tiles import (
    Region,
    axis_spans,
    blend_weights,
    check_tile_size,
    context_margin,
    feathered_core,
    grid_offset,
    largest_tile_size,
    level_schedule,
    min_tile_size,
    receptive_extent,
    tile_bytes,
    tile_grid,
)

DEFAULT_LAYERS = StyleOptions().layers  # conv1_1 .. conv5_1 and conv4_2


def test_receptive_extent_counts_each_convolution_at_its_stride():
    assert receptive_extent("conv1_1") == 1
    assert receptive_extent("pool1") == 2
    assert receptive_extent("conv2_1") == 4
    assert receptive_extent("conv4_2") == 38
    assert receptive_extent("conv5_1") == 70


def test_context_margin_is_the_deepest_extent_rounded_up_to_its_stride():
    assert context_margin(DEFAULT_LAYERS) == 80
    assert context_margin(["conv1_1", "conv4_2"]) == 40
    assert context_margin(["conv1_1"]) == 1


@functools.cache
def _network(layers):
    import torch

    from napari_style_transfer.vgg import VGGFeatures, vgg19_features_module

    # untrained weights: the geometry, not the values, is what is tested
    features = vgg19_features_module(generator=torch.Generator().manual_seed(3))
    return VGGFeatures(features, layers).double()


def _features(image, layers):
    import torch

    with torch.no_grad():
        return _network(layers)(torch.from_numpy(image).permute(2, 0, 1)[None])


def _worst_core_difference(image, tile_size, margin, layers):
    """The largest difference, over the first and the last tile (between them they have
    real context on all four sides) and every layer, between the features of a tile's core
    computed from its window and the whole image's features there."""
    from napari_style_transfer.options import min_side_for_layers

    whole = _features(image, layers)
    worst = 0.0
    tiles = tile_grid(image.shape[:2], tile_size, margin)
    for tile in (tiles[0], tiles[-1]):
        window = np.ascontiguousarray(image[tile.window.slices])
        part = _features(window, layers)
        for name in layers:
            stride = min_side_for_layers([name])
            core = Region(*(edge // stride for edge in (tile.core.top, tile.core.left)), 0, 0)
            core = Region(core.top, core.left, tile.core.bottom // stride, tile.core.right // stride)
            origin = Region(tile.window.top // stride, tile.window.left // stride, 0, 0)
            rows, columns = core.within(origin)
            expected = whole[name][0][:, core.top : core.bottom, core.left : core.right]
            worst = max(worst, float((part[name][0][:, rows, columns] - expected).abs().max()))
    return worst


@pytest.fixture(scope="module")
def picture():
    return np.random.default_rng(5).random((160, 176, 3))


def test_features_inside_a_tiles_core_equal_the_whole_images(picture):
    layers = ("conv1_1", "conv2_1", "conv4_2", "conv5_1")
    assert _worst_core_difference(picture, 48, context_margin(layers), layers) < 1e-9


def test_a_margin_one_stride_short_changes_the_deepest_features(picture):
    layers = ("conv1_1", "conv5_1")
    assert _worst_core_difference(picture, 48, context_margin(layers) - 16, layers) > 1e-3


@pytest.mark.parametrize("offset", [(0, 0), (16, 48)])
@pytest.mark.parametrize("shape", [(100, 130), (64, 64), (17, 250)])
def test_cores_without_overlap_cover_every_pixel_once(shape, offset):
    cover = np.zeros(shape, int)
    for tile in tile_grid(shape, 64, 80, offset=offset):
        cover[tile.core.slices] += 1
    assert (cover == 1).all()


@pytest.mark.parametrize("offset", [(0, 0), (32, 16)])
@pytest.mark.parametrize("shape", [(100, 130), (64, 64), (200, 33)])
def test_blend_weights_of_overlapping_cores_add_up_to_one_everywhere(shape, offset):
    total = np.zeros(shape)
    tiles = tile_grid(shape, 64, 80, overlap=16, offset=offset)
    for tile in tiles:
        total[tile.core.slices] += blend_weights(tile)
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    assert any(tile.ramps != (0, 0, 0, 0) for tile in tiles) or max(shape) <= 64


def test_overlapping_cores_share_exactly_the_overlap():
    assert axis_spans(200, 64, overlap=16) == [(0, 64), (48, 112), (96, 160), (144, 200)]


def test_windows_start_on_the_pool_grid_and_padding_restores_the_margin():
    for tile in tile_grid((150, 170), 64, 80, overlap=16, offset=(16, 32)):
        assert tile.window.top % 16 == 0 and tile.window.left % 16 == 0
        top, left, bottom, right = tile.padding
        assert tile.window.top - top == tile.core.top - 80
        assert tile.window.left - left == tile.core.left - 80
        assert tile.window.bottom + bottom == tile.core.bottom + 80
        assert tile.window.right + right == tile.core.right + 80


def test_an_offset_shifts_the_grid_up_and_left():
    first = tile_grid((128, 128), 64, 80, offset=(16, 32))[0]
    assert first.core == Region(0, 0, 48, 32)


def test_grid_offsets_are_reproducible_whole_strides_below_the_step():
    offsets = [grid_offset(7, index, 512, 16) for index in range(50)]
    assert offsets == [grid_offset(7, index, 512, 16) for index in range(50)]
    assert all(0 <= value < 512 and value % 16 == 0 for pair in offsets for value in pair)
    assert len(set(offsets)) > 40


def test_levels_double_from_the_working_size_up_to_the_full_image():
    levels = level_schedule((20000, 15000), 512, DEFAULT_LAYERS)
    assert levels[-1].shape == (20000, 15000) and levels[-1].downscale == 1
    assert max(levels[0].shape) <= 512 < 2 * max(levels[0].shape)
    for coarse, fine in zip(levels, levels[1:], strict=False):
        assert coarse.shape == (-(-fine.shape[0] // 2), -(-fine.shape[1] // 2))
        assert coarse.downscale == 2 * fine.downscale
    assert [level.shape for level in levels[:2]] == [(313, 235), (625, 469)]


def test_an_image_within_the_working_size_has_one_level():
    assert [level.shape for level in level_schedule((300, 500), 512, DEFAULT_LAYERS)] == [(300, 500)]


def test_a_long_strip_stops_halving_where_the_layers_need_more():
    levels = level_schedule((40, 9000), 512, DEFAULT_LAYERS)
    assert levels[0].shape == (20, 4500)


def test_an_image_narrower_than_the_layers_need_is_refused():
    with pytest.raises(StyleTransferError, match="16 px"):
        level_schedule((8, 9000), 512, DEFAULT_LAYERS)


def test_the_minimum_tile_size_is_the_deepest_layers_stride():
    assert min_tile_size(DEFAULT_LAYERS) == 16
    assert min_tile_size(["conv1_1", "conv3_1"]) == 4


GB = 2**30


def test_a_tile_below_the_minimum_is_refused_with_the_minimum():
    with pytest.raises(
        StyleTransferError, match=r"too small for layers down to conv5_1: use tile_size >= 16"
    ):
        check_tile_size(8, DEFAULT_LAYERS, 8 * GB, "lbfgs", 30)


def test_a_tile_off_the_stride_is_refused_with_its_neighbours():
    with pytest.raises(StyleTransferError, match="use 496 or 512"):
        check_tile_size(500, DEFAULT_LAYERS, 8 * GB, "lbfgs", 30)


def test_a_tile_too_large_for_the_memory_is_refused_with_the_largest_that_fits():
    largest = largest_tile_size(2 * GB, DEFAULT_LAYERS, "lbfgs", 30)
    assert largest > 0
    with pytest.raises(OutOfMemoryError, match=f"use tile_size <= {largest}"):
        check_tile_size(largest + 16, DEFAULT_LAYERS, 2 * GB, "lbfgs", 30)
    check_tile_size(largest, DEFAULT_LAYERS, 2 * GB, "lbfgs", 30)


def test_a_tile_refused_though_it_needs_less_than_the_free_memory_names_what_a_run_may_use():
    over = largest_tile_size(2 * GB, DEFAULT_LAYERS, "lbfgs", 30) + 16
    assert tile_bytes(over, context_margin(DEFAULT_LAYERS), "lbfgs", 30) < 2 * GB
    with pytest.raises(
        OutOfMemoryError, match=r"more than the 1\.8 GB usable of 2\.0 GB free \(a tenth is kept"
    ):
        check_tile_size(over, DEFAULT_LAYERS, 2 * GB, "lbfgs", 30)


def test_the_largest_tile_is_the_last_that_fits():
    free = 3 * GB
    largest = largest_tile_size(free, DEFAULT_LAYERS, "adam", 30)
    assert tile_bytes(largest, 80, "adam", 30) <= free * memory.HEADROOM
    assert tile_bytes(largest + 16, 80, "adam", 30) > free * memory.HEADROOM


def test_no_tile_fits_in_too_little_memory():
    assert largest_tile_size(100 * 2**20, DEFAULT_LAYERS, "lbfgs", 30) == 0
    with pytest.raises(OutOfMemoryError, match="free some memory"):
        check_tile_size(16, DEFAULT_LAYERS, 100 * 2**20, "lbfgs", 30)


def test_the_tile_geometry_imports_neither_torch_nor_a_file_library():
    import subprocess
    import sys

    modules = [
        "napari_style_transfer.tiles",
        "napari_style_transfer.large_images",
        "napari_style_transfer.zarr_output",
    ]
    code = f"import sys; {'; '.join(f'import {name}' for name in modules)}; " + (
        "print([name for name in ('torch', 'napari', 'zarr', 'tifffile') if name in sys.modules])"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "[]"


@pytest.mark.parametrize("shape", [(96, 80), (100, 70), (32, 32)])
def test_feathered_cores_lie_in_their_windows_and_their_weights_sum_to_one(shape):
    band, margin = 16, 8  # half the band each side of a border: as wide as the margin
    total = np.zeros(shape)
    for tile in tile_grid(shape, 32, margin):
        region, weights = feathered_core(tile, shape, band)
        window = tile.window
        assert window.top <= region.top and region.bottom <= window.bottom
        assert window.left <= region.left and region.right <= window.right
        assert weights.shape == region.shape and (weights > 0).all()
        total[region.slices] += weights
    np.testing.assert_allclose(total, 1, atol=1e-6)  # 100 x 70: last cores of 4 and 6 px
