"""BatchBoxLBFGS: frames optimised in one batch take the iterates BoxLBFGS takes on each alone."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest
import torch

from napari_style_transfer.lbfgs import BatchBoxLBFGS, BatchObjective, BoxLBFGS, Objective


def one_frame(objective: Objective) -> BatchObjective:
    """A single-image objective (scalar total, (K,) report) as a batch objective for N = 1."""

    def batch_of_one(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total, report = objective(image)
        return total.reshape(1), report.reshape(1, -1)

    return batch_of_one


def through_one_network(
    features: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    frame_terms: Sequence[Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]],
) -> BatchObjective:
    """A batch objective whose frames share their expensive part and differ in the rest.

    ``features`` maps the (N, C, H, W) batch to activations ``{layer: (N, ...)}`` (VGG19 runs
    once for the whole batch); ``frame_terms[i]`` maps frame i's activations ``{layer: (1, ...)}``
    and its image (1, C, H, W) to its weighted loss terms (K,), whose sum is its total. With
    per-frame content targets that is StyleObjective's loss split after ``features``.
    """

    def objective(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        activations = features(image)
        terms = torch.stack(
            [
                terms_of({name: value[i : i + 1] for name, value in activations.items()}, image[i : i + 1])
                for i, terms_of in enumerate(frame_terms)
            ]
        )
        return terms.sum(dim=1), terms.detach()

    return objective


SHAPE = (3, 8, 8)
# Batched and lone runs reduce the same float64 numbers in different orders (a (N, P) sum
# against a (1, P) sum), so their iterates part by a few ulps a step; over 25 L-BFGS steps
# on a non-convex problem that grows to about 1e-10 relative. A logic error (a pair from the
# wrong frame, a shared step length) moves an iterate by far more than this.
ITERATE_TOLERANCE = {"rtol": 1e-9, "atol": 1e-10}


def toy_problem(frames: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Per-pixel curvatures and centres, about a third of them outside [0, 1] (the bounds
    are active there), and a cosine ripple that makes each frame non-convex in its own way."""
    generator = torch.Generator().manual_seed(seed)
    shape = (frames, *SHAPE)
    return {
        "curvature": 0.5 + 4.0 * torch.rand(shape, generator=generator, dtype=torch.float64),
        "centre": -0.3 + 1.6 * torch.rand(shape, generator=generator, dtype=torch.float64),
        "ripple": 0.04 * (1.0 + torch.arange(frames, dtype=torch.float64)).view(-1, 1, 1, 1),
        "start": torch.rand(shape, generator=generator, dtype=torch.float64),
    }


def toy_terms(x: torch.Tensor, problem: dict[str, torch.Tensor]) -> torch.Tensor:
    """(N, 2): each frame's quadratic and ripple terms."""
    quadratic = 0.5 * (problem["curvature"] * (x - problem["centre"]) ** 2).flatten(1).sum(1)
    ripple = (problem["ripple"] * torch.cos(6.0 * x)).flatten(1).sum(1)
    return torch.stack([quadratic, ripple], dim=1)


def batch_objective(problem):
    def objective(x):
        terms = toy_terms(x, problem)
        return terms.sum(dim=1), terms.detach()

    return objective


def frame_of(problem, i):
    return {name: value[i : i + 1] for name, value in problem.items()}


def lone_objective(problem, i):
    frame = frame_of(problem, i)

    def objective(x):
        terms = toy_terms(x, frame)[0]
        return terms.sum(), terms.detach()

    return objective


def lone_runs(problem, steps, **kwargs):
    """Each frame's iterates and reports under BoxLBFGS alone: [frame][step]."""
    iterates, reports = [], []
    for i in range(problem["start"].shape[0]):
        lbfgs = BoxLBFGS(problem["start"][i : i + 1], lone_objective(problem, i), **kwargs)
        frame_iterates, frame_reports = [], []
        for _ in range(steps):
            frame_reports.append(lbfgs.step())
            frame_iterates.append(lbfgs.x[0].clone())
        iterates.append(frame_iterates)
        reports.append(frame_reports)
    return iterates, reports


def assert_follows_lone_runs(problem, steps, **kwargs):
    iterates, reports = lone_runs(problem, steps, **kwargs)
    batch = BatchBoxLBFGS(problem["start"], batch_objective(problem), **kwargs)
    for step in range(steps):
        report = batch.step()
        for i in range(len(iterates)):
            torch.testing.assert_close(batch.x[i], iterates[i][step], **ITERATE_TOLERANCE)
            assert report[i] == pytest.approx(reports[i][step], rel=1e-9, abs=1e-12, nan_ok=True)
    return batch


def test_batched_frames_follow_their_lone_iterates():
    assert_follows_lone_runs(toy_problem(4), steps=25)


def test_batched_frames_follow_their_lone_iterates_with_a_short_history():
    assert_follows_lone_runs(toy_problem(3, seed=1), steps=25, history_size=3)


def test_a_batch_of_one_is_box_lbfgs():
    assert_follows_lone_runs(toy_problem(1, seed=2), steps=25)


def test_no_frames_loss_ever_increases():
    problem = toy_problem(4, seed=3)
    batch = BatchBoxLBFGS(problem["start"], batch_objective(problem))
    previous = [math.inf] * 4
    for _ in range(30):
        batch.step()
        assert all(loss <= before for loss, before in zip(batch.loss_values, previous, strict=True))
        previous = list(batch.loss_values)


def test_a_frame_at_rest_does_not_stall_the_others():
    problem = toy_problem(3, seed=4)
    problem["curvature"][1] = 0.0  # frame 1: a constant loss, zero gradient everywhere
    problem["ripple"][1] = 0.0
    batch = assert_follows_lone_runs(problem, steps=15)
    torch.testing.assert_close(batch.x[1], problem["start"][1], rtol=0, atol=0)
    assert batch.loss_values[0] < batch_objective(frame_of(problem, 0))(problem["start"][:1])[0].item()


def test_a_frame_that_stops_storing_curvature_pairs_keeps_its_own_within_history_size():
    problem = toy_problem(3, seed=5)
    # frame 0: an isotropic quadratic centred beyond the bound x = 1, reached everywhere in
    # two steps; from then on its steps are empty and store no pairs, but keep the two it has
    problem["curvature"][0] = 1.0
    problem["centre"][0] = 2.0
    problem["ripple"][0] = 0.0
    iterates, _ = lone_runs(problem, 10, history_size=2)
    batch = BatchBoxLBFGS(problem["start"], batch_objective(problem), history_size=2)
    for step in range(10):
        batch.step()
        assert len(batch.history) <= 2  # each stacked pair holds all three frames' images
        for i in range(3):
            torch.testing.assert_close(batch.x[i], iterates[i][step], **ITERATE_TOLERANCE)
    assert batch.history.counts[0] == 2
    assert bool((batch.x[0] == 1.0).all())


def test_a_non_finite_loss_is_reported_for_its_frame_only():
    problem = toy_problem(3, seed=6)
    start = problem["start"]

    def objective(x):  # frame 2's loss is NaN wherever it leaves its start
        terms = toy_terms(x, problem)
        moved = (x[2] != start[2]).any()
        terms = torch.cat([terms[:2], torch.where(moved, math.nan, terms[2:])])
        return terms.sum(dim=1), terms.detach()

    iterates, reports = lone_runs(problem, 5)
    batch = BatchBoxLBFGS(start, objective)
    for step in range(5):
        report = batch.step()
        assert all(math.isnan(value) for value in report[2])
        torch.testing.assert_close(batch.x[2], start[2], rtol=0, atol=0)
        for i in range(2):
            torch.testing.assert_close(batch.x[i], iterates[i][step], **ITERATE_TOLERANCE)
            assert report[i] == pytest.approx(reports[i][step], rel=1e-9, abs=1e-12)


def test_the_start_image_is_left_alone():
    problem = toy_problem(2, seed=7)
    start = problem["start"].clone()
    batch = BatchBoxLBFGS(problem["start"], batch_objective(problem))
    for _ in range(3):
        batch.step()
    assert torch.equal(problem["start"], start)


def test_a_batch_objective_must_return_one_total_per_frame():
    problem = toy_problem(2)

    def summed(x):
        terms = toy_terms(x, problem)
        return terms.sum(), terms.detach()

    with pytest.raises(ValueError, match=r"totals of shape \(2,\)"):
        BatchBoxLBFGS(problem["start"], summed).step()


# --- on the real loss ---------------------------------------------------------------------


@pytest.fixture
def style_setup(content, style):
    """Two 24 px content frames, a style image and the options of StyleObjective, with random
    weights. float32: batched and lone convolutions round differently (float64 gives equal
    gradients), and L-BFGS amplifies that, so the comparisons run few steps."""
    from napari_style_transfer.options import StyleOptions
    from napari_style_transfer.vgg import VGGFeatures, vgg19_features_module

    torch.manual_seed(0)
    options = StyleOptions(tv_weight=1e-3).validated()
    extractor = VGGFeatures(vgg19_features_module(), options.layers)
    image = torch.from_numpy(content).permute(2, 0, 1)[None].float() / 255
    frames = torch.cat([image[..., :24, :24], image[..., 16:, 24:]])
    style_image = torch.from_numpy(style).permute(2, 0, 1)[None]
    return extractor, frames, style_image, options


def style_objectives(style_setup):
    from napari_style_transfer.engine import StyleObjective

    extractor, frames, style_image, options = style_setup
    return [StyleObjective(extractor, frames[i : i + 1], style_image, options) for i in range(len(frames))]


def style_terms(objective):
    """StyleObjective's forward after its features: the (K,) weighted terms of one frame."""
    from torch.nn import functional as F

    from napari_style_transfer.losses import gram_mse, total_variation

    def terms(features, image):
        zero = image.new_zeros((), dtype=torch.float32)
        content = sum((F.mse_loss(features[n], t) for n, t in objective.content_targets.items()), zero)
        style = sum((gram_mse(features[n], t) for n, t in objective.style_targets.items()), zero)
        tv = total_variation(image) if objective.tv_weight else zero
        weights = (objective.content_weight, objective.style_weight, objective.tv_weight)
        return torch.stack([w * term for w, term in zip(weights, (content, style, tv), strict=True)])

    return terms


def test_style_terms_add_up_to_the_style_objectives_total(style_setup):
    objective = style_objectives(style_setup)[0]
    image = style_setup[1][:1]
    total = style_terms(objective)(objective.features(image), image).sum()
    torch.testing.assert_close(total, objective(image)[0])


def test_a_batch_of_one_style_objective_is_box_lbfgs(style_setup):
    objective = style_objectives(style_setup)[0]
    start = torch.rand(style_setup[1][:1].shape, generator=torch.Generator().manual_seed(1))
    lone = BoxLBFGS(start, objective, history_size=30)
    batch = BatchBoxLBFGS(start, one_frame(objective), history_size=30)
    for _ in range(3):
        assert batch.step()[0] == pytest.approx(lone.step(), rel=1e-6)
        torch.testing.assert_close(batch.x, lone.x, rtol=0, atol=1e-6)


def test_style_frames_through_one_network_follow_their_lone_runs(style_setup):
    objectives = style_objectives(style_setup)
    frames = style_setup[1]
    start = torch.rand(frames.shape, generator=torch.Generator().manual_seed(2))
    batch_objective = through_one_network(objectives[0].features, [style_terms(o) for o in objectives])
    batch = BatchBoxLBFGS(start, batch_objective, history_size=30)
    lone = [BoxLBFGS(start[i : i + 1], o, history_size=30) for i, o in enumerate(objectives)]
    for _ in range(3):
        report = batch.step()
        for i, lbfgs in enumerate(lone):
            assert sum(report[i]) == pytest.approx(sum(lbfgs.step()), rel=1e-4)
            torch.testing.assert_close(batch.x[i : i + 1], lbfgs.x, rtol=0, atol=1e-3)


def test_the_batch_frames_benchmark_runs_end_to_end():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "batch_frames.py"
    output = subprocess.run(
        [sys.executable, str(script), "--sizes", "16", "--batches", "1", "2", "--repeats", "1", "--lbfgs"],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout
    assert "| 16 | 1 |" in output and "| 16 | 2 |" in output


def stiff_problem():
    """A soft non-quadratic objective over the pixels plus a stiff quadratic hold on most of
    them (a time series' temporal term at a high weight): the free pixels' own curvature is
    about 1e3 times below the held ones'."""
    generator = torch.Generator().manual_seed(4)
    start = torch.full((1, *SHAPE), 0.5, dtype=torch.float64)
    target = start.clone()
    held = (torch.rand((1, 1, *SHAPE[1:]), generator=generator) < 0.8).to(torch.float64).expand_as(start)
    centre = 0.1 + 0.8 * torch.rand(start.shape, generator=generator, dtype=torch.float64)
    weight = 2000.0

    def objective(x):
        soft = 0.5 * ((x - centre) ** 2).sum() + 0.02 * torch.cos(6.0 * x).sum()
        hold = 0.5 * weight * (held * (x - target) ** 2).sum()
        return soft + hold, torch.stack([soft, hold]).detach()

    return start, objective, weight * held, held == 0, centre


def test_a_known_stiff_curvature_lets_the_free_pixels_move_at_their_own_pace():
    start, objective, curvature, free, centre = stiff_problem()
    plain = BoxLBFGS(start, objective, history_size=5)
    informed = BoxLBFGS(start, objective, history_size=5, curvature=curvature)
    for _ in range(6):
        plain_loss, informed_loss = plain.step(), informed.step()
    assert sum(informed_loss) < sum(plain_loss)
    plain_error = (plain.x - centre)[free].abs().mean()
    informed_error = (informed.x - centre)[free].abs().mean()
    assert informed_error < 0.5 * plain_error


def test_a_curvature_of_zero_is_plain_lbfgs():
    problem = toy_problem(1)
    objective = lone_objective(problem, 0)
    plain = BoxLBFGS(problem["start"], objective, history_size=5)
    zero = BoxLBFGS(problem["start"], objective, history_size=5, curvature=torch.zeros_like(problem["start"]))
    for _ in range(4):
        assert zero.step() == pytest.approx(plain.step(), rel=1e-9)
    torch.testing.assert_close(zero.x, plain.x, rtol=0, atol=1e-12)


def test_the_temporal_terms_curvature_is_its_second_derivative(style_setup):
    from napari_style_transfer.engine import StyleObjective
    from napari_style_transfer.losses import temporal_loss

    extractor, frames, style_image, options = style_setup
    objective = StyleObjective(extractor, frames[:1], style_image, options)
    image = frames[:1].clone()
    assert objective.temporal_curvature(image) is None  # no temporal term
    target = torch.rand(image.shape, generator=torch.Generator().manual_seed(5))
    reliable = (
        torch.rand((1, 1, *image.shape[-2:]), generator=torch.Generator().manual_seed(6)) < 0.5
    ).float()
    reliable[..., 3, 4] = 1.0
    objective.set_temporal(target, reliable)
    curvature = objective.temporal_curvature(image)
    # the temporal term is quadratic and separable: its Hessian is diagonal, and a unit step
    # along one pixel changes its gradient there by the curvature
    x = image.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective.temporal_weight * temporal_loss(x, target, reliable), x)
    moved = x.detach().clone()
    moved[0, 1, 3, 4] += 1.0
    moved.requires_grad_(True)
    (moved_grad,) = torch.autograd.grad(
        objective.temporal_weight * temporal_loss(moved, target, reliable), moved
    )
    torch.testing.assert_close((moved_grad - grad)[0, 1, 3, 4], curvature[0, 0, 3, 4])
    assert curvature.shape == reliable.shape  # the same for every channel
    assert torch.equal(curvature[0, 0] > 0, reliable[0, 0] > 0)


def test_a_time_series_frame_runs_lbfgs_with_its_temporal_curvature(style_setup, monkeypatch):
    from napari_style_transfer import engine

    extractor, frames, style_image, options = style_setup
    objective = engine.StyleObjective(extractor, frames[:1], style_image, options)
    given = []
    real = engine.BoxLBFGS

    def recording(*args, **kwargs):
        given.append(kwargs.get("curvature"))
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "BoxLBFGS", recording)
    list(engine.optimize(objective, frames[:1], options, steps=1))
    reliable = torch.ones((1, 1, *frames.shape[-2:]))
    objective.set_temporal(frames[:1].clone(), reliable)
    list(engine.optimize(objective, frames[:1], options, steps=1))
    assert given[0] is None
    torch.testing.assert_close(given[1], objective.temporal_curvature(frames[:1]))


def test_where_the_rest_is_not_convex_the_curvature_falls_back_to_the_plain_scale():
    # a concave rest (pushing every pixel away from the middle) under a stiff hold on some
    generator = torch.Generator().manual_seed(7)
    start = 0.4 + 0.2 * torch.rand((1, *SHAPE), generator=generator, dtype=torch.float64)
    held = (torch.rand((1, 1, *SHAPE[1:]), generator=generator) < 0.5).to(torch.float64)

    def objective(x):
        rest = -0.5 * ((x - 0.5) ** 2).sum()
        hold = 0.5 * 500.0 * (held * (x - start) ** 2).sum()
        return rest + hold, torch.stack([rest, hold]).detach()

    lbfgs = BoxLBFGS(start, objective, history_size=5, curvature=500.0 * held)
    totals = [sum(lbfgs.step()) for _ in range(8)]
    assert all(math.isfinite(t) for t in totals)
    assert all(later <= earlier + 1e-12 for earlier, later in zip(totals, totals[1:], strict=False))
    assert totals[-1] < totals[0]
    assert lbfgs.x.min() >= 0.0 and lbfgs.x.max() <= 1.0


def quadratic_with_hold(slopes: torch.Tensor, curvature: torch.Tensor):
    """A separable quadratic (per-pixel ``slopes``) plus a hold of known ``curvature``."""

    def objective(x):
        rest = 0.5 * (slopes * (x - 0.7) ** 2).sum()
        hold = 0.5 * (curvature * (x - 0.3) ** 2).sum()
        return rest + hold, torch.stack([rest, hold]).detach()

    return objective


def test_carried_curvature_pairs_take_on_the_next_runs_known_curvature():
    from napari_style_transfer.lbfgs import CarriedCurvature

    generator = torch.Generator().manual_seed(11)
    start = 0.4 + 0.2 * torch.rand((1, *SHAPE), generator=generator, dtype=torch.float64)
    slopes = 1.0 + torch.rand(start.shape, generator=generator, dtype=torch.float64)
    first_hold = 50.0 * (torch.rand((1, 1, *SHAPE[1:]), generator=generator) < 0.5).to(torch.float64)
    second_hold = 80.0 * (torch.rand((1, 1, *SHAPE[1:]), generator=generator) < 0.5).to(torch.float64)
    first = BoxLBFGS(start, quadratic_with_hold(slopes, first_hold), history_size=5, curvature=first_hold)
    for _ in range(4):
        first.step()
    carried = CarriedCurvature()
    carried.take(first)
    assert len(carried) == len(first.history) > 0

    second = BoxLBFGS(start, quadratic_with_hold(slopes, second_hold), history_size=5, curvature=second_hold)
    carried.give(second)
    assert len(second.history) == len(first.history)
    for s, y, rho in second.history:  # the pair the second objective itself would have given
        torch.testing.assert_close(y, (slopes + second_hold) * s)
        assert rho == pytest.approx(1.0 / torch.vdot(s.flatten(), y.flatten()).item())


def test_carried_curvature_pairs_of_another_shape_are_dropped():
    from napari_style_transfer.lbfgs import CarriedCurvature

    start = torch.full((1, *SHAPE), 0.5, dtype=torch.float64)
    slopes = torch.ones_like(start)
    first = BoxLBFGS(start, quadratic_with_hold(slopes, torch.zeros_like(start[:, :1])), history_size=5)
    for _ in range(3):
        first.step()
    carried = CarriedCurvature()
    carried.take(first)
    larger = torch.full((1, SHAPE[0], SHAPE[1] + 2, SHAPE[2]), 0.5, dtype=torch.float64)
    second = BoxLBFGS(
        larger, quadratic_with_hold(torch.ones_like(larger), torch.zeros_like(larger[:, :1])), history_size=5
    )
    carried.give(second)
    assert not second.history and not len(carried)


def test_a_run_given_carried_curvature_starts_from_it_and_leaves_its_own(style_setup):
    from napari_style_transfer import engine
    from napari_style_transfer.lbfgs import CarriedCurvature

    extractor, frames, style_image, options = style_setup
    objective = engine.StyleObjective(extractor, frames[:1], style_image, options)
    carried = CarriedCurvature()
    first = list(engine.optimize(objective, frames[:1], options, steps=3, carried=carried))
    assert len(carried) > 0
    kept = len(carried)
    lone = list(engine.optimize(objective, first[-1][2], options, steps=1))
    given = list(engine.optimize(objective, first[-1][2], options, steps=1, carried=carried))
    assert len(carried) == min(kept + 1, engine.LBFGS_HISTORY)  # its own pairs: the kept ones and one more
    # the same start, a different first step: the carried pairs shaped it
    assert not torch.equal(lone[-1][2], given[-1][2])


def test_a_float32_images_curvature_pairs_are_kept_in_bfloat16_and_still_lead_downhill():
    from napari_style_transfer.lbfgs import PAIR_DTYPE

    generator = torch.Generator().manual_seed(5)
    slopes = 1.0 + 9.0 * torch.rand((1, 3, 16, 16), generator=generator, dtype=torch.float64)
    target = 0.2 + 0.6 * torch.rand(slopes.shape, generator=generator, dtype=torch.float64)
    start = torch.full_like(slopes, 0.5)

    def losses_after(dtype: torch.dtype) -> tuple[BoxLBFGS, list[float]]:
        s, t = slopes.to(dtype), target.to(dtype)

        def objective(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            total = 0.5 * (s * (x - t) ** 2).sum()
            return total, total.detach().reshape(1)

        lbfgs = BoxLBFGS(start.to(dtype), objective, history_size=5)
        return lbfgs, [lbfgs.step()[0] for _ in range(12)]

    fp32, fp32_losses = losses_after(torch.float32)
    fp64, fp64_losses = losses_after(torch.float64)
    assert len(fp32.history) == 5 and all(s.dtype == y.dtype == PAIR_DTYPE for s, y, _ in fp32.history)
    assert all(s.dtype == torch.float64 for s, _, _ in fp64.history)  # other dtypes keep their own
    held = BoxLBFGS(start.float(), fp32.objective, history_size=5, curvature=torch.ones_like(start.float()))
    for _ in range(3):
        held.step()
    assert held.history and all(
        s.dtype == torch.float32 for s, _, _ in held.history
    )  # a known curvature: float32
    assert all(b <= a for a, b in zip(fp32_losses, fp32_losses[1:], strict=False))
    # the rounded pairs cost little: within a few times the float64 run's loss, 1e4 below the start's
    assert fp32_losses[-1] < 1e-4 * fp32_losses[0]
    assert fp32_losses[-1] < 10 * fp64_losses[-1] + 1e-7 * fp32_losses[0]
