"""size="full" with inputs larger than memory (read a region at a time, never whole),
stacks frame by frame, RGBA with its alpha carried through, and style_regions of any size
sampled per tile (docs/slides.md)."""

import numpy as np
import pytest
import zarr
from test_full_resolution import FAST as SHALLOW

from napari_style_transfer import api, large_images
from napari_style_transfer.errors import StyleTransferError
from napari_style_transfer.large_images import LargeImage
from napari_style_transfer.pipeline import tiled

# shallow layers keep the windows small (stride 2) and the runs quick
FAST = SHALLOW | {"steps": 2}


class GuardedSlide:
    """An image that is never converted whole, and records the pixels of every read."""

    def __init__(self, pixels: np.ndarray):
        self.pixels, self.shape, self.dtype = pixels, pixels.shape, pixels.dtype
        self.reads: list[int] = []

    def __getitem__(self, index):
        region = self.pixels[index]
        self.reads.append(region.size // (self.shape[-1] if self.pixels.ndim == 3 else 1))
        return region

    def __array__(self, *args, **kwargs):
        raise AssertionError("the slide was read whole")


def _run(content, style, tile_size=32, **options):
    return api.stylize(content, style, size="full", tile_size=tile_size, **(FAST | options))


def _slide(rng, size):
    return (rng.random((size, size, 3)) * 255).astype(np.uint8)


def test_a_content_never_read_whole_runs_reading_a_band_or_a_window_at_a_time(monkeypatch, rng, style):
    monkeypatch.setattr(large_images, "BAND_PIXELS", 16 * 96)
    guarded = GuardedSlide(_slide(rng, 96))
    result = _run(LargeImage(guarded, "yxc", "a guarded slide"), style)
    assert result.shape == (96, 96, 3) and not np.isnan(result).any()
    window = (32 + 2 * tiled.tiles.context_margin(("conv2_2", "conv1_1", "conv2_1"))) ** 2
    assert max(guarded.reads) <= max(window, 2 * 16 * 96)  # a tile's window, or a band (of 2x2 blocks)


def test_the_largest_read_follows_the_tile_not_the_image(monkeypatch, rng, style):
    monkeypatch.setattr(large_images, "BAND_PIXELS", 4096)
    largest = []
    for size in (64, 128):
        guarded = GuardedSlide(_slide(rng, size))
        _run(LargeImage(guarded, "yxc", "a guarded slide"), style, steps=1)
        largest.append(max(guarded.reads))
    assert largest[0] == largest[1]


def test_a_memmap_an_ome_zarr_and_a_dask_array_give_what_the_array_in_memory_gives(tmp_path, rng, style):
    import dask.array as da

    slide = _slide(rng, 64)
    np.save(tmp_path / "slide.npy", slide)
    in_memory = _run(slide, style)
    np.testing.assert_array_equal(_run(np.load(tmp_path / "slide.npy", mmap_mode="r"), style), in_memory)
    np.testing.assert_array_equal(_run(str(tmp_path / "slide.npy"), style), in_memory)
    np.testing.assert_array_equal(_run(da.from_array(slide, chunks=16), style), in_memory)
    group = zarr.open_group(tmp_path / "slide.ome.zarr", mode="w")
    group.create_array("0", data=np.moveaxis(slide, -1, 0), chunks=(3, 16, 16))
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    group.attrs["ome"] = {"multiscales": [{"axes": axes, "datasets": [{"path": "0"}]}]}
    np.testing.assert_array_equal(_run(str(tmp_path / "slide.ome.zarr"), style), in_memory)


def test_the_composition_reads_a_coarser_pyramid_level_where_one_exists(tmp_path, rng, style):
    slide = _slide(rng, 128)
    marked = np.full((32, 32, 3), 7, np.uint8)  # level 2 (1/4) marked: reading it shows
    group = zarr.open_group(tmp_path / "slide.ome.zarr", mode="w")
    for number, level in enumerate([slide, slide[::2, ::2], marked]):
        group.create_array(str(number), data=np.moveaxis(level, -1, 0), chunks=(3, 16, 16))
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    datasets = [{"path": str(number)} for number in range(3)]
    group.attrs["ome"] = {"multiscales": [{"axes": axes, "datasets": datasets}]}
    fp = tiled.plan_full(str(tmp_path / "slide.ome.zarr"), style, size="full", tile_size=32, **FAST)
    assert fp.levels[0].shape == (32, 32)
    np.testing.assert_allclose(fp.composition.content.frame(()).rgb, 7 / 255, rtol=1e-6)


def test_a_lazy_float_contents_range_is_its_own_found_band_by_band(tmp_path, rng, style):
    import dask.array as da

    slide = rng.random((64, 48)).astype(np.float32) * 1000 + 50
    fp = tiled.plan_full(da.from_array(slide, chunks=16), style, size="full", tile_size=32, **FAST)
    described = fp.composition.content
    assert (described.low, described.high) == (float(slide.min()), float(slide.max()))
    assert described.scaling == api.plan(slide, style, **FAST).content.scaling


def test_a_stacks_frames_are_each_styled_as_alone_into_one_store(tmp_path, rng, style):
    stack = np.stack([_slide(rng, 64)[:, :48], _slide(rng, 64)[:, :48]])
    stored = _run(stack, style, out=str(tmp_path / "stack.ome.zarr"))
    assert stored.shape == (2, 3, 64, 48)  # (t, c, y, x)
    assert np.asarray(zarr.open_group(str(tmp_path / "stack.ome.zarr"))["finished_tiles"][...]).all()
    for frame in range(2):
        alone = _run(stack[frame], style)
        np.testing.assert_allclose(np.moveaxis(np.asarray(stored[frame]), 0, -1), alone, atol=1e-6)


def test_a_stack_stopped_midway_resumes_with_its_unfinished_frames(tmp_path, rng, style):
    stack = np.stack([_slide(rng, 64), _slide(rng, 64)])
    out = str(tmp_path / "stack.ome.zarr")
    fp = tiled.plan_full(stack, style, size="full", tile_size=32, **FAST)
    run = tiled.run_full(fp, tiled.open_store(fp, out))
    # 2 steps a job: frame 0 whole (its composition, 4 tiles), frame 1's composition and a tile
    for _ in range(2 * (1 + 4 + 1 + 1)):
        next(run)
    run.close()
    store = tiled.open_store(fp, out)
    assert store.finished()[0].all() and not store.finished()[1].any()
    records = list(tiled.run_full(fp, store))
    assert len(records) == 2 * 3  # frame 1's three other tiles
    np.testing.assert_allclose(
        np.asarray(store.levels[0][...]), _run(stack, style).transpose(0, 3, 1, 2), atol=1e-6
    )


def test_frames_time_at_full_size_is_refused_with_the_fix(rng, style):
    with pytest.raises(StyleTransferError, match="frames='independent'"):
        _run(np.stack([_slide(rng, 64)] * 2), style, frames="time")


def test_rgba_keeps_its_alpha_unstyled_and_styles_its_colour_as_rgb(rng, style):
    rgba = np.dstack([_slide(rng, 64), np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))])
    result = _run(rgba, style)
    assert result.shape == (64, 64, 4)
    np.testing.assert_allclose(result[..., 3], rgba[..., 3] / 255, atol=1e-6)  # blended tiles: rounding
    np.testing.assert_allclose(result[..., :3], _run(rgba[..., :3], style), atol=1e-6)


def test_rgba_that_fits_one_tile_gives_the_untiled_result(content, style):
    rgba = np.dstack([content, np.full(content.shape[:2], 200, np.uint8)])
    untiled = api.stylize(rgba, style, size=48, **FAST, precision="fp32")  # what tiles compute in under auto
    np.testing.assert_allclose(_run(rgba, style, tile_size=64), untiled, atol=1e-6)


def _halves(shape, scale=1):
    labels = np.ones((shape[0] * scale, shape[1] * scale), np.uint8)
    labels[:, labels.shape[1] // 2 :] = 2
    return labels


def test_each_tiles_guide_is_its_window_of_the_labels_at_its_levels_scale(rng, style):
    slide = _slide(rng, 96)
    labels = _halves((96, 96), scale=2)  # any size with the content's aspect ratio
    fp = tiled.plan_full(slide, [style, style[::-1]], style_regions=labels, size="full", tile_size=32, **FAST)
    targets = tiled._targets(fp, tiled.open_store(fp, zarr.storage.MemoryStore()))
    level = tiled.TileLevel(fp, fp.levels[-1], targets[-2], targets[-1])
    for job in level.tile_jobs():
        guide = level.plan_for(job).regions.at(job.index, job.tile.window.shape)
        np.testing.assert_array_equal(guide, labels[::2, ::2][job.tile.window.slices])
    composition = fp.composition.regions.at((), fp.levels[0].shape)
    np.testing.assert_array_equal(composition, labels[::8, ::8])  # 192 px to the 24 px composition


def test_style_regions_at_full_size_run_and_change_the_result(rng, style):
    slide = _slide(rng, 64)
    styles = [style, np.ascontiguousarray(style[::-1, ::-1, ::-1])]
    guided = _run(slide, styles, style_regions=_halves((64, 64)))
    assert guided.shape == (64, 64, 3) and not np.isnan(guided).any()
    assert not np.allclose(guided, _run(slide, styles, style_regions=np.ones((64, 64), np.uint8)))


def test_style_regions_with_a_label_beyond_the_styles_are_refused_even_where_sampling_misses_it(rng, style):
    labels = np.ones((640, 640), np.uint8)
    labels[3, 3] = 3  # one pixel: the composition's sampling never sees it
    with pytest.raises(StyleTransferError, match=r"labels 1\.\.3.*1\.\.2"):
        _run(_slide(rng, 64), [style, style], style_regions=labels)


def test_the_command_line_reads_a_tiff_content_region_by_region(monkeypatch, tmp_path, rng, style):
    import tifffile

    from napari_style_transfer import cli

    slide = _slide(rng, 64)
    tifffile.imwrite(tmp_path / "slide.tif", slide, tile=(32, 32), photometric="rgb")
    np.save(tmp_path / "style.npy", style)
    read_whole = cli.read_image

    def styles_only(path, role):
        assert role == "style", f"the {role} was read whole"
        return read_whole(path, role)

    monkeypatch.setattr(cli, "read_image", styles_only)
    out = tmp_path / "r.ome.zarr"
    flags = ["--tile-size", "32", "--steps", "2", "--seed", "1", "--weights", "random", "--schedule", "none"]
    flags += ["--content-layers", "conv2_2", "--style-layers", "conv1_1,conv2_1", "--quiet"]
    assert (
        cli.main(
            [
                str(tmp_path / "slide.tif"),
                str(tmp_path / "style.npy"),
                "--size",
                "full",
                "-o",
                str(out),
                *flags,
            ]
        )
        == 0
    )
    np.testing.assert_allclose(
        np.moveaxis(np.asarray(zarr.open_group(str(out))["0"][...]), 0, -1), _run(slide, style), atol=1e-6
    )
