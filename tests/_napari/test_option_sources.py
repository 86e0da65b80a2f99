"""Every limit and choice the napari side offers comes from StyleOptions' metadata."""

from __future__ import annotations

from pathlib import Path

import yaml

from napari_style_transfer.options import limits, presets

MANIFEST = Path(__file__).resolve().parents[2] / "napari.yaml"


def preferences() -> dict:
    manifest = yaml.safe_load(MANIFEST.read_text())
    return manifest["contributions"]["configurations"]["run"]["properties"]


def test_the_device_preference_offers_the_options_devices():
    assert tuple(preferences()["device"]["enum"]) == presets("device")


def test_the_preferences_defaults_and_minimums_are_the_options():
    from napari_style_transfer.options import StyleOptions

    for name in ("device", "weights", "snapshot_every"):
        assert preferences()[name]["default"] == getattr(StyleOptions(), name), name
    assert preferences()["snapshot_every"]["minimum"] == limits("snapshot_every")[0]
    assert preferences()["snapshot_every"]["maximum"] == limits("snapshot_every")[1]
