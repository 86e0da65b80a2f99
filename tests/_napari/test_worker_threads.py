"""The threads a run starts in napari run at the worker's lower priority, so napari's own
thread still wins the CPU: a time series reads its next frame and computes its flows in one."""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import pytest

from napari_style_transfer._napari.worker import WORKER_NICENESS, Finished, style_transfer_updates
from napari_style_transfer.pipeline import reader

from .conftest import FAST, RUN_WAIT_MS


@pytest.mark.skipif(sys.platform != "linux", reason="only Linux gives each thread its own priority")
def test_a_time_series_reads_its_frames_ahead_at_the_workers_lower_priority(content, style, monkeypatch):
    niceness = []
    link_frames = reader.link_frames

    def recording(previous, current, *left_behind):
        niceness.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return link_frames(previous, current, *left_behind)

    monkeypatch.setattr("napari_style_transfer.pipeline.reader.link_frames", recording)
    monkeypatch.setattr(
        "napari_style_transfer.pipeline.reader.reads_ahead", lambda device: True
    )  # as beside a GPU
    movie = np.stack([np.roll(content, 2 * t, axis=1) for t in range(3)])
    updates = []
    worker = threading.Thread(
        target=lambda: updates.extend(
            style_transfer_updates(
                movie, style, {**FAST, "frames": "time", "time_passes": 0}, threading.Event()
            )
        )
    )
    worker.start()
    worker.join(RUN_WAIT_MS / 1000)
    assert isinstance(updates[-1], Finished), updates[-1]
    assert len(niceness) == 2 and min(niceness) >= WORKER_NICENESS
