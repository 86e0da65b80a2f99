"""L-BFGS on an image whose pixels must stay in [0, 1], one iteration per call.

torch.optim.LBFGS does not know about bounds: clamping the image between its iterations makes
its stored steps disagree with the steps really taken, and runs then oscillate
(docs/benchmarks.md, "Engine notes"). Here each iteration projects
onto the box, stores the step actually taken, and backtracks (Armijo) until the loss falls,
so the loss decreases monotonically. An iteration costs one loss evaluation when the full
step is accepted, which is the usual case after the first few. A known diagonal curvature (a
time series' temporal term) can go into the starting Hessian (``curvature``).

BatchBoxLBFGS does the same for a stack of independent frames (Z slices, channels) sent
through VGG19 as one batch, which keeps a GPU busy on small frames: every frame keeps its own
curvature pairs, step length and line search, so its result is the one BoxLBFGS gives it
alone (one L-BFGS over the concatenated frames would share curvature and line search).
Its objective returns one total per frame (:data:`BatchObjective`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import torch

#: Largest pixel change of the first iteration (pixels in [0, 1]). torch's L-BFGS divides by
#: the gradient's L1 norm instead, which on large images makes the first step so small that
#: the next curvature pair is rounding noise in bf16 (docs/benchmarks.md, "Engine notes").
FIRST_STEP = 0.1

#: The curvature pairs of a float32 image are kept in bfloat16: the history is most of what a
#: run's memory grows by after its first steps (30 pairs at 512 px: 180 MB in float32, 90 MB
#: now), and the loss after 32 steps at 512 px and 100 or 150 at 128 px stays within 1% of
#: float32 pairs' (docs/benchmarks.md, issue 37). bfloat16 has float32's range: gradients of
#: 1e-9 a pixel do not underflow as in float16. Other dtypes (float64 checks) keep their own,
#: and so do runs with a known ``curvature`` (a time series' later frames): their starting
#: scale takes y less the curvature's part, two near-equal numbers on held pixels, whose
#: difference bfloat16's rounding would swamp.
PAIR_DTYPE = torch.bfloat16


def _kept(t: torch.Tensor, curvature: torch.Tensor | None = None) -> torch.Tensor:
    """A step or gradient change as the history keeps it (see PAIR_DTYPE)."""
    return t.to(PAIR_DTYPE) if t.dtype == torch.float32 and curvature is None else t


def _used(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A kept pair's image in ``like``'s dtype, for arithmetic with it."""
    return t.to(like.dtype)


#: Evaluate the loss at an image: returns (total loss, anything to report); the total is
#: differentiated here.
Objective = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class BoxLBFGS:
    """Projected L-BFGS with backtracking for ``x`` in [low, high]."""

    def __init__(
        self,
        image: torch.Tensor,
        objective: Objective,
        *,
        history_size: int = 100,
        lr: float = 1.0,
        low: float = 0.0,
        high: float = 1.0,
        sufficient_decrease: float = 1e-4,
        max_backtracks: int = 12,
        curvature: torch.Tensor | None = None,
    ):
        self.x = image.detach().clamp(low, high)
        self.curvature = curvature
        self.objective = objective
        self.history: deque[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = deque(maxlen=history_size)
        self.lr = lr
        self.low, self.high = low, high
        self.c1 = sufficient_decrease
        self.max_backtracks = max_backtracks
        self.loss: torch.Tensor | None = None
        self.grad: torch.Tensor | None = None
        self.report: torch.Tensor | None = None
        self.report_values: list[float] = []
        self.evaluations = 0

    def _evaluate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = x.detach().requires_grad_(True)
        total, report = self.objective(x)
        (grad,) = torch.autograd.grad(total, x)
        self.evaluations += 1
        return total.detach(), grad, report

    def _direction(self, grad: torch.Tensor) -> torch.Tensor:
        """-H grad by the two-loop recursion over the stored (s, y) pairs (no host sync)."""
        q = grad.neg()
        alphas = []
        for s, y, rho in reversed(self.history):
            alpha = rho * torch.vdot(_used(s, q).flatten(), q.flatten())
            q.addcmul_(_used(y, q), alpha, value=-1.0)
            alphas.append(alpha)
        if self.history:
            s, y, _ = self.history[-1]
            q.mul_(self._initial_inverse_hessian(_used(s, q), _used(y, q)))
        else:  # first iteration: steepest descent moving no pixel by more than FIRST_STEP
            q.mul_(FIRST_STEP / grad.abs().amax().clamp_min(1e-30))
        for (s, y, rho), alpha in zip(self.history, reversed(alphas), strict=True):
            beta = rho * torch.vdot(_used(y, q).flatten(), q.flatten())
            q.addcmul_(_used(s, q), alpha - beta)
        return q

    def _initial_inverse_hessian(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The two-loop recursion's starting inverse Hessian: the usual scalar s.y / y.y or,
        with a known ``curvature``, per pixel 1 / (1 / gamma + curvature), where gamma is the
        scalar of the rest of the objective (its y: y - curvature * s).

        A stiff quadratic term (a time series' temporal loss at a high weight, on most of the
        pixels) otherwise sets the one scalar for every pixel, and the pixels it does not hold
        move by steps sized for the ones it does."""
        scalar = torch.vdot(s.flatten(), y.flatten()) / torch.vdot(y.flatten(), y.flatten())
        if self.curvature is None:
            return scalar
        # on held pixels this subtracts two near-equal numbers: at 1e3 times the rest's
        # curvature float32 keeps about 1e-4 of the rest's part, plenty for a starting scale
        rest = y - self.curvature * s
        sy, yy = torch.vdot(s.flatten(), rest.flatten()), torch.vdot(rest.flatten(), rest.flatten())
        gamma = sy / yy.clamp_min(1e-30)
        per_pixel = 1.0 / (1.0 / gamma.clamp_min(1e-30) + self.curvature)
        # where the rest is not convex along the step, the scalar (no host sync to decide)
        return torch.where(sy > 0, per_pixel, scalar)

    def step(self) -> list[float]:
        """One iteration. Returns the report of the image it ends on (``self.x``) as floats.

        Each evaluation costs one host sync: the loss test, the curvature test and the
        report travel to the host together."""
        if self.loss is None or self.grad is None or self.report is None:
            self.loss, self.grad, self.report = self._evaluate(self.x)
            self.report_values = self.report.float().tolist()
        x, loss, grad = self.x, self.loss, self.grad
        direction = self._direction(grad)
        t = self.lr
        for attempt in range(self.max_backtracks):
            candidate = (x + t * direction).clamp_(self.low, self.high)
            new_loss, new_grad, new_report = self._evaluate(candidate)
            taken = candidate - x
            y = new_grad - grad
            checks = torch.stack(
                [
                    new_loss,
                    loss + self.c1 * torch.vdot(grad.flatten(), taken.flatten()),
                    torch.vdot(taken.flatten(), y.flatten()),
                    torch.vdot(y.flatten(), y.flatten()),
                    torch.vdot(direction.flatten(), grad.flatten()),
                ]
            )
            values = torch.cat([checks, new_report.float()]).tolist()
            new, bound, sy, yy, slope = values[:5]
            if slope >= 0 and attempt == 0 and self.history:  # not downhill: forget the curvature
                self.history.clear()
                direction = self._direction(grad)
                continue
            if new <= bound:
                break
            t *= 0.5
        else:
            if not math.isfinite(new):  # report it: the caller stops the run with a message
                return [math.nan] * len(self.report_values)
            if not new < loss.item():  # no step lowered the loss: stay, start the curvature afresh
                self.history.clear()
                return self.report_values
        if sy > 1e-10 * yy:
            self.history.append((_kept(taken, self.curvature), _kept(y, self.curvature), 1.0 / sy))
        self.x, self.loss, self.grad, self.report = candidate, new_loss, new_grad, new_report
        self.report_values = values[5:]
        return self.report_values


class CarriedCurvature:
    """Curvature pairs handed from one :class:`BoxLBFGS` run to the next: a time series' frame
    starts near the previous frame's result, where the style and content losses curve much as
    they did, so its L-BFGS starts from the pairs the previous frame ended with.

    The pairs are kept less the known ``curvature`` (the temporal term's, which changes from
    frame to frame with the pixels it holds) and get the next run's added back. The later
    frames then reach a lower loss (docs/benchmarks.md, "Engine notes")."""

    def __init__(self) -> None:
        self._pairs: list[tuple[torch.Tensor, torch.Tensor]] = []  # (s, y less the curvature's part)

    def __len__(self) -> int:
        return len(self._pairs)

    def give(self, lbfgs: BoxLBFGS) -> None:
        """Start ``lbfgs``'s history with the pairs kept, where the image has their shape and
        the pair still curves upward with ``lbfgs``'s curvature."""
        pairs = [(s, rest) for s, rest in self._pairs if s.shape == lbfgs.x.shape]
        self._pairs = []
        if not pairs or lbfgs.history:
            return
        x = lbfgs.x
        pairs = [(_used(s, x), _used(rest, x)) for s, rest in pairs]
        ys = [rest if lbfgs.curvature is None else rest + lbfgs.curvature * s for s, rest in pairs]
        dots = torch.stack(
            [torch.vdot(s.flatten(), y.flatten()) for (s, _), y in zip(pairs, ys, strict=True)]
        )
        for (s, _), y, sy in zip(pairs, ys, dots.tolist(), strict=True):  # one host sync
            if sy > 0:
                lbfgs.history.append((_kept(s, lbfgs.curvature), _kept(y, lbfgs.curvature), 1.0 / sy))

    def take(self, lbfgs: BoxLBFGS) -> None:
        """Keep ``lbfgs``'s pairs (at the end of its run) for the next run."""
        curvature = lbfgs.curvature
        self._pairs = [(s, y if curvature is None else y - curvature * s) for s, y, _ in lbfgs.history]


#: Evaluate the loss at a batch of independent frames: takes an (N, C, H, W) image and returns
#: (per-frame totals (N,), per-frame report (N, K)). The sum of the totals is differentiated
#: once, so frame i's total must depend on frame i alone (VGG19 qualifies: no batch norm)
#: and its gradient is then frame i's own. Return fresh tensors: the optimiser keeps them.
BatchObjective = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _frame_dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dot products of (N, ...) tensors frame by frame: (N,)."""
    return torch.linalg.vecdot(a.flatten(1), b.flatten(1))


def _per_frame(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N,) values shaped to broadcast over (N, ...) ``like``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def _steepest_scale(grad: torch.Tensor) -> torch.Tensor:
    """The first iteration's scale of -grad, frame by frame: no pixel moves by more than FIRST_STEP."""
    return FIRST_STEP / grad.abs().flatten(1).amax(dim=1).clamp_min(1e-30)


class _Pair:
    """One stored (s, y, 1/sy) of several frames at once; ``frames`` are those it holds, the
    other frames' rows are zero, which makes them drop out of the two-loop recursion exactly."""

    def __init__(self, s: torch.Tensor, y: torch.Tensor, rho: torch.Tensor, frames: set[int]):
        self.s, self.y, self.rho, self.frames = s, y, rho, frames

    def remove(self, frame: int) -> None:
        self.s[frame].zero_()
        self.y[frame].zero_()
        self.rho[frame].zero_()
        self.frames.discard(frame)


class FrameHistories:
    """The curvature pairs of every frame of a batch, oldest first, as stacked (N, ...) pairs.

    Frames usually store a pair at the same iterations, so one stacked pair serves them all.
    Where they do not (a frame at rest stores none while the others go on), frame i still
    keeps exactly its own last ``size`` pairs, in order; the stack is compacted in place when
    it would grow past ``size``, so it never holds more images than BoxLBFGS's deque per frame.
    """

    def __init__(self, frames: int, size: int):
        self.size = size
        self.pairs: list[_Pair] = []
        self.counts = [0] * frames

    def __len__(self) -> int:
        return len(self.pairs)

    def __reversed__(self):
        return reversed(self.pairs)

    def __iter__(self):
        return iter(self.pairs)

    def add(self, s: torch.Tensor, y: torch.Tensor, rho: torch.Tensor, frames: set[int]) -> None:
        """Store a pair for ``frames``; the rows of the other frames must be zero."""
        if not self.size:
            return
        for frame in frames:
            if self.counts[frame] == self.size:
                next(pair for pair in self.pairs if frame in pair.frames).remove(frame)
            else:
                self.counts[frame] += 1
        self.pairs.append(_Pair(s, y, rho, set(frames)))
        self._drop_empty()
        if len(self.pairs) > self.size:
            self._compact()

    def clear(self, frame: int) -> None:
        for pair in self.pairs:
            if frame in pair.frames:
                pair.remove(frame)
        self.counts[frame] = 0
        self._drop_empty()

    def _drop_empty(self) -> None:
        self.pairs = [pair for pair in self.pairs if pair.frames]

    def _compact(self) -> None:
        """Move each frame's pairs to the newest stacked pairs, keeping their order: every
        frame's k-th newest pair then sits in the k-th newest stacked one."""
        last = len(self.pairs) - 1
        for frame in range(len(self.counts)):
            sources = [k for k, pair in enumerate(self.pairs) if frame in pair.frames]
            # newest first: each target is at or after its source, and after every source
            # not yet moved, so nothing is overwritten before it has moved
            for offset, source in enumerate(reversed(sources)):
                target = last - offset
                if target != source:
                    old, new = self.pairs[source], self.pairs[target]
                    new.s[frame].copy_(old.s[frame])
                    new.y[frame].copy_(old.y[frame])
                    new.rho[frame].copy_(old.rho[frame])
                    new.frames.add(frame)
                    old.remove(frame)
        self._drop_empty()


#: One evaluation of a batch: per-frame totals (N,), the gradient, per-frame report (N, K).
_Evaluation = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class _LineSearch:
    """One iteration's backtracking, frame by frame: each frame's step length ``t``, the
    frames still ``searching``, those ``moved`` (frame -> checks and report of its accepted
    point), those ``failed`` (a non-finite loss), and ``kept``: loss, gradient and report
    whose rows of the moved frames are their accepted points'."""

    def __init__(self, frames: int, lr: float) -> None:
        self.t = [lr] * frames
        self.searching = list(range(frames))
        self.moved: dict[int, list[float]] = {}
        self.failed: set[int] = set()
        self.kept: list[torch.Tensor] | None = None

    def keep(self, accepted: list[int], evaluation: _Evaluation, values: list[list[float]]) -> None:
        """Keep the ``accepted`` frames' rows of ``evaluation``; they stop searching."""
        if accepted:
            if self.kept is None:
                self.kept = list(evaluation)
            else:
                for i in accepted:
                    for mine, theirs in zip(self.kept, evaluation, strict=True):
                        mine[i] = theirs[i]
            self.moved.update((i, values[i]) for i in accepted)
        self.searching = [i for i in self.searching if i not in accepted]


class BatchBoxLBFGS:
    """BoxLBFGS for N independent frames (N, C, H, W) evaluated as one batch.

    Every frame follows the iterates BoxLBFGS would take on it alone (the same up to rounding
    of the batched dot products): its own curvature pairs, first-step scale, step length and
    backtracking, history resets and rest rule. Each evaluation runs the whole batch: a frame
    whose line search has ended stays at its accepted point and the values of later
    evaluations are ignored for it, so its result never depends on the other frames (no
    re-evaluation that could round differently), and the batch keeps one shape (no new
    cuDNN plans or memory layouts) at the price of some wasted work while another frame
    backtracks, which after the first few iterations is rare.

    ``objective`` follows :data:`BatchObjective`. Each evaluation costs one host sync.
    """

    def __init__(
        self,
        image: torch.Tensor,
        objective: BatchObjective,
        *,
        history_size: int = 100,
        lr: float = 1.0,
        low: float = 0.0,
        high: float = 1.0,
        sufficient_decrease: float = 1e-4,
        max_backtracks: int = 12,
    ):
        self.x = image.detach().clamp(low, high)
        self.frames = self.x.shape[0]
        self.objective = objective
        self.history = FrameHistories(self.frames, history_size)
        self.lr = lr
        self.low, self.high = low, high
        self.c1 = sufficient_decrease
        self.max_backtracks = max_backtracks
        self.loss: torch.Tensor | None = None
        self.grad: torch.Tensor | None = None
        self.report: torch.Tensor | None = None
        self.loss_values: list[float] = []
        self.report_values: list[list[float]] = []
        # sy / yy of each frame's newest pair: the scale of its initial inverse Hessian; 0
        # for a frame without pairs (an accepted pair has sy > 0, hence a positive scale)
        self.scale = self.x.new_zeros(self.frames)
        self.evaluations = 0

    def _evaluate(self, x: torch.Tensor) -> _Evaluation:
        x = x.detach().requires_grad_(True)
        totals, report = self.objective(x)
        if totals.shape != (self.frames,) or report.dim() != 2 or report.shape[0] != self.frames:
            raise ValueError(
                f"a batch objective of {self.frames} frames must return totals of shape ({self.frames},) "
                f"and a report ({self.frames}, K), got {tuple(totals.shape)} and {tuple(report.shape)}"
            )
        (grad,) = torch.autograd.grad(totals.sum(), x)
        self.evaluations += 1
        return totals.detach(), grad, report

    def _direction(self, grad: torch.Tensor) -> torch.Tensor:
        """-H grad frame by frame by the two-loop recursion (no host sync)."""
        q = grad.neg()
        alphas = []
        for pair in reversed(self.history):
            alpha = _per_frame(pair.rho * _frame_dots(_used(pair.s, q), q), q)
            q.addcmul_(_used(pair.y, q), alpha, value=-1.0)
            alphas.append(alpha)
        q.mul_(_per_frame(torch.where(self.scale > 0, self.scale, _steepest_scale(grad)), q))
        for pair, alpha in zip(self.history, reversed(alphas), strict=True):
            beta = _per_frame(pair.rho * _frame_dots(_used(pair.y, q), q), q)
            q.addcmul_(_used(pair.s, q), alpha - beta)
        return q

    def _forget(self, frame: int) -> None:
        self.history.clear(frame)
        self.scale[frame] = 0.0

    def step(self) -> list[list[float]]:
        """One iteration of every frame. Returns each frame's report of the image it ends on
        (``self.x[i]``) as floats; NaNs for a frame whose loss became non-finite (it stays)."""
        _, grad, _ = self._current()
        direction = self._direction(grad)
        search = _LineSearch(self.frames, self.lr)
        candidate = (self.x + self.lr * direction).clamp_(self.low, self.high)
        for attempt in range(self.max_backtracks):
            if attempt:
                for i in search.searching:
                    candidate[i] = (self.x[i] + search.t[i] * direction[i]).clamp_(self.low, self.high)
            evaluation = self._evaluate(candidate)
            values = self._checks(candidate, direction, evaluation)
            accepted = self._judge(values, search, attempt, direction)
            if attempt == self.max_backtracks - 1:  # line search exhausted: BoxLBFGS's last resorts
                accepted += self._last_resorts(values, search, accepted)
            search.keep(accepted, evaluation, values)
            if not search.searching:
                break
        if search.moved:
            self._move(candidate, search)
        return [
            [math.nan] * len(row) if i in search.failed else row for i, row in enumerate(self.report_values)
        ]

    def _current(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The loss, gradient and report at ``self.x``, evaluated on the first iteration."""
        if self.loss is None or self.grad is None or self.report is None:
            self.loss, self.grad, self.report = self._evaluate(self.x)
            values = torch.cat([self.loss[:, None], self.report.float()], dim=1).tolist()
            self.loss_values = [row[0] for row in values]
            self.report_values = [row[1:] for row in values]
        return self.loss, self.grad, self.report

    def _checks(
        self, candidate: torch.Tensor, direction: torch.Tensor, evaluation: _Evaluation
    ) -> list[list[float]]:
        """Per frame, for the line search: the candidate's loss, the Armijo bound, s.y, y.y and
        the direction's slope, then the candidate's report (one host sync for all)."""
        loss, grad, _ = self._current()
        new_loss, new_grad, new_report = evaluation
        taken = candidate - self.x
        y = new_grad - grad
        checks = torch.stack(
            [
                new_loss,
                loss + self.c1 * _frame_dots(grad, taken),
                _frame_dots(taken, y),
                _frame_dots(y, y),
                _frame_dots(direction, grad),
            ],
            dim=1,
        )
        return torch.cat([checks, new_report.float()], dim=1).tolist()

    def _judge(
        self, values: list[list[float]], search: _LineSearch, attempt: int, direction: torch.Tensor
    ) -> list[int]:
        """The searching frames whose candidate passes the Armijo test. A frame whose direction
        is not downhill at the first attempt forgets its curvature and tries steepest descent;
        the others halve their step."""
        _, grad, _ = self._current()
        accepted = []
        for i in search.searching:
            new, bound, _, _, slope = values[i][:5]
            if slope >= 0 and attempt == 0 and self.history.counts[i]:  # not downhill: forget curvature
                self._forget(i)
                direction[i] = grad[i].neg().mul_(_steepest_scale(grad[i : i + 1]))
            elif new <= bound:
                accepted.append(i)
            else:
                search.t[i] *= 0.5
        return accepted

    def _last_resorts(self, values: list[list[float]], search: _LineSearch, accepted: list[int]) -> list[int]:
        """After the last attempt, the frames still searching: a non-finite loss fails (the
        caller stops the run with a message), a loss no lower stays and starts its curvature
        afresh, a lower one is accepted (returned)."""
        lower = []
        for i in search.searching:
            new = values[i][0]
            if i in accepted:
                continue
            if not math.isfinite(new):
                search.failed.add(i)
            elif not new < self.loss_values[i]:
                self._forget(i)
            else:
                lower.append(i)
        return lower

    def _move(self, candidate: torch.Tensor, search: _LineSearch) -> None:
        """Take the accepted points: frames that stay keep their point and its values; store
        the new curvature pairs."""
        assert search.kept is not None
        kept = search.kept
        for i in range(self.frames):
            if i not in search.moved:
                candidate[i] = self.x[i]
                for mine, theirs in zip(kept, self._current(), strict=True):
                    mine[i] = theirs[i]
        self._store_pairs(candidate, kept[1], search.moved)
        self.x, (self.loss, self.grad, self.report) = candidate, kept
        for i, values in search.moved.items():
            self.loss_values[i] = values[0]
            self.report_values[i] = values[5:]

    def _store_pairs(
        self, candidate: torch.Tensor, new_grad: torch.Tensor, moved: dict[int, list[float]]
    ) -> None:
        """Store the curvature pairs of the frames that ``moved`` (frame -> checks of its
        accepted point) where they pass BoxLBFGS's test sy > 1e-10 yy."""
        frames = {i for i, values in moved.items() if values[2] > 1e-10 * values[3]}
        if not frames:
            return
        s = candidate - self.x
        y = new_grad - self._current()[1]
        sy, yy = _frame_dots(s, y), _frame_dots(y, y)
        rho = sy.reciprocal()
        for i in range(self.frames):
            if i in frames:
                self.scale[i] = sy[i] / yy[i]
            else:
                s[i].zero_()
                y[i].zero_()
                rho[i] = 0.0
        self.history.add(_kept(s), _kept(y), rho, frames)
