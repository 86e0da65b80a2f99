"""The run pipeline's stages: planners make jobs, sinks take finished images, executors run
frames elsewhere and give what this process gives (tiny images, untrained weights)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from tiny_runs import tiny_options

from napari_style_transfer import stylize
from napari_style_transfer.api import plan
from napari_style_transfer.objective import StyleObjective
from napari_style_transfer.pipeline.executors import run_on
from napari_style_transfer.pipeline.jobs import IndependentFrames, batches
from napari_style_transfer.pipeline.records import StyleResult
from napari_style_transfer.pipeline.runner import run
from napari_style_transfer.pipeline.sinks import NumpySink
from napari_style_transfer.pipeline.time_series import TimeChains

FAST = tiny_options(steps=3, seed=0)


@pytest.fixture
def stack(content) -> np.ndarray:
    return np.stack([content[..., 0], content[..., 1], content[..., 2]])


def test_independent_frames_are_one_job_each_in_stack_order_with_the_whole_schedule(stack, style):
    p = plan(stack, style, **FAST)
    jobs = IndependentFrames(p).jobs()
    assert [(job.number, job.index, job.follows) for job in jobs] == [
        (0, (0,), None),
        (1, (1,), None),
        (2, (2,), None),
    ]
    assert all(job.levels == p.levels for job in jobs)


def test_a_time_series_later_frames_follow_the_previous_one_at_the_working_size_only(stack, style):
    p = plan(stack, style, frames="time", time_steps=2, **FAST)
    first, *later = TimeChains(p).jobs()
    assert first.follows is None and first.levels == p.levels
    assert [job.follows for job in later] == [(0,), (1,)]
    assert all(job.steps == 2 and job.levels[0].content_shape == p.content_shape for job in later)


def test_batches_keep_the_job_order_and_put_the_rest_in_a_last_smaller_batch(stack, style):
    jobs = IndependentFrames(plan(stack, style, **FAST)).jobs()
    assert [[job.number for job in batch] for batch in batches(jobs, 2)] == [[0, 1], [2]]


def test_the_numpy_sink_allocates_the_stack_on_the_first_image_and_fills_each_frame():
    sink = NumpySink((2,), zeroed=True)
    sink.take((1,), np.full((3, 4), 0.5, np.float32))
    assert sink.result.shape == (2, 3, 4) and sink.result.dtype == np.float32
    assert (sink.result[0] == 0).all() and (sink.result[1] == 0.5).all()


def test_a_sink_given_to_the_run_takes_each_frame_once_with_its_final_image(stack, style):
    class Recording(NumpySink):
        def __init__(self):
            super().__init__((3,))
            self.taken = []

        def take(self, index, image):
            self.taken.append(index)
            super().take(index, image)

    sink = Recording()
    items = list(run(plan(stack, style, **FAST), sink=sink))
    assert sink.taken == [(0,), (1,), (2,)]
    assert isinstance(items[-1], StyleResult) and items[-1].image is sink.result
    np.testing.assert_array_equal(sink.result, stylize(stack, style, **FAST))


def test_frames_on_a_concurrent_futures_executor_equal_the_run_in_this_thread(stack, style):
    with ThreadPoolExecutor(max_workers=2) as executor:
        spread = stylize(stack, style, client=executor, **FAST)
    np.testing.assert_allclose(spread, stylize(stack, style, **FAST), rtol=0, atol=1e-6)


class RecordingPool(ThreadPoolExecutor):
    """A one-thread pool that keeps every future it hands out."""

    def __init__(self):
        super().__init__(max_workers=1)
        self.futures = []

    def submit(self, fn, /, *args, **kwargs):
        future = super().submit(fn, *args, **kwargs)
        self.futures.append(future)
        return future


def test_an_executor_run_stopped_while_submitting_reads_no_more_and_cancels_what_is_not_back():
    stop, release = threading.Event(), threading.Event()
    read = []

    def jobs():
        for number in range(4):
            read.append(number)
            stop.set()  # as a user's cancel right after the first frame is read
            yield number, (number,)

    with RecordingPool() as pool:
        busy = pool.submit(release.wait, 5)  # keeps the frame's task waiting in the queue
        assert list(run_on(pool, lambda number: number, jobs(), stopped=stop.is_set)) == []
        release.set()
    assert read == [0]
    assert busy.result() is True
    assert pool.futures[1].cancelled()


def test_an_executor_run_gives_every_task_back_by_its_key():
    with ThreadPoolExecutor(max_workers=2) as executor:
        back = dict(run_on(executor, lambda number: number * number, ((n, (n,)) for n in range(5))))
    assert back == {n: n * n for n in range(5)}


def test_each_level_of_a_job_computes_its_content_targets_once(monkeypatch, content, style):
    """A new level's objective computes no content target of its own: the job's is set once
    (a tile of a full-resolution run pays one content pass, not two, at each level)."""
    shapes = []
    targets = StyleObjective.content_features

    def counted(objective, image):
        shapes.append(tuple(image.shape[-2:]))
        return targets(objective, image)

    monkeypatch.setattr(StyleObjective, "content_features", counted)
    options = tiny_options(steps=2, size=48, seed=0, schedule="24,48")
    levels = plan(content, style, **options).levels
    stylize(content, style, **options)
    assert len(levels) > 1
    # each level once for the run, and the working size's once more for the final losses
    assert len(shapes) == len(levels) + 1
    assert len(set(shapes)) == len(levels)
