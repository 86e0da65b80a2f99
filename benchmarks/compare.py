"""Run the seed report's algorithm and our engine side by side; write docs/benchmarks.md.

    python benchmarks/compare.py                       # sizes 128 256 512, 40 steps, random weights
    python benchmarks/compare.py --sizes 256 --steps 100 --weights imagenet

Both run on the same bundled images (astronaut + swirl, the style resized to the content's
size because the report's model needs that), the same layers (the paper's: content
conv4_2, style conv1_1..conv5_1), the same weights and loss weights, from the content image.
Each run is a separate process, so peak memory (max RSS on the CPU, max allocated on CUDA) is
its own. Losses are the same objective for both (ours and the report's are identical), judged
on each final image by one evaluation. With untrained weights the numbers say how fast and how
far each optimiser gets, nothing about how the images look.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTENT_LAYERS = ["conv4_2"]
STYLE_LAYERS = ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]
IMPLEMENTATIONS = {
    "reference": "seed report: loss modules in a copied Sequential, torch LBFGS (max_iter 20, clamp in closure)",
    "ours-lbfgs": "this engine: forward hooks, box-projected L-BFGS, one iteration per step",
    "ours-adam": "this engine: forward hooks, Adam (lr 0.02)",
}


def worker(args: argparse.Namespace) -> dict:
    """One implementation at one size, in this process; returns the measurements."""
    started = time.perf_counter()
    import numpy as np
    import torch

    from napari_style_transfer import StyleOptions
    from napari_style_transfer._image import prepare_image, working_shape
    from napari_style_transfer._sample_data import load_sample
    from napari_style_transfer.api import _to_tensor
    from napari_style_transfer.engine import StyleObjective, evaluate, optimize, resize, resolve_device
    from napari_style_transfer.vgg import VGGFeatures
    from napari_style_transfer.weights import load_vgg19_features

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    content_np = prepare_image(load_sample("astronaut"), "content").rgb
    style_np = prepare_image(load_sample("swirl"), "style").rgb
    shape = working_shape(*content_np.shape[:2], args.size)
    content = resize(_to_tensor(content_np, device), *shape)
    # The report's model needs both images at one size (its content-loss module also sees the style).
    style = resize(_to_tensor(style_np, device), *shape)
    loaded = load_vgg19_features(args.weights, progress=False)
    features = loaded.features.to(device)
    options = StyleOptions(
        steps=args.steps,
        size=args.size,
        content_layers=tuple(CONTENT_LAYERS),
        style_layers=tuple(STYLE_LAYERS),
        optimizer="adam" if args.impl == "ours-adam" else "lbfgs",
        weights=args.weights,
    ).validated()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    if args.impl == "reference":
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from reference import run_reference

        setup = time.perf_counter() - started
        history, final = run_reference(
            features,
            content,
            style,
            content,
            steps=args.steps,
            content_layers=CONTENT_LAYERS,
            style_layers=STYLE_LAYERS,
            content_weight=options.content_weight,
            style_weight=options.style_weight,
        )
        times = [t for _, _, t in history]
        losses = [loss for _, loss, _ in history]
        evaluations = len(history)
    else:
        extractor = VGGFeatures(features, options.layers, options.pooling)
        objective = StyleObjective(extractor, content, style, options)
        setup = time.perf_counter() - started
        t0 = time.perf_counter()
        times, losses = [], []
        calls = [0]
        forward = objective.forward

        def counted(image):
            calls[0] += 1
            return forward(image)

        objective.forward = counted
        for _, step_losses, image in optimize(objective, content, options):
            times.append(time.perf_counter() - t0)
            losses.append(step_losses.total)
        final = image.detach().clone()
        objective.forward = forward
        evaluations = calls[0]

    judge = StyleObjective(VGGFeatures(features, options.layers), content, style, options)
    final_loss = evaluate(judge, final).total
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    durations = np.diff([0.0, *times])
    return {
        "impl": args.impl,
        "size": args.size,
        "shape": list(shape),
        "steps": len(times),
        "evaluations": evaluations,
        "seconds_per_step": float(statistics.median(durations[2:] if len(durations) > 4 else durations)),
        "seconds_total": float(times[-1]),
        "setup_seconds": setup,
        "peak_mb": peak_mb,
        "final_loss": final_loss,
        "losses": losses,
        "times": times,
        "weights": loaded.description,
        "device": str(device),
    }


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load": os.getloadavg()[0],
    }


def write_markdown(results: list[dict], info: dict, args: argparse.Namespace, path: Path) -> None:
    lines = [
        "# Benchmarks: our engine against the seed report's algorithm",
        "",
        f"Written by `python benchmarks/compare.py {' '.join(sys.argv[1:])}` on {info['date']}.",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {args.threads} torch threads, device "
        f"{results[0]['device']}; Python {info['python']}, torch {info['torch']}; "
        f"1-minute load average before the runs {info['load']:.2f}"
        + (" (**the machine was busy: numbers are less reliable**)" if info["load"] > 0.5 else "")
        + ".",
        "",
        f"Images: bundled astronaut (content) and swirl (style). Layers: content {', '.join(CONTENT_LAYERS)}; "
        f"style {', '.join(STYLE_LAYERS)}. Weights: {results[0]['weights']}. Content weight 1, style "
        "weight 1e6, start from the content image.",
        "",
        "A *step* is one iteration of our optimiser and one closure call (loss + gradient evaluation) "
        "of the reference, which is how the seed report counts them. *Evaluations* counts forward + "
        "backward passes. *Final loss* is the same objective evaluated once on each final image.",
        "",
        "| size (px) | implementation | steps | evaluations | s/step (median) | total s | setup s | peak memory (MB) | final loss | loss vs reference |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    by_size: dict[int, dict[str, dict]] = {}
    for r in results:
        by_size.setdefault(r["size"], {})[r["impl"]] = r
    for size, runs in sorted(by_size.items()):
        ref = runs.get("reference")
        for impl, r in runs.items():
            ratio = f"{r['final_loss'] / ref['final_loss']:.3f}" if ref else "-"
            lines.append(
                f"| {size} ({r['shape'][1]}x{r['shape'][0]}) | {impl} | {r['steps']} | {r['evaluations']} | "
                f"{r['seconds_per_step']:.3f} | {r['seconds_total']:.1f} | {r['setup_seconds']:.1f} | "
                f"{r['peak_mb']:.0f} | {r['final_loss']:.4g} | {ratio} |"
            )
    lines += ["", "Implementations:", ""]
    lines += [f"- `{name}`: {text}" for name, text in IMPLEMENTATIONS.items()]
    lines += [
        "",
        "Memory is the process's peak resident set on the CPU (Python, torch and the weights "
        "included, so the optimisation's own share is the difference between rows), and the peak "
        "allocated by torch on CUDA.",
        "",
        "Loss after every 10th step (same objective):",
        "",
    ]
    for size, runs in sorted(by_size.items()):
        lines.append(f"- {size} px: " + "; ".join(
            f"{impl}: " + ", ".join(f"{v:.3g}" for v in r["losses"][9::10]) for impl, r in runs.items()
        ))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--weights", default="random")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--impls", nargs="+", default=list(IMPLEMENTATIONS), choices=list(IMPLEMENTATIONS))
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--json", type=Path, help="also write the raw measurements here")
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.impl:  # worker mode
        print(json.dumps(worker(args)))
        return

    info = machine()
    results = []
    for size in args.sizes:
        for impl in args.impls:
            command = [sys.executable, __file__, "--impl", impl, "--size", str(size), "--steps", str(args.steps),
                       "--weights", args.weights, "--device", args.device, "--threads", str(args.threads)]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            print(f"{size:5d} px {impl:11s} {result['seconds_per_step']:.3f} s/step, {result['evaluations']} evals, "
                  f"peak {result['peak_mb']:.0f} MB, final loss {result['final_loss']:.4g}", flush=True)
            results.append(result)
    write_markdown(results, info, args, args.output)
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": results}, indent=1))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
