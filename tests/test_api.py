"""The numpy API and the optimisation behind it (tiny images, untrained weights)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from tiny_runs import tiny_options

from napari_style_transfer import StyleTransferError, iter_stylize, stylize
from napari_style_transfer.api import StepRecord, StyleResult

FAST = tiny_options(steps=4)


def run(content, style, **options):
    records = list(iter_stylize(content, style, **{**FAST, **options}))
    steps, result = records[:-1], records[-1]
    assert all(isinstance(r, StepRecord) for r in steps)
    assert isinstance(result, StyleResult)
    return steps, result


def test_result_is_float_rgb_in_unit_range_at_the_working_size(content, style):
    result = stylize(content, style, **FAST)
    assert result.dtype == np.float32
    assert result.shape == (27, 32, 3)  # 40 x 48 scaled to a longest side of 32
    assert result.min() >= 0.0 and result.max() <= 1.0


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_losses_fall_over_steps(content, style, optimizer):
    steps, result = run(content, style, steps=12, optimizer=optimizer, init="noise")
    totals = [r.losses.total for r in steps]
    assert totals[-1] < 0.5 * totals[0]
    assert result.losses.total < totals[0]


def test_one_record_per_step_then_the_result(content, style):
    steps, result = run(content, style, steps=5)
    assert [r.step for r in steps] == [1, 2, 3, 4, 5]
    assert all(r.steps == 5 for r in steps)
    assert result.steps_done == 5
    assert result.weights.startswith("random") and result.weights_kind == "random"
    assert result.device == "cpu"
    assert result.metadata()["options"]["steps"] == 5


def test_snapshots_carry_images_every_n_steps(content, style):
    steps, _ = run(content, style, steps=6, snapshot_every=2)
    assert [r.step for r in steps if r.is_snapshot] == [2, 4, 6]
    assert all(r.image is not None for r in steps if r.is_snapshot)
    assert steps[0].image is None


def test_render_gives_the_current_image_on_request_and_refuses_a_stale_one(content, style):
    records = iter_stylize(content, style, **FAST)
    first = next(records)
    image = first.render()
    assert image.shape == (27, 32, 3)
    second = next(records)
    assert not np.array_equal(second.render(), image)
    with pytest.raises(RuntimeError, match="call render\\(\\) before advancing"):
        StepRecord.render(first.__class__(**{**vars(first), "image": None}))
    records.close()


def test_stopping_early_keeps_the_last_image(content, style):
    records = iter_stylize(content, style, **{**FAST, "steps": 50})
    for record in records:
        if record.step == 3:
            break
    records.close()
    assert record.render().shape == (27, 32, 3)


def test_the_same_seed_gives_identical_results(content, style):
    a = stylize(content, style, **FAST, init="noise", seed=3)
    b = stylize(content, style, **FAST, init="noise", seed=3)
    c = stylize(content, style, **FAST, init="noise", seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("init", ["content", "noise", "style"])
def test_every_init_gives_a_valid_image(content, style, init):
    result = stylize(content, style, **{**FAST, "init": init})
    assert result.shape == (27, 32, 3) and np.isfinite(result).all()


def test_content_init_starts_at_the_content(content, style):
    # Without a style term the content image is already optimal: nothing moves.
    only_content = {**FAST, "style_weight": 0.0, "steps": 2}
    _, result = run(content, style, init="content", **only_content)
    assert result.losses.content == 0.0
    _, from_noise = run(content, style, init="noise", **only_content)
    assert from_noise.losses.content > 0.0


def test_style_init_starts_closer_to_the_style_than_content_init(content, style):
    from_style = next(iter_stylize(content, style, **{**FAST, "init": "style"}))
    from_content = next(iter_stylize(content, style, **{**FAST, "init": "content"}))
    assert from_style.losses.style < from_content.losses.style


def test_grey_in_grey_out_and_rgba_keeps_its_alpha(content, style):
    grey = content[..., 0]
    assert stylize(grey, style, **FAST).shape == (27, 32)
    alpha = np.linspace(0, 255, 48, dtype=np.uint8)[None, :].repeat(40, axis=0)
    rgba = np.dstack([content, alpha])
    result = stylize(rgba, style, **FAST)
    assert result.shape == (27, 32, 4)
    expected_alpha = np.linspace(0, 1, 32)[None, :]
    np.testing.assert_allclose(result[..., 3].mean(axis=0), expected_alpha[0], atol=0.05)


def test_uint16_and_float_inputs_work(content, style):
    sixteen = (content.astype(np.uint16) * 16)[..., 1]
    assert stylize(sixteen, style.astype(np.float64) * 1000, **FAST).shape == (27, 32)


def test_tv_weight_smooths_the_result(content, style):
    import torch

    from napari_style_transfer.engine import total_variation

    def tv(image):
        return total_variation(torch.from_numpy(image).permute(2, 0, 1)[None]).item()

    rough = stylize(content, style, **{**FAST, "init": "noise", "steps": 8})
    smooth = stylize(content, style, **{**FAST, "init": "noise", "steps": 8, "tv_weight": 1e3})
    assert tv(smooth) < tv(rough)


def test_style_scale_changes_the_style_working_size(content, style):
    plain = stylize(content, style, **FAST)
    scaled = stylize(content, style, **{**FAST, "style_scale": 2.0})
    assert plain.shape == scaled.shape
    assert not np.array_equal(plain, scaled)


def test_style_too_small_at_the_working_scale_names_the_minimum(content, style):
    with pytest.raises(StyleTransferError, match="style image would be 6x6 px.*at least 16 px"):
        iter_stylize(content, style, **{**FAST, "style_scale": 0.25})


def test_content_too_thin_for_the_layers_names_the_minimum(style):
    thin = np.random.default_rng(0).random((4, 64, 3))
    with pytest.raises(StyleTransferError, match="content image would be 2x32 px.*at least 16 px"):
        iter_stylize(thin, style, **FAST)


def test_shallow_layers_allow_tiny_images(style):
    tiny = np.random.default_rng(0).random((6, 6, 3))
    result = stylize(
        tiny, style, size=6, steps=2, weights="random", content_layers=["conv1_2"], style_layers=["conv1_1"]
    )
    assert result.shape == (6, 6, 3)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros(10), "has shape \\(10,\\)"),
        (np.zeros((5, 5, 5)), "is constant"),
        (np.zeros((0, 10, 3)), "is empty"),
        (np.full((20, 20), np.nan), "NaN or infinite"),
        (np.full((20, 20), 7.0), "is constant"),
        (np.array([["a"]]), "dtype <U1"),
    ],
)
def test_bad_images_are_rejected_with_a_message(style, bad, message):
    with pytest.raises(StyleTransferError, match=message):
        iter_stylize(bad, style, **FAST)


def test_unknown_option_is_rejected_before_any_work(content, style):
    with pytest.raises(StyleTransferError, match="unknown option"):
        iter_stylize(content, style, steps=2, colour="red")


def test_an_explicit_device_is_honoured_and_an_unavailable_one_is_refused(content, style):
    import torch

    _, result = run(content, style, device="cpu")
    assert result.device == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(StyleTransferError, match="CUDA is not available"):
            iter_stylize(content, style, **{**FAST, "device": "cuda"})


def test_auto_device_picks_cpu_without_an_accelerator(monkeypatch):
    import torch

    from napari_style_transfer.engine import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"


def test_inputs_are_not_modified(content, style):
    content_copy, style_copy = content.copy(), style.copy()
    stylize(content, style, **FAST)
    np.testing.assert_array_equal(content, content_copy)
    np.testing.assert_array_equal(style, style_copy)


def test_importing_the_engine_keeps_triton_away():
    import subprocess
    import sys

    code = (
        "import sys; import napari_style_transfer.api, torchvision; "
        "print(sys.modules.get('triton', 'absent'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() in ("None", "absent")


def test_the_engine_imports_neither_napari_nor_qt():
    import subprocess
    import sys

    code = (
        "import sys, napari_style_transfer.api, napari_style_transfer.cli; "
        "bad = [m for m in sys.modules if m == 'napari' or m.startswith(('napari.', 'qtpy', 'PyQt', 'PySide', 'magicgui'))]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_noise_without_a_seed_leaves_torchs_global_generator_alone(content, style):
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    stylize(content, style, **FAST, init="noise", seed=None)
    assert torch.equal(torch.rand(3), expected)


def test_a_folder_given_as_weights_is_named_as_such(content, style, tmp_path):
    from napari_style_transfer import WeightsError

    with pytest.raises(WeightsError, match="is a folder"):
        iter_stylize(content, style, **{**FAST, "weights": str(tmp_path)})


def test_content_colours_keep_the_contents_chroma_and_take_the_styles_luminance(content, style):
    yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    plain = stylize(content, style, **FAST)
    kept = stylize(content, style, **FAST, content_colours=True)
    content_small = np.asarray(Image.fromarray(content).resize((32, 27), Image.BILINEAR)) / 255.0
    chroma = lambda image: image @ yiq[1:].T  # noqa: E731
    luminance = lambda image: image @ yiq[0]  # noqa: E731
    inner = (slice(2, -2), slice(2, -2))  # resize kernels differ at the border
    assert np.abs(chroma(kept)[inner] - chroma(content_small)[inner]).mean() < 0.02
    assert np.abs(chroma(plain)[inner] - chroma(content_small)[inner]).mean() > 0.02
    assert np.abs(luminance(kept) - luminance(plain)).mean() < 0.005
