"""Results written a tile at a time into an OME-Zarr store: read back whole, resumed where a
run stopped, refused when made otherwise, intact after a killed writer, in bounded memory."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest
import tifffile
import zarr
from skimage.transform import downscale_local_mean

from napari_style_transfer.errors import StyleTransferError
from napari_style_transfer.large_images import open_large_image
from napari_style_transfer.options import StyleOptions
from napari_style_transfer.styled_files import read_settings
from napari_style_transfer.tiles import Region
from napari_style_transfer.zarr_output import open_result_store, pyramid_depth, write_pyramidal_tiff

SHAPE = (100, 130, 3)


def settings(**options):
    """Settings shaped like ``StyleResult.metadata()``."""
    return {
        "weights": "random",
        "device": "cpu",
        "precision": "fp32",
        "steps_done": 4,
        "seconds": 1.5,
        "losses": {"content": 1.0, "style": 2.0},
        "options": StyleOptions(**options).to_dict(),
        "styles": [{"shape": [36, 36, 3]}],
        "style_regions": None,
    }


@pytest.fixture
def result_image():
    return np.random.default_rng(0).random(SHAPE, dtype=np.float32)


def write_all(store, image, frame=()):
    rows, columns = store.grid
    written = []
    for row in range(rows):
        for column in range(columns):
            if not store.is_finished(row, column, frame):
                store.write_tile(row, column, image[store.cell(row, column).slices], frame)
                written.append((row, column))
    return written


def test_a_result_written_tile_by_tile_reads_back_as_an_ome_zarr_pyramid(tmp_path, result_image):
    store = open_result_store(tmp_path / "result.ome.zarr", SHAPE, settings(), 64)
    assert store.grid == (2, 3) and len(store.levels) == 2
    write_all(store, result_image)
    with open_large_image(tmp_path / "result.ome.zarr") as image:
        np.testing.assert_array_equal(image.read(Region(0, 0, 100, 130)), result_image)
    halved = store.level_image(1).read(Region(0, 0, 50, 65))
    np.testing.assert_allclose(halved, downscale_local_mean(result_image, (2, 2, 1)), rtol=1e-6)
    group = zarr.open_group(tmp_path / "result.ome.zarr", mode="r")
    multiscales = group.attrs["ome"]["multiscales"][0]
    assert [axis["name"] for axis in multiscales["axes"]] == ["c", "y", "x"]
    assert multiscales["datasets"][1]["coordinateTransformations"][0]["scale"] == [1.0, 2.0, 2.0]
    assert group["0"].chunks == (3, 64, 64) and group["1"].chunks == (3, 32, 32)


def test_the_stored_settings_leave_out_the_record_of_how_the_run_went(tmp_path):
    store = open_result_store(tmp_path / "result.zarr", SHAPE, settings(steps=7), 64)
    stored = store.settings()
    assert stored["options"]["steps"] == 7 and stored["weights"] == "random"
    assert not {"seconds", "losses", "steps_done", "device", "precision"} & set(stored)


def test_a_real_results_metadata_is_what_the_store_keeps(tmp_path, content, style):
    from napari_style_transfer import iter_stylize
    from napari_style_transfer.api import StyleResult

    fast = {"size": 32, "steps": 2, "weights": "random", "snapshot_every": 0}
    (result,) = [item for item in iter_stylize(content, style, **fast) if isinstance(item, StyleResult)]
    metadata = result.metadata()
    open_result_store(tmp_path / "result.zarr", SHAPE, metadata, 64)
    metadata["seconds"] += 10  # another run of the same settings takes its own time
    reopened = open_result_store(tmp_path / "result.zarr", SHAPE, metadata, 64)
    assert reopened.settings()["options"] == json.loads(json.dumps(metadata["options"]))


def test_a_rerun_with_the_same_settings_skips_the_finished_tiles(tmp_path, result_image):
    store = open_result_store(tmp_path / "result.zarr", SHAPE, settings(), 64)
    store.write_tile(0, 0, result_image[:64, :64])
    store.write_tile(1, 2, result_image[64:, 128:])
    rerun = open_result_store(tmp_path / "result.zarr", SHAPE, settings(), 64)
    assert rerun.finished().tolist() == [[True, False, False], [False, False, True]]
    assert write_all(rerun, result_image) == [(0, 1), (0, 2), (1, 0), (1, 1)]
    np.testing.assert_array_equal(rerun.level_image().read(Region(0, 0, 100, 130)), result_image)


def test_force_marks_every_tile_to_be_redone(tmp_path, result_image):
    store = open_result_store(tmp_path / "result.zarr", SHAPE, settings(), 64)
    write_all(store, result_image)
    forced = open_result_store(tmp_path / "result.zarr", SHAPE, settings(), 64, force=True)
    assert not forced.finished().any()
    assert len(write_all(forced, result_image)) == 6


def test_a_store_made_with_other_settings_is_refused_and_left_as_it_is(tmp_path, result_image):
    store = open_result_store(tmp_path / "result.zarr", SHAPE, settings(), 64)
    write_all(store, result_image)
    for other in ({"settings": settings(steps=9)}, {"shape": (100, 131, 3)}, {"tile_size": 32}):
        arguments = {"settings": settings(), "shape": SHAPE, "tile_size": 64} | other
        with pytest.raises(StyleTransferError, match="other settings .*write to a new path, or delete it"):
            open_result_store(tmp_path / "result.zarr", force=True, **arguments)
    with pytest.raises(StyleTransferError, match=r"\(options\.steps\)"):
        open_result_store(tmp_path / "result.zarr", SHAPE, settings(steps=9), 64)
    kept = open_result_store(tmp_path / "result.zarr", SHAPE, settings(), 64)
    assert kept.finished().all()
    np.testing.assert_array_equal(kept.level_image().read(Region(0, 0, 100, 130)), result_image)


def test_a_store_resumes_with_other_threads_device_or_snapshots_but_not_other_results(tmp_path, result_image):
    """Options that only say how a run is carried out may change between runs (begun on a
    laptop, finished on a server); one that changes what is computed may not."""
    store = open_result_store(tmp_path / "result.zarr", SHAPE, settings(), 64)
    store.write_tile(0, 0, result_image[:64, :64])
    elsewhere = settings(threads=32, device="cuda", snapshot_every=0, channels_last=False, batch_frames=4)
    resumed = open_result_store(tmp_path / "result.zarr", SHAPE, elsewhere, 64)
    assert resumed.finished().sum() == 1
    with pytest.raises(StyleTransferError, match=r"\(options\.precision\)"):
        open_result_store(tmp_path / "result.zarr", SHAPE, settings(threads=32, precision="bf16"), 64)


def test_a_place_that_holds_something_else_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StyleTransferError, match="is a file"):
        open_result_store(tmp_path / "notes.txt", SHAPE, settings(), 64)
    with pytest.raises(StyleTransferError, match="holds no zarr store"):
        open_result_store(tmp_path, SHAPE, settings(), 64)
    zarr.open_group(tmp_path / "other.zarr", mode="w").create_array("image", shape=(4, 4), dtype="uint8")
    with pytest.raises(StyleTransferError, match="no style-transfer result"):
        open_result_store(tmp_path / "other.zarr", SHAPE, settings(), 64)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_grey_time_series_is_stored_frame_by_frame(tmp_path):
    series = np.random.default_rng(1).random((2, 70, 90)).astype(np.float32)
    store = open_result_store(tmp_path / "series.zarr", series.shape, settings(), 64, frame_axes="t")
    write_all(store, series[1], frame=(1,))
    assert store.finished().tolist() == [[[False, False], [False, False]], [[True, True], [True, True]]]
    image = open_large_image(tmp_path / "series.zarr")
    assert (image.frames_shape, image.channels) == ((2,), 0)
    np.testing.assert_array_equal(image.read(Region(0, 0, 70, 90), (1,)), series[1])


def test_frame_axes_that_do_not_match_the_shape_are_refused(tmp_path):
    with pytest.raises(StyleTransferError, match="has 1 frame axes; name them with frame_axes"):
        open_result_store(tmp_path / "series.zarr", (2, 70, 90), settings(), 64, frame_axes="")


def test_the_pyramid_stops_at_chunks_of_32_pixels_or_one_chunk():
    assert pyramid_depth((16384, 16384), 512) == 5
    assert pyramid_depth((100, 130), 64) == 2
    assert pyramid_depth((60, 60), 64) == 1
    assert pyramid_depth((4096, 4096), 48) == 1


def test_a_tiff_result_is_a_tiled_pyramidal_bigtiff_with_the_settings(tmp_path, result_image):
    store = open_result_store(tmp_path / "result.zarr", SHAPE, settings(steps=7), 64)
    write_all(store, result_image)
    write_pyramidal_tiff(tmp_path / "result.tif", store)
    with tifffile.TiffFile(tmp_path / "result.tif") as tiff:
        series = tiff.series[0]
        assert tiff.is_bigtiff and series.is_pyramidal and len(series.levels) == 2
        assert tiff.pages[0].is_tiled and tiff.pages[0].tilelength == 64
        np.testing.assert_array_equal(series.levels[0].asarray(), result_image)
        np.testing.assert_allclose(
            series.levels[1].asarray(), downscale_local_mean(result_image, (2, 2, 1)), rtol=1e-6
        )
    assert read_settings(tmp_path / "result.tif")["options"]["steps"] == 7
    assert [path.name for path in tmp_path.iterdir() if path.name.endswith(".partial")] == []


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from napari_style_transfer.zarr_output import open_result_store

    settings = {settings!r}
    image = np.random.default_rng(0).random({shape!r}, dtype=np.float32)
    store = open_result_store(sys.argv[1], image.shape, settings, 64)

    class StopBeforeRecording:
        '''Hangs when tile (1, 1) is about to be recorded: its pixels are written.'''
        def __init__(self, finished):
            self.finished = finished
        def __getitem__(self, index):
            return self.finished[index]
        def __setitem__(self, index, value):
            if index == (1, 1):
                print("pixels written", flush=True)
                sys.stdin.readline()  # killed here
            self.finished[index] = value

    store._finished = StopBeforeRecording(store._finished)
    for row in range(2):
        for column in range(3):
            store.write_tile(row, column, image[store.cell(row, column).slices])
            print("finished", row, column, flush=True)
    """
)


def test_a_killed_writer_leaves_every_finished_tile_readable_and_resumes(tmp_path, result_image):
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(settings=settings(), shape=SHAPE))
    environment = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    writer = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "result.zarr")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=environment,
    )
    lines = []
    for line in writer.stdout:
        lines.append(line.strip())
        if line.startswith("pixels written"):
            writer.send_signal(signal.SIGKILL)
            break
    writer.wait()
    writer.stdout.close()
    writer.stdin.close()
    assert lines == ["finished 0 0", "finished 0 1", "finished 0 2", "finished 1 0", "pixels written"]
    store = open_result_store(tmp_path / "result.zarr", SHAPE, settings(), 64)
    assert store.finished().tolist() == [[True, True, True], [True, False, False]]
    level = store.level_image()
    for row, column in zip(*np.nonzero(store.finished()), strict=True):
        cell = store.cell(int(row), int(column))
        np.testing.assert_array_equal(level.read(cell), result_image[cell.slices])
    assert write_all(store, result_image) == [(1, 1), (1, 2)]
    np.testing.assert_array_equal(level.read(Region(0, 0, 100, 130)), result_image)


def _peak_bytes(side, action):
    """Peak bytes allocated while ``action(store)`` runs on a result of side x side RGB px
    in tiles of 32 px, every tile written once before: zarr's one-off set-up and Python's
    table of interned strings (pathlib interns each chunk file's name), which grows once
    for the whole process, are not what the store holds."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        store = open_result_store(os.path.join(folder, "result.zarr"), (side, side, 3), settings(), 32)
        _write_every_tile(store)
        gc.collect()
        tracemalloc.start()
        try:
            action(store)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()


def _every_cell(store):
    """The store's cells row by row; zarr's event loop leaves reference cycles (futures) to
    Python's collector, which runs when it likes: collected here every 16 tiles so that the
    peak counts what the store holds, not when the collector ran."""
    rows, columns = store.grid
    for row in range(rows):
        for column in range(columns):
            yield row, column, store.cell(row, column)
            if (row * columns + column) % 16 == 15:
                gc.collect()


def _write_every_tile(store):
    for row, column, cell in _every_cell(store):
        store.write_tile(row, column, np.full((*cell.shape, 3), row / 16, np.float32))


def _read_every_tile(store):
    level = store.level_image()
    for _, _, cell in _every_cell(store):
        level.read(cell)


@pytest.mark.parametrize("action", [_write_every_tile, _read_every_tile])
def test_writing_and_reading_hold_one_tile_whatever_the_image_size(action):
    tile_bytes = 32 * 32 * 3 * 4
    small, large = _peak_bytes(128, action), _peak_bytes(384, action)  # 16 and 144 tiles
    assert large - small < 8 * tile_bytes  # 128 more tiles, and not 8 more tile buffers held
    assert large < 384 * 384 * 3 * 4 / 4  # far below the whole image


def test_an_intermediate_level_has_its_own_scratch_store_that_resumes(tmp_path, result_image):
    store = open_result_store(tmp_path / "result.zarr", SHAPE, settings(), 64)
    half = result_image[::2, ::2]
    level = store.scratch("downscale-2", half.shape)
    assert level.grid == (1, 2) and len(level.levels) == 1
    write_all(level, half)
    assert not store.finished().any()
    reopened = open_result_store(tmp_path / "result.zarr", SHAPE, settings(), 64).scratch(
        "downscale-2", half.shape
    )
    assert reopened.finished().all()
    np.testing.assert_array_equal(reopened.level_image().read(Region(0, 0, 50, 65)), half)
    forced = open_result_store(tmp_path / "result.zarr", SHAPE, settings(), 64, force=True)
    assert not forced.scratch("downscale-2", half.shape).finished().any()


def test_tiles_read_with_their_margin_and_written_by_their_core_rebuild_the_input(tmp_path, result_image):
    """The planner's and the sink's pieces together, with the identity in place of the
    optimisation: every window read from a TIFF, its core cut out and stored."""
    from napari_style_transfer.large_images import read_window
    from napari_style_transfer.tiles import tile_grid

    tifffile.imwrite(tmp_path / "slide.tif", result_image, tile=(32, 32), photometric="rgb")
    store = open_result_store(tmp_path / "result.zarr", SHAPE, settings(), 64)
    with open_large_image(tmp_path / "slide.tif") as content:
        for tile in tile_grid(content.shape, store.tile_size, margin=80):
            window = read_window(content, tile)
            store.write_tile(tile.row, tile.column, window[tile.core.within(tile.window)])
    assert store.finished().all()
    np.testing.assert_array_equal(store.level_image().read(Region(0, 0, 100, 130)), result_image)
