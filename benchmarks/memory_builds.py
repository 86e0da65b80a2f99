"""A 512 px run's peak memory by stage under two or more builds of torch (issue 37's 1.2 GB goal):
the same measurement as ``run.py``'s memory part, in a fresh process of each interpreter given,
taking turns, so the builds are compared side by side on one machine.

    python benchmarks/memory_builds.py .venv/bin/python /path/to/cpu-venv/bin/python --rounds 2

Each interpreter needs this package installed (``pip install -e .``) and a torch build: the
CUDA build PyPI gives on Linux maps about 0.4 GB of libraries into every process that
imports it, even on a machine with no GPU; the CPU-only build (PyTorch's ``cpu`` index) does
not. Prints a Markdown table: per build, the peak (VmHWM) after each stage and the anonymous
memory (what the run allocates) and mapped files after the steps; untrained weights, one
torch thread (memory does not depend on a busy machine; the threads are fixed so the builds
run alike).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAGES = ("imports", "weights load", "style targets", "first step", "steady steps")


def measure(python: str, size: int, steps: int, precision: str) -> dict:
    """``run.py``'s memory child under ``python``, with its torch version added."""
    kwargs = {"size": size, "steps": steps, "weights": "random", "precision": precision}
    command = [python, str(HERE / "run.py"), "--child", "memory", "--kwargs", json.dumps(kwargs)]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    version = [python, "-c", "import torch; print(torch.__version__)"]
    result["torch"] = subprocess.run(version, check=True, capture_output=True, text=True).stdout.strip()
    return result


def table(results: list[dict]) -> list[str]:
    """One row per run: its torch, precision, each stage's peak and what was resident at the end (MB)."""
    lines = [
        "| torch | precision | "
        + " | ".join(f"peak after {stage}" for stage in STAGES)
        + " | anonymous after | files after | final loss |",
        "| --- " * (len(STAGES) + 5) + "|",
    ]
    for result in results:
        stages = result["stages"]
        last = stages[STAGES[-1]]
        peaks = " | ".join(f"{stages[stage]['peak_mb']:.0f}" for stage in STAGES)
        lines.append(
            f"| {result['torch']} | {result['precision']} | {peaks} | {last['anonymous_mb']:.0f} | "
            f"{last['files_mb']:.0f} | {result['final_loss']:.6g} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pythons", nargs="+", help="interpreters, each with its own torch build")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--precision", nargs="+", default=["fp32"], help="fp32, bf16, auto")
    parser.add_argument("--rounds", type=int, default=2, help="turns taken by the builds")
    args = parser.parse_args()
    results = []
    for _ in range(args.rounds):
        for precision in args.precision:
            for python in args.pythons:
                results.append(measure(python, args.size, args.steps, precision))
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print("\n".join(table(results)))


if __name__ == "__main__":
    main()
