"""The dock widget's styles: one compact row per style Image layer, with its blend weight
and its style scale; "add style" adds a row, a row's remove button takes it out.

The rows' controls are named for their style's number k, as the label image of regions
counts: ``style``, ``blend`` and ``style_scale`` for the first style, ``style_k``,
``blend_k`` and ``style_scale_k`` for the k-th (renumbered when a row goes).
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import Container, FloatSpinBox, Label, PushButton, create_widget
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractSpinBox, QComboBox

from ..options import StyleOptions, limits

#: The style scales a row offers: from a twentieth to the options' largest.
SCALES = (0.05, float(limits("style_scale")[1] or 20.0))
#: The largest blend weight a row takes (weights are relative: 1:1 is 50:50).
MAX_BLEND = 1000.0
#: Pixel widths of the weight and scale boxes and of the remove button, so that the rows'
#: columns line up under the header.
NUMBER_WIDTH = 56
BUTTON_WIDTH = 24
#: Width of a row's number (the label of the regions that take its style).
INDEX_WIDTH = 14


def _control_names(number: int) -> tuple[str, str, str, str]:
    """The names of the k-th style's layer, weight, scale and remove controls."""
    suffix = "" if number == 1 else f"_{number}"
    return f"style{suffix}", f"blend{suffix}", f"style_scale{suffix}", f"remove_button{suffix}"


def narrow_choice(box: QComboBox, letters: int) -> None:
    """A choice as narrow as ``letters`` letters in the dock (its list still shows whole)."""
    box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    box.setMinimumContentsLength(letters)


def _compact(container: Container) -> Container:
    container.margins = (0, 0, 0, 0)
    container.native.layout().setSpacing(4)
    return container


class StyleRow(Container):
    """One style: its Image layer, its blend weight and its style scale, and a remove button."""

    def __init__(self, number: int, weight: float = 1.0, scale: float | None = None):
        from napari.layers import Image

        self.layer: Any = create_widget(annotation=Image, name="style", label="style")
        self.layer.tooltip = "a style Image layer: its colours and textures are transferred"
        narrow_choice(self.layer.native, 4)
        self.weight = FloatSpinBox(
            value=weight,
            min=0.0,
            max=MAX_BLEND,
            step=0.1,
            tooltip="this style's blend weight (0 to 1000; the weights are normalised to sum 1, so 1 and 1 "
            "is half each); only with several styles and no regions (a region takes its style whole)",
        )
        low, high = SCALES
        self.scale = FloatSpinBox(
            value=StyleOptions().style_scales(1)[0] if scale is None else scale,
            min=low,
            max=high,
            step=0.05,
            tooltip=f"the size of this style's patterns relative to the content's working size ({low:g} to "
            f"{high:g}; 2 paints them twice as large)",
        )
        self.remove_button = PushButton(text="\u2715", tooltip="remove this style")
        self.number_label = Label(tooltip="the style's number: regions labelled with it take this style")
        self.number_label.native.setFixedWidth(INDEX_WIDTH)
        self._controls: tuple[Any, ...] = (self.layer, self.weight, self.scale, self.remove_button)
        super().__init__(widgets=[self.number_label, *self._controls], layout="horizontal", labels=False)
        _compact(self)
        for box in (self.weight, self.scale):
            # typed (or the mouse wheel): napari's wide -/+ buttons would squeeze the layer name
            box.native.setButtonSymbols(QAbstractSpinBox.ButtonSymbols.NoButtons)
            box.native.setAlignment(Qt.AlignmentFlag.AlignRight)
            box.native.setStyleSheet("QAbstractSpinBox { min-width: 0px; }")  # napari's theme asks for 70 px
            box.native.setFixedWidth(NUMBER_WIDTH)
        self.remove_button.native.setFixedWidth(BUTTON_WIDTH)
        # an only row's button is hidden, but keeps its place so the columns stay aligned
        policy = self.remove_button.native.sizePolicy()
        policy.setRetainSizeWhenHidden(True)
        self.remove_button.native.setSizePolicy(policy)
        self.number = number
        self.native.setMinimumHeight(self.native.sizeHint().height())  # never squeezed by the dock

    @property
    def number(self) -> int:
        return self._number

    @number.setter
    def number(self, number: int) -> None:
        self._number = number
        self.number_label.value = str(number)
        for control, name in zip(self._controls, _control_names(number), strict=True):
            control.name = name


class StyleList(Container):
    """The style rows under a header, and an "add style" button."""

    def __init__(self, *, scale: float | None = None, **kwargs: Any):
        header = Container(
            widgets=[
                Label(value="#"),
                Label(value="style layer"),
                Label(value="weight"),
                Label(value="scale"),
                Label(value=""),
            ],
            layout="horizontal",
            labels=False,
        )
        _compact(header)
        for label in header:
            label.native.setAlignment(Qt.AlignmentFlag.AlignCenter)
        widths = (INDEX_WIDTH, None, NUMBER_WIDTH, NUMBER_WIDTH, BUTTON_WIDTH)
        for label, width in zip(header, widths, strict=True):
            if width is not None:
                label.native.setFixedWidth(width)
        self._header = header
        self._add_button = PushButton(
            name="add_style_button", text="add style", tooltip="add a row for another style layer"
        )
        super().__init__(widgets=[header, StyleRow(1, scale=scale), self._add_button], labels=False, **kwargs)
        _compact(self)
        self.rows[0].remove_button.changed.connect(lambda *_, row=self.rows[0]: self.remove_row(row))
        self._fit()

    @property
    def rows(self) -> list[StyleRow]:
        return [widget for widget in self if isinstance(widget, StyleRow)]

    def control(self, name: str) -> Any:
        """The row control (or the add button) named ``name``, or None."""
        for widget in (*(control for row in self.rows for control in row), self._add_button):
            if widget.name == name:
                return widget
        return None

    def add_row(self, layer: Any = None, weight: float = 1.0, scale: float | None = None) -> StyleRow:
        """A new last row (its layer ``layer`` if given, else the choice's default)."""
        row = StyleRow(len(self.rows) + 1, weight, scale)
        self.insert(self.index(self._add_button), row)
        row.remove_button.changed.connect(lambda *_: self.remove_row(row))
        row.reset_choices()
        if layer is not None:
            row.layer.value = layer
        self._fit()
        return row

    def remove_row(self, row: StyleRow) -> None:
        """Take ``row`` out (the last row stays); the rows after it are renumbered."""
        rows = self.rows
        if len(rows) == 1 or row not in rows:
            return
        self.remove(row)
        for number, rest in enumerate(self.rows, start=1):
            rest.number = number
        self._fit()

    def fit_weights(self, apply: bool) -> None:
        """Weights are enabled where they apply (``apply``: several styles, no regions)."""
        for row in self.rows:
            row.weight.enabled = apply and len(self.rows) > 1

    def _fit(self) -> None:
        rows = self.rows
        for row in rows:
            row.remove_button.visible = len(rows) > 1
        # the list's height changed: without this the dock keeps the old height until something
        # asks for a size hint, and the rows are drawn over each other
        self.native.layout().activate()
        self.native.updateGeometry()
        self.changed.emit(self)
