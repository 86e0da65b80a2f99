"""Batches in this process (no cluster): names, records, resume, errors before any item runs.

The cluster runs are in test_distributed.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from napari_style_transfer import StyleTransferError, stylize, stylize_batch
from napari_style_transfer._image import to_uint8
from napari_style_transfer.batch import plan_batch
from napari_style_transfer.cli import main
from napari_style_transfer.files import read_image
from napari_style_transfer.styled_files import read_settings

FAST = {"steps": 1, "size": 32, "weights": "random"}
FAST_ARGS = ["--steps", "1", "--size", "32", "--weights", "random", "-q"]


@pytest.fixture
def files(tmp_path, content, style):
    """Two content PNGs and two style PNGs."""
    paths = {}
    for name, image in {"a": content, "b": content[::-1].copy()}.items():
        paths[name] = tmp_path / f"{name}.png"
        Image.fromarray(image).save(paths[name])
    for name, image in {"stripes": style, "flipped": style[:, ::-1]}.items():
        paths[name] = tmp_path / f"{name}.png"
        Image.fromarray(to_uint8(image)).save(paths[name])
    return paths


def test_every_input_is_styled_with_every_style_under_both_names(tmp_path, files):
    out = tmp_path / "out"
    records = stylize_batch([files["a"], files["b"]], [files["stripes"], files["flipped"]], out, **FAST)
    names = sorted(path.name for path in out.iterdir())
    assert names == ["a__flipped.png", "a__stripes.png", "b__flipped.png", "b__stripes.png", "batch.json"]
    assert [r["status"] for r in records] == ["done"] * 4


def test_a_batch_result_equals_a_single_run_with_the_same_seed(tmp_path, files):
    stylize_batch([files["a"]], [files["stripes"]], tmp_path / "out", seed=3, **FAST)
    alone = stylize(read_image(files["a"], "content"), read_image(files["stripes"], "style"), seed=3, **FAST)
    written = np.asarray(Image.open(tmp_path / "out" / "a__stripes.png"))
    assert np.abs(written.astype(int) - to_uint8(alone).astype(int)).max() <= 1


def test_the_batch_record_has_one_entry_per_item_with_how_it_went(tmp_path, files):
    stylize_batch([files["a"]], [files["stripes"]], tmp_path / "out", **FAST)
    (entry,) = json.loads((tmp_path / "out" / "batch.json").read_text())["items"]
    assert entry["input"] == str(files["a"]) and entry["style"] == str(files["stripes"])
    assert entry["output"] == str(tmp_path / "out" / "a__stripes.png")
    assert entry["status"] == "done" and entry["device"] == "cpu" and entry["weights"].startswith("random")
    assert entry["seconds"] > 0


def test_a_result_carries_its_settings(tmp_path, files):
    stylize_batch([files["a"]], [files["stripes"]], tmp_path / "out", seed=5, **FAST)
    settings = read_settings(tmp_path / "out" / "a__stripes.png")
    assert settings["options"]["seed"] == 5
    assert settings["batch"]["input"]["path"] == str(files["a"].absolute())


def test_a_corrupt_input_is_recorded_as_failed_and_the_others_finish(tmp_path, files):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n damaged")
    records = stylize_batch([broken, files["a"]], [files["stripes"]], tmp_path / "out", **FAST)
    assert [r["status"] for r in records] == ["failed", "done"]
    assert "could not read input image" in records[0]["message"]
    on_disk = json.loads((tmp_path / "out" / "batch.json").read_text())["items"]
    assert [r["status"] for r in on_disk] == ["failed", "done"]


def test_an_input_too_small_for_the_layers_fails_alone(tmp_path, files):
    Image.fromarray(np.full((4, 4, 3), 90, np.uint8)).save(tmp_path / "tiny.png")
    records = stylize_batch([tmp_path / "tiny.png", files["a"]], [files["stripes"]], tmp_path / "out", **FAST)
    assert [r["status"] for r in records] == ["failed", "done"]


def test_a_rerun_skips_every_finished_item_and_leaves_its_file_untouched(tmp_path, files):
    out = tmp_path / "out"
    stylize_batch([files["a"], files["b"]], [files["stripes"]], out, **FAST)
    before = {path.name: path.stat().st_mtime_ns for path in out.glob("*.png")}
    records = stylize_batch([files["a"], files["b"]], [files["stripes"]], out, **FAST)
    assert [r["status"] for r in records] == ["skipped", "skipped"]
    assert {path.name: path.stat().st_mtime_ns for path in out.glob("*.png")} == before


def test_a_rerun_with_other_settings_redoes_the_item(tmp_path, files):
    out = tmp_path / "out"
    stylize_batch([files["a"]], [files["stripes"]], out, **FAST)
    records = stylize_batch([files["a"]], [files["stripes"]], out, **{**FAST, "seed": 9})
    assert records[0]["status"] == "done"
    assert read_settings(out / "a__stripes.png")["options"]["seed"] == 9


def test_force_redoes_finished_items(tmp_path, files):
    out = tmp_path / "out"
    stylize_batch([files["a"]], [files["stripes"]], out, **FAST)
    assert stylize_batch([files["a"]], [files["stripes"]], out, force=True, **FAST)[0]["status"] == "done"


def test_a_stack_is_written_as_a_float32_tiff_with_its_settings(tmp_path, files, content):
    import tifffile

    tifffile.imwrite(tmp_path / "stack.tif", np.stack([content, content[::-1]]), photometric="rgb")
    stylize_batch([tmp_path / "stack.tif"], [files["stripes"]], tmp_path / "out", **FAST)
    written = tifffile.imread(tmp_path / "out" / "stack__stripes.tif")
    assert written.dtype == np.float32 and written.shape[:1] == (2,) and written.shape[-1] == 3
    assert read_settings(tmp_path / "out" / "stack__stripes.tif")["frames"] == 2


def test_a_16_bit_input_is_written_as_a_float32_tiff(tmp_path, files, content):
    import tifffile

    tifffile.imwrite(tmp_path / "deep.tif", content[..., 0].astype(np.uint16) * 250)
    stylize_batch([tmp_path / "deep.tif"], [files["stripes"]], tmp_path / "out", **FAST)
    assert tifffile.imread(tmp_path / "out" / "deep__stripes.tif").dtype == np.float32


def count_weight_loads(monkeypatch) -> list:
    """The weights of every load (not copy) of VGG19 weights the runs make from now on."""
    from napari_style_transfer import weights

    loads = []
    real = weights._load

    def counted(spec, **kwargs):
        loads.append(spec)
        return real(spec, **kwargs)

    monkeypatch.setattr(weights, "_load", counted)
    return loads


def test_the_weights_load_once_for_a_whole_batch(tmp_path, files, monkeypatch):
    loads = count_weight_loads(monkeypatch)
    stylize_batch([files["a"], files["b"]], [files["stripes"], files["flipped"]], tmp_path / "out", **FAST)
    assert loads == ["random"]


def test_runs_after_a_batch_load_their_weights_again(tmp_path, files, content, style, monkeypatch):
    stylize_batch([files["a"]], [files["stripes"]], tmp_path / "out", **FAST)
    loads = count_weight_loads(monkeypatch)
    stylize(content, style, **FAST)
    assert loads == ["random"]  # the batch let its network go


def test_a_batch_where_runs_already_keep_their_network_finishes(tmp_path, files, monkeypatch):
    import threading

    from napari_style_transfer import weights

    monkeypatch.setattr(weights, "_KEPT", weights._KeptWeights())  # this process's own is left as it was
    weights.keep_weights_for_good()  # what a dask worker process does
    loads = count_weight_loads(monkeypatch)
    records = []
    batch = threading.Thread(
        target=lambda: records.extend(
            stylize_batch([files["a"]], [files["stripes"]], tmp_path / "out", **FAST)
        ),
        daemon=True,
    )
    batch.start()
    batch.join(timeout=600)  # a deadlock, not a slow machine, leaves it running this long
    assert not batch.is_alive(), "the batch hung: keeping the weights twice waited for itself"
    assert [record["status"] for record in records] == ["done"] and loads == ["random"]


def test_an_empty_input_list_is_refused(tmp_path, files):
    with pytest.raises(StyleTransferError, match="no input images"):
        stylize_batch([], [files["stripes"]], tmp_path / "out", **FAST)


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_item_runs(tmp_path, files):
    (tmp_path / "afile").write_text("a file, not a folder")
    with pytest.raises(StyleTransferError, match="cannot create the output folder .*: Not a directory"):
        stylize_batch([files["a"]], [files["stripes"]], tmp_path / "afile" / "out", **FAST)


def test_a_style_that_cannot_be_read_is_refused_before_any_item_runs(tmp_path, files):
    (tmp_path / "bad_style.png").write_bytes(b"not an image")
    with pytest.raises(StyleTransferError, match="could not read style image"):
        stylize_batch([files["a"]], [tmp_path / "bad_style.png"], tmp_path / "out", **FAST)
    assert not (tmp_path / "out" / "batch.json").exists()


def test_two_inputs_that_would_write_one_file_are_refused(tmp_path, files, content):
    (tmp_path / "other").mkdir()
    Image.fromarray(content).save(tmp_path / "other" / "a.png")
    with pytest.raises(StyleTransferError, match="would both be written"):
        stylize_batch(
            [files["a"], tmp_path / "other" / "a.png"], [files["stripes"]], tmp_path / "out", **FAST
        )


def test_the_batch_command_exits_0_when_every_item_succeeded(tmp_path, files):
    argv = ["batch", "-o", str(tmp_path / "out"), "--style", str(files["stripes"]), str(files["a"])]
    assert main([*argv, "--workers", "0", *FAST_ARGS]) == 0
    assert (tmp_path / "out" / "a__stripes.png").is_file()


def test_the_batch_command_exits_1_when_an_item_failed(tmp_path, files):
    (tmp_path / "broken.png").write_bytes(b"broken")
    argv = [
        "batch",
        "-o",
        str(tmp_path / "out"),
        "--style",
        str(files["stripes"]),
        str(tmp_path / "broken.png"),
    ]
    assert main([*argv, str(files["a"]), "--workers", "0", *FAST_ARGS]) == 1


def test_the_progress_lines_of_a_failed_item_are_worded_by_the_caller(tmp_path, files, capsys):
    (tmp_path / "broken.png").write_bytes(b"broken")
    records = stylize_batch(
        [tmp_path / "broken.png"],
        [files["stripes"]],
        tmp_path / "out",
        progress=True,
        wording=str.upper,
        **FAST,
    )
    assert "FAILED: " in capsys.readouterr().err
    assert "could not read input image" in records[0]["message"]  # the record keeps the API's wording


def test_the_batch_command_words_its_progress_lines_with_flags(tmp_path, files, monkeypatch):
    from napari_style_transfer import batch

    seen = {}

    def fake_batch(*args, **kwargs):
        seen.update(kwargs)
        return []

    monkeypatch.setattr(batch, "stylize_batch", fake_batch)  # the command imports it when it runs
    argv = ["batch", "-o", str(tmp_path / "out"), "--style", str(files["stripes"]), str(files["a"])]
    assert main([*argv, "--workers", "0", *FAST_ARGS]) == 0
    assert seen["wording"]("use weights='random'") == "use --weights random"


def test_the_batch_command_takes_several_styles(tmp_path, files):
    argv = [
        "batch",
        "-o",
        str(tmp_path / "out"),
        "--style",
        str(files["stripes"]),
        "--style",
        str(files["flipped"]),
    ]
    assert main([*argv, str(files["a"]), "--workers", "0", *FAST_ARGS]) == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["a__flipped.png", "a__stripes.png"]


def test_the_batch_command_without_inputs_is_a_usage_error(tmp_path, files, capsys):
    assert (
        main(["batch", "-o", str(tmp_path / "out"), "--style", str(files["stripes"]), "--workers", "0"]) == 2
    )
    assert "no input images" in capsys.readouterr().err


def test_the_batch_command_checks_option_ranges(tmp_path, files, capsys):
    argv = ["batch", "-o", str(tmp_path / "out"), "--style", str(files["stripes"]), str(files["a"])]
    assert main([*argv, "--workers", "0", "--steps", "0"]) == 2
    assert "steps must be at least 1" in capsys.readouterr().err


def test_the_package_and_the_batch_module_import_no_dask():
    import subprocess
    import sys

    code = "import sys, napari_style_transfer.batch, napari_style_transfer.cli; print('distributed' in sys.modules)"
    assert (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "False"
    )


def test_the_batch_command_with_force_redoes_finished_items(tmp_path, files):
    argv = [
        "batch",
        "-o",
        str(tmp_path / "out"),
        "--style",
        str(files["stripes"]),
        str(files["a"]),
        "--workers",
        "0",
    ]
    assert main([*argv, *FAST_ARGS]) == 0
    assert main([*argv, *FAST_ARGS]) == 0
    assert json.loads((tmp_path / "out" / "batch.json").read_text())["items"][0]["status"] == "skipped"
    assert main([*argv, "--force", *FAST_ARGS]) == 0
    assert json.loads((tmp_path / "out" / "batch.json").read_text())["items"][0]["status"] == "done"


def test_one_progress_bar_counts_the_items_and_the_failures_with_the_time_left(tmp_path, files, capsys):
    (tmp_path / "broken.png").write_bytes(b"broken")
    stylize_batch(
        [tmp_path / "broken.png", files["a"]], [files["stripes"]], tmp_path / "out", progress=True, **FAST
    )
    bar = capsys.readouterr().err.split("\r")[-1]  # the bar's last state
    assert "2/2" in bar and "failed=1" in bar and ("item/s" in bar or "s/item" in bar)
    assert "<00:00" in bar  # elapsed<left: the time left


def test_an_npy_input_is_styled_like_an_image_file(tmp_path, files, content):
    np.save(tmp_path / "array.npy", content)
    records = stylize_batch([tmp_path / "array.npy"], [files["stripes"]], tmp_path / "out", **FAST)
    assert records[0]["status"] == "done" and records[0]["output"] == str(
        tmp_path / "out" / "array__stripes.png"
    )


# --- a batch never overwrites its own inputs ---------------------------------------------------


def hashes(folder) -> dict[str, str]:
    import hashlib

    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def test_a_batch_written_into_its_input_folder_leaves_the_inputs_as_they_were(tmp_path, files):
    inputs = {name: files[name] for name in ("a", "b", "stripes", "flipped")}
    before = hashes(tmp_path)
    args = [
        "batch",
        str(inputs["a"]),
        str(inputs["b"]),
        "--style",
        str(inputs["stripes"]),
        "-o",
        str(tmp_path),
    ]
    assert main([*args, "--workers", "0", *FAST_ARGS]) == 0
    after = hashes(tmp_path)
    assert {name: after[name] for name in before} == before
    assert sorted(set(after) - set(before)) == ["a__stripes.png", "b__stripes.png", "batch.json"]


def test_a_batch_whose_result_would_replace_an_input_is_refused_before_any_item_runs(tmp_path, files, capsys):
    # inputs a.png and a__stripes.png: the result of a.png with stripes would replace the second
    collider = tmp_path / "a__stripes.png"
    collider.write_bytes(files["b"].read_bytes())
    before = hashes(tmp_path)
    args = ["batch", str(files["a"]), str(collider), "--style", str(files["stripes"]), "-o", str(tmp_path)]
    assert main([*args, "--workers", "0", *FAST_ARGS]) == 2
    err = capsys.readouterr().err
    assert f"would be written as {collider}, which is the input {collider}" in err
    assert hashes(tmp_path) == before


def test_an_input_that_is_a_result_under_another_name_is_refused_by_its_identity(tmp_path, files):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a__stripes.png").hardlink_to(files["b"])  # the same file as the input b.png
    with pytest.raises(StyleTransferError, match="which is the input .*b.png"):
        plan_batch([files["a"], files["b"]], [files["stripes"]], out, **FAST)


def test_a_style_inside_the_output_folder_under_a_result_name_is_refused(tmp_path, files):
    style = tmp_path / "a__s.png"
    style.write_bytes(files["stripes"].read_bytes())
    (tmp_path / "s.png").symlink_to(style)  # the style given through a link
    with pytest.raises(StyleTransferError, match="which is the input"):
        plan_batch([files["a"]], [tmp_path / "s.png"], tmp_path, **FAST)
