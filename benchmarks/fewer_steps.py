"""Loss against cost at 512 px: how few evaluations reach the seed's lowest 100-step loss.

    python benchmarks/fewer_steps.py reference            # the seed's 100 closure calls: the target
    python benchmarks/fewer_steps.py ratio                # seconds of one evaluation per size
    python benchmarks/fewer_steps.py run NAME [--schedule 128,256,512 --split 30,15,55 ...]
    python benchmarks/fewer_steps.py montage              # docs/images/steps_montage.png

A busy machine makes wall time meaningless, so cost is counted instead: every forward and
backward pass through VGG19 (an *evaluation*: a closure call of torch's L-BFGS, a line-search
try of ours) weighted by its pixels against 512 x 512, so an evaluation at 256 px costs 1/4
(``ratio`` checks that against the clock). The reference's 100 steps are its own 100
evaluations, so a cost of 15 is 0.15 of its time. Results go to ``docs/fewer_steps.json``.
Images: the bundled astronaut and swirl at 512 px, weights ``random`` (untrained), one thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import CONTENT_LAYERS, STYLE_LAYERS, EvaluationCost, _images, _reference_curve  # noqa: E402

SIZE = 512  # --size sets it; results of other sizes (screening) go to their own file


def _results() -> Path:
    return HERE.parent / "docs" / ("fewer_steps.json" if SIZE == 512 else f"fewer_steps_{SIZE}.json")


def _load() -> dict:
    return json.loads(_results().read_text()) if _results().is_file() else {}


def _save(key: str, value: dict) -> None:
    import fcntl

    with open(Path(tempfile.gettempdir()) / "fewer_steps.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # runs side by side write one file
        results = _load()
        results[key] = value
        _results().write_text(json.dumps(results, indent=1))


def reference(steps: int = 100) -> dict:
    """The seed's algorithm: (evaluations, loss) after every closure call."""
    curve = [(evaluations, loss) for _, loss, evaluations in _reference_curve(SIZE, steps, "random")]
    return {"curve": curve, "target": min(loss for _, loss in curve)}


def ratio(repeats: int = 3) -> dict:
    """Median seconds of one evaluation (forward + backward) at each size, in one process."""
    import statistics

    import torch

    from napari_style_transfer import StyleOptions
    from napari_style_transfer.engine import StyleObjective, resize
    from napari_style_transfer.vgg import VGGFeatures
    from napari_style_transfer.weights import load_vgg19_features

    content, style = _images(SIZE)
    options = StyleOptions(weights="random").validated()
    extractor = VGGFeatures(load_vgg19_features("random", progress=False).features, options.layers)
    seconds = {}
    for size in (128, 256, 384, 512):
        objective = StyleObjective(
            extractor, resize(content, size, size), resize(style, size, size), options, torch.float32
        )
        image = resize(content, size, size).clone().requires_grad_(True)
        times = []
        for _ in range(repeats + 1):
            started = time.perf_counter()
            total, _ = objective(image)
            torch.autograd.grad(total, image)
            times.append(time.perf_counter() - started)
        seconds[size] = statistics.median(times[1:])
    return {"seconds": seconds, "of_512": {size: s / seconds[512] for size, s in seconds.items()}}


def pyramid(levels: int, boost: float):
    """The operator g -> sum over k < ``levels`` of boost**k * U_k D_k g, where D_k averages
    2**k x 2**k blocks and U_k repeats each block's value (nearest): symmetric and positive
    definite, the starting inverse Hessian of L-BFGS on the image written as a sum of
    ``levels`` resolutions (the finest times 1, the next times ``boost`` ...). boost 4 is
    that parameterisation with equal coefficients at every level; 1 leaves the blocks'
    means no more weight than the pixels."""
    import torch.nn.functional as F

    def apply(g):
        h, w = g.shape[-2:]
        block = 2 ** (levels - 1)
        padded = F.pad(g, (0, -w % block, 0, -h % block))  # zeros: keeps the operator symmetric
        out = padded.clone()
        for k in range(1, levels):
            mean = F.avg_pool2d(padded, 2**k)
            out += boost**k * F.interpolate(mean, scale_factor=2**k, mode="nearest")
        return out[..., :h, :w]

    return apply


def _precondition(operator) -> None:
    """Make BoxLBFGS start its two-loop recursion from ``operator`` (scaled by s.y / y.M y)
    instead of the identity, and take its first step along -M g."""
    import torch

    from napari_style_transfer import lbfgs

    def direction(self, grad):
        q = grad.neg()
        alphas = []
        for s, y, rho in reversed(self.history):
            alpha = rho * torch.vdot(s.flatten(), q.flatten())
            q.addcmul_(y, alpha, value=-1.0)
            alphas.append(alpha)
        q = operator(q)
        if self.history:
            s, y, _ = self.history[-1]
            q.mul_(torch.vdot(s.flatten(), y.flatten()) / torch.vdot(y.flatten(), operator(y).flatten()))
        else:
            q.mul_(lbfgs.FIRST_STEP / q.abs().amax().clamp_min(1e-30))
        for (s, y, rho), alpha in zip(self.history, reversed(alphas), strict=True):
            beta = rho * torch.vdot(y.flatten(), q.flatten())
            q.addcmul_(s, alpha - beta)
        return q

    lbfgs.BoxLBFGS._direction = direction


def _levers(
    first_step: float | None, history: int | None, enlarge: str, precondition: str | None = None
) -> None:
    """Set the L-BFGS constants, the starting inverse Hessian (``precondition``: ``LEVELS,BOOST``
    of :func:`pyramid`) and the way a coarse result is enlarged for this process."""
    import torch.nn.functional as F

    from napari_style_transfer import engine, lbfgs
    from napari_style_transfer.pipeline import optimise

    if first_step is not None:
        lbfgs.FIRST_STEP = first_step
    if history is not None:
        engine.LBFGS_HISTORY = history
    if precondition:
        levels, boost = precondition.split(",")
        _precondition(pyramid(int(levels), float(boost)))
    if enlarge == "bilinear":
        return
    start = optimise._start

    def enlarged(contents, style, opts, carry, labels, level, coarser):
        if coarser is None:
            return start(contents, style, opts, carry, labels, level, coarser)
        shape = level.content_shape
        mode = "bicubic" if enlarge == "bicubic" else "bilinear"
        image = F.interpolate(coarser, size=shape, mode=mode, align_corners=False)
        if enlarge == "detail":  # the content's band the coarse level could not hold
            small = engine_resize(contents, *coarser.shape[-2:])
            image = image + contents - F.interpolate(small, size=shape, mode="bilinear", align_corners=False)
        return image.clamp(0, 1)

    from napari_style_transfer.engine import resize as engine_resize

    optimise._start = enlarged


def run(name: str, split: list[int] | None, budget: float, **options) -> dict:
    """One run of ours through the pipeline: (cost, loss at 512 px) after every full-size
    step, stopping at the reference's target or ``budget``; ``split`` sets each level's steps."""

    from napari_style_transfer import iter_stylize
    from napari_style_transfer.api import StyleResult
    from napari_style_transfer.pipeline import plan as plan_module

    target = _load().get("reference", {}).get("target", 0.0)  # unknown yet: run to the budget
    if split:
        total = sum(split)
        plan_module.STEP_SHARES[len(split)] = tuple((s + 0.5) / total for s in split)
        options["steps"] = total
    counter = EvaluationCost(SIZE)
    content, style = (t[0].permute(1, 2, 0).numpy() for t in _images(SIZE))
    curve, reached, started = [], None, time.perf_counter()
    records = iter_stylize(
        content, style, size=SIZE, weights="random", snapshot_every=0, style_scale=1.0, **options
    )
    for record in records:
        if isinstance(record, StyleResult):
            break
        if record.size == SIZE:
            curve.append((counter.cost, record.losses.total))
            if reached is None and record.losses.total <= target:
                reached = counter.cost
        if reached is not None or counter.cost > budget:
            break
    records.close()
    result = {
        "options": options,
        "argv": sys.argv[2:],
        "split": split,
        "curve": curve,
        "reached": reached,
        "evaluations": counter.by_size,
        "seconds": time.perf_counter() - started,
    }
    print(name, "reached at cost", reached, "last", curve[-1] if curve else None, counter.by_size)
    return result


def images_at(costs: list[float], split: list[int] | None, **options) -> list[tuple[object, int]]:
    """One of our runs' images (and their sizes) once its cost reaches each of ``costs`` (the
    last image before; a coarse level's image if the run is still there)."""
    from napari_style_transfer import iter_stylize
    from napari_style_transfer.pipeline import plan as plan_module

    if split:
        plan_module.STEP_SHARES[len(split)] = tuple((s + 0.5) / sum(split) for s in split)
        options["steps"] = sum(split)
    counter = EvaluationCost(SIZE)
    content, style = (t[0].permute(1, 2, 0).numpy() for t in _images(SIZE))
    records = iter_stylize(
        content, style, size=SIZE, weights="random", snapshot_every=0, style_scale=1.0, **options
    )
    shown: list[tuple[object, int]] = []
    image, size = None, 0
    for record in records:
        while len(shown) < len(costs) and counter.cost > costs[len(shown)]:
            shown.append((image, size))
        if len(shown) == len(costs):
            break
        image, size = record.render(), record.size
    records.close()
    return shown


def montage(costs: list[float], new: dict, new_split: list[int] | None, with_reference: bool) -> None:
    """docs/images/steps_montage.png: today's default and the new one at equal costs and, with
    ``with_reference``, the reference after as many evaluations (and after its 100)."""
    import torch.nn.functional as F

    sys.path.insert(0, str(HERE.parent / "docs"))
    from make_pictures import montage as draw
    from reference import run_reference

    from napari_style_transfer.weights import load_vgg19_features

    content, style = _images(SIZE)
    panels = []
    for label, split in (("today", [75, 75, 150]), ("new", new_split)):
        for cost, (image, size) in zip(costs, images_at(costs, split, **new), strict=True):
            if size != SIZE:  # still on a coarse level: shown as a bilinear enlargement
                enlarged = F.interpolate(torch_image(image), size=(SIZE, SIZE), mode="bilinear")
                image = enlarged[0].permute(1, 2, 0).numpy()
            panels.append((f"{label}, cost {cost:g} ({size} px)", image))
            panels.append((f"{label}, cost {cost:g}: 128 px crop", _crop(image)))
        shown = content if label == "today" else style
        panels.append(("content" if label == "today" else "style", shown[0].permute(1, 2, 0).numpy()))
    features = load_vgg19_features("random", progress=False).features
    for cost in [*costs, 100] if with_reference else []:
        _, image = run_reference(
            features,
            content,
            style,
            content,
            steps=int(cost),
            content_layers=CONTENT_LAYERS,
            style_layers=STYLE_LAYERS,
            content_weight=1.0,
            style_weight=1e6,
        )
        panels.append((f"reference, cost {cost:g}", image[0].permute(1, 2, 0).numpy()))
    draw(HERE.parent / "docs" / "images" / "steps_montage.png", panels, columns=2 * len(costs) + 1)


def _crop(image, side: int = 128):
    """A ``side`` px square of ``image`` (H, W, C) around its centre, shown larger in the montage
    so that sharpness and artefacts can be seen."""
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    return image[top : top + side, left : left + side]


def torch_image(image):
    import torch

    return torch.from_numpy(image).permute(2, 0, 1)[None].float()


def table(at: float = 20.0) -> None:
    """Print the markdown table of every run in the results (with each one's loss at cost
    ``at``) and draw their loss against cost (docs/images/steps_loss_cost.png; at another
    --size steps_loss_cost_SIZE.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = _load()
    reference_run = results.pop("reference", None)  # not measured yet: no target
    target = reference_run["target"] if reference_run else 0.0
    results.pop("ratio", None)
    if reference_run:
        print(
            f"target {target:.6g}: the reference's lowest loss in {len(reference_run['curve'])} evaluations"
        )
    print(
        f"| run | arguments | evaluations by size | first {SIZE} px step: cost, loss | loss at cost {at:g} | reached the target at cost | of the reference's 100 |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    figure, axes = plt.subplots(figsize=(7, 4.5))
    if reference_run:
        axes.plot(*zip(*reference_run["curve"], strict=True), label="reference", lw=2, color="black")
        axes.axhline(target, color="grey", ls="--", lw=1)
    for name, result in results.items():
        reached = next((cost for cost, loss in result["curve"] if loss <= target), None)
        shown = f"{reached:.1f} | {reached / 100:.2f}" if reached is not None else "not reached | -"
        shown = shown if reference_run else "no target yet | -"
        sizes = ", ".join(
            f"{size}: {n}" for size, n in sorted(result["evaluations"].items(), key=lambda i: int(i[0]))
        )
        first = result["curve"][0] if result["curve"] else (0.0, 0.0)
        at_20 = [loss for cost, loss in result["curve"] if cost <= at]
        print(
            f"| {name} | `{' '.join(result['argv'][1:])}` | {sizes} | {first[0]:.2f}, {first[1]:.5f} | "
            f"{f'{at_20[-1]:.5f}' if at_20 else 'at a coarse level'} | {shown} |"
        )
        if result["curve"]:
            axes.plot(*zip(*result["curve"], strict=True), label=name, lw=1)
    axes.set(
        xlabel=f"cost ({SIZE} px evaluations)", ylabel=f"loss at {SIZE} px", yscale="log", xlim=(0, 3 * at)
    )
    axes.legend(fontsize=7)
    figure.tight_layout()
    name = "steps_loss_cost.png" if SIZE == 512 else f"steps_loss_cost_{SIZE}.png"
    figure.savefig(HERE.parent / "docs" / "images" / name, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("reference", "ratio", "run", "table", "montage"))
    parser.add_argument("name", nargs="?")
    parser.add_argument("--schedule", default="auto")
    parser.add_argument("--split", type=lambda text: [int(n) for n in text.split(",")])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--init", default="content")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--budget", type=float, default=40.0)
    parser.add_argument("--first-step", type=float)
    parser.add_argument("--history", type=int)
    parser.add_argument("--reference", action="store_true", help="montage: a row of the reference")
    parser.add_argument("--costs", type=float, nargs="+", default=[15.0], help="montage: columns' costs")
    parser.add_argument("--enlarge", default="bilinear", choices=("bilinear", "bicubic", "detail"))
    parser.add_argument("--precondition", help="LEVELS,BOOST: L-BFGS on a multi-resolution image")
    parser.add_argument("--size", type=int, default=512, help="working size (screening at 256)")
    parser.add_argument("--at", type=float, default=20.0, help="table: the cost of its loss column")
    args = parser.parse_args()
    global SIZE
    SIZE = args.size
    _levers(args.first_step, args.history, args.enlarge, args.precondition)
    if args.part == "reference":
        _save("reference", reference())
    elif args.part == "ratio":
        _save("ratio", ratio())
    elif args.part == "table":
        table(args.at)
    else:
        options = {
            "schedule": args.schedule,
            "steps": args.steps,
            "init": args.init,
            "precision": args.precision,
        }
        if args.part == "montage":
            montage(args.costs, options, args.split, args.reference)
        else:
            _save(args.name, run(args.name, args.split, args.budget, **options))


if __name__ == "__main__":
    main()
