"""Between napari layers and the engine's numpy images: inputs, placement, result layers.

Nothing here imports torch or Qt. Runs only read layer data, so the user's layers are never
touched by them; a lazy (dask, zarr) layer is read one frame at a time in the worker thread,
never whole and never on the GUI thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import StyleTransferError

if TYPE_CHECKING:  # pragma: no cover
    import napari
    from napari.layers import Image

#: What a run of an nD layer styles: the slice on screen, or every slice in one of two ways.
STACK_MODES = ("current slice", "whole stack as time series", "whole stack, frames independent")
#: The engine's ``frames`` option for each whole-stack mode.
FRAMES_OF_STACK = {"whole stack as time series": "time", "whole stack, frames independent": "independent"}
#: Earlier names, still accepted from scripts.
STACK_ALIASES = {"whole stack": "whole stack, frames independent"}
#: Leading-axis labels that mark a layer as a time series (compared in lower case).
TIME_LABELS = ("t", "time")


def stack_mode(stack: str) -> str:
    """``stack`` by its current name; refuses unknown ones."""
    stack = STACK_ALIASES.get(stack, stack)
    if stack not in STACK_MODES:
        raise StyleTransferError(f"stack must be one of {', '.join(map(repr, STACK_MODES))}, got {stack!r}")
    return stack


def frames_option(stack: str) -> str | None:
    """The engine's ``frames`` option a stack mode asks for; None for a single slice."""
    return FRAMES_OF_STACK.get(stack_mode(stack))


def leading_axis_label(viewer: napari.Viewer | None, layer: Any) -> str:
    """The label of a layer's first axis: its own (napari >= 0.9), else the viewer's for
    the world axis it lies on (as set by ``viewer.dims.axis_labels = ("t", "y", "x")``)."""
    own = tuple(getattr(layer, "axis_labels", ()))
    if own and own != tuple(str(i) for i in range(-layer.ndim, 0)):  # not napari's defaults
        return str(own[0])
    if viewer is not None and viewer.dims.ndim >= layer.ndim:
        return str(viewer.dims.axis_labels[viewer.dims.ndim - layer.ndim])
    return ""


def is_time_series(viewer: napari.Viewer | None, layer: Any) -> bool:
    """An nD layer whose first axis is labelled t or time (any case)."""
    return layer.ndim > 2 and leading_axis_label(viewer, layer).strip().lower() in TIME_LABELS


@dataclass(frozen=True)
class LayerInput:
    """What a run reads from a layer, and where that sits in the layer.

    For a deferred input ``data`` is the layer's own array (numpy, dask, zarr) or a slice of
    it (a numpy view, else a :class:`LazySlice`): nothing of it is computed or copied on the
    GUI thread. :meth:`engine_array`,
    called in the worker, gives the engine something that reads one frame at a time."""

    data: Any
    #: Data index of the slice along the layer's leading axes, for "current slice" runs of
    #: nD layers; None when ``data`` covers the whole layer.
    slice_index: tuple[int, ...] | None
    #: For a deferred grey input: the contrast limits ``data`` is still to be mapped by.
    limits: tuple[float, float] | None = None
    deferred: bool = False
    name: str = ""  # the layer's, for messages
    role: str = "content"

    def engine_array(self) -> Any:
        """The engine's input; call it in the worker thread. Not deferred: ``data``. A numpy
        RGB layer: a copy (the engine's value rules look at it whole). Anything else: a
        :class:`LayerFrames` that reads and checks a frame at a time."""
        if not self.deferred:
            return self.data
        if self.limits is None and isinstance(self.data, np.ndarray):
            return np.array(self.data, copy=True)
        frames = LayerFrames(self.data, self.name, self.role)
        if self.limits is not None:
            frames.value_range = self.limits
            frames.scaling = "the layer's contrast limits {:g}..{:g}".format(*self.limits)
            # one image can be refused when it reads; in a stack, blank slices are normal
            frames.refuse_constant = frames.ndim == 2
        else:
            frames.measure_range()
        return frames

    def whole(self) -> np.ndarray:
        """All of ``data`` computed, checked and mapped as a run sees it (for scripts that
        want the array; runs read frames through :meth:`engine_array`)."""
        data = np.asarray(self.data)
        _check_finite(data, self.role, self.name, ())
        if self.limits is None:
            return np.array(data, copy=True)
        return _map_by_limits(data, *self.limits)


class LazySlice:
    """A slice of a layer's array along its leading axes, read only when indexed or made an
    array (in the worker): indexing a zarr array reads at once, indexing this does not."""

    def __init__(self, data: Any, index: tuple[int, ...]):
        self.data = data
        self.index = tuple(index)
        self.shape = tuple(int(side) for side in data.shape[len(self.index) :])
        self.dtype = np.dtype(data.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, index: Any) -> Any:
        return self.data[self.index + (index if isinstance(index, tuple) else (index,))]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self.data[self.index], dtype=dtype)


class LayerFrames:
    """A layer's data as the engine reads it (a frame source, see ``describe_image``):
    ``frames[index]`` computes one frame, for a dask or zarr layer only that frame's chunks,
    in the thread that asks, and refuses NaN or infinite values naming the layer and the
    frame. ``value_range`` says which values map to 0 and 1, so nothing reads it all first."""

    def __init__(self, data: Any, name: str, role: str):
        shape = tuple(int(side) for side in data.shape)
        #: a trailing axis of 1 is no colour axis; dropped from each frame as it is read
        #: (``data[..., 0]`` of a zarr array would read all of it)
        self.squeeze = len(shape) >= 3 and shape[-1] == 1
        if self.squeeze:
            shape = shape[:-1]
        self.data = data
        self.shape = shape
        self.dtype = np.dtype(data.dtype)
        self.name = name
        self.role = role
        self.value_range: tuple[float, float] = (0.0, 1.0)
        self.scaling = ""
        self.alpha_as_is = True
        #: refuse a grey frame that shows as one flat value through ``value_range``
        self.refuse_constant = False

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, index: tuple[int, ...]) -> np.ndarray:
        frame = np.asarray(self.data[index])
        if self.squeeze:
            frame = frame[..., 0]
        _check_finite(frame, self.role, self.name, index)
        if self.refuse_constant and frame.size:
            low, high = self.value_range
            shown = np.clip(
                (np.array([frame.min(), frame.max()], dtype=np.float64) - low) / (high - low), 0.0, 1.0
            )
            if shown[0] == shown[1]:
                raise StyleTransferError(
                    f"the {self.role} layer {self.name!r} is constant within its contrast limits {low:g}..{high:g} "
                    f"(every pixel shows as {shown[0]:.3g}); style transfer needs an image with some contrast"
                )
        return frame

    def measure_range(self) -> None:
        """RGB(A) values map as the engine maps a numpy array: uint8 and bool by their
        dtype's range, floats within [0, 1] as they are, anything else by its own range
        (found by one pass over the frames, a frame at a time)."""
        from .._image import _value_range

        if self.dtype in (np.uint8, np.bool_):
            low, high, self.scaling = _value_range(self.dtype, 0.0, 1.0)
            self.value_range = (low, high)
            return
        if 0 in self.shape:
            return  # describe_image refuses it
        low = alpha_low = np.inf
        high = alpha_high = -np.inf
        lead = self.shape[:-3]
        for index in np.ndindex(*lead) if lead else [()]:
            frame = self[index]
            low, high = min(low, float(frame[..., :3].min())), max(high, float(frame[..., :3].max()))
            if self.shape[-1] == 4:
                alpha_low = min(alpha_low, float(frame[..., 3].min()))
                alpha_high = max(alpha_high, float(frame[..., 3].max()))
        if low == high:
            raise StyleTransferError(
                f"the {self.role} layer {self.name!r} is constant (every value is {low:g}); style transfer "
                "needs an image with some contrast"
            )
        low, high, self.scaling = _value_range(self.dtype, low, high)
        self.value_range = (low, high)
        self.alpha_as_is = self.shape[-1] != 4 or bool(alpha_low >= 0.0 and alpha_high <= 1.0)


def _check_finite(values: np.ndarray, role: str, name: str, index: tuple[int, ...]) -> None:
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        where = ""
        if index:
            where = f" in frame {index[0]}" if len(index) == 1 else f" in frame {index}"
        raise StyleTransferError(
            f"the {role} layer {name!r} contains NaN or infinite values{where}; replace them first"
        )


def _map_by_limits(data: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip((np.asarray(data, dtype=np.float32) - np.float32(low)) / np.float32(high - low), 0.0, 1.0)


def current_slice(viewer: napari.Viewer, layer: Image, role: str = "content") -> tuple[int, ...]:
    """Data indices along the layer's leading axes of the slice the viewer shows.

    The slice is a plane of the layer's last two axes (Y, X); when the viewer shows other
    axes (the axis order was changed) that is not what is on screen, so it is refused."""
    lead = layer.ndim - 2
    if lead <= 0:
        return ()
    world = viewer.dims.ndim
    if set(viewer.dims.order[-2:]) != {world - 2, world - 1}:  # (X, Y) is still the same plane
        fix = "or style the whole stack" if role == "content" else "(the style is the slice on screen)"
        raise StyleTransferError(
            f"the viewer shows the {role} layer {layer.name!r} with its axes reordered, so the plane on "
            f"screen is not a (Y, X) slice; reset the axis order (the roll/transpose buttons) {fix}"
        )
    point = np.asarray(layer.world_to_data(viewer.dims.point), dtype=float)
    shape = _level_shape(layer, 0)
    return tuple(int(np.clip(round(point[axis]), 0, shape[axis] - 1)) for axis in range(lead))


def layer_input(
    layer: Any,
    role: str,
    *,
    viewer: napari.Viewer | None = None,
    stack: str = "current slice",
    size: int = 512,
    defer: bool = False,
) -> LayerInput:
    """What a run reads of an Image layer. With ``defer``, only a record of it (a view of the
    data, lazy for dask or zarr, and its contrast limits), read later in the worker through
    :meth:`LayerInput.engine_array`; without, the data computed and mapped now.

    nD layers give the slice the viewer shows (``stack="current slice"``) or every slice
    (either whole-stack mode of :data:`STACK_MODES`); multiscale layers give the coarsest
    level that still has ``size`` pixels on its longest side. Grey images are mapped to
    [0, 1] by the layer's contrast limits (what the user sees); RGB(A) data as the engine
    maps a numpy array.
    """
    from napari.layers import Image

    if not isinstance(layer, Image):
        kind = type(layer).__name__ if layer is not None else "no"
        raise StyleTransferError(f"the {role} layer is {_article(kind)} {kind} layer; choose an Image layer")
    stack = stack_mode(stack)
    level = _pick_level(layer, size)
    data = layer.data[level] if layer.multiscale else layer.data
    slice_index = None
    if layer.ndim > 2 and (stack == "current slice" or role == "style"):
        slice_index = current_slice(viewer, layer, role) if viewer is not None else (0,) * (layer.ndim - 2)
        index = _level_index(layer, level, slice_index)
        # numpy gives a view; zarr (or h5py) would read the slice here, on the GUI thread
        data = data[index] if isinstance(data, np.ndarray) else LazySlice(data, index)
    limits = None
    if not layer.rgb:
        low, high = (float(v) for v in layer.contrast_limits)
        if not high > low:
            raise StyleTransferError(
                f"the {role} layer {layer.name!r} has empty contrast limits ({low:g}, {high:g}); adjust them first"
            )
        limits = (low, high)
    source = LayerInput(data, slice_index, limits, deferred=True, name=layer.name, role=role)
    return source if defer else LayerInput(source.whole(), slice_index, name=layer.name, role=role)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _level_shape(layer: Image, level: int) -> tuple[int, ...]:
    shapes = layer.level_shapes if layer.multiscale else [layer.data.shape]
    return tuple(int(side) for side in shapes[level][: layer.ndim])


def _pick_level(layer: Image, size: int) -> int:
    """The coarsest pyramid level whose 2D frame still has ``size`` px on its longest side."""
    if not layer.multiscale:
        return 0
    levels = [i for i in range(len(layer.level_shapes)) if max(_level_shape(layer, i)[-2:]) >= size]
    return max(levels) if levels else 0


def _level_index(layer: Image, level: int, slice_index: tuple[int, ...]) -> tuple[int, ...]:
    """A level-0 index along the leading axes, in ``level``'s own coordinates."""
    if level == 0:
        return slice_index
    full, coarse = _level_shape(layer, 0), _level_shape(layer, level)
    return tuple(min(c - 1, i * c // f) for i, f, c in zip(slice_index, full, coarse, strict=False))


def placement(
    layer: Image, result_shape: tuple[int, ...], slice_index: tuple[int, ...] | None = None
) -> dict[str, Any]:
    """Layer keywords that lay a result over ``layer``.

    ``result_shape`` is the result's spatial shape: its last two axes are the working size,
    its leading axes either the layer's own (a whole stack) or single slices at
    ``slice_index``. Result pixel j covers the content's extent with bigger (or smaller)
    pixels: it is centred where content pixel ``(j + 0.5) * f - 0.5`` is, ``f`` being the size
    ratio per axis. Plain scale/translate placements stay plain; rotated, sheared or
    affine-transformed layers get the whole data-to-world transform as one affine.
    """
    ndim = layer.ndim
    lead = ndim - 2
    full = np.asarray(_level_shape(layer, 0), dtype=float)
    factor = full / np.asarray(result_shape, dtype=float)
    offset = (factor - 1) / 2
    if slice_index is not None:
        factor[:lead] = 1.0
        offset[:lead] = slice_index
    scale = np.asarray(layer.scale, dtype=float)
    translate = np.asarray(layer.translate, dtype=float)
    plain = (
        np.allclose(layer.rotate, np.eye(ndim))
        and np.allclose(layer.shear, 0)
        and np.allclose(layer.affine.affine_matrix, np.eye(ndim + 1))
    )
    if plain:
        return {"scale": tuple(scale * factor), "translate": tuple(translate + scale * offset)}
    from napari.utils.transforms import CompositeAffine

    data_to_physical = CompositeAffine(
        scale=layer.scale, translate=layer.translate, rotate=layer.rotate, shear=layer.shear, ndim=ndim
    )
    resample = np.eye(ndim + 1)
    resample[:ndim, :ndim] = np.diag(factor)
    resample[:ndim, ndim] = offset
    return {"affine": layer.affine.affine_matrix @ data_to_physical.affine_matrix @ resample}


def is_colour(image: np.ndarray) -> bool:
    """A result with a trailing RGB(A) axis (grey results have none)."""
    return image.ndim >= 3 and image.shape[-1] in (3, 4)


def in_value_range(image: np.ndarray, value_range: tuple[float, float] | None) -> np.ndarray:
    """A grey result (the engine's [0, 1]) mapped back to the content's units: 0 to the low
    contrast limit the content was read with, 1 to the high one. Colour results, or no
    ``value_range``, stay as they are (napari shows RGB floats in [0, 1])."""
    if value_range is None or is_colour(image):
        return image
    low, high = value_range
    return (np.float32(low) + np.asarray(image, dtype=np.float32) * np.float32(high - low)).astype(np.float32)


def result_layer_kwargs(
    content: Image,
    image: np.ndarray,
    name: str,
    metadata: dict[str, Any],
    slice_index: tuple[int, ...] | None = None,
    value_range: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Everything ``viewer.add_image`` needs for a snapshot or result of ``content``.

    ``image`` is the result as the engine gives it: one frame, or a whole stack. The layer
    gets the content's blending (an additive channel stays additive, so it does not hide the
    others) and, for a grey result, its colormap and gamma; its contrast limits are
    ``value_range`` (the result is in the content's units, see :func:`in_value_range`) or
    [0, 1]."""
    colour = is_colour(image)
    spatial = image.shape[:-1] if colour else image.shape
    lead = content.ndim - 2
    if len(spatial) == 2 and lead > 0:  # one slice of an nD layer: keep it at its place
        spatial = (1,) * lead + spatial
    # multiscale given: napari guesses nothing on its thread (the result is one numpy array)
    kwargs: dict[str, Any] = {"name": name, "metadata": {"style_transfer": metadata}, "multiscale": False}
    single_frame = image.ndim - colour == 2
    kwargs.update(placement(content, spatial, slice_index if single_frame else None))
    if colour:
        # fixed, not napari's guess from the data: snapshots stay comparable and a stack that
        # fills in frame by frame is not judged by its first frame
        kwargs.update(rgb=True, contrast_limits=(0.0, 1.0))
    else:
        limits = tuple(float(v) for v in value_range) if value_range is not None else (0.0, 1.0)
        kwargs.update(colormap=content.colormap, gamma=content.gamma, contrast_limits=limits)
    kwargs["blending"] = str(content.blending)
    return kwargs


def as_layer_data(image: np.ndarray, content: Image) -> np.ndarray:
    """Give a single-slice result of an nD layer its leading axes of length 1."""
    colour = image.ndim >= 3 and image.shape[-1] in (3, 4)
    lead = content.ndim - 2 - (image.ndim - colour - 2)
    return image.reshape((1,) * lead + image.shape) if lead > 0 else image


def _data_to_world(layer: Any) -> np.ndarray:
    """The (ndim + 1)-square homogeneous matrix from the layer's data to world coordinates."""
    from napari.utils.transforms import CompositeAffine

    physical = CompositeAffine(
        scale=layer.scale, translate=layer.translate, rotate=layer.rotate, shear=layer.shear, ndim=layer.ndim
    )
    return np.asarray(layer.affine.affine_matrix) @ physical.affine_matrix


@dataclass(frozen=True, eq=False)
class RegionsPlan:
    """What a run samples of a Labels layer, recorded on the GUI thread without reading it
    (see :func:`regions_plan`); :meth:`sample`, called in the worker, reads it."""

    name: str  # the Labels layer's, for the result's metadata
    labels: Any  # the Labels layer's data (numpy, dask, zarr): read only by sample()
    labels_ndim: int
    content_ndim: int
    content_to_world: np.ndarray  # (content_ndim + 1)-square
    world_to_labels: np.ndarray  # (labels_ndim + 1)-square
    content_shape: tuple[int, ...]  # level 0's, all axes
    shape: tuple[int, int]  # (H, W) of the label image per frame
    slice_index: tuple[int, ...] | None = None
    stack: tuple[int, ...] = ()

    @property
    def per_frame(self) -> bool:
        """One label image per frame (a whole-stack run over a Labels layer of the content's
        dimensions), not one for every frame."""
        return bool(self.stack) and self.labels_ndim != 2

    def sample(self) -> np.ndarray:
        """The label image, ``shape`` or ``stack + shape`` (int64): the Labels layer sampled
        (nearest neighbour) at the centres of the grid over the content's extent, 0 where it
        does not reach. A lazy Labels layer is read a frame at a time, only the frames sampled."""
        lead = self.content_ndim - 2
        height, width = self.content_shape[-2:]
        rows = (np.arange(self.shape[0]) + 0.5) * height / self.shape[0] - 0.5
        cols = (np.arange(self.shape[1]) + 0.5) * width / self.shape[1] - 0.5
        grid = np.stack(np.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2)
        reader = _LabelFrames(self.labels)

        def sample(frame_index: Any) -> np.ndarray:
            points = np.zeros((len(grid), self.content_ndim + 1))
            points[:, lead : lead + 2] = grid
            points[:, :lead] = frame_index
            points[:, -1] = 1
            world = points @ self.content_to_world.T
            if self.labels_ndim == 2:
                world = np.concatenate([world[:, -3:-1], world[:, -1:]], axis=1)
            data = world @ self.world_to_labels.T
            index = np.round(data[:, :-1]).astype(np.int64)
            inside = np.all((index >= 0) & (index < reader.extent), axis=1)
            values = np.zeros(len(index), dtype=np.int64)
            values[inside] = reader.at(index[inside])
            return values.reshape(self.shape)

        if not self.per_frame:
            return sample(self.slice_index if self.slice_index is not None else 0)
        # frame j of a coarser level is centred where level-0 index (j + 0.5) * f - 0.5 is
        factors = np.asarray(self.content_shape[:lead], dtype=float) / np.asarray(self.stack, dtype=float)
        frames = np.empty(tuple(self.stack) + tuple(self.shape), dtype=np.int64)
        for frame in np.ndindex(*self.stack):
            frames[frame] = sample((np.asarray(frame) + 0.5) * factors - 0.5)
        return frames


class _LabelFrames:
    """Label values at data indices: a numpy array indexed as it is; a lazy one (dask, zarr)
    read one 2D frame at a time, only the frames asked for, the last one kept (consecutive
    frames of a run mostly sample the same Labels frame, a 2D layer always)."""

    def __init__(self, labels: Any):
        self.labels = labels
        self.extent = np.asarray([int(side) for side in labels.shape])
        self._frame: tuple[tuple[int, ...], np.ndarray] | None = None

    def at(self, index: np.ndarray) -> np.ndarray:
        """The labels at ``index`` (points x ndim, all inside the extent)."""
        if isinstance(self.labels, np.ndarray):
            return self.labels[tuple(index.T)]
        values = np.zeros(len(index), dtype=np.int64)
        lead = len(self.extent) - 2
        frames = index[:, :lead]
        for frame in np.unique(frames, axis=0) if lead else [np.zeros(0, np.int64)]:
            here = np.all(frames == frame, axis=1)
            values[here] = self._read(tuple(int(i) for i in frame))[tuple(index[here, lead:].T)]
        return values

    def _read(self, frame: tuple[int, ...]) -> np.ndarray:
        if self._frame is None or self._frame[0] != frame:
            self._frame = (frame, np.asarray(self.labels[frame]))
        return self._frame[1]


def regions_plan(
    labels: Any,
    content: Any,
    shape: tuple[int, int],
    slice_index: tuple[int, ...] | None = None,
    *,
    stack: tuple[int, ...] = (),
) -> RegionsPlan:
    """Check the Labels layer ``labels`` as style regions of ``content`` and record what to
    sample of it (transforms, shapes, its data unread): cheap, for the GUI thread. Bad
    layers raise ``StyleTransferError``. See :func:`regions_on_content` for the sampling."""
    from napari.layers import Labels

    if not isinstance(labels, Labels):
        kind = type(labels).__name__
        raise StyleTransferError(f"the regions layer is {_article(kind)} {kind} layer; choose a Labels layer")
    if labels.multiscale:
        raise StyleTransferError(
            f"the regions layer {labels.name!r} is multiscale; use a single-scale Labels layer"
        )
    if labels.ndim not in (2, content.ndim):
        raise StyleTransferError(
            f"the regions layer {labels.name!r} has {labels.ndim} dimensions and the content {content.ndim}: "
            "give a 2D Labels layer or one with the content's dimensions"
        )
    return RegionsPlan(
        name=labels.name,
        labels=labels.data,
        labels_ndim=labels.ndim,
        content_ndim=content.ndim,
        content_to_world=_data_to_world(content),
        world_to_labels=np.linalg.inv(_data_to_world(labels)),
        content_shape=_level_shape(content, 0),
        shape=(int(shape[0]), int(shape[1])),
        slice_index=slice_index,
        stack=tuple(int(side) for side in stack),
    )


def regions_on_content(
    labels: Any,
    content: Any,
    shape: tuple[int, int],
    slice_index: tuple[int, ...] | None = None,
    *,
    stack: tuple[int, ...] = (),
) -> np.ndarray:
    """The Labels layer ``labels`` sampled (nearest neighbour) at the centres of an ``shape``
    (H, W) grid over the content layer's (2D slice's) extent, through both layers'
    data-to-world transforms: a label image lying where the content lies on screen, 0 where
    the Labels layer does not reach. A 2D Labels layer over nD content is taken in the
    content's last two world axes, one label image for every frame.

    ``stack``: the leading shape of a whole-stack run's frames (the content's own, or a
    coarser pyramid level's). A Labels layer with the content's dimensions then gives one
    label image per frame, ``stack + shape``, each sampled where its frame lies.

    This reads the Labels layer now; runs check and record it with :func:`regions_plan` on
    the GUI thread and sample it in the worker."""
    return regions_plan(labels, content, shape, slice_index, stack=stack).sample()
