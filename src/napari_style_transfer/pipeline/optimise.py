"""One batch of jobs through its coarse-to-fine levels: the start image of each level, the
objective (kept while the style sizes stay), the optimiser's steps and their records."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..engine import (
    Losses,
    StyleObjective,
    compute_dtype,
    evaluate,
    initial_image,
    memory_format,
    optimize,
    optimize_frames,
    resize,
)
from ..frames import fill_styling
from ..lbfgs import CarriedCurvature
from ..options import StyleOptions
from ..vgg import VGGFeatures
from ..weights import LoadedWeights, load_vgg19_features
from .canvas import Canvas
from .jobs import Carry, Job, Planner, batches
from .plan import Level, Plan
from .reader import JobInput, Reader
from .records import Progress, StepRecord
from .sinks import Sink

#: The style statistics a time series' later frame is compared with: "held" (those of the
#: warped previous result over the pixels the frame holds), "previous" (over the whole warped
#: result) or "style" (the styles', as every first frame). Against the styles', the few free
#: pixels of a mostly held frame took the first frame's remaining style error as bright
#: strokes, which the next frame held: the outline behind the bundled time-lapse's crawling
#: nuclei and the joined pair. "held" left out a moving object that is free as a whole, and
#: pulled it towards the background's look (a 96 px disc faded to grey); "previous" keeps it
#: (docs/timelapse.md, "The style statistics of a later frame").
LATER_FRAME_STYLE = "previous"


@dataclass(frozen=True)
class Model:
    """The network of a run on its device, and where its weights came from."""

    extractor: VGGFeatures
    weights: LoadedWeights
    dtype: torch.dtype


def load_model(p: Plan, precision: str | None = None) -> Model:
    """The network of ``p``, computing in ``precision`` where given, else in the options'."""
    opts = p.options
    loaded = load_vgg19_features(opts.weights, deepest=opts.layers[-1])
    dtype = compute_dtype(precision or opts.precision, p.device)
    extractor = VGGFeatures(loaded.features, opts.layers, opts.pooling)
    layout = memory_format(opts.channels_last, p.device, dtype)
    extractor = extractor.to(p.device, memory_format=layout)  # type: ignore[call-overload]
    return Model(extractor, loaded, dtype)


class Optimiser:
    """Takes batches of jobs through their levels, one batch after the other, keeping the
    objective (the styles' targets) while the style sizes stay the same."""

    def __init__(self, p: Plan, model: Model, styles: list[torch.Tensor], progress: Progress):
        self.plan, self.model, self.styles, self.progress = p, model, styles, progress
        self._objective: StyleObjective | None = None
        self._objective_style: tuple[tuple[int, int], ...] | None = None  # its targets' style sizes
        self.images: torch.Tensor | None = None  # the last batch's results (N, 3, H, W)
        self.canvases: torch.Tensor | None = None  # ... on their canvases, margin included
        # the last job's content and result on their canvas, for the final losses
        self._last_canvas: tuple[torch.Tensor, torch.Tensor] | None = None

    def run_jobs(
        self, jobs: Sequence[Job], planner: Planner, reader: Reader, sink: Sink, batch: int
    ) -> Iterator[StepRecord]:
        """``jobs`` in this thread, ``batch`` of them through the network at once (one job of
        a time series): each batch read when its turn comes, each finished image handed to
        ``sink``. One generator from here down to the optimiser's steps: the run's records
        cross no module boundary but the records' own."""
        for group in batches(jobs, batch):
            inputs, link = reader.read(group)
            carry = planner.carry(group[0], link)
            yield from self.run(group, inputs, carry, sink)
            assert self.canvases is not None
            planner.keep(group[0], carry, self.canvases)

    def run(
        self, jobs: Sequence[Job], inputs: Sequence[JobInput], carry: Carry, sink: Sink
    ) -> Iterator[StepRecord]:
        """The records of every step of ``jobs`` (one per job per step, in frame order); a
        snapshot's or a job's last step's record has its image rendered when yielded, the
        last one's handed to ``sink``."""
        opts, levels = self.plan.options, jobs[0].levels
        steps = sum(level.steps for level in levels)
        contents_full = [job_input.content for job_input in inputs]
        finishes = [job_input.finish for job_input in inputs]
        labels_of = self.plan.regions
        images = None
        done = 0
        for level in levels:
            contents = torch.cat([resize(content, *level.content_shape) for content in contents_full])
            styles = [
                resize(full, *shape) for full, shape in zip(self.styles, level.style_shapes, strict=True)
            ]
            labels = None if labels_of is None else labels_of.at(jobs[0].index, level.content_shape)
            canvas = Canvas.around(level.content_shape, later_frame=carry.temporal is not None)
            start = _start(contents, styles[0], opts, carry, labels, level, images, canvas)
            contents = canvas.pad(contents)
            objective = self._objective_for(level, styles)
            if labels is not None:  # one frame at a time (see memory_checks.frames_per_batch)
                labels = canvas.pad_labels(labels)
                objective.set_regions(torch.from_numpy(labels)[None, None].to(self.plan.device))
            objective.set_temporal(*(carry.temporal or (None,)))  # on the canvas already
            if labels is None:  # regions keep their own styles' statistics
                objective.set_style_statistics(*_later_frame_statistics(carry))
            # the working size's pairs go on to the next frame, not a coarser level's
            curvature = carry.curvature if level is levels[-1] else None
            for _, losses, canvases in _optimise_batch(
                objective, contents, start, opts, level.steps, curvature
            ):
                images = canvas.crop(canvases)
                done += 1
                records = self.progress.step(
                    jobs, steps, finishes, losses, images, done, max(level.content_shape)
                )
                # every record of the step exists before the first is yielded, so a run stopped
                # between them still has each frame's image (batch_images)
                for record in records:
                    if record.is_snapshot:
                        record.render()
                    if done == steps:
                        sink.take(record.frame, record.render())
                    yield record
            assert images is not None  # a level has at least one step
            images = images.detach().clone()
        self.canvases = canvases.detach().clone()
        self.images, self._last_canvas = images, (contents[-1:], self.canvases[-1:])
        self.progress.finished(jobs, steps)

    def final_losses(self) -> Losses:
        """The losses of the last job's result at the working size, on its canvas (margin included,
        as the optimiser saw it)."""
        assert self._objective is not None and self._last_canvas is not None
        content, image = self._last_canvas
        self._objective.set_content(content)
        return evaluate(self._objective, image)

    def _objective_for(self, level: Level, styles: list[torch.Tensor]) -> StyleObjective:
        if self._objective is None or self._objective_style != level.style_shapes:
            # no content here: each batch sets its own (_optimise_batch), so none is computed twice
            self._objective = StyleObjective(
                self.model.extractor, None, styles, self.plan.options, self.model.dtype
            )
            self._objective_style = level.style_shapes
        return self._objective


def _start(
    contents: torch.Tensor,
    style: torch.Tensor,
    opts: StyleOptions,
    carry: Carry,
    labels: np.ndarray | None,
    level: Level,
    coarser: torch.Tensor | None,
    canvas: Canvas,
) -> torch.Tensor:
    """A level's start on its ``canvas``: the warped previous result, margin included (a time
    series' later frame), or, mirrored into the margin, each frame's own start at the first
    level (the same noise for one seed; init="style" from the first style) or the coarser
    level's result enlarged."""
    if coarser is None and carry.start is not None:  # a tile's or a time pass's own start
        return canvas.pad(carry.start)
    if carry.temporal is not None and carry.link is not None:
        padded = None if labels is None else canvas.pad_labels(labels)
        return _temporal_start(canvas.pad(contents), style, opts, carry, padded)
    if coarser is None:
        starts = [initial_image(content[None], style, opts.init, opts.seed) for content in contents]
        return canvas.pad(torch.cat(starts))
    return canvas.pad(resize(coarser, *level.content_shape).clamp(0, 1))


def _later_frame_statistics(carry: Carry) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """What a frame's style statistics come from (a time pass's own previous result, else see
    LATER_FRAME_STYLE): an image and the pixels of it that count, or (None, None) for the
    styles' own."""
    if carry.statistics is not None:
        return carry.statistics, None
    if carry.temporal is None or LATER_FRAME_STYLE == "style":
        return None, None
    warped, held = carry.temporal
    return warped, (held if LATER_FRAME_STYLE == "held" else None)


def _temporal_start(
    contents: torch.Tensor, style: torch.Tensor, opts: StyleOptions, carry: Carry, labels: np.ndarray | None
) -> torch.Tensor:
    """Where the content is new (uncovered, changed) the warped result would bring the old
    content's style along, and a first frame's start would stay nearly unstyled there (the
    rest of the image already matches the style, so the style loss barely pulls on a few new
    pixels). They start from their content plus the styling (result - content) of known
    pixels nearby instead (of their own style region; still ones first: frames.fill_styling),
    whatever ``init``."""
    assert carry.temporal is not None and carry.link is not None
    warped, link = carry.temporal[0], carry.link
    styling, copied = fill_styling(warped - contents, link, labels)
    fresh = initial_image(contents, style, opts.init, opts.seed)
    fresh = torch.where(copied > 0, (contents + styling).clamp(0.0, 1.0), fresh)
    return warped + link.fresh * (fresh - warped)


def _optimise_batch(
    objective: StyleObjective,
    contents: torch.Tensor,
    start: torch.Tensor,
    opts: StyleOptions,
    steps: int,
    carried: CarriedCurvature | None = None,
) -> Iterator[tuple[int, list[Losses], torch.Tensor]]:
    """``optimize`` for one frame (with ``carried``'s curvature pairs), ``optimize_frames``
    for a batch: (step, each frame's losses, images)."""
    if len(start) > 1:
        return optimize_frames(objective, contents, start, opts, steps)
    objective.set_content(contents)
    return (
        (step, [losses], image) for step, losses, image in optimize(objective, start, opts, steps, carried)
    )
