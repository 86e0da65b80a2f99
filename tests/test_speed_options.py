"""Correctness of the speed options: mixed precision, memory layout, coarse-to-fine, flags.

No test here asserts a time: speed is measured by benchmarks/run.py and benchmarks/gpu.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_runs import tiny_options

from napari_style_transfer import iter_stylize, stylize
from napari_style_transfer.api import StyleResult

FAST = tiny_options(steps=6)

#: Stated tolerances between fp32 and bf16 runs (pixels in [0, 1]). After one step at 64 px
#: the mean absolute pixel difference stays under 0.002 (measured 1e-4 on a CPU with native
#: bf16, 0.001 where it is emulated). Later, L-BFGS amplifies rounding and the trajectories
#: part: after 20 steps at 128 px the mean pixel difference stays under 0.06 and the losses
#: within 10% (measured 0.011 and 1.5% with native bf16; at 64 px the losses parted by up to
#: 22% after 20 steps and came back within 6% after 50, so small images make a poor yardstick).
EARLY_PIXELS, LATE_PIXELS, LATE_LOSS = 0.002, 0.06, 0.10


def test_bf16_and_fp32_results_agree_within_the_stated_tolerance(content, style):
    options = {**FAST, "schedule": "none"}
    early = [
        stylize(content, style, precision=p, **{**options, "size": 64, "steps": 1}) for p in ("fp32", "bf16")
    ]
    assert 0 < np.abs(early[0] - early[1]).mean() < EARLY_PIXELS
    late = [
        list(iter_stylize(content, style, precision=p, **{**options, "size": 128, "steps": 20}))[-1]
        for p in ("fp32", "bf16")
    ]
    assert np.abs(late[0].image - late[1].image).mean() < LATE_PIXELS
    assert abs(late[1].losses.total / late[0].losses.total - 1) < LATE_LOSS


def test_bf16_losses_are_float32_and_fall(content, style):
    records = [
        r for r in iter_stylize(content, style, precision="bf16", init="noise", **{**FAST, "steps": 10})
    ]
    totals = [r.losses.total for r in records[:-1]]
    assert totals[-1] < 0.5 * totals[0]


def test_channels_last_gives_the_same_result(content, style, monkeypatch):
    # Both layouts compute the same sums in another order: equal to rounding after one step;
    # later L-BFGS amplifies that rounding (measured 2e-3 after 2 steps with oneDNN's AVX-512
    # kernels), so the longer run is compared by its loss (measured within 1% after 6 steps).
    options = {**FAST, "precision": "fp32"}
    first = [stylize(content, style, channels_last=last, **{**options, "steps": 1}) for last in (False, True)]
    np.testing.assert_allclose(first[0], first[1], atol=1e-5)
    # the layout's rounding alone, with float32 curvature pairs: the default bfloat16 pairs
    # round each pair too, which on the AVX2 EPYC parted the two paths at step 5 here (losses
    # 1.22 and 0.65; after 12 steps 0.24 and 0.14, float32 pairs 0.210 both): a path of its own
    # for each, neither worse
    monkeypatch.setattr("napari_style_transfer.lbfgs.PAIR_DTYPE", torch.float32)
    runs = [list(iter_stylize(content, style, channels_last=last, **options))[-1] for last in (False, True)]
    assert abs(runs[1].losses.total / runs[0].losses.total - 1) < 0.05


def test_coarse_to_fine_goes_through_its_sizes_and_ends_at_the_working_size(content, style):
    records = list(
        iter_stylize(content, style, size=64, steps=8, schedule="32,64", weights="random", snapshot_every=1)
    )
    steps, result = records[:-1], records[-1]
    assert isinstance(result, StyleResult)
    assert result.image.shape == (53, 64, 3) and result.schedule == (32, 64)
    assert [r.size for r in steps] == [32] * 3 + [64] * 5  # 40% then 60% of the steps
    assert [r.step for r in steps] == list(range(1, 9))
    assert steps[0].image.shape == (27, 32, 3) and steps[-1].image.shape == (53, 64, 3)
    fine = [r.losses.total for r in steps if r.size == 64]
    assert fine[-1] < fine[0]


def test_the_auto_schedule_runs_coarse_levels_for_large_sizes(content, style):
    first = next(iter_stylize(content, style, size=512, steps=4, weights="random", snapshot_every=0))
    assert first.size == 128


def test_three_levels_put_the_coarse_steps_at_the_smallest_size_for_the_same_cost():
    from napari_style_transfer import StyleOptions
    from napari_style_transfer.api import _levels

    levels = _levels(StyleOptions.from_kwargs({"size": 512, "steps": 300}), (512, 512), [(512, 512)])
    assert [level.content_shape for level in levels] == [(128, 128), (256, 256), (512, 512)]
    assert [level.steps for level in levels] == [123, 15, 162]
    # the full size starts sooner, and a default run costs no more than the 75/75/150 split did
    # (in full-size steps: a step at half the side costs a quarter)
    cost = sum(level.steps * (level.content_shape[0] / 512) ** 2 for level in levels)
    assert cost <= 75 / 16 + 75 / 4 + 150
    assert levels[0].steps / 16 + levels[1].steps / 4 < 0.5 * (75 / 16 + 75 / 4)


def test_a_three_level_run_goes_through_its_sizes_and_its_full_size_loss_falls(content, style):
    records = list(
        iter_stylize(
            content, style, size=64, steps=20, schedule="32,48,64", weights="random", snapshot_every=0
        )
    )
    steps = records[:-1]
    assert [r.size for r in steps] == [32] * 8 + [48] * 1 + [64] * 11
    fine = [r.losses.total for r in steps if r.size == 64]
    assert fine[-1] < 0.5 * fine[0]


def test_an_explicit_schedule_too_small_for_the_layers_is_refused(content, style):
    from napari_style_transfer import StyleTransferError

    with pytest.raises(StyleTransferError, match="at size 16, too small"):
        iter_stylize(content, style, size=64, schedule="16,64", weights="random")


def test_backend_flags_are_set_for_a_cuda_run_and_restored_after():
    from napari_style_transfer import StyleOptions
    from napari_style_transfer.engine import backend_flags

    before = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32)
    options = StyleOptions(precision="fp32", cudnn_benchmark=True)
    with backend_flags(options, torch.device("cuda")):
        assert torch.backends.cudnn.benchmark is True
        assert torch.backends.cudnn.allow_tf32 is False  # fp32 means no TF32 convolutions
    assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32) == before


@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_precision_on_the_cpu_is_bf16_only_where_the_cpu_computes_bf16_natively(
    monkeypatch, native, expected
):
    from napari_style_transfer import engine

    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert engine.compute_dtype("auto", cpu) == expected
    assert engine.compute_dtype("bf16", cpu) == torch.bfloat16  # asked for: even where emulated
    assert engine.compute_dtype("fp32", cpu) == torch.float32
    assert engine.compute_dtype("tf32", cpu) == torch.float32


@pytest.mark.parametrize(
    ("native", "precision", "ran"),
    [(True, "auto", "bf16"), (False, "auto", "fp32"), (True, "fp32", "fp32"), (False, "bf16", "bf16")],
)
def test_a_run_records_the_precision_its_convolutions_ran_in(
    content, style, monkeypatch, native, precision, ran
):
    from napari_style_transfer import engine
    from napari_style_transfer.pipeline import optimise

    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: native)
    dtypes = []
    real = optimise.StyleObjective

    def recorded(*args, **kwargs):
        objective = real(*args, **kwargs)
        dtypes.append(objective.compute_dtype)
        return objective

    monkeypatch.setattr("napari_style_transfer.pipeline.optimise.StyleObjective", recorded)
    result = list(iter_stylize(content, style, precision=precision, device="cpu", **{**FAST, "steps": 1}))[-1]
    assert dtypes == [torch.bfloat16 if ran == "bf16" else torch.float32]
    assert result.precision == ran
    assert result.metadata()["precision"] == ran
    assert result.metadata()["options"]["precision"] == precision  # what was asked stays recorded too


def test_native_bf16_is_what_the_cpu_feature_probes_say(monkeypatch):
    from napari_style_transfer.engine import cpu_has_native_bf16

    probe = cpu_has_native_bf16.__wrapped__  # the answer is cached per process
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    for avx512_bf16, amx, native in [(True, False, True), (False, True, True), (False, False, False)]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        assert probe() is native
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert probe() is False  # a torch without the probes: fp32, as before
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert probe() is False  # no oneDNN: bf16 convolutions would not use the hardware


def test_conv_flop_count_matches_a_hand_count():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from run import conv_gflops

    # conv1_1 alone at 10 px: 3 -> 64 channels, 3x3, 100 positions, forward + input gradient
    assert conv_gflops(10, "conv1_1") == pytest.approx(2 * 2 * 3 * 64 * 9 * 100 / 1e9)


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_fewer_steps_than_levels_keep_the_finest_levels_and_end_at_the_working_size(content, style, steps):
    records = list(
        iter_stylize(
            content,
            style,
            size=512,
            steps=steps,
            weights="random",
            snapshot_every=0,
            content_layers=["conv1_1"],
            style_layers=["conv1_1"],
        )
    )
    assert [r.step for r in records[:-1]] == list(range(1, steps + 1))
    assert records[-2].size == 512 and records[-2].image is not None
    assert records[-1].image.shape[:2] == (427, 512)


def test_step_counts_add_up_for_every_schedule():
    from napari_style_transfer import StyleOptions
    from napari_style_transfer.api import _levels

    for schedule in ("auto", "64,128,256,512", "256,512"):
        for steps in (1, 2, 3, 4, 5, 7, 10, 100, 301):
            options = StyleOptions.from_kwargs({"size": 512, "steps": steps, "schedule": schedule})
            levels = _levels(options, (400, 500), [(300, 300)])
            assert sum(level.steps for level in levels) == steps
            assert all(level.steps >= 1 for level in levels)
            assert max(levels[-1].content_shape) == 512


# --- channels_last="auto": the layout this machine runs faster, measured once -------------------

CPU = torch.device("cpu")


@pytest.fixture
def speed_cache(tmp_path, monkeypatch):
    """An empty user cache, where the probe's choices go."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "napari-style-transfer" / "speed_choices.json"


def _probe(seconds, calls):
    def probe(device, dtype):
        calls.append((device, dtype))
        return seconds

    return probe


@pytest.mark.parametrize(
    ("seconds", "chosen"), [({True: 0.8, False: 1.0}, True), ({True: 1.2, False: 1.0}, False)]
)
def test_auto_layout_is_the_one_the_probe_timed_faster(speed_cache, seconds, chosen):
    from napari_style_transfer.speed_probe import choose_channels_last

    assert choose_channels_last(CPU, probe=_probe(seconds, [])) is chosen


def test_a_cached_choice_is_reused_without_probing_again(speed_cache):
    from napari_style_transfer.speed_probe import choose_channels_last

    calls = []
    assert choose_channels_last(CPU, probe=_probe({True: 0.5, False: 1.0}, calls)) is True
    assert choose_channels_last(CPU, probe=_probe({True: 9.0, False: 1.0}, calls)) is True
    assert len(calls) == 1
    assert list(json.loads(speed_cache.read_text()).values())[0]["channels_last"] is True


def test_the_cache_holds_one_choice_per_machine_torch_device_and_dtype(speed_cache, monkeypatch):
    from napari_style_transfer import speed_probe

    calls = []
    speed_probe.choose_channels_last(CPU, probe=_probe({True: 0.5, False: 1.0}, calls))
    monkeypatch.setattr(speed_probe, "cpu_description", lambda: {"model": "Other CPU", "flags": ["avx2"]})
    assert speed_probe.choose_channels_last(CPU, probe=_probe({True: 2.0, False: 1.0}, calls)) is False
    assert (
        speed_probe.choose_channels_last(CPU, torch.bfloat16, _probe({True: 2.0, False: 1.0}, calls)) is False
    )
    assert [dtype for _, dtype in calls] == [torch.float32, torch.float32, torch.bfloat16]
    assert len(json.loads(speed_cache.read_text())) == 3


def test_an_explicit_layout_wins_without_probing(speed_cache, monkeypatch):
    from napari_style_transfer import speed_probe

    def no_probe(device, dtype):
        raise AssertionError("an explicit channels_last must not probe")

    monkeypatch.setattr(speed_probe, "choose_channels_last", no_probe)
    assert speed_probe.channels_last_used(True, CPU) is True
    assert speed_probe.channels_last_used(False, CPU) is False
    assert speed_probe.memory_format(False, CPU) == torch.contiguous_format
    assert not speed_cache.exists()


@pytest.mark.parametrize(
    ("probe_prefers", "option", "recorded"),
    [(False, "auto", False), (True, "auto", True), (True, False, False)],
)
def test_a_results_metadata_records_the_layout_the_run_used(
    speed_cache, monkeypatch, probe_prefers, option, recorded
):
    from napari_style_transfer import speed_probe
    from napari_style_transfer.api import StyleResult, iter_stylize

    faster = {probe_prefers: 0.5, not probe_prefers: 1.0}
    monkeypatch.setattr(speed_probe, "time_layouts", lambda device, dtype: faster)
    content = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    run = iter_stylize(content, content, size=32, steps=1, weights="random", channels_last=option)
    result = [item for item in run if isinstance(item, StyleResult)][0]
    assert result.metadata()["channels_last"] is recorded


def test_auto_in_the_engine_follows_the_probe(speed_cache, monkeypatch):
    from napari_style_transfer import engine, speed_probe

    monkeypatch.setattr(speed_probe, "time_layouts", lambda device, dtype: {True: 1.0, False: 0.5})
    assert engine.channels_last_used("auto", CPU) is False
    assert engine.memory_format("auto", CPU) == torch.contiguous_format


@pytest.mark.parametrize("garbage", ["{not json", "[1, 2]", '{"key": "no dict"}'])
def test_a_corrupt_cache_is_ignored_and_rewritten(speed_cache, garbage):
    from napari_style_transfer.speed_probe import choose_channels_last, machine_key

    speed_cache.parent.mkdir(parents=True)
    speed_cache.write_text(garbage)
    calls = []
    assert choose_channels_last(CPU, probe=_probe({True: 1.0, False: 0.5}, calls)) is False
    assert len(calls) == 1
    assert json.loads(speed_cache.read_text())[machine_key(CPU)]["channels_last"] is False


def test_the_probe_times_both_layouts_on_this_cpu():
    from napari_style_transfer.speed_probe import time_layouts

    seconds = time_layouts(CPU)
    assert set(seconds) == {True, False}
    assert all(0 < value < 60 for value in seconds.values())


def test_the_machine_key_names_the_cpu_flags_and_torch(monkeypatch):
    from napari_style_transfer import speed_probe

    monkeypatch.setattr(speed_probe, "cpu_description", lambda: {"model": "EPYC 7B13", "flags": ["avx2"]})
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    key = speed_probe.machine_key(CPU, torch.bfloat16)
    assert "EPYC 7B13" in key and "[avx2]" in key and torch.__version__ in key
    assert "cpu 2 threads isa " in key and key.endswith("bfloat16")


def test_a_process_with_its_kernels_capped_to_avx2_gets_a_choice_of_its_own(speed_cache, monkeypatch):
    # an AVX2 emulation on an AVX-512 CPU has the same /proc/cpuinfo flags but other kernels
    from napari_style_transfer import speed_probe

    calls = []
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    for name in speed_probe.ISA_CAPS:
        monkeypatch.delenv(name, raising=False)
    assert speed_probe.choose_channels_last(CPU, probe=_probe({True: 0.5, False: 1.0}, calls)) is True
    native = speed_probe.machine_key(CPU)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    assert speed_probe.choose_channels_last(CPU, probe=_probe({True: 2.0, False: 1.0}, calls)) is False
    assert len(calls) == 2
    assert speed_probe.machine_key(CPU) != native
    assert "isa AVX2 ONEDNN_MAX_CPU_ISA=AVX2 " in speed_probe.machine_key(CPU)


@pytest.mark.parametrize(
    ("cap", "native"), [(None, True), ("AVX2", False), ("avx512_core", False), ("AVX512_CORE_AMX", True)]
)
def test_bf16_is_native_only_where_onednn_is_not_capped_below_it(monkeypatch, cap, native):
    from napari_style_transfer.engine import cpu_has_native_bf16

    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if cap is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert cpu_has_native_bf16.__wrapped__() is native  # the cached answer is per process


@pytest.mark.parametrize(
    ("value", "kept"), [("auto", "auto"), (True, True), (np.False_, False), ("off", False), ("On", True)]
)
def test_channels_last_takes_true_false_or_auto(value, kept):
    from napari_style_transfer import StyleOptions

    assert StyleOptions().channels_last == "auto"
    assert StyleOptions(channels_last=value).validated().channels_last == kept


def test_channels_last_refuses_other_words_with_the_choices():
    from napari_style_transfer import StyleOptions, StyleTransferError

    with pytest.raises(
        StyleTransferError,
        match=r"channels_last must be True, False or 'auto' \(on the command line auto, on or off\), got 'fast'",
    ):
        StyleOptions(channels_last="fast").validated()
