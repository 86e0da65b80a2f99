"""The benchmark script still runs end to end (a smoke run; no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
    ):
        assert heading in text
    assert "| 64 | reference |" in text and "| 64 | ours |" in text
    assert {p.name for p in images.iterdir()} == {"bench_loss_time.png", "bench_step_time.png"}
    assert set(json.loads(raw.read_text())["speed"]) >= {"reference@64", "ours@64"}


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
