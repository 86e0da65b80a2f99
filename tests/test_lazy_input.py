"""Inputs read a frame at a time (a lazy napari layer): the engine never asks for the whole."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_runs import tiny_options

from napari_style_transfer import stylize
from napari_style_transfer._image import describe_image

FAST = tiny_options(steps=2)


class RecordingFrames:
    """A frame source over a numpy stack that records every index asked for."""

    def __init__(self, data: np.ndarray, value_range: tuple[float, float]):
        self.data = data
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim
        self.value_range = value_range
        self.scaling = "test range"
        self.reads: list[tuple] = []

    def __getitem__(self, index):
        self.reads.append(index)
        return np.array(self.data[index], copy=True)

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole source was read")


def stack(frames=3):
    ramp = np.linspace(0, 4000, 32 * 32).reshape(32, 32)
    return np.stack([np.roll(ramp, 3 * t, axis=1) for t in range(frames)]).astype(np.uint16)


def test_describing_a_frame_source_reads_none_of_it():
    source = RecordingFrames(stack(), (0.0, 4000.0))
    described = describe_image(source, "content")
    assert source.reads == []
    assert described.stack_shape == (3,) and described.shape == (32, 32) and described.grey
    assert (described.low, described.high, described.scaling) == (0.0, 4000.0, "test range")


def test_a_frame_source_is_read_once_per_frame_and_styles_like_the_array(style):
    data = stack()
    source = RecordingFrames(data, (0.0, 4000.0))
    lazy = stylize(source, style, **FAST)
    assert sorted(source.reads) == [(0,), (1,), (2,)]
    np.testing.assert_allclose(lazy, stylize(data.astype(np.float32) / 4000.0, style, **FAST), atol=1e-5)


def test_a_2d_frame_source_is_read_as_one_frame(style):
    source = RecordingFrames(stack(1)[0], (0.0, 4000.0))
    stylize(source, style, **FAST)
    assert source.reads == [()]


def test_a_frame_source_with_an_empty_range_is_refused():
    from napari_style_transfer import StyleTransferError

    with pytest.raises(StyleTransferError, match="maps values 5..5"):
        describe_image(RecordingFrames(stack(), (5.0, 5.0)), "content")


def logged_zarr(data: np.ndarray, chunks: tuple[int, ...], reads: list):
    """``data`` as an in-memory zarr array whose store appends each chunk key it reads to ``reads``."""
    zarr = pytest.importorskip("zarr")
    from zarr.storage import MemoryStore, WrapperStore

    class LoggingStore(WrapperStore):
        async def get(self, key, prototype, byte_range=None):
            if key.startswith("c/"):  # a chunk (not metadata)
                reads.append(key)
            return await super().get(key, prototype, byte_range)

    array = zarr.create_array(LoggingStore(MemoryStore()), shape=data.shape, chunks=chunks, dtype=data.dtype)
    array[...] = data
    reads.clear()
    return array


def test_a_zarr_stack_is_read_frame_by_frame_once_and_styles_like_the_array(style):
    from napari_style_transfer._napari.layers import LayerFrames

    data = stack()[..., None]  # a trailing axis of 1: grey, dropped from each frame as it is read
    reads: list[str] = []
    frames = LayerFrames(logged_zarr(data, (1, 16, 16, 1), reads), "zarr stack", "content")
    frames.value_range = (0.0, 4000.0)
    assert reads == [] and frames.shape == (3, 32, 32)
    lazy = stylize(frames, style, **FAST)
    assert sorted(reads) == sorted(f"c/{t}/{y}/{x}/0" for t in range(3) for y in range(2) for x in range(2))
    in_memory = stylize(data[..., 0].astype(np.float32) / 4000.0, style, **FAST)
    np.testing.assert_allclose(lazy, in_memory, atol=1e-5)
