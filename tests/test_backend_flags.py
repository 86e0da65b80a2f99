"""cuDNN autotuning and TF32 are process-wide: each run holds them only during its own steps.

The flags can be set on any torch build; the tests let CPU runs set them too (as CUDA runs
do) and watch them from inside the objective."""

from __future__ import annotations

import threading

import pytest
from tiny_runs import tiny_options

from napari_style_transfer import engine, iter_stylize

FAST = tiny_options(steps=3)
#: (precision, cudnn_benchmark) of two runs, told apart inside the objective by style_weight.
RUNS = {1e4: ("fp32", True), 2e4: ("tf32", False)}
#: What each run's steps must see: (cudnn.benchmark, cudnn.allow_tf32, cuda.matmul.allow_tf32).
EXPECTED = {1e4: (True, False, False), 2e4: (False, True, True)}
#: The process's flags outside the runs: unlike either run's.
OUTSIDE = (True, True, False)


@pytest.fixture
def watched_flags(monkeypatch):
    """Let CPU runs set the flags, and record (style_weight, flags) at every evaluation of
    features (style targets, content targets, steps)."""
    monkeypatch.setattr(engine, "_FLAG_DEVICES", ("cuda", "cpu"))
    seen: list[tuple[float, tuple[bool, bool, bool]]] = []
    features = engine.StyleObjective.features

    def watching(self, image, *args, **kwargs):
        seen.append((self.style_weight, engine._read_flags()))
        return features(self, image, *args, **kwargs)

    monkeypatch.setattr(engine.StyleObjective, "features", watching)
    before = engine._read_flags()
    engine._write_flags(OUTSIDE)
    yield seen
    engine._write_flags(before)


def run(content, style, style_weight):
    precision, benchmark = RUNS[style_weight]
    return iter_stylize(
        content, style, precision=precision, cudnn_benchmark=benchmark, style_weight=style_weight, **FAST
    )


def assert_each_run_saw_its_own_flags(seen):
    assert {weight for weight, _ in seen} == set(RUNS)
    assert all(flags == EXPECTED[weight] for weight, flags in seen), seen


def test_interleaved_runs_each_see_their_own_flags_and_the_caller_its_own_in_between(
    watched_flags, content, style
):
    runs = [run(content, style, weight) for weight in RUNS]
    between = []
    while runs:
        for steps in list(runs):
            if next(steps, None) is None:
                runs.remove(steps)
            between.append(engine._read_flags())
    assert_each_run_saw_its_own_flags(watched_flags)
    assert set(between) == {OUTSIDE}
    assert engine._read_flags() == OUTSIDE


def test_concurrent_runs_in_two_threads_each_see_their_own_flags(watched_flags, content, style):
    barrier = threading.Barrier(len(RUNS))
    errors = []

    def work(weight):
        barrier.wait()
        try:
            list(run(content, style, weight))
        except Exception as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(weight,)) for weight in RUNS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert_each_run_saw_its_own_flags(watched_flags)
    assert engine._read_flags() == OUTSIDE


def test_a_run_closed_early_gives_the_flags_back(watched_flags, content, style):
    steps = run(content, style, 1e4)
    next(steps)
    steps.close()
    assert engine._read_flags() == OUTSIDE
