"""Seconds per step with and without transparent huge pages for torch's large CPU tensors.

Runs ``run.py``'s threads child (the default engine, one size, untrained weights) in fresh
processes, taking turns: ``THP_MEM_ALLOC_ENABLE=0`` (4 KB pages, torch's default) and ``=1``
(torch asks Linux for 2 MB pages for every tensor of 2 MB or more). Prints a markdown table: the median
seconds a step, the peak memory and the page faults of each process, and the ratio of the
medians. Time it on a quiet machine::

    python benchmarks/huge_pages.py --sizes 256 512 --pairs 4 --steps 8
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).with_name("run.py")


def one_run(huge_pages: bool, size: int, steps: int, threads: int) -> dict:
    kwargs = {"threads": threads, "size": size, "steps": steps, "weights": "random"}
    env = os.environ | {"THP_MEM_ALLOC_ENABLE": "1" if huge_pages else "0", "PYTHONUNBUFFERED": "1"}
    faults_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
    out = subprocess.run(
        [sys.executable, str(RUN), "--child", "threads", "--kwargs", json.dumps(kwargs)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["page_faults"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - faults_before
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(
        "| size | pages | s/step, each process | median | peak MB (median) | page faults (median) | final loss |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for size in args.sizes:
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for _ in range(args.pairs):
            for huge in (False, True):
                runs[huge].append(one_run(huge, size, args.steps, args.threads))
        medians = {}
        for huge, done in runs.items():
            seconds = [run["seconds_per_step"] for run in done]
            medians[huge] = statistics.median(seconds)
            print(
                f"| {size} | {'2 MB' if huge else '4 KB'} | {' '.join(f'{s:.3f}' for s in seconds)} | "
                f"{medians[huge]:.3f} | {statistics.median(run['peak_mb'] for run in done):.0f} | "
                f"{statistics.median(run['page_faults'] for run in done):.0f} | {done[-1]['final_loss']:.6g} |",
                flush=True,
            )
        print(f"| {size} | 2 MB / 4 KB | | {medians[True] / medians[False]:.3f} | | | |", flush=True)


if __name__ == "__main__":
    main()
