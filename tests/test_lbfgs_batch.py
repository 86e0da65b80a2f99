"""BatchBoxLBFGS: frames optimised in one batch take the iterates BoxLBFGS takes on each alone."""

from __future__ import annotations

import math

import pytest
import torch

from napari_style_transfer.lbfgs import BatchBoxLBFGS, BoxLBFGS, one_frame, through_one_network

SHAPE = (3, 8, 8)


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
            torch.testing.assert_close(batch.x[i], iterates[i][step], rtol=0, atol=1e-11)
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


def test_frames_that_store_curvature_pairs_at_different_steps_keep_at_most_history_size_pairs():
    problem = toy_problem(3, seed=5)
    problem["centre"][0] = 2.0  # frame 0 reaches the bound x = 1 everywhere, then stores no pairs
    problem["ripple"][0] = 0.0
    iterates, _ = lone_runs(problem, 12, history_size=2)
    batch = BatchBoxLBFGS(problem["start"], batch_objective(problem), history_size=2)
    uneven = False
    for step in range(12):
        batch.step()
        assert len(batch.history) <= 2
        uneven |= len({frozenset(pair.frames) for pair in batch.history}) > 1
        for i in range(3):
            torch.testing.assert_close(batch.x[i], iterates[i][step], rtol=0, atol=1e-11)
    assert uneven  # the frames' histories really were out of step


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
            torch.testing.assert_close(batch.x[i], iterates[i][step], rtol=0, atol=1e-11)
            assert report[i] == pytest.approx(reports[i][step], rel=1e-9, abs=1e-12)


def test_a_batch_objective_must_return_one_total_per_frame():
    problem = toy_problem(2)

    def summed(x):
        terms = toy_terms(x, problem)
        return terms.sum(), terms.detach()

    with pytest.raises(ValueError, match=r"totals of shape \(2,\)"):
        BatchBoxLBFGS(problem["start"], summed).step()
