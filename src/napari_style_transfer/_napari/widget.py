"""The Style Transfer dock widget (magicgui). It renders updates; the worker does the work.

Controls are named after the engine's options (plus ``content`` and ``style``), so from the
console ``widget["steps"].value = 100`` and ``widget.run()`` work. Defaults come from
:class:`~napari_style_transfer.options.StyleOptions`, or from the plugin's preferences for
device, weights and snapshot cadence. No torch is imported here.
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from typing import TYPE_CHECKING, Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    LineEdit,
    LogSlider,
    ProgressBar,
    PushButton,
    SpinBox,
    create_widget,
)
from qtpy.QtCore import QEvent, QObject

from ..errors import StyleTransferError
from ..options import StyleOptions, choices, help_text
from .layers import STACK_MODES, frames_option, is_time_series, stack_mode
from .run import cancel, run_style_transfer, settings_summary
from .style_list import StyleList, StyleRow
from .worker import Cancelled, Downloading, Failed, Finished, Progress, Started, Update

if TYPE_CHECKING:  # pragma: no cover
    import napari
    from napari.qt.threading import GeneratorWorker

log = logging.getLogger(__name__)

PLUGIN = "napari-style-transfer"
#: Preferences a user sets once (napari.yaml "configurations"): option name -> setting key.
PREFERENCES = ("device", "weights", "snapshot_every")
ADVANCED = (
    "optimizer",
    "learning_rate",
    "init",
    "content_layers",
    "style_layers",
    "tv_weight",
    "pooling",
    "device",
    "weights",
    "seed",
    "schedule",
    "precision",
    "channels_last",
    "cudnn_benchmark",
    "temporal_weight",
    "time_steps",
    "batch_frames",
    "style_layer_weights",
    "average",
)
#: The content_colours choice: off is False (the style's colours).
COLOUR_CHOICES = ("off", *choices("content_colours"))


class _WeightSlider(LogSlider):
    """A base-10 log slider in steps of 1/100 decade (magicgui's default is 1/10) that
    keeps a value set in code exactly (3e5 stays 3e5, not the nearest position's 3.02e5)
    until the slider is moved, and otherwise gives three significant digits."""

    def __init__(self, **kwargs: Any):
        self._exact: tuple[int, float] | None = None  # (position, the value set in code)
        decades = math.log10(kwargs["max"]) - math.log10(kwargs["min"])
        super().__init__(min_pos=0, max_pos=round(100 * decades), **kwargs)

    @property
    def value(self) -> float:
        position = self._widget._mgui_get_value()
        if self._exact is not None and self._exact[0] == position:
            return self._exact[1]
        return self._value_from_position(position)

    @value.setter
    def value(self, value: float) -> None:
        position = self._position_from_value(value)
        self._exact = (position, float(value))  # before the move: its change handlers read it
        self._widget._mgui_set_value(position)

    def _position_from_value(self, value: float) -> int:
        low = math.log(self.min, self.base)
        return round((math.log(value, self.base) - low) / self._scale + self._min_pos)

    def _value_from_position(self, position: float) -> float:
        return float(f"{super()._value_from_position(position):.3g}")


class _StackChoice(ComboBox):
    """The stack modes; a script's ``widget["stack"].value = "whole stack"`` (the earlier
    name) still picks the mode it meant."""

    @property
    def value(self) -> str:
        return ComboBox.value.fget(self)

    @value.setter
    def value(self, value: str) -> None:
        ComboBox.value.fset(self, stack_mode(value) if isinstance(value, str) else value)


class _UndockWatcher(QObject):
    """Cancels the widget's run when napari takes the widget out of its dock (the dock's
    close button): napari then drops the widget, and a run nobody can see or stop would go
    on. (The widget's ``destroyed`` signal is no use: PyQt disconnects its slots when the
    Python object is collected, before the Qt object goes.)"""

    def __init__(self, widget: StyleTransferWidget):
        super().__init__(widget.native)
        self._widget = weakref.ref(widget)
        widget.native.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
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


def _wrap_without_widening(label: Label) -> None:
    """Long text wraps inside the dock's width instead of widening the dock (and with it
    resizing napari's canvas at every status update)."""
    from qtpy.QtWidgets import QSizePolicy

    label.native.setWordWrap(True)
    label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)


def _tip(name: str, extra: str = "") -> str:
    return help_text(name) + (f". {extra}" if extra else "")


class StyleTransferWidget(Container):
    """Pick a content and a style Image layer, set weights and steps, press Run."""

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.worker: GeneratorWorker | None = None
        self._device = self._weights = ""
        self._downloading = False
        # The Qt widget was destroyed (dock closed, viewer closed): render nothing more. A
        # closure over the flag, since a bound method of this object might not be called.
        self._gone = threading.Event()
        self.native.destroyed.connect(lambda *_, gone=self._gone: gone.set())
        self._undock_watcher = _UndockWatcher(self)
        defaults = {**StyleOptions().to_dict(), **preferences()}
        from napari.layers import Image

        content = create_widget(annotation=Image, name="content", label="content")
        content.tooltip = (
            "the Image layer whose layout to keep: grey or RGB, 2D or a stack (3D+: the slice on screen, "
            "or every slice, see stack)"
        )
        self._styles = StyleList(
            name="style_list",
            label="style",
            scale=defaults["style_scale"],
            tooltip="the style Image layers, one row each with its blend weight and style scale; "
            "several styles are blended by their weights, or each takes its label of the regions",
        )
        self._styles.changed.connect(self._fit_weights)
        self._styles.control("add_style_button").changed.connect(self._add_style_pressed)
        from napari.layers import Labels

        regions = create_widget(annotation=Labels | None, name="regions", label="regions")
        regions.tooltip = (
            "optional: a Labels layer over the content: label k takes the k-th style, 0 only the "
            "content (placed by the layers' transforms, as the content is); for a whole stack a "
            "2D Labels layer applies to every frame, one with the content's dimensions frame by frame"
        )
        self._ratio = Label(name="ratio", label="style / content")
        self._ratio.tooltip = "the ratio the seed report and the paper talk in: 1e4 subtle, 1e6 strong"
        self._advanced = CheckBox(name="show_advanced", text="advanced options", value=False)
        self._advanced.tooltip = "show the optimiser, layers, pooling, device, weights and seed"
        self._button = PushButton(name="run_button", text="Run")
        self._button.tooltip = "start the run; while it runs, cancel it (the last image is kept as a layer)"
        self._progress = ProgressBar(name="progress", label="progress", min=0, max=defaults["steps"], value=0)
        self._progress.tooltip = "steps done of the steps asked for"
        self._status = Label(name="status", label="status", value="idle")
        _wrap_without_widening(self._status)
        # The slider's own readout shows its integer position, not the weight: the label does.
        self._style_weight = _WeightSlider(
            name="style_weight",
            min=1.0,
            max=1e10,
            base=10,
            backend_kwargs={"readout": False},
            tooltip=_tip("style_weight", "log scale, 1 to 1e10"),
        )
        self._style_weight.value = defaults["style_weight"]  # after construction: the range is set last
        self._status.tooltip = "step, losses, speed, device and weights of the current run"

        controls = [
            content,
            self._styles,
            regions,
            ComboBox(
                name="style_loss",
                value=defaults["style_loss"],
                choices=choices("style_loss"),
                tooltip=_tip("style_loss"),
            ),
            FloatSpinBox(
                name="content_weight",
                value=defaults["content_weight"],
                min=0.0,
                max=1e6,
                step=0.1,
                tooltip=_tip("content_weight", "range 0 to 1e6"),
            ),
            self._style_weight,
            self._ratio,
            SpinBox(
                name="steps",
                value=defaults["steps"],
                min=1,
                max=100_000,
                tooltip=_tip("steps", "range 1 to 100000"),
            ),
            SpinBox(
                name="size",
                value=defaults["size"],
                min=16,
                max=8192,
                step=16,
                tooltip=_tip("size", "range 16 to 8192 px; compute grows with its square"),
            ),
            SpinBox(
                name="snapshot_every",
                value=defaults["snapshot_every"],
                min=0,
                max=100_000,
                tooltip=_tip("snapshot_every", "each snapshot becomes a new layer (single images only)"),
            ),
            _StackChoice(
                name="stack",
                value=STACK_MODES[0],
                choices=STACK_MODES,
                tooltip="for 3D+ layers: style the slice on screen; or every frame of a time series, each "
                "following the previous result so that it does not flicker; or every slice (Z, channels) "
                "on its own. A layer whose first axis is labelled t or time starts as a time series",
            ),
            FloatSpinBox(
                name="temporal_weight",
                value=defaults["temporal_weight"],
                min=0.0,
                max=1e6,
                step=10.0,
                tooltip=_tip("temporal_weight", "range 0 to 1e6; only for a whole stack as time series"),
            ),
            SpinBox(
                name="time_steps",
                value=defaults["time_steps"],
                min=0,
                max=100_000,
                tooltip=_tip("time_steps", "only for a whole stack as time series"),
            ),
            SpinBox(
                name="batch_frames",
                value=defaults["batch_frames"],
                min=0,
                max=4096,
                tooltip=_tip("batch_frames", "only for a whole stack, frames independent"),
            ),
            ComboBox(
                name="content_colours",
                label="content colours",
                value=defaults["content_colours"] or "off",
                choices=COLOUR_CHOICES,
                tooltip=_tip("content_colours"),
            ),
            CheckBox(
                name="keep_grey",
                text="grey content gives a grey result",
                value=defaults["keep_grey"],
                tooltip=_tip("keep_grey"),
            ),
            self._advanced,
            ComboBox(
                name="optimizer",
                value=defaults["optimizer"],
                choices=choices("optimizer"),
                tooltip=_tip("optimizer"),
            ),
            FloatSpinBox(
                name="learning_rate",
                value=defaults["learning_rate"] or 0.0,
                min=0.0,
                max=10.0,
                step=0.001,
                tooltip=_tip("learning_rate", "0 means the optimiser's default"),
            ),
            ComboBox(name="init", value=defaults["init"], choices=choices("init"), tooltip=_tip("init")),
            LineEdit(
                name="content_layers",
                value=",".join(defaults["content_layers"]),
                tooltip=_tip("content_layers", "comma-separated"),
            ),
            LineEdit(
                name="style_layers",
                value=",".join(defaults["style_layers"]),
                tooltip=_tip("style_layers", "comma-separated"),
            ),
            FloatSpinBox(
                name="tv_weight",
                value=defaults["tv_weight"],
                min=0.0,
                max=1e6,
                step=1e-4,
                tooltip=_tip("tv_weight", "range 0 to 1e6"),
            ),
            ComboBox(
                name="pooling", value=defaults["pooling"], choices=choices("pooling"), tooltip=_tip("pooling")
            ),
            LineEdit(
                name="style_layer_weights",
                value=",".join(map(str, defaults["style_layer_weights"])),
                tooltip=_tip("style_layer_weights", "comma-separated; empty = 1 each"),
            ),
            FloatSpinBox(
                name="average",
                value=defaults["average"] or 0.0,
                min=0.0,
                max=0.9999,
                step=0.01,
                tooltip=_tip("average", "0 = off; adam only"),
            ),
            ComboBox(
                name="device",
                value=defaults["device"],
                choices=_device_choices(defaults["device"]),
                tooltip=_tip("device"),
            ),
            LineEdit(name="weights", value=str(defaults["weights"]), tooltip=_tip("weights")),
            SpinBox(
                name="seed",
                value=defaults["seed"] or 0,
                min=0,
                max=2**31 - 1,
                tooltip=_tip("seed", "0 to 2^31-1"),
            ),
            LineEdit(name="schedule", value=defaults["schedule"], tooltip=_tip("schedule")),
            ComboBox(
                name="precision",
                value=defaults["precision"],
                choices=choices("precision"),
                tooltip=_tip("precision"),
            ),
            ComboBox(
                name="channels_last",
                label="channels last",
                value=defaults["channels_last"],
                choices=("auto", True, False),  # auto: the layout the machine's probe found faster
                tooltip=_tip("channels_last"),
            ),
            CheckBox(
                name="cudnn_benchmark",
                text="cuDNN autotuning",
                value=defaults["cudnn_benchmark"],
                tooltip=_tip("cudnn_benchmark"),
            ),
            self._button,
            self._progress,
            self._status,
        ]
        self.extend(controls)
        # Qt shows a fixed number of decimals and rounds the value to them: 0.001 became 0.
        for name, decimals in (("content_weight", 4), ("tv_weight", 6), ("learning_rate", 5)):
            self[name].native.setDecimals(decimals)
        self["learning_rate"].native.setSpecialValueText("default")
        self["batch_frames"].native.setSpecialValueText("auto")
        self["time_steps"].native.setSpecialValueText(
            "auto"
        )  # 0: half of steps  # shown for 0, which means it
        self["content_weight"].changed.connect(self._show_ratio)
        self["style_weight"].changed.connect(self._show_ratio)
        self._advanced.changed.connect(self._show_advanced)
        self["regions"].changed.connect(self._fit_weights)
        self._fit_weights()
        self._button.changed.connect(self._toggle)
        self._show_ratio()
        self._show_advanced(False)
        self["content"].changed.connect(self._preselect_stack)
        self._add_result_controls()
        self._add_typed_style_weight()
        self["content"].changed.connect(self._fit_controls_to_content)
        self["content"].changed.connect(
            lambda _: self._separate_roles()
        )  # content picked on the style's layer
        self._pick_demo_roles()
        self._separate_roles()
        self._preselect_stack(self["content"].value)
        self._fit_controls_to_content(self["content"].value)
        self["optimizer"].changed.connect(self._fit_average_to_optimizer)
        self._fit_average_to_optimizer(self["optimizer"].value)

    def __getattr__(self, name: str) -> Any:
        """Controls by name, the style rows' too (``widget["style_2"]``, ``widget["blend_2"]``)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            styles = self.__dict__.get("_styles")
            control = styles.control(name) if styles is not None else None
            if control is None:
                raise
            return control

    def reset_choices(self, *args: Any) -> None:
        """napari calls this when layers come and go; keep content and style apart."""
        super().reset_choices(*args)
        self._pick_demo_roles()
        self._separate_roles()

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
        if content.value is None or style.value is not content.value:
            return
        others = [layer for layer in style.choices if layer is not content.value]
        inputs = [layer for layer in others if "style_transfer" not in layer.metadata]
        if inputs or others:
            style.value = (inputs or others)[-1]

    # --- result layers, the style weight typed, controls that fit the content -------------

    def _add_result_controls(self) -> None:
        """Two checkboxes after "grey content gives a grey result": the result's value range
        and whether a finished run's snapshots stay."""
        at = self.index(self["keep_grey"]) + 1
        self.insert(
            at,
            CheckBox(
                name="content_range",
                text="result in the content's value range",
                value=True,
                tooltip="a grey result is mapped back through the contrast limits the content was read with "
                "(its own units) instead of 0..1",
            ),
        )
        self.insert(
            at + 1,
            CheckBox(
                name="keep_snapshots",
                text="keep snapshots after the run",
                value=True,
                tooltip="off: a finished run's snapshot layers are removed, only the result stays",
            ),
        )

    def _add_typed_style_weight(self) -> None:
        """A text field under the style-weight slider: the weight can be typed (1e6, 250000)."""
        field = LineEdit(
            name="style_weight_typed",
            label="or type it",
            value=f"{self._style_weight.value:g}",
            tooltip="type a style weight (1 to 1e10) and press Enter",
        )
        self.insert(self.index(self._style_weight) + 1, field)

        def typed(*_: Any) -> None:
            try:
                weight = float(field.value)
            except ValueError:
                weight = math.nan
            if 1.0 <= weight <= 1e10:
                self._style_weight.value = weight
            field.value = f"{self._style_weight.value:g}"  # a bad entry goes back to the weight

        field.native.editingFinished.connect(typed)
        self._style_weight.changed.connect(
            lambda value: setattr(field, "value", f"{self._style_weight.value:g}")
        )

    def _fit_controls_to_content(self, layer: Any) -> None:
        """Controls that do nothing for the chosen content are disabled: stack (and its time
        and batch options) for a 2D layer, the content's colours for grey content, grey result and value
        range for RGB content."""
        if layer is None:
            return
        stack = getattr(layer, "ndim", 2) > 2
        rgb = bool(getattr(layer, "rgb", False))
        for name in ("stack", "temporal_weight", "time_steps", "batch_frames"):
            self[name].enabled = stack
        self["content_colours"].enabled = rgb
        self["keep_grey"].enabled = not rgb
        self["content_range"].enabled = not rgb

    def _fit_average_to_optimizer(self, optimizer: str) -> None:
        """Averaged iterates are Adam's (L-BFGS refuses them)."""
        self["average"].enabled = optimizer == "adam"

    def _preselect_stack(self, layer: Any) -> None:
        """A newly chosen content layer whose first axis is labelled t or time starts as a
        time series; otherwise the choice stays (nor is it touched until the content changes)."""
        if layer is not None and is_time_series(self.viewer, layer):
            self["stack"].value = "whole stack as time series"

    # --- options ------------------------------------------------------------------------

    def options(self) -> dict[str, Any]:
        """The engine options the controls hold now (keywords of ``stylize``); ``frames``
        comes from the stack choice."""
        skip = ("frames", "style_blend", "style_scale")
        values = {name: self[name].value for name in StyleOptions().to_dict() if name not in skip}
        values["frames"] = frames_option(self["stack"].value) or StyleOptions().frames
        values["learning_rate"] = values["learning_rate"] or None
        values["content_colours"] = False if values["content_colours"] == "off" else values["content_colours"]
        values["average"] = (
            (values["average"] or None) if values["optimizer"] == "adam" else None
        )  # disabled otherwise
        values["style_layer_weights"] = values["style_layer_weights"].strip()
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
        self["style_weight"].label = f"style weight ({style_weight:.1e})"
        self._ratio.value = f"{style_weight / content_weight:.1e}" if content_weight else "style only"

    def _show_advanced(self, visible: bool) -> None:
        for name in ADVANCED:
            self[name].visible = bool(visible)

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
            worker = run_style_transfer(
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
        weakref.finalize(self, worker.cancel_event.set)  # a widget nobody holds stops its run
        worker.yielded.connect(self._render)
        worker.finished.connect(self._idle)
        worker.errored.connect(self._crashed)
        self._progress.max = self["steps"].value
        self._progress.value = 0
        self._status.value = "loading weights and building VGG19..."
        self._button.text = "Cancel"
        worker.start()
        return worker

    def cancel(self) -> None:
        """Stop the run after its current step; the last image is kept as a layer."""
        if self.worker is not None:
            cancel(self.worker)
            self._status.value = "cancelling..." if self._downloading else "cancelling after this step..."

    def _toggle(self, *_: Any) -> None:
        if self.running:
            self.cancel()
        else:
            self.run()

    def _render(self, update: Update) -> None:
        """Status and progress; notifications come from the run's LayerWriter."""
        if self._gone.is_set():
            return

        if isinstance(update, Downloading):
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
        elif isinstance(update, Started):
            self._downloading = False
            self._device, self._weights = update.device, _short_weights(update.weights)
        elif isinstance(update, Progress):
            self._progress.max = update.total
            self._progress.value = update.done
            speed = _speed_and_time_left(update)
            frame = f"frame {update.frame_number + 1}/{update.frames} | " if update.frames > 1 else ""
            self._status.value = (
                f"{frame}step {update.step}/{update.steps} | loss {update.total_loss:.3g} "
                f"(content {update.content_loss:.3g}, style {update.style_loss:.3g}) | {speed} | "
                f"{self._device} | {self._weights}"
            )
        elif isinstance(update, Finished):
            result = update.result
            self._status.value = (
                f"done: {_steps_run(result)} in {result.seconds:.1f}\u00a0s, loss {result.losses.total:.3g} | "
                f"{result.device} | {_short_weights(result.weights)}"
            )
            self._describe_result()
        elif isinstance(update, Cancelled):
            if self.worker is not None and self.worker.layer_writer.closed:
                self._status.value = "stopped: the content layer was removed, so nothing was added"
            elif update.step == 0:
                self._status.value = (
                    "cancelled during the weights download: nothing kept, run again to restart it"
                    if self._downloading
                    else "cancelled before the first step: nothing to keep"
                )
            else:
                frames = self._progress_frames()
                where = f"frame {update.frame_number + 1} of {frames}, " if frames > 1 else ""
                self._status.value = (
                    f"cancelled at {where}step {update.step}; what was done is kept as a layer"
                )
        elif isinstance(update, Failed):
            self._status.value = f"failed: {update.message}"

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
        if self._status.value.startswith(("loading", "downloading", "cancelling", "step", "frame")):
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


def _device_choices(preferred: str) -> list[str]:
    names = ["auto", "cpu", "cuda", "mps"]
    return names if preferred in names else [preferred, *names]


def _short_weights(description: str) -> str:
    return description.split(" (")[0] + " weights"
