"""A whole stack's independent frames on the dask cluster named in the plugin's preferences."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import run_and_wait

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def scheduler_address():
    """A small cluster in this process (one worker thread): the GUI side is what is tested."""
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0")
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


@pytest.fixture
def registered(plugin_settings, npe2pm):
    """The plugin's manifest registered, so that its preferences exist."""
    from npe2 import PluginManifest

    npe2pm.register(PluginManifest.from_distribution("napari-style-transfer"))


@pytest.fixture
def on_the_cluster(registered, scheduler_address):
    from napari.settings import get_plugin_settings

    get_plugin_settings("napari-style-transfer").run.scheduler = scheduler_address
    return scheduler_address


def test_the_scheduler_preference_is_read_from_the_plugin_settings(viewer, registered):
    from napari.settings import get_plugin_settings

    from napari_style_transfer._napari.widget import scheduler_preference

    get_plugin_settings("napari-style-transfer").run.scheduler = "  tcp://10.0.0.1:8786 "
    assert scheduler_preference() == "tcp://10.0.0.1:8786"


def test_a_whole_stack_runs_its_frames_on_the_preferred_cluster(qtbot, viewer, widget, on_the_cluster, content):
    from napari_style_transfer import stylize

    grey = np.stack([content[..., 0], content[..., 1]])
    layer = viewer.add_image(grey, name="planes")
    widget["content"].value = layer
    widget["stack"].value = "whole stack, frames independent"
    widget["steps"].value = 2
    widget["content_range"].value = False  # results in 0..1, as stylize gives them
    run_and_wait(qtbot, widget)
    result = viewer.layers["planes styled"]
    style = viewer.layers["texture"].data
    alone = stylize(grey, style, frames="independent", size=32, steps=2, weights="random", keep_grey=True)
    np.testing.assert_allclose(result.data, alone, atol=1e-5)
    assert result.metadata["style_transfer"]["device"].startswith("dask cluster")
    assert widget["status"].value.startswith("done")
