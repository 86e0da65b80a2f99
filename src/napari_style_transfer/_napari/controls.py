"""The dock widget's controls, built from :class:`~napari_style_transfer.options.StyleOptions`'
metadata: each option's range, choices, form label and help are written once, in options.py.

No torch and no napari here: magicgui widgets and, for the collapsible groups, superqt.
"""

from __future__ import annotations

import math
from typing import Any, cast

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    FloatSpinBox,
    LineEdit,
    SpinBox,
)
from magicgui.widgets.bases import ValueWidget

from ..options import StyleOptions, choices, label, limits, presets, user_help, zero_means
from .layers import stack_mode

#: The content_colours choice: off is False (the style's colours).
COLOUR_CHOICES = ("off", *(choices("content_colours") or ()))
#: The strength slider's ends (a log scale; the typed field takes the option's whole range).
SLIDER_WEIGHTS = (1.0, 1e10)
#: Decimals Qt shows (and rounds the value to) for the float boxes: 0.001 must not become 0.
DECIMALS = {"average": 4}


class NumberField(LineEdit):
    """A number typed as text (1e6, 0.001, 250000) within ``minimum``..``maximum``: weights
    span decades that a spin box cannot show, and superqt's spin boxes cannot show "auto".
    A bad entry goes back to the last number; ``zero`` is shown for 0 where 0 means
    something ("auto", "off"); ``whole`` takes whole numbers only."""

    def __init__(
        self,
        *,
        value: float,
        minimum: float,
        maximum: float,
        zero: str | None = None,
        whole: bool = False,
        **kwargs: Any,
    ):
        self.minimum, self.maximum, self.zero, self.whole = minimum, maximum, zero, whole
        self._number: float = int(value) if whole else float(value)
        super().__init__(value=self._shown(self._number), **kwargs)
        self.native.editingFinished.connect(self._tidy)

    @property  # type: ignore[override]  # a number, where LineEdit's is text
    def value(self) -> float:
        number = self._parse(self._widget._mgui_get_value())
        return self._number if number is None else number

    @value.setter
    def value(self, value: float) -> None:
        number = self._parse(value)
        if number is None:
            raise ValueError(
                f"{self.name} must be a number from {self.minimum:g} to {self.maximum:g}, got {value!r}"
            )
        self._number = number
        self._widget._mgui_set_value(self._shown(number))

    def _parse(self, value: Any) -> float | None:
        if isinstance(value, str):
            text = value.strip().lower()
            if self.zero is not None and text in ("", self.zero):
                return 0.0
            try:
                value = float(text)
            except ValueError:
                return None
        number = float(value)
        if not (math.isfinite(number) and self.minimum <= number <= self.maximum):
            return None
        if self.whole:
            return int(number) if number.is_integer() else None
        return number

    def _shown(self, number: float) -> str:
        return self.zero if number == 0 and self.zero is not None else f"{number:g}"

    def _tidy(self) -> None:
        self.value = self.value  # a bad entry shows the last number again


def option_control(name: str, value: Any) -> ValueWidget:
    """The control of option ``name`` holding ``value``: its kind, range, choices, label and
    tooltip from the option's metadata."""
    default = getattr(StyleOptions(), name)
    common: dict[str, Any] = {"name": name, "label": label(name), "tooltip": user_help(name)}
    low, high = limits(name)
    if name == "content_colours":
        return ComboBox(value=value or "off", choices=COLOUR_CHOICES, **common)
    if presets(name) and name != "weights":  # weights may also be a file's path: typed
        offered = presets(name)
        return ComboBox(value=value, choices=offered if value in offered else (value, *offered), **common)
    if isinstance(default, bool):
        return CheckBox(value=value, text=common.pop("label"), **common)
    if isinstance(default, tuple):
        layers = LineEdit(value=",".join(map(str, value)), **common)
        layers.native.setCursorPosition(0)  # the list's start shows, not its clipped end
        return layers
    if isinstance(default, int) and not isinstance(default, bool) and zero_means(name):
        zero = zero_means(name)
        return NumberField(value=value, minimum=low or 0, maximum=high or 0, zero=zero, whole=True, **common)
    if isinstance(default, int) and not isinstance(default, bool) and high is not None:
        return SpinBox(value=value, min=int(low or 0), max=int(high), **common)
    if name == "average":
        average = FloatSpinBox(value=value or 0.0, min=low or 0.0, max=high or 1.0, step=0.01, **common)
        average.native.setDecimals(DECIMALS[name])
        return average
    if high is not None:  # weights and rates: decades apart, typed
        zero = "auto" if default is None else None
        return NumberField(value=value or 0.0, minimum=low or 0.0, maximum=high, zero=zero, **common)
    if name == "seed":  # Qt's spin boxes hold 32-bit numbers; the option takes more
        return SpinBox(value=value or 0, min=0, max=2**31 - 1, **common)
    return LineEdit(value=str(value), **common)


def option_value(control: ValueWidget) -> Any:
    """The option's value a control holds (0 for "auto" options is None; off is False)."""
    name, value = control.name, control.value
    if name == "content_colours":
        return False if value == "off" else value
    if name in ("learning_rate", "average"):
        return value or None
    if isinstance(value, str) and isinstance(getattr(StyleOptions(), name), tuple):
        return value.strip()
    return value


class StrengthSlider(FloatSlider):
    """The style weight on a log slider (1 to 1e10, steps of 1/100 decade), tied to the typed
    field that holds the weight: moving one moves the other."""

    def __init__(self, field: NumberField):
        low, high = SLIDER_WEIGHTS
        super().__init__(
            name="strength_slider",
            min=0.0,
            max=math.log10(high / low),
            step=0.01,
            tooltip="drag to set the strength on a log scale (1 to 1e10); type an exact weight beside it",
            readout=False,
        )
        self._field = field
        self._moving = False
        self._follow()
        self.changed.connect(self._moved)
        field.changed.connect(lambda *_: self._follow())

    def _moved(self, position: float) -> None:
        if self._moving:
            return
        self._moving = True
        self._field.value = float(f"{SLIDER_WEIGHTS[0] * 10**position:.3g}")
        self._moving = False

    def _follow(self) -> None:
        if self._moving:
            return
        self._moving = True
        weight = min(max(self._field.value, SLIDER_WEIGHTS[0]), SLIDER_WEIGHTS[1])
        self.value = math.log10(weight / SLIDER_WEIGHTS[0])
        self._moving = False


def strength_row(value: float) -> tuple[Container, NumberField]:
    """The strength (style weight): a log slider and the typed weight, on one row."""
    field = option_control("style_weight", value)
    assert isinstance(field, NumberField)
    field.native.setMaximumWidth(72)
    widgets: list[Any] = [StrengthSlider(field), field]
    row = Container(widgets=widgets, layout="horizontal", labels=False)
    row.margins = (0, 0, 0, 0)
    row.label, row.tooltip = label("style_weight"), user_help("style_weight")
    return row, field


class StackChoice(ComboBox):
    """The stack modes; a script's ``widget["stack"].value = "whole stack"`` (the earlier
    name) still picks the mode it meant."""

    @property
    def value(self) -> str:
        return cast(Any, ComboBox.value).fget(self)

    @value.setter
    def value(self, value: str) -> None:
        cast(Any, ComboBox.value).fset(self, stack_mode(value) if isinstance(value, str) else value)
