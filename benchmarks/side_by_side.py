"""Seconds per step of one 2D run, two source trees taking turns in fresh processes (1 thread).

    python benchmarks/side_by_side.py WEIGHTS.pth OLD_SRC NEW_SRC

compares, for example, a worktree of an older commit (``git worktree add /tmp/old REV``,
OLD_SRC /tmp/old/src) with this checkout's src/; WEIGHTS is a VGG19 state-dict file (untrained
is fine: only time is measured). Prints each run's median seconds per step (steps 3-12).
"""

import json
import os
import statistics
import subprocess
import sys

CODE = r"""
import sys, time, json, numpy as np, torch
torch.set_num_threads(1)
from napari_style_transfer import iter_stylize
c = (np.random.default_rng(0).random((256, 256, 3)) * 255).astype(np.uint8)
s = np.random.default_rng(1).random((256, 256, 3)).astype(np.float32)
times = []
t0 = None
for rec in iter_stylize(c, s, size=256, steps=12, weights=sys.argv[1], schedule="none", snapshot_every=0, precision="fp32", channels_last=True):
    if hasattr(rec, "step"):
        now = time.perf_counter()
        if t0 is not None and rec.step > 2:
            times.append(now - t0)
        t0 = now
print(json.dumps(sorted(times)[len(times)//2]))
"""
weights, old_src, new_src = sys.argv[1:4]
result = {"old": [], "new": []}
for _ in range(3):
    for name, src in (("old", old_src), ("new", new_src)):
        out = subprocess.run(
            [sys.executable, "-c", CODE, weights],
            env={**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"},
            capture_output=True,
            text=True,
        )
        result[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
print(
    json.dumps(result),
    "median old",
    statistics.median(result["old"]),
    "new",
    statistics.median(result["new"]),
)
