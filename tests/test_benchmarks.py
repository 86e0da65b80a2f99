"""The benchmark script still runs end to end (a smoke run; no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_benchmark_script_writes_its_report(tmp_path):
    report, images, raw = tmp_path / "benchmarks.md", tmp_path / "images", tmp_path / "benchmarks.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--output", str(report),
         "--images", str(images), "--json", str(raw)],
        check=True, capture_output=True, text=True, timeout=600,
    )
    text = report.read_text()
    for heading in ("## Seconds per step", "## Time to quality", "## Time from Run to the first step", "## Cancel latency"):
        assert heading in text
    assert "| 64 | reference |" in text and "| 64 | ours |" in text
    assert {p.name for p in images.iterdir()} == {"bench_loss_time.png", "bench_step_time.png"}
    assert set(json.loads(raw.read_text())["speed"]) >= {"reference@64", "ours@64"}
