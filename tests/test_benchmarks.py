"""The benchmark script still runs end to end (a smoke run; no timing is asserted)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_the_benchmark_script_writes_its_report(tmp_path):
    report, images, raw = tmp_path / "benchmarks.md", tmp_path / "images", tmp_path / "benchmarks.json"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--quick",
            "--output",
            str(report),
            "--images",
            str(images),
            "--json",
            str(raw),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    text = report.read_text()
    for heading in (
        "## Seconds per step",
        "## Time to quality",
        "## Time from Run to the first step",
        "## Cancel latency",
        "## Peak memory by stage at 64 px",
        "## Threads at 64 px",
    ):
        assert heading in text
    assert "| 64 | reference |" in text and "| 64 | ours |" in text
    assert {p.name for p in images.iterdir()} == {
        "bench_loss_time.png",
        "bench_loss_cost.png",
        "bench_step_time.png",
    }
    results = json.loads(raw.read_text())
    # time to quality also in full-size evaluations, which a busy machine does not change
    assert "reached it at cost" in text
    reference = results["curves"]["reference"]["curve"]
    assert [cost for _, _, cost in reference] == list(range(1, len(reference) + 1))
    ours = [cost for _, _, cost in results["curves"]["ours-single"]["curve"]]
    assert ours == sorted(ours) and ours[0] >= 2  # the start's evaluation and the first step's
    assert set(results["speed"]) >= {"reference@64", "ours@64", "ours-channels-last@64", "ours-contiguous@64"}
    # the CPU's class and the fp32 matmul rate say which machines' figures these compare with
    assert results["info"]["cpu_class"] in {"AMX", "AVX-512 BF16", "AVX-512", "AVX2", "no AVX2"}
    assert f"| {results['info']['cpu_class']} | 64 | ours |" in text
    assert results["matmul"]["float32"] > 0
    stages = results["memory"]["stages"]
    assert list(stages) == [
        "imports",
        "weights load",
        "model build",
        "style targets",
        "first step",
        "steady steps",
    ]
    peaks = [stage["peak_mb"] for stage in stages.values()]
    assert peaks == sorted(peaks)  # a high-water mark only rises
    # threads 1 and the rule's count side by side, and what auto picks here
    assert "1" in results["threads"]["runs"] and results["threads"]["rule"]["cores"] >= 1
    assert "`threads=0` (auto) here:" in text


def test_one_part_alone_writes_its_section_without_the_others(tmp_path):
    """--parts threads with no earlier results: the report has the threads' table and no
    section (or figure) of a part that never ran, instead of a KeyError on the missing part."""
    report, images, raw = tmp_path / "benchmarks.md", tmp_path / "images", tmp_path / "benchmarks.json"
    # the page as other scripts left it: its sections stay, the old ones of this script go
    report.write_text("# Benchmarks\n\nold header\n\n## Threads at 32 px\n\nold\n\n## Stacks\n\nkept\n")
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--parts", "threads"]
        + ["--output", str(report), "--images", str(images), "--json", str(raw)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    text = report.read_text()
    assert "## Threads at 64 px" in text
    assert text.count("## Stacks\n\nkept\n") == 1 and "old" not in text
    for heading in ("## Seconds per step", "## Time to quality", "## Cancel latency", "## Peak memory"):
        assert heading not in text
    assert not images.exists() or not list(images.iterdir())
    assert set(json.loads(raw.read_text())) >= {"threads", "info", "matmul"}


def test_the_cpu_class_is_the_best_instruction_set_the_flags_name():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import cpu_class

    assert cpu_class(["avx2", "avx512f", "avx512_bf16", "amx_tile"]) == "AMX"
    assert cpu_class(["avx2", "avx512f", "avx512_bf16"]) == "AVX-512 BF16"
    assert cpu_class(["avx2", "avx512f"]) == "AVX-512"
    assert cpu_class(["avx2"]) == "AVX2"
    assert cpu_class([]) == "no AVX2"


def test_an_avx2_emulation_is_a_class_of_its_own_and_its_caps_reach_torch(monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import AVX2_EMULATION, emulated_class

    for name in AVX2_EMULATION:
        monkeypatch.delenv(name, raising=False)
    assert emulated_class("AVX-512 BF16") is None
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert emulated_class("AVX-512 BF16") is None  # only some kernels capped: no class of its own
    for name, value in AVX2_EMULATION.items():
        monkeypatch.setenv(name, value)
    assert emulated_class("AVX-512 BF16") == "AVX2 (emulated: kernels capped on an AVX-512 BF16 CPU)"
    if platform.machine() not in ("x86_64", "AMD64"):
        return  # the caps name x86 instruction sets
    # a fresh process with the caps (as run.py's children) runs torch's AVX2 kernels
    isa = subprocess.run(
        [
            sys.executable,
            "-c",
            "from napari_style_transfer.speed_probe import kernel_isa; print(kernel_isa())",
        ],
        check=True,
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONPATH": str(ROOT / "src")},
    ).stdout.strip()
    assert isa == "AVX2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2"


def test_the_gpu_benchmark_script_runs_end_to_end_on_the_cpu(tmp_path):
    # it has never had a GPU here; a smoke run keeps its Python correct for the day it does
    out = tmp_path / "out"
    out.mkdir()
    # The GPU machine's Python has torch, numpy and pillow but not napari and its friends.
    site = tmp_path / "site"
    site.mkdir()
    blocked = ("napari", "magicgui", "qtpy", "PyQt6", "superqt", "npe2", "tifffile", "psutil")
    (site / "sitecustomize.py").write_text(
        f"import sys\nfor name in {blocked!r}:\n    sys.modules[name] = None\n"
    )
    output = subprocess.run(
        [
            "bash",
            str(ROOT / "benchmarks" / "gpu.sh"),
            "--device",
            "cpu",
            "--sizes",
            "32",
            "--steps",
            "6",
            "--run-size",
            "32",
            "--run-steps",
            "3",
            "--agreement-size",
            "32",
            "--agreement-steps",
            "2",
            "--matmul-size",
            "128",
            "--stack-sizes",
            "32",
            "--stack-frames",
            "2",
            "--stack-steps",
            "2",
            "--stack-batches",
            "1",
            "2",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHON": sys.executable, "OUT": str(out), "PYTHONPATH": str(site)},
    ).stdout
    assert (out / "gpu_benchmark.md").read_text() == output[output.index("# GPU benchmark") :]
    for precision in ("fp32", "tf32", "bf16"):
        assert f"| 32 | {precision} | " in output
    assert output.count("| none |") == 2 and "| bf16 | auto |" in output
    assert "mean absolute pixel difference" in output
    assert "px run is refused before it starts: a 40000x40000 px run needs about" in output
    assert "| 32 | 1 |" in output and "| 32 | 2 |" in output


def test_a_cpu_without_native_bf16_times_no_bf16_configuration():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import CONFIGS, CURVE_RUNS, measured

    assert "ours-bf16" in measured(CONFIGS, native_bf16=True)
    assert "ours-auto-bf16" in measured(CURVE_RUNS, native_bf16=True)
    fp32_only = measured(CONFIGS, native_bf16=False) + measured(CURVE_RUNS, native_bf16=False)
    assert fp32_only and not [name for name in fp32_only if "bf16" in name]
    assert "ours" in fp32_only and "ours-auto" in fp32_only


def test_the_tile_memory_summary_takes_each_tiles_largest_sample(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from slides_tile_memory import summary

    def line(t, kind, anon, phase="tiles", **extra):
        memory = {"VmHWM": 3 << 20, "VmRSS": anon, "RssAnon": anon, "RssFile": 0}
        return json.dumps({"t": t, "kind": kind, "phase": phase} | memory | extra)

    events = [
        line(0.0, "tile", 400 << 10, n=1),  # after tile 1: tile 2 runs until the next record
        line(0.5, "sample", 900 << 10),
        line(1.0, "tile-before-trim", 950 << 10, n=2),
        line(1.1, "tile", 410 << 10, n=2),
        line(1.5, "sample", 700 << 10),
        line(2.0, "tile-before-trim", 800 << 10, n=3),
        line(2.1, "tile", 420 << 10, n=3),
        line(2.5, "sample", 500 << 10, phase="blend (64, 64)"),
        line(3.0, "sample", 430 << 10),  # after the last tile: not a tile's own peak
    ]
    trace = tmp_path / "trace.jsonl"
    trace.write_text("\n".join(events) + "\n")
    said = summary(trace)
    assert "3 tiles" in said and "median 875 MiB" in said and "largest 950 MiB" in said
    assert "VmHWM 3072 MiB" in said and "1.05 s a tile" in said and "blends at most 500 MiB" in said


def test_a_trial_constant_of_the_time_mode_benchmark_lasts_one_variant():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from timelapse_canvas import set_variant

    from napari_style_transfer import frames

    shipped = (frames.MOTION_FLOOR, frames.LEFT_BEHIND)
    try:
        set_variant("shipped:MOTION_FLOOR=0.02:LEFT_BEHIND=3")
        tried = (frames.MOTION_FLOOR, frames.LEFT_BEHIND)
        assert tried == (0.02, 3) and isinstance(tried[1], int)
        set_variant("shipped")
        restored = (frames.MOTION_FLOOR, frames.LEFT_BEHIND)
        assert restored == shipped
    finally:
        set_variant("shipped")


def test_the_memory_builds_benchmark_tables_each_interpreters_run(tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks" / "memory_builds.py"), sys.executable]
    done = subprocess.run(
        command + ["--size", "64", "--steps", "2", "--rounds", "1", "--precision", "fp32"],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    import torch

    rows = [line for line in done.stdout.splitlines() if line.startswith(f"| {torch.__version__} ")]
    assert len(rows) == 1
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert cells[1] == "float32"
    peaks = [float(cell) for cell in cells[2:7]]
    assert peaks == sorted(peaks) and peaks[0] > 0  # a high-water mark never falls


def test_the_same_content_smear_measure_accepts_a_held_background_and_sees_a_darker_slab():
    # a still background held to frame 0's styling is no smear, though frame 1's own
    # independent run drew a smoother patch there; a slab darkened by 0.15 with the same
    # texture is one, though its texture energy is unchanged
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from scipy.ndimage import gaussian_filter
    from stacks import same_content_smear, smeared_share

    rng = np.random.default_rng(0)
    independent = np.stack(
        [0.5 + 0.2 * gaussian_filter(rng.standard_normal((64, 64)), 1.0) for _ in range(3)]
    )
    independent[1, :32, :32] = 0.5 + 0.3 * (independent[1, :32, :32] - 0.5)  # a smoother patch
    content = np.full((3, 64, 64), 0.05)
    held = np.stack([independent[0]] * 3)
    assert smeared_share(held[1], independent[1]) > 0.1
    assert not same_content_smear(held, independent, content, 1)[0].any()
    slab = held.copy()
    slab[1, 20:44, 20:44] -= 0.15
    assert smeared_share(slab[1], held[1]) == 0.0  # the texture energy did not change
    smeared, covered = same_content_smear(slab, independent, content, 1)
    assert covered.all() and 0.1 < smeared.mean() < 0.5


def test_the_smear_table_gives_each_measure_with_its_floor():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from stacks import smear_measures, smear_section

    rng = np.random.default_rng(1)
    independent = rng.random((3, 48, 48)).astype(np.float32)
    content = np.full((3, 48, 48), 0.05, np.float32)
    masks = np.zeros((3, 48, 48), bool)
    entry = smear_measures(independent[[0, 0, 0]], independent, content, masks, 3)
    assert entry["smeared_same"] == [0.0, 0.0]  # frame 0's styling held: the same content's run
    assert all(floor >= 0.0 for floor in entry["smeared_same_floor"])
    assert max(entry["band_added"]) <= 0.0  # frame 0's own band, matched by frame 0's run
    entry["passes"] = entry
    smear = {"size": 48, "steps": 2, "time_steps": 1, "sequences": {"still": entry}}
    machine = {"date": "today", "cpu": "x86_64", "threads": 1, "load": 0.0}
    table = smear_section(smear, machine)
    header = next(line for line in table.splitlines() if line.startswith("| sequence |"))
    row = next(line for line in table.splitlines() if line.startswith("| still |"))
    assert row.count("|") == header.count("|")  # every column filled
    assert "| 0.0% (" in row  # a measure beside its floor


def test_the_widget_defaults_time_lapse_benchmark_writes_its_section_and_montage_in_passes(tmp_path):
    """benchmarks/timelapse_widget.py at a tiny size: in passes, each frame's first styling is
    the independent side; the doc gets its own section with the same-content rows."""
    doc = tmp_path / "timelapse.md"
    doc.write_text("# Time\n\n## Measured at 32 px\n\nthe single pass's, kept\n")
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "timelapse_widget.py"), "--size", "32", "--steps", "2"]
        + ["--time-steps", "1", "--frames", "3", "--passes", "2", "--work", str(tmp_path / "work")]
        + ["--doc", str(doc), "--images", str(tmp_path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT / "benchmarks")},
    )
    text = doc.read_text()
    assert "the single pass's, kept" in text
    section = text.split("## Time passes measured at 32 px", 1)[1]
    assert "| smeared against the same content (goal < 2%) |" in section
    assert "3 of its 8 frames finished, time mode in 2 passes" in section
    assert (tmp_path / "timelapse_nuclei_32px_passes2.png").is_file()
    saved = json.loads((tmp_path / "timelapse_32px_passes2.json").read_text())
    assert saved["passes"] == 2 and len(saved["nuclei"]["objects"]) == 3
    assert sorted(p.name for p in (tmp_path / "work").glob("alone_*.npz")) == [
        f"alone_{t}.npz" for t in range(3)
    ]
    # forward: frames 1, 2; backward: 1, 0
    assert sorted(p.name for p in (tmp_path / "work").glob("pass*.npz")) == [
        "pass1_1.npz",
        "pass1_2.npz",
        "pass2_0.npz",
        "pass2_1.npz",
    ]


def test_the_huge_pages_benchmark_runs_both_page_sizes_and_compares_them():
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "huge_pages.py"),
            "--sizes",
            "32",
            "--pairs",
            "1",
            "--steps",
            "2",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    rows = [line.split("|")[1:-1] for line in out[2:]]
    assert [(row[0].strip(), row[1].strip()) for row in rows] == [
        ("32", "4 KB"),
        ("32", "2 MB"),
        ("32", "2 MB / 4 KB"),
    ]
    assert rows[0][6] == rows[1][6]  # the page size changes no value: the same loss
    assert float(rows[2][3]) > 0
