"""size="full": the composition at the working size, then tiles at each doubling, into an
OME-Zarr store written tile by tile, resumable (docs/slides.md)."""

import numpy as np
import pytest
import torch
import zarr

from napari_style_transfer import api
from napari_style_transfer.errors import StyleTransferError
from napari_style_transfer.pipeline import tiled
from napari_style_transfer.pipeline.records import StepRecord

# shallow layers keep the windows small (stride 2) and the runs quick
FAST = {
    "steps": 3,
    "seed": 1,
    "weights": "random",
    "content_layers": ["conv2_2"],
    "style_layers": ["conv1_1", "conv2_1"],
    "schedule": "none",
}


@pytest.fixture
def slide(rng):
    return rng.random((96, 80, 3)).astype(np.float32)


def test_an_image_that_fits_one_tile_gives_the_untiled_result(tmp_path, content, style):
    height, width = content.shape[:2]
    # in the arithmetic a full-resolution run's precision="auto" computes in (tiled.tile_precision)
    untiled = api.stylize(content, style, size=max(height, width), **FAST, precision="fp32")
    stored = api.stylize(content, style, size="full", tile_size=64, out=str(tmp_path / "r.ome.zarr"), **FAST)
    assert isinstance(stored, zarr.Array)
    result = np.moveaxis(np.asarray(stored[...]), 0, -1)  # OME order (c, y, x) to (y, x, c)
    np.testing.assert_allclose(result, untiled, atol=1e-6)


def test_an_image_larger_than_a_tile_fills_the_whole_store(tmp_path, slide, style):
    out = tmp_path / "r.ome.zarr"
    stored = api.stylize(slide, style, size="full", tile_size=32, out=str(out), **FAST)
    assert stored.shape == (3, 96, 80)
    values = np.asarray(stored[...])
    assert not np.isnan(values).any()
    assert values.min() >= 0 and values.max() <= 1
    assert np.asarray(zarr.open_group(str(out))["finished_tiles"][...]).all()
    # every tile was optimised: none is left at the store's fill value
    for top in range(0, 96, 32):
        for left in range(0, 80, 32):
            assert values[:, top : top + 32, left : left + 32].std() > 0


def test_a_tif_out_is_a_pyramidal_bigtiff_of_the_stores_result_beside_it(tmp_path, slide, style):
    import tifffile

    out = tmp_path / "r.tif"
    stored = api.stylize(slide, style, size="full", tile_size=32, out=str(out), **FAST)
    assert isinstance(stored, zarr.Array)  # the store beside the TIFF, kept to resume
    assert np.asarray(zarr.open_group(str(tmp_path / "r.ome.zarr"))["finished_tiles"][...]).all()
    with tifffile.TiffFile(out) as tiff:
        page = tiff.series[0]
        assert page.shape == (96, 80, 3) and tiff.pages[0].is_tiled
        np.testing.assert_array_equal(page.asarray(), np.moveaxis(np.asarray(stored[...]), 0, -1))


def test_a_stack_into_a_tif_out_is_refused_before_any_tile_runs(tmp_path, rng, style):
    stack = rng.random((2, 32, 32)).astype(np.float32)
    with pytest.raises(StyleTransferError, match=r"holds one 2D image: give r\.ome\.zarr as the output"):
        api.stylize(stack, style, size="full", tile_size=32, out=str(tmp_path / "r.tif"), **FAST)
    assert not (tmp_path / "r.ome.zarr").exists() and not (tmp_path / "r.tif").exists()


def test_tiles_compute_in_fp32_under_auto_even_where_bf16_is_native_and_as_asked_otherwise(
    monkeypatch, tmp_path, rng, style
):
    from napari_style_transfer import engine

    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: True)  # auto would pick bf16 for a plain run
    assert engine.compute_dtype("auto", engine.resolve_device("cpu")) == torch.bfloat16
    loaded = []

    def load_model(p, precision=None):
        model = real_load_model(p, precision)
        loaded.append(model.dtype)
        return model

    real_load_model = tiled.load_model
    monkeypatch.setattr(tiled, "load_model", load_model)
    image = rng.random((48, 40, 3)).astype(np.float32)
    for precision in ("auto", "bf16"):
        api.stylize(image, style, size="full", tile_size=32, out=str(tmp_path / f"{precision}.zarr"),
                    **FAST | {"precision": precision})  # fmt: skip
    assert loaded == [torch.float32, torch.bfloat16]


def test_a_grey_image_gives_a_grey_result(tmp_path, rng, style):
    grey = (rng.random((64, 48)) * 255).astype(np.uint8)
    stored = api.stylize(grey, style, size="full", tile_size=32, out=str(tmp_path / "g.zarr"), **FAST)
    assert stored.shape == (64, 48)
    assert not np.isnan(np.asarray(stored[...])).any()


def test_a_rerun_with_the_same_settings_skips_finished_tiles(tmp_path, slide, style):
    out = str(tmp_path / "r.ome.zarr")
    first = np.asarray(api.stylize(slide, style, size="full", tile_size=32, out=out, **FAST)[...])
    fp = tiled.plan_full(slide, style, size="full", tile_size=32, **FAST)
    records = list(tiled.run_full(fp, tiled.open_store(fp, out)))
    assert records == []
    np.testing.assert_array_equal(np.asarray(zarr.open_group(out)["0"][...]), first)


def test_a_rerun_after_a_stop_runs_only_the_unfinished_tiles_and_ends_as_one_run(tmp_path, slide, style):
    out = str(tmp_path / "r.ome.zarr")
    fp = tiled.plan_full(slide, style, size="full", tile_size=32, **FAST)
    run = tiled.run_full(fp, tiled.open_store(fp, out))
    # levels 24x20 (the composition), 48x40 (2x2 tiles of 32), 96x80 (3x3 tiles): stop
    # after the composition, the middle level and two tiles of the full level, 3 steps each
    for _ in range(3 * (1 + 4 + 2)):
        next(run)
    run.close()
    store = tiled.open_store(fp, out)
    pieces = store.scratch("pieces-96x80", (0,))  # reopened: the full level's tiles, blended at its end
    done = int(pieces.finished().sum())
    assert done == 2
    assert not store.finished().any()
    records = [r for r in tiled.run_full(fp, store) if isinstance(r, StepRecord)]
    assert len(records) == 3 * (9 - done)
    assert store.finished().all()
    whole = str(tmp_path / "whole.ome.zarr")
    uninterrupted = api.stylize(slide, style, size="full", tile_size=32, out=whole, **FAST)
    np.testing.assert_allclose(np.asarray(store.levels[0][...]), np.asarray(uninterrupted[...]), atol=1e-6)


def test_other_settings_on_an_existing_store_are_refused_with_the_fix(tmp_path, slide, style):
    out = str(tmp_path / "r.ome.zarr")
    api.stylize(slide, style, size="full", tile_size=32, out=out, **FAST)
    with pytest.raises(StyleTransferError, match=r"options\.steps.*new path, or delete it"):
        api.stylize(slide, style, size="full", tile_size=32, out=out, **(FAST | {"steps": 4}))


def test_a_tile_size_off_the_layers_stride_is_refused_naming_its_neighbours(slide, style):
    with pytest.raises(StyleTransferError, match="use 32 or 34"):
        tiled.plan_full(slide, style, size="full", tile_size=33, **FAST)


def test_out_without_size_full_is_refused(tmp_path, content, style):
    with pytest.raises(StyleTransferError, match="size='full'"):
        api.stylize(content, style, out=str(tmp_path / "r.zarr"), **FAST)


def test_every_tile_starts_from_the_coarser_level_enlarged_over_its_window(rng, slide, style):
    import torch

    from napari_style_transfer.engine import resize
    from napari_style_transfer.pipeline.zarr_sink import WholeImage

    fp = tiled.plan_full(slide, style, size="full", tile_size=32, **FAST)
    targets = tiled._targets(fp, tiled.open_store(fp, zarr.storage.MemoryStore()))
    coarse = rng.random((*fp.levels[0].shape, 3)).astype(np.float32)
    WholeImage(targets[0]).take((), coarse)
    level = tiled.TileLevel(fp, fp.levels[1], targets[0], targets[1])
    whole = resize(torch.from_numpy(coarse).permute(2, 0, 1)[None], *fp.levels[1].shape)
    assert len(level.grid) == 4
    for tile in level.grid:
        start = level.carry(tiled.TileJob(0, (), (), tile=tile), None).start
        np.testing.assert_allclose(start, whole[(..., *tile.window.slices)].clamp(0, 1), atol=1e-6)


def test_the_default_tile_size_is_what_free_memory_holds_at_most_512_on_the_cpu(slide, style):
    from napari_style_transfer import tiles
    from napari_style_transfer.engine import LBFGS_HISTORY, free_memory_bytes, resolve_device

    fp = tiled.plan_full(slide, style, size="full", **(FAST | {"device": "cpu"}))
    layers = ("conv2_2", "conv1_1", "conv2_1")
    largest = tiles.largest_tile_size(
        free_memory_bytes(resolve_device("cpu")), layers, "lbfgs", LBFGS_HISTORY
    )
    assert fp.tile_size == min(largest, tiled.CPU_TILE_LIMIT)
    assert fp.composition.options.tile_size == fp.tile_size  # stored as it was resolved


def test_without_out_the_result_is_a_numpy_array_of_the_contents_size(rng, style):
    grey = rng.random((64, 48)).astype(np.float32)
    result = api.stylize(grey, style, size="full", tile_size=32, **(FAST | {"keep_grey": False}))
    assert isinstance(result, np.ndarray)
    assert result.shape == (64, 48, 3)
    assert not np.isnan(result).any()


def test_neighbouring_tiles_are_blended_across_their_border_not_cut():
    from napari_style_transfer.pipeline.zarr_sink import FeatheredLevel
    from napari_style_transfer.tiles import feathered_core, tile_grid
    from napari_style_transfer.zarr_output import open_result_store

    # two tiles side by side that disagree completely: one all 0, the other all 1
    shape, band = (32, 64), 8
    target = open_result_store(zarr.storage.MemoryStore(), (*shape, 3), {}, 32)
    grid = tile_grid(shape, 32, margin=4)
    level = FeatheredLevel(target, target.scratch("pieces", (40, 2 * 40, 3), 40), grid, band)
    for value, tile in enumerate(grid):
        window = np.full((*tile.window.shape, 3), float(value), np.float32)
        level.sink(tile).take((), window)
    assert not target.finished().any()  # a cell is written only once every tile is done
    level.finalise()
    assert target.finished().all()
    row = np.asarray(target.levels[0][0, 0])  # red, along the row
    # cut, the row would jump from 0 to 1 at column 32; blended, it ramps across the band
    np.testing.assert_allclose(row[: 32 - band // 2], 0)
    np.testing.assert_allclose(row[32 + band // 2 :], 1)
    assert np.abs(np.diff(row)).max() == pytest.approx(1 / band)
    region, _ = feathered_core(grid[0], shape, band)
    assert region.right == 32 + band // 2


def test_a_run_stopped_while_blending_ends_the_blend_without_running_a_step(tmp_path, slide, style):
    out = str(tmp_path / "r.ome.zarr")
    first = np.asarray(api.stylize(slide, style, size="full", tile_size=32, out=out, **FAST)[...])
    fp = tiled.plan_full(slide, style, size="full", tile_size=32, **FAST)
    store = tiled.open_store(fp, out)
    store._finished[1:, :] = 0  # every tile done, the last two rows of cells not yet blended
    store.levels[0][:, 32:, :] = 0
    assert list(tiled.run_full(fp, store)) == []
    assert store.finished().all()
    np.testing.assert_array_equal(np.asarray(store.levels[0][...]), first)


def test_a_tiled_run_holds_no_more_images_after_many_tiles_than_after_one(monkeypatch, slide, style):
    """Memory follows the tile, not the number of tiles: each step's records let go of their
    images when the next step starts, and make no reference cycles (which only the garbage
    collector frees, rarely once torch's many objects are long-lived). Counted with the
    collector off: before, every step of every tile left a record holding its image."""
    import gc

    import torch

    from napari_style_transfer.pipeline import zarr_sink

    alive: list[tuple[int, int]] = []  # (step records, tensors) after each tile of the full level
    take = zarr_sink.FeatheredPiece.take

    def counted(piece, index, image):
        take(piece, index, image)
        if piece.level.shape == slide.shape[:2]:
            kinds = [
                type(o) for o in gc.get_objects()
            ]  # type(): isinstance reads __class__, which warns on some
            alive.append((kinds.count(StepRecord), sum(issubclass(kind, torch.Tensor) for kind in kinds)))

    monkeypatch.setattr(zarr_sink.FeatheredPiece, "take", counted)
    gc.collect()
    before = [type(o) for o in gc.get_objects()].count(StepRecord)  # earlier tests' (napari's last run)
    gc.disable()
    try:
        api.stylize(slide, style, size="full", tile_size=16, **(FAST | {"steps": 2}))
    finally:
        gc.enable()
    assert len(alive) == 30  # 6 x 5 tiles of 16 px at full size
    records, tensors = zip(*alive, strict=True)
    assert max(records) - before <= 2  # this step's record, and the one the caller holds
    # the tensors alive vary by a few with each tile's curvature pairs, and do not grow
    assert np.mean(tensors[-10:]) <= np.mean(tensors[1:11]) + 2, tensors


def test_the_memory_a_tile_freed_is_given_back_after_each_tile(monkeypatch, slide, style):
    from napari_style_transfer.pipeline import zarr_sink

    events = []
    take = zarr_sink.FeatheredPiece.take

    def taken(piece, index, image):
        take(piece, index, image)
        events.append("tile")

    monkeypatch.setattr(tiled, "release_freed_memory", lambda: events.append("released"))
    monkeypatch.setattr(zarr_sink.FeatheredPiece, "take", taken)
    api.stylize(slide, style, size="full", tile_size=32, **FAST)
    assert events.count("tile") > 1
    assert events == ["tile", "released"] * events.count("tile")
