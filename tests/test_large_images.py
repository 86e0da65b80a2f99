"""Large inputs read a region at a time, whatever holds them, in the engine's layout."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from napari_style_transfer.errors import StyleTransferError
from napari_style_transfer.large_images import block_mean, open_large_image, read_downscaled, read_window
from napari_style_transfer.tiles import Region, tile_grid

REGION = Region(10, 20, 42, 70)


@pytest.fixture
def picture():
    """A 96 x 128 RGB uint8 image whose every pixel differs from its neighbours."""
    return (np.random.default_rng(3).random((96, 128, 3)) * 255).astype(np.uint8)


def _ome_group(store, levels, axes, version):
    """An OME-Zarr multiscale image written with zarr alone: NGFF 0.4 (zarr v2, metadata at
    the top) or 0.5 (zarr v3, metadata under "ome")."""
    group = zarr.open_group(store, mode="w", zarr_format=2 if version == "0.4" else 3)
    datasets = []
    for number, level in enumerate(levels):
        group.create_array(str(number), data=level, chunks=(1,) * (level.ndim - 2) + (32, 32))
        datasets.append(
            {
                "path": str(number),
                "coordinateTransformations": [{"type": "scale", "scale": [1.0] * level.ndim}],
            }
        )
    kinds = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    multiscales = [{"axes": [{"name": name, "type": kinds[name]} for name in axes], "datasets": datasets}]
    if version == "0.4":
        group.attrs["multiscales"] = [{**multiscales[0], "version": "0.4"}]
    else:
        group.attrs["ome"] = {"version": "0.5", "multiscales": multiscales}
    return group


def test_a_numpy_region_comes_back_as_a_copy(picture):
    image = open_large_image(picture)
    region = image.read(REGION)
    np.testing.assert_array_equal(region, picture[10:42, 20:70])
    region[:] = 0
    assert picture[10:42, 20:70].any()
    assert (image.shape, image.channels, image.frames_shape) == ((96, 128), 3, ())


def test_a_npy_file_is_opened_as_a_memmap(tmp_path, picture):
    np.save(tmp_path / "slide.npy", picture)
    image = open_large_image(tmp_path / "slide.npy")
    assert isinstance(image.array, np.memmap)
    np.testing.assert_array_equal(image.read(REGION), picture[10:42, 20:70])


class RecordingArray:
    """An array that records the slices it is asked for (what dask reads of it)."""

    def __init__(self, data):
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.reads = []

    def __getitem__(self, index):
        self.reads.append(index)
        return self.data[index]


def test_a_dask_region_reads_only_its_own_pixels(picture):
    import dask.array as da

    recording = RecordingArray(picture)
    lazy = da.from_array(recording, chunks=(32, 32, 3), asarray=False)
    image = open_large_image(lazy)
    np.testing.assert_array_equal(image.read(REGION), picture[10:42, 20:70])
    pixels = sum(np.prod([part.stop - part.start for part in index[:2]]) for index in recording.reads)
    assert pixels == 32 * 50


def test_a_zarr_region_reads_only_the_chunks_under_it(picture):
    from zarr.storage import MemoryStore

    store = MemoryStore()
    zarr.create_array(store, data=picture, chunks=(32, 32, 3))
    reads = []

    class CountingStore(MemoryStore):
        async def get(self, key, prototype, byte_range=None):
            reads.append(key)
            return await super().get(key, prototype, byte_range)

    counting = CountingStore(store._store_dict)
    image = open_large_image(zarr.open_array(counting, mode="r"))
    reads.clear()
    np.testing.assert_array_equal(image.read(REGION), picture[10:42, 20:70])
    assert sorted(key for key in reads if key.startswith("c/")) == [
        f"c/{r}/{c}/0" for r in (0, 1) for c in (0, 1, 2)
    ]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_an_ome_zarr_group_is_read_at_level_0_with_colour_last(tmp_path, picture, version):
    channels_first = np.moveaxis(picture, -1, 0)
    _ome_group(tmp_path / "slide.ome.zarr", [channels_first, channels_first[:, ::2, ::2]], "cyx", version)
    image = open_large_image(tmp_path / "slide.ome.zarr")
    assert (image.shape, image.channels) == ((96, 128), 3)
    np.testing.assert_array_equal(image.read(REGION), picture[10:42, 20:70])


def test_an_ome_zarr_with_one_channel_is_grey_and_with_two_has_frames(tmp_path, picture):
    grey = picture[..., 0][None, None]  # (t, c, y, x)
    image = open_large_image(_ome_group(tmp_path / "grey.zarr", [grey], "tcyx", "0.5"))
    assert (image.channels, image.frames_shape) == (0, (1,))
    np.testing.assert_array_equal(image.read(REGION, (0,)), picture[10:42, 20:70, 0])
    two = np.moveaxis(picture[..., :2], -1, 0)
    image = open_large_image(_ome_group(tmp_path / "two.zarr", [two], "cyx", "0.5"))
    assert (image.channels, image.frames_shape) == (0, (2,))
    np.testing.assert_array_equal(image.read(REGION, (1,)), picture[10:42, 20:70, 1])


def test_a_tiled_tiff_is_read_through_its_zarr_store(tmp_path, picture):
    tifffile.imwrite(tmp_path / "slide.tif", picture, tile=(32, 32), photometric="rgb")
    with open_large_image(tmp_path / "slide.tif") as image:
        assert (image.shape, image.channels) == ((96, 128), 3)
        np.testing.assert_array_equal(image.read(REGION), picture[10:42, 20:70])


def test_a_pyramidal_tiff_is_read_at_level_0(tmp_path, picture):
    with tifffile.TiffWriter(tmp_path / "slide.tif", bigtiff=True) as tiff:
        tiff.write(picture, tile=(32, 32), subifds=1, photometric="rgb")
        tiff.write(picture[::2, ::2], tile=(32, 32), photometric="rgb", subfiletype=1)
    with open_large_image(str(tmp_path / "slide.tif")) as image:
        assert image.shape == (96, 128)
        np.testing.assert_array_equal(image.read(REGION), picture[10:42, 20:70])


@pytest.mark.parametrize("kind", ["tif", "npy", "zarr", "ome.zarr"])
def test_an_image_opened_from_a_path_travels_as_its_path_and_opens_again(
    tmp_path, picture, kind, monkeypatch
):
    """A dask worker gets a content by pickle: a TIFF's open file does not pickle, a memmap
    would pickle every pixel; opened again from its (absolute) path, it reads the same."""
    import pickle

    path = tmp_path / f"image.{kind}"
    if kind == "tif":
        tifffile.imwrite(path, picture, tile=(32, 32))
    elif kind == "npy":
        np.save(path, picture)
    elif kind == "zarr":
        zarr.create_array(str(path), data=picture, chunks=(32, 32, 3))
    else:
        _ome_group(str(path), [np.moveaxis(picture, -1, 0)], "cyx", "0.5")
    monkeypatch.chdir(tmp_path)
    with open_large_image(path.name) as image:  # a relative path
        sent = pickle.dumps(image)
        assert len(sent) < picture.nbytes / 10  # the path, not the pixels
        monkeypatch.chdir("/")
        again = pickle.loads(sent)
        assert again.source == path.name and again.path == path
        np.testing.assert_array_equal(again.read(REGION), picture[REGION.slices])
        again.close()


def test_an_array_given_as_it_is_travels_as_it_is(picture):
    import pickle

    again = pickle.loads(pickle.dumps(open_large_image(picture)))
    assert again.path is None
    np.testing.assert_array_equal(again.read(REGION), picture[REGION.slices])


def test_a_stack_is_read_frame_by_frame():
    stack = np.arange(3 * 4 * 40 * 50, dtype=np.uint16).reshape(3, 4, 40, 50)
    image = open_large_image(stack)
    assert (image.shape, image.channels, image.frames_shape) == ((40, 50), 0, (3, 4))
    np.testing.assert_array_equal(image.read(Region(0, 0, 8, 9), (2, 1)), stack[2, 1, :8, :9])
    with pytest.raises(StyleTransferError, match=r"frame axes of sizes \(3, 4\)"):
        image.read(Region(0, 0, 8, 9), (2,))


def test_a_window_is_clipped_to_the_image_or_padded_back_to_the_full_margin(picture):
    image = open_large_image(picture)
    corner = tile_grid((96, 128), 32, 16)[0]
    clipped = read_window(image, corner)
    np.testing.assert_array_equal(clipped, picture[:48, :48])
    padded = read_window(image, corner, pad="reflect")
    assert padded.shape == (64, 64, 3)
    np.testing.assert_array_equal(padded[16:, 16:], clipped)
    np.testing.assert_array_equal(padded[15, 16:], clipped[1])  # mirrored about the border row


def test_a_missing_path_is_refused_with_its_name(tmp_path):
    with pytest.raises(StyleTransferError, match="nothing.zarr does not exist"):
        open_large_image(tmp_path / "nothing.zarr")


def test_an_unknown_file_type_is_refused_with_the_types_that_work(tmp_path):
    (tmp_path / "slide.png").write_bytes(b"")
    with pytest.raises(StyleTransferError, match=r"give a \.npy, a TIFF"):
        open_large_image(tmp_path / "slide.png")


def test_a_group_without_multiscales_is_refused_with_its_arrays(tmp_path, picture):
    group = zarr.open_group(tmp_path / "plain.zarr", mode="w")
    group.create_array("image", data=picture)
    with pytest.raises(StyleTransferError, match=r"without OME-Zarr multiscales.*\['image'\]"):
        open_large_image(tmp_path / "plain.zarr")


def _peak_reading_tiff(folder, side):
    """Peak bytes allocated while every 32 px tile of a side x side RGB tiled TIFF is read,
    after one pass that warms tifffile's and zarr's caches up. zarr's event loop leaves
    reference cycles to Python's collector, which runs when it likes: collected here every
    4 tiles, so that the peak counts what is held, not when the collector ran."""
    import gc
    import tracemalloc

    path = folder / f"slide{side}.tif"
    tifffile.imwrite(path, np.zeros((side, side, 3), np.uint8), tile=(32, 32), photometric="rgb")
    with open_large_image(path) as image:
        for _pass in range(2):
            gc.collect()
            tracemalloc.start()
            for top in range(0, side, 32):
                for left in range(0, side, 32):
                    image.read(Region(top, left, top + 32, left + 32))
                    if left % 128 == 96:
                        gc.collect()
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    return peak


def test_reading_a_tiff_tile_by_tile_holds_one_tile_whatever_its_size(tmp_path):
    tile_bytes = 32 * 32 * 3
    small, large = _peak_reading_tiff(tmp_path, 128), _peak_reading_tiff(tmp_path, 512)  # 16, 256 tiles
    assert large - small < 8 * tile_bytes
    assert large < 512 * 512 * 3 / 4


def test_a_partial_block_at_the_edge_is_the_mean_of_the_pixels_it_has():
    pixels = np.arange(25, dtype=np.uint16).reshape(5, 5)
    shrunk = block_mean(pixels, 2)
    assert shrunk.shape == (3, 3)
    assert shrunk[0, 0] == np.mean([0, 1, 5, 6])
    assert shrunk[0, 2] == np.mean([4, 9])
    assert shrunk[2, 2] == 24


def test_a_downscaled_region_equals_the_whole_images_block_mean(picture):
    image = open_large_image(picture)
    region = Region(3, 5, 12, 16)  # of the 24 x 32 level at factor 4
    expected = block_mean(picture, 4)[region.slices]
    np.testing.assert_allclose(read_downscaled(image, region, 4), expected, rtol=1e-6)
    whole = read_downscaled(image, Region(0, 0, 10, 13), 10)  # partial blocks at the edges
    np.testing.assert_allclose(whole, block_mean(picture, 10), rtol=1e-6)


def test_a_downscaled_region_is_read_a_band_of_rows_at_a_time(picture):
    recording = RecordingArray(picture)
    image = open_large_image(recording)
    shrunk = read_downscaled(image, Region(0, 0, 12, 16), 8, band_pixels=2 * 16 * 8 * 8)
    np.testing.assert_allclose(shrunk, block_mean(picture, 8), rtol=1e-6)
    assert [index[0] for index in recording.reads] == [slice(top, top + 16) for top in range(0, 96, 16)]


def test_a_coarser_pyramid_level_is_read_for_a_downscaled_region(tmp_path, picture):
    from napari_style_transfer.large_images import read_downscaled

    # level 1 marked (not level 0's block means), so reading it shows
    channels_first = np.moveaxis(picture, -1, 0)
    marked = np.full((3, 48, 64), 7, np.uint8)
    _ome_group(tmp_path / "slide.ome.zarr", [channels_first, marked], "cyx", "0.5")
    image = open_large_image(tmp_path / "slide.ome.zarr")
    assert [factor for factor, _ in image.pyramid] == [2]
    np.testing.assert_array_equal(read_downscaled(image, Region(0, 0, 24, 32), 4), 7)  # level 1, halved
    np.testing.assert_array_equal(
        read_downscaled(image, Region(0, 0, 96, 128), 1), picture
    )  # factor 1: level 0 itself


def test_a_pyramid_level_rounded_down_has_its_missing_edge_repeated(tmp_path):
    full = np.arange(9 * 10, dtype=np.float32).reshape(9, 10)
    floor = block_mean(full[:8], 2).astype(np.float32)  # 4 x 5: the last, partial row missing
    _ome_group(tmp_path / "odd.zarr", [full, floor], "yx", "0.5")
    image = open_large_image(tmp_path / "odd.zarr")
    assert [level.shape for _, level in image.pyramid] == [(4, 5)]
    downscaled = read_downscaled(image, Region(0, 0, 5, 5), 2)
    np.testing.assert_array_equal(downscaled[:4], floor)
    np.testing.assert_array_equal(downscaled[4], floor[3])


def test_a_level_that_is_not_half_the_one_above_ends_the_pyramid(tmp_path, picture):
    grey = picture[..., 0]
    _ome_group(tmp_path / "odd.zarr", [grey, grey[::3, ::3]], "yx", "0.5")
    assert open_large_image(tmp_path / "odd.zarr").pyramid == ()


def test_a_pyramidal_tiffs_levels_are_its_pyramid(tmp_path, picture):
    with tifffile.TiffWriter(tmp_path / "slide.tif", bigtiff=True) as tiff:
        tiff.write(picture, tile=(32, 32), subifds=1, photometric="rgb")
        tiff.write(picture[::2, ::2], tile=(32, 32), photometric="rgb", subfiletype=1)
    with open_large_image(tmp_path / "slide.tif") as image:
        (factor, level), *_ = image.pyramid
        assert (factor, level.shape) == (2, (48, 64, 3))
        np.testing.assert_array_equal(read_downscaled(image, Region(0, 0, 48, 64), 2), picture[::2, ::2])


def test_labels_are_sampled_at_pixel_centres_a_band_at_a_time():
    from napari_style_transfer.large_images import read_nearest

    labels = np.repeat(np.repeat(np.arange(12, dtype=np.uint8).reshape(3, 4), 8, axis=0), 8, axis=1)
    image = open_large_image(labels)  # 24 x 32: each label an 8 x 8 block
    reads = []
    original = image.read
    image.read = lambda region, frame=(), array=None: reads.append(region) or original(region, frame)
    sampled = read_nearest(image, (6, 8), Region(1, 2, 5, 7), band_pixels=2 * 32)
    np.testing.assert_array_equal(sampled, labels[::4, ::4][1:5, 2:7])
    assert sampled.dtype == np.uint8
    assert len(reads) > 1 and max(r.shape[0] * r.shape[1] for r in reads) <= 2 * 4 * 32


def test_extremes_cover_every_frame_and_alpha_apart():
    from napari_style_transfer.large_images import extremes

    stack = np.zeros((2, 8, 8, 4), np.float32)
    stack[1, 7, 7, 0] = 3.0
    stack[0, 0, 0, 2] = -1.0
    stack[..., 3] = 0.5
    colour, alpha = extremes(open_large_image(stack), band_pixels=8)
    assert colour == (-1.0, 3.0) and alpha == (0.5, 0.5)
    stack[1, 3, 3, 1] = np.nan
    assert np.isnan(extremes(open_large_image(stack))[0][0])
