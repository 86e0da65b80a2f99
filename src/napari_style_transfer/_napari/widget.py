"""The Style Transfer dock widget (magicgui). It renders updates; the worker does the work.

Controls are named after the engine's options (plus ``content`` and ``style``), so from the
console ``widget["steps"].value = 100`` and ``widget.run()`` work. Defaults come from
:class:`~napari_style_transfer.options.StyleOptions`, or from the plugin's preferences for
device, weights and snapshot cadence. No torch is imported here.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from magicgui.types import FileDialogMode
from magicgui.widgets import (
    CheckBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    create_widget,
)
from qtpy.QtCore import QEvent, QObject, QSize
from qtpy.QtWidgets import QScrollArea

from ..errors import StyleTransferError
from ..files import ImageFileError
from ..options import StyleOptions, frame_in_stack
from ..styled_files import STYLED_SUFFIX
from .controls import StackChoice, option_control, option_value, strength_row
from .full_resolution import default_store, larger_than, run_full_resolution
from .layers import STACK_MODES, frames_option, is_time_series
from .run import KEEP_SNAPSHOTS, cancel, run_style_transfer, settings_summary
from .style_list import StyleList, StyleRow, narrow_choice
from .tiff import save_styled_layer
from .worker import (
    Cancelled,
    Downloading,
    Failed,
    Finished,
    Progress,
    Started,
    StoreCancelled,
    StoreFinished,
    TileDone,
    Update,
    dispatch,
)

if TYPE_CHECKING:  # pragma: no cover
    import napari
    from napari.qt.threading import GeneratorWorker

log = logging.getLogger(__name__)

PLUGIN = "napari-style-transfer"
#: Preferences a user sets once (napari.yaml "configurations"): option name -> setting key.
PREFERENCES = ("device", "weights", "snapshot_every")
#: The collapsible groups under the essentials, and what each holds (option names, and the
#: widget's own controls: regions, ratio, stack, the result switches and the save button).
GROUPS = {
    "Style": (
        "regions",
        "style_loss",
        "content_weight",
        "ratio",
        "content_colours",
        "keep_grey",
        "style_layer_weights",
    ),
    "Stack and time": ("stack", "temporal_weight", "time_steps", "time_passes", "batch_frames"),
    "Output": ("snapshot_every", "keep_snapshots", "content_range", "save_button"),
    "Optimisation": ("optimizer", "learning_rate", "average", "init", "tv_weight", "schedule", "seed"),
    "Network and device": (
        "content_layers",
        "style_layers",
        "pooling",
        "weights",
        "device",
        "precision",
        "channels_last",
        "threads",
        "cudnn_benchmark",
    ),
}
#: The dock's narrowest width (px): napari's canvas keeps most of a 1280 px window.
DOCK_WIDTH = 256
#: The widget's own switches: their text, tooltip and default.
OWN_SWITCHES = {
    "keep_snapshots": (
        "keep snapshots after the run",
        "on: each snapshot is a layer of its own and stays (adding a layer pauses napari for 0.1 to "
        "0.2 s); off: the snapshots show in one layer that becomes the result",
        KEEP_SNAPSHOTS,
    ),
    "content_range": (
        "result in the content's value range",
        "a grey result is mapped back through the contrast limits the content was read with (its own "
        "units, such as 0 to 4000 for a 16-bit image) instead of 0 to 1",
        True,
    ),
}
RATIO_TIP = "the style weight over the content weight, as the paper gives it: 1e4 subtle, 1e6 strong"
STACK_TIP = (
    "for layers of 3 or more dimensions: style the slice on screen; or every frame of a time series, "
    "each following the previous result so that it does not flicker; or every slice (Z, channels) on its "
    "own. A layer whose first axis is labelled t or time starts as a time series"
)
SAVE_TIP = (
    "save the chosen result layer (the newest if none is chosen) as a TIFF that keeps the run's "
    "settings; open it again with File > Open"
)


class _UndockWatcher(QObject):
    """Cancels the widget's run when napari takes the widget out of its dock (the dock's
    close button): napari then drops the widget, and a run nobody can see or stop would go
    on. (The widget's ``destroyed`` signal is no use: PyQt disconnects its slots when the
    Python object is collected, before the Qt object goes.)"""

    def __init__(self, widget: StyleTransferWidget):
        super().__init__(widget.native)
        self._widget = weakref.ref(widget)
        widget.native.installEventFilter(self)

    def eventFilter(self, watched: QObject | None, event: QEvent | None) -> bool:  # noqa: N802 (Qt's name)
        if event is None or watched is None:
            return False
        if event.type() == QEvent.Type.ParentChange and watched.parent() is None:
            widget = self._widget()
            if widget is not None and widget.running:
                widget.cancel()
        return False


def preferences() -> dict[str, Any]:
    """The plugin's saved preferences (napari >= 0.9), else the engine's defaults."""
    defaults = {name: getattr(StyleOptions(), name) for name in PREFERENCES}
    try:
        from napari.settings import get_plugin_settings
    except ImportError:  # napari before 0.9 has no plugin settings
        return defaults
    try:
        saved = get_plugin_settings(PLUGIN).run
    except (KeyError, AttributeError):  # plugin not registered with napari (plain script)
        return defaults
    return {name: getattr(saved, name, defaults[name]) for name in PREFERENCES}


def scheduler_preference() -> str | None:
    """The dask scheduler address set in the plugin's preferences, or None (runs here)."""
    try:
        from napari.settings import get_plugin_settings

        address = getattr(get_plugin_settings(PLUGIN).run, "scheduler", "")
    except (ImportError, KeyError, AttributeError):  # older napari, or the plugin not registered
        return None
    return address.strip() or None


class _NarrowScrollArea(QScrollArea):
    """A scroll area whose preferred width is :data:`DOCK_WIDTH` (napari sizes a new dock
    by it): the canvas keeps the window's width, and the user can still widen the dock."""

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        hint = super().sizeHint()
        widget = self.widget()
        width = max(DOCK_WIDTH, widget.minimumSizeHint().width() if widget is not None else 0)
        bar = self.verticalScrollBar()
        # room for the scroll bar and the frame: the body keeps its width when the bar shows
        frame = 2 * self.frameWidth() + 4
        return QSize(width + frame + (bar.sizeHint().width() if bar is not None else 0), hint.height())


def _wrap_without_widening(label: Label) -> None:
    """Long text wraps inside the dock's width instead of widening the dock (and with it
    resizing napari's canvas at every status update)."""
    from qtpy.QtWidgets import QSizePolicy

    label.native.setWordWrap(True)
    label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)


class StyleTransferWidget(Container):
    """Pick a content and a style Image layer, set the strength, steps and size, press Run.

    The essentials on top; every other option in a collapsible group named for what it is
    about (:data:`GROUPS`), the whole in a scroll area so that the dock stays narrow."""

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__(labels=False)
        self.viewer = napari_viewer
        self.worker: GeneratorWorker | None = None
        self._device = self._weights = ""
        self._downloading = False
        self._stepping = False  # the run has taken its first step (a cancel then waits for a step)
        self._keeping_roles = False  # layers come and go: no role is re-chosen meanwhile
        # The Qt widget was destroyed (dock closed, viewer closed): render nothing more. A
        # closure over the flag, since a bound method of this object might not be called.
        self._gone = threading.Event()
        self.native.destroyed.connect(lambda *_, gone=self._gone: gone.set())
        self._undock_watcher = _UndockWatcher(self)
        defaults = {**StyleOptions().to_dict(), **preferences()}
        self._parts: list[Container] = self._essentials(defaults)
        self._body = Container(widgets=list(self._parts), labels=False)
        self.groups: dict[str, Any] = {}
        for title, names in GROUPS.items():
            self._add_group(title, [self._group_control(name, defaults) for name in names])
        self._body.native.layout().addStretch()
        _align_labels(self._parts)
        self._scroll_body()
        self._connect()
        self._pick_demo_roles()
        self._separate_roles()
        self._preselect_stack(self["content"].value)
        self._default_store(self["content"].value)
        self._fit_controls()

    def _essentials(self, defaults: dict[str, Any]) -> list[Container]:
        """Content; the style rows (the dock's whole width); strength, steps, size, Run,
        progress and status."""
        from napari.layers import Image

        content = create_widget(annotation=Image, name="content", label="content")
        content.tooltip = (
            "the Image layer whose layout to keep: grey or RGB, 2D or a stack (of a stack, the slice "
            "on screen, or every slice: see Stack and time)"
        )
        self._styles = StyleList(
            name="style_list",
            label="style",
            scale=defaults["style_scale"],
            tooltip="the style Image layers, one numbered row each with its blend weight and scale; "
            "several styles are blended by their weights, or style k paints the regions labelled k",
        )
        strength, self._style_weight = strength_row(defaults["style_weight"])
        self._button = PushButton(name="run_button", text="Run")
        self._button.tooltip = "start the run; while it runs, cancel it (the last image is kept as a layer)"
        self._progress = ProgressBar(name="progress", label="progress", min=0, max=defaults["steps"], value=0)
        self._progress.tooltip = "steps done of the steps asked for"
        self._status = Label(name="status", label="status", value="idle")
        self._status.tooltip = "step, losses, speed, device and weights of the current run"
        _wrap_without_widening(self._status)
        controls = [strength, *(option_control(name, defaults[name]) for name in ("steps", "size"))]
        parts = [
            Container(widgets=[content], labels=True),
            self._styles,
            Container(
                widgets=[
                    *controls,
                    *self._full_resolution_controls(defaults),
                    self._button,
                    self._progress,
                    self._status,
                ],
                labels=True,
            ),
        ]
        for part in parts:
            part.margins = (0, 0, 0, 0)
        return parts

    def _full_resolution_controls(self, defaults: dict[str, Any]) -> list[Any]:
        """For a layer larger than the size: style it at its own resolution, in tiles, into
        an OME-Zarr store (issue 31)."""
        full = CheckBox(name="full_resolution", text="full resolution (tiled)", value=False)
        full.tooltip = (
            "style the content at its own resolution instead of shrinking it to the size: the "
            "composition is set at the tile size, then refined in tiles up to full size, written "
            "tile by tile into the store (Cancel keeps the finished tiles; Run again resumes)"
        )
        store = FileEdit(name="store", label="store", mode=FileDialogMode.OPTIONAL_FILE, filter="*.ome.zarr")
        store.tooltip = "the OME-Zarr folder the full-resolution result is written into, tile by tile"
        return [full, option_control("tile_size", defaults["tile_size"]), store]

    def _group_control(self, name: str, defaults: dict[str, Any]) -> Any:
        """A group's control: an option's (from its metadata), or one of the widget's own."""
        if name in defaults:
            return option_control(name, defaults[name])
        return self._own_control(name)

    def _own_control(self, name: str) -> Any:
        from napari.layers import Labels

        if name == "regions":
            regions = create_widget(annotation=Labels | None, name="regions", label="regions")
            regions.tooltip = (
                "optional: a Labels layer over the content: label k takes style k, 0 only the content "
                "(placed by the layers' transforms); for a whole stack a 2D Labels layer applies to every "
                "frame, one with the content's dimensions frame by frame"
            )
            return regions
        if name == "ratio":  # read-only text: a Label's value would not line up with its label
            ratio = LineEdit(name="ratio", label="style / content", tooltip=RATIO_TIP)
            ratio.native.setReadOnly(True)
            return ratio
        if name == "stack":
            return StackChoice(
                name="stack", label="style", value=STACK_MODES[0], choices=STACK_MODES, tooltip=STACK_TIP
            )
        if name == "save_button":
            return PushButton(name="save_button", text="Save result...", tooltip=SAVE_TIP)
        text, tip, default = OWN_SWITCHES[name]
        return CheckBox(name=name, text=text, value=default, tooltip=tip)

    def _add_group(self, title: str, controls: list[Any]) -> None:
        """A collapsible group (closed at first) under the essentials."""
        from superqt import QCollapsible

        group = Container(widgets=controls, labels=True, name=title)
        group.margins = (4, 0, 0, 0)
        self._parts.append(group)
        box = QCollapsible(title)
        box.setDuration(0)  # no animation: the dock's height changes once
        box.setCollapsedIcon("\u25b8")
        box.setExpandedIcon("\u25be")
        box.addWidget(group.native)
        box.collapse(animate=False)
        layout = box.layout()
        if layout is not None:  # closed groups sit close together
            layout.setContentsMargins(0, 2, 0, 2)
            layout.setSpacing(2)
        self._body.native.layout().addWidget(box)
        self.groups[title] = box

    def _scroll_body(self) -> None:
        """Everything in a scroll area (napari docks ``native``, so the area lives inside it),
        as narrow as :data:`DOCK_WIDTH`: choices shrink to a few letters (their lists still
        show whole) and nothing scrolls sideways."""
        from qtpy.QtCore import Qt
        from qtpy.QtWidgets import QComboBox, QFrame

        forms = [part for part in self._parts if not isinstance(part, StyleList)]  # rows: their own
        for control in (control for part in forms for control in _named_controls(part)):
            if isinstance(control.native, QComboBox):
                narrow_choice(control.native, 6)
        area = _NarrowScrollArea()
        area.setWidgetResizable(True)
        area.setFrameShape(QFrame.Shape.NoFrame)
        area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # always there, so that opening a group never narrows the controls under the bar
        area.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOn)
        area.setWidget(self._body.native)
        area.setMinimumWidth(DOCK_WIDTH)
        self.margins = (0, 0, 0, 0)
        self._body.margins = (6, 6, 6, 6)
        self.native.layout().addWidget(area)

    def _connect(self) -> None:
        self._styles.changed.connect(self._fit_weights)
        self._styles.control("add_style_button").changed.connect(self._add_style_pressed)
        self["content_weight"].changed.connect(self._show_ratio)
        self["style_weight"].changed.connect(self._show_ratio)
        self["regions"].changed.connect(self._fit_weights)
        self._button.changed.connect(self._toggle)
        self["save_button"].changed.connect(lambda *_: self.save_result())
        self["content"].changed.connect(self._preselect_stack)
        self["content"].changed.connect(
            lambda _: self._separate_roles()
        )  # content picked on the style's layer
        self["content"].changed.connect(self._default_store)
        for name in ("content", "stack", "optimizer", "size", "full_resolution"):
            self[name].changed.connect(lambda *_: self._fit_controls())
        self._fit_weights()
        self._show_ratio()

    def controls(self) -> dict[str, Any]:
        """Every named control, the groups' and the style rows' too, by name."""
        return {control.name: control for part in self._parts for control in _named_controls(part)}

    def __getitem__(self, key: Any) -> Any:  # any control, by name
        return super().__getitem__(key)

    def __getattr__(self, name: str) -> Any:
        """Controls by name, the style rows' too (``widget["style_2"]``, ``widget["blend_2"]``)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            control = self.controls().get(name) if "_parts" in self.__dict__ else None
            if control is None:
                raise
            return control

    def reset_choices(self, *args: Any) -> None:
        """napari calls this when layers come and go; keep content and style apart, and each
        in its role when the content layer goes."""
        if "_parts" not in self.__dict__:
            return
        content = self["content"].value
        styles = [row.layer.value for row in self._styles.rows]
        self._keeping_roles = True
        for part in self._parts:
            part.reset_choices(*args)
        self._keeping_roles = False
        if content is not None and content not in self.viewer.layers:
            self._content_removed(styles)
            return
        self._pick_demo_roles()
        self._separate_roles()

    def _content_removed(self, styles: list[Any]) -> None:
        """The content layer was deleted: the styles stay styles; the content becomes the
        newest input layer that is no style, or, with none, the user is asked to choose."""
        from napari.layers import Image

        self._keeping_roles = True
        for row, layer in zip(self._styles.rows, styles, strict=True):
            if layer in self.viewer.layers:
                row.layer.value = layer
        free = [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, Image) and layer not in styles and "style_transfer" not in layer.metadata
        ]
        if free:
            self["content"].value = free[-1]
        else:
            self._status.value = "the content layer was removed: choose the content layer"
        self._keeping_roles = False

    def _pick_demo_roles(self) -> None:
        """A demo pair adds its style first and its content last (on top): when the content
        choice fell on a demo style, the pair's layers take the roles _sample_data marked."""
        from .._sample_data import DEMO_ROLE

        content, style = self["content"], self["style"]
        if content.value is None or content.value.metadata.get(DEMO_ROLE) != "style":
            return
        marked = {
            role: [layer for layer in content.choices if layer.metadata.get(DEMO_ROLE) == role]
            for role in ("content", "style")
        }
        if marked["content"]:
            content.value = marked["content"][-1]
            style.value = marked["style"][-1] if marked["style"] else style.value

    def _separate_roles(self) -> None:
        """Content and style start on different layers, and stay so when the content is picked
        on the style's layer: the newest other Image layer that is not a style-transfer result
        becomes the style (a demo pair adds its content first, then its style)."""
        content, style = self["content"], self["style"]
        if self._keeping_roles or content.value is None or style.value is not content.value:
            return
        others = [layer for layer in style.choices if layer is not content.value]
        inputs = [layer for layer in others if "style_transfer" not in layer.metadata]
        if inputs or others:
            style.value = (inputs or others)[-1]

    # --- result layers, the style weight typed, controls that fit the content -------------

    def _fit_controls(self) -> None:
        """Controls that do nothing for the chosen content, stack mode or optimiser are
        disabled: the stack options for a 2D layer (and each for the other stack modes), the
        content's colours for grey content, grey result and value range for RGB content,
        snapshots for a whole stack, averaging but with Adam."""
        layer = self["content"].value
        stack = getattr(layer, "ndim", 2) > 2
        frames = frames_option(self["stack"].value) if stack else None
        rgb = bool(getattr(layer, "rgb", False))
        enabled = {
            "stack": stack,
            "temporal_weight": frames == "time",
            "time_steps": frames == "time",
            "time_passes": frames == "time",
            "batch_frames": frames == "independent",
            "snapshot_every": frames is None,
            "content_colours": rgb,
            "keep_grey": not rgb,
            "content_range": not rgb,
            "average": self["optimizer"].value == "adam",
        }
        full = larger_than(layer, self["size"].value) and frames is None
        enabled.update(full_resolution=full, tile_size=full and self["full_resolution"].value)
        enabled["store"] = enabled["tile_size"]
        for name, on in enabled.items():
            self[name].enabled = on

    def _default_store(self, layer: Any) -> None:
        """A newly chosen content's store: beside its file, else under the home folder."""
        self["store"].value = default_store(layer)

    def _preselect_stack(self, layer: Any) -> None:
        """A newly chosen content layer whose first axis is labelled t or time starts as a
        time series; otherwise the choice stays (nor is it touched until the content changes)."""
        if layer is not None and is_time_series(self.viewer, layer):
            self["stack"].value = "whole stack as time series"

    # --- options ------------------------------------------------------------------------

    def options(self) -> dict[str, Any]:  # type: ignore[override]  # the plugin's API since 0.1
        """The engine options the controls hold now (keywords of ``stylize``); ``frames``
        comes from the stack choice."""
        # tile_size: only for size="full", which the widget does not offer yet (issue 31)
        skip = ("frames", "style_blend", "style_scale", "tile_size")
        values = {name: option_value(self[name]) for name in StyleOptions().to_dict() if name not in skip}
        values["frames"] = frames_option(self["stack"].value) or StyleOptions().frames
        if values["optimizer"] != "adam":
            values["average"] = None  # a value left in the disabled control is not sent
        rows = self._styles.rows
        scales = tuple(row.scale.value for row in rows)
        values["style_scale"] = scales[0] if len(set(scales)) == 1 else scales
        if len(rows) > 1 and self["regions"].value is None:
            values["style_blend"] = tuple(row.weight.value for row in rows)  # stylize normalises them
        return values

    def styles(self) -> Any:
        """The style layer, or the list of style layers when there are several rows."""
        layers = [row.layer.value for row in self._styles.rows]
        return layers[0] if len(layers) == 1 else layers

    def add_style(self, layer: Any = None, weight: float = 1.0, scale: float | None = None) -> StyleRow:
        """Add a style row: ``layer`` (an Image layer; by default the newest one that is
        neither the content nor a style yet, nor a result), its blend ``weight`` (0 to 1000,
        relative) and ``scale`` (its style_scale, 0.05 to 20; by default the engine's)."""
        return self._styles.add_row(layer if layer is not None else self._new_style_layer(), weight, scale)

    def _add_style_pressed(self, *_: Any) -> None:
        self.add_style()

    def remove_style(self, number: int) -> None:
        """Remove the ``number``-th style (1 is the first); the last one left stays."""
        rows = self._styles.rows
        if not 1 <= number <= len(rows):
            raise IndexError(f"there is no style {number}: the styles are 1 to {len(rows)}")
        self._styles.remove_row(rows[number - 1])

    def _new_style_layer(self) -> Any:
        """The newest Image layer that is neither the content nor already a style, preferring
        inputs to results; None (the choice's default) when every layer is taken."""
        from napari.layers import Image

        taken = [self["content"].value, *(row.layer.value for row in self._styles.rows)]
        free = [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, Image) and all(layer is not other for other in taken)
        ]
        inputs = [layer for layer in free if "style_transfer" not in layer.metadata]
        return (inputs or free or [None])[-1]

    def _fit_weights(self, *_: Any) -> None:
        """The weights apply to several styles over the whole image (not with regions)."""
        self._styles.fit_weights(self["regions"].value is None)

    def _show_ratio(self, *_: Any) -> None:
        content_weight = self["content_weight"].value
        style_weight = self["style_weight"].value
        self["ratio"].value = f"{style_weight / content_weight:.1e}" if content_weight else "style only"

    # --- running ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.worker is not None

    def run(self) -> GeneratorWorker | None:
        """Start a run with the current values; returns the worker, or None if refused."""
        from napari.utils.notifications import show_error, show_warning

        if self.running:
            show_warning("Style transfer is already running: cancel it or wait for it to finish.")
            return None
        try:
            worker = (
                self._full_resolution_run()
                if self._tiled()
                else run_style_transfer(
                    self.viewer,
                    self["content"].value,
                    self.styles(),
                    stack=self["stack"].value,
                    start=False,
                    scheduler=scheduler_preference(),
                    content_range=self["content_range"].value,
                    keep_snapshots=self["keep_snapshots"].value,
                    style_regions=self["regions"].value,
                    **self.options(),
                )
            )
        except StyleTransferError as error:
            self._status.value = f"not started: {error}"
            show_error(f"Style transfer: {error}")
            return None
        except Exception as error:  # a check that broke on an odd value: still no traceback dialog
            log.error("style transfer could not start", exc_info=True)
            self._status.value = f"not started: {type(error).__name__}: {error}"
            show_error(
                f"Style transfer could not start: {type(error).__name__}: {error} "
                "(the log has the details; please report it)"
            )
            return None
        self.worker = worker
        self._downloading = False  # Downloading updates came and no step yet (weights being fetched)
        self._stepping = False
        weakref.finalize(self, worker.cancel_event.set)  # a widget nobody holds stops its run
        worker.yielded.connect(self._render)
        worker.finished.connect(self._idle)
        worker.errored.connect(self._crashed)
        self._progress.max = 1 if self._tiled() else self["steps"].value
        self._progress.value = 0
        self._status.value = "loading weights and building VGG19..."
        self._button.text = "Cancel"
        worker.start()
        return worker

    def _tiled(self) -> bool:
        return bool(self["full_resolution"].enabled and self["full_resolution"].value)

    def _full_resolution_run(self) -> GeneratorWorker:
        options = {**self.options(), "tile_size": self["tile_size"].value}
        for name in ("size", "frames"):
            options.pop(name)
        styles = self.styles()
        if isinstance(styles, list):
            raise StyleTransferError("a full-resolution run takes one style for now: remove the other rows")
        return run_full_resolution(
            self.viewer, self["content"].value, styles, out=self["store"].value, start=False, **options
        )

    def cancel(self) -> None:
        """Stop the run after its current step; the last image is kept as a layer. Before
        the first step (weights loading, VGG19 being built) the run ends at once."""
        if self.worker is not None:
            cancel(self.worker)
            self._status.value = "cancelling after this step..." if self._stepping else "cancelling..."

    def _toggle(self, *_: Any) -> None:
        if self.running:
            self.cancel()
        else:
            self.run()

    def _render(self, update: Update) -> None:
        """Status and progress; notifications come from the run's LayerWriter."""
        if not self._gone.is_set():
            dispatch(self, update)

    def on_downloading(self, update: Downloading) -> None:
        self._downloading = True
        megabytes = update.done / 2**20
        of = f" of {update.total / 2**20:.0f}" if update.total else ""
        self._status.value = (
            f"downloading the VGG19 ImageNet weights (first run only): {megabytes:.0f}{of} MB"
        )
        if update.done == update.total:
            self._status.value += "; loading them and building VGG19..."
        if update.total:
            self._progress.max, self._progress.value = update.total // 2**20, update.done // 2**20

    def on_started(self, update: Started) -> None:
        self._downloading, self._stepping = False, True
        self._device, self._weights = update.device, _short_weights(update.weights)

    def on_progress(self, update: Progress) -> None:
        self._progress.max = update.total
        self._progress.value = update.done
        speed = _speed_and_time_left(update)
        frame = f"frame {update.frame_number + 1}/{update.frames} | " if update.frames > 1 else ""
        if update.pass_number:
            frame = f"pass {update.pass_number} | {frame}"
        self._status.value = (
            f"{frame}step {update.step}/{update.steps} | loss {update.total_loss:.3g} "
            f"(content {update.content_loss:.3g}, style {update.style_loss:.3g}) | {speed} | "
            f"{self._device} | {self._weights}"
        )

    def on_finished(self, update: Finished) -> None:
        result = update.result
        self._status.value = (
            f"done: {_steps_run(result)} in {result.seconds:.1f}\u00a0s, loss {result.losses.total:.3g} | "
            f"{result.device} | {_short_weights(result.weights)}"
        )
        self._describe_result()

    def on_cancelled(self, update: Cancelled) -> None:
        if self.worker is not None and self.worker.layer_writer.closed:
            self._status.value = "stopped: the content layer was removed, so nothing was added"
        elif update.step == 0 and self._downloading:
            self._status.value = (
                "cancelled during the weights download: nothing kept, run again to restart it"
            )
        elif update.step == 0:
            self._status.value = "cancelled before the first step: nothing to keep"
        else:
            frames = self._progress_frames()
            where = (
                f"{frame_in_stack(update.frame_number, frames, update.pass_number)}, " if frames > 1 else ""
            )
            self._status.value = f"cancelled at {where}step {update.step}; what was done is kept as a layer"

    def on_failed(self, update: Failed) -> None:
        self._status.value = f"failed: {update.message}"

    def on_tile_done(self, update: TileDone) -> None:
        self._progress.max, self._progress.value = update.total, update.done
        self._status.value = f"tile {update.done}/{update.total} | {self._device} | {self._weights}"

    def on_store_finished(self, update: StoreFinished) -> None:
        self._status.value = f"done: {update.tiles} tiles in {update.seconds:.1f}\u00a0s into {update.path}"

    def on_store_cancelled(self, update: StoreCancelled) -> None:
        self._status.value = (
            f"cancelled after {update.done} of {update.total} tiles; the finished tiles are in "
            f"{update.path}: Run again to resume"
        )

    def save_result(self, path: str | None = None) -> str | None:
        """Save the selected result layer (else the newest result) as a styled TIFF at
        ``path`` (asked for when None), its settings in it; returns the path, or None."""
        from napari.utils.notifications import show_info, show_warning

        layer = _result_to_save(self.viewer)
        if layer is None:
            show_warning("Style transfer: there is no result layer to save yet; run first")
            return None
        if path is None:
            from qtpy.QtWidgets import QFileDialog

            path, _ = QFileDialog.getSaveFileName(
                self.native,
                "Save result",
                f"{layer.name}{STYLED_SUFFIX}",
                "styled TIFF (*.styled.tif *.tif *.tiff)",
            )
            if not path:
                return None
        try:  # .styled.tif: napari then opens it with this plugin's reader, settings and all
            saved = str(save_styled_layer(layer, path))
        except ImageFileError as error:
            show_warning(f"Style transfer: {error}")
            return None
        show_info(f"Style transfer: saved {layer.name!r} to {saved}")
        return saved

    def _describe_result(self) -> None:
        """The status line names the result layer; its tooltip gives the run's key settings."""
        layer = self.worker.layer_writer.result_layer if self.worker is not None else None
        if layer is None:
            return
        self._status.value = self._status.value.replace("done: ", f"done: {layer.name!r}, ", 1)
        self._status.tooltip = settings_summary(layer.metadata["style_transfer"])

    def _progress_frames(self) -> int:
        progress = self.worker.layer_writer.last_progress if self.worker is not None else None
        return progress.frames if progress is not None else 1

    def _crashed(self, error: BaseException) -> None:
        """The worker raised (the LayerWriter notifies): the widget becomes usable again even
        if ``finished`` never comes."""
        if not self._gone.is_set():
            self._status.value = f"failed: {type(error).__name__}: {error}"
        self._idle()

    def _idle(self, *_: Any) -> None:
        self.worker = None
        if self._gone.is_set():
            return
        self._button.text = "Run"
        if self._status.value.startswith(("loading", "downloading", "cancelling", "step", "frame", "tile")):
            self._status.value = "stopped"


def _steps_run(result: Any) -> str:
    """The steps a finished run took: a time series' later frames take fewer (time_steps)."""
    if result.frames == 1:
        return f"{result.steps_done} steps"
    if len(set(result.frame_steps)) > 1:
        return f"{result.frames} frames, {sum(result.frame_steps)} steps in all"
    return f"{result.frames} frames x {result.steps_done} steps"


def _speed_and_time_left(update: Progress) -> str:
    """ "2.50 steps/s, ~1 min 20 s left" with no break inside a number and its unit (the
    status line wraps in a narrow dock; U+2060 keeps "steps/s" whole)."""
    if not update.steps_per_second:
        return "first step"
    left = (update.total - update.done) / update.steps_per_second
    minutes, seconds = divmod(round(left), 60)
    eta = f"{minutes}\u00a0min {seconds}\u00a0s" if minutes else f"{seconds}\u00a0s"
    return f"{update.steps_per_second:.2f}\u00a0steps/\u2060s, ~{eta}\u00a0left"


def _align_labels(parts: list[Container]) -> None:
    """One label column for the essentials and every group, as wide as the widest label."""
    from magicgui.application import use_app

    measure = use_app().get_obj("get_text_width")
    labeled = [
        (control, control._labeled_widget())
        for part in parts
        if part.labels
        for control in part._list
        if control._labeled_widget() is not None
    ]
    widest = max(measure(control.label) for control, _ in labeled)
    for _, row in labeled:
        row.label_width = widest


def _named_controls(container: Container) -> Iterator[Any]:
    """The named controls in ``container`` and in the containers it holds (rows, the style list)."""
    for control in container:
        if isinstance(control, Container):
            yield from _named_controls(control)
        elif control.name:
            yield control
    if isinstance(container, StyleList):
        yield container.control("add_style_button")


def _result_to_save(viewer: napari.Viewer) -> Any:
    """The selected layer if it is a style-transfer result, else the newest result (not a
    snapshot), else None."""
    results = [
        layer
        for layer in viewer.layers
        if isinstance(layer.metadata.get("style_transfer"), dict)
        and not layer.metadata["style_transfer"].get("snapshot")
    ]
    active = viewer.layers.selection.active
    return active if active in results else (results[-1] if results else None)


def _short_weights(description: str) -> str:
    return description.split(" (")[0] + " weights"
