"""One run as a pipeline: plan -> jobs -> read -> optimise -> sink (docs/architecture.md).

``plan`` checks a run before it starts; a planner (``jobs``, ``time_series``) makes its jobs;
``reader`` reads each job's input; ``optimise`` takes a batch of jobs through its
coarse-to-fine levels and yields the step records; a sink (``sinks``) takes each finished
image; ``executors`` runs jobs here or on a ``concurrent.futures.Executor``; ``runner`` ties
them together. Nothing here imports napari, Qt or dask.
"""
