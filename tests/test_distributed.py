"""Batches and stacks on a real dask.distributed cluster: one LocalCluster of two worker
processes for the module, and a scheduler and worker started with dask's own commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_style_transfer import StyleTransferError, stylize, stylize_batch
from napari_style_transfer._image import to_uint8
from napari_style_transfer.cli import main
from napari_style_transfer.files import read_image

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory, untrained_vgg19_state):
    import torch

    path = tmp_path_factory.mktemp("weights") / "untrained_vgg19.pth"
    torch.save(untrained_vgg19_state, path)
    return path


@pytest.fixture(scope="module")
def client():
    from napari_style_transfer.distributed import cluster_client

    with cluster_client(workers=2, torch_threads=1) as client:
        yield client


@pytest.fixture
def two_workers(client):
    """The module's client with both workers up (a test before may have killed one)."""
    client.wait_for_workers(2, timeout=300)
    return client


def test_a_dask_array_computed_while_a_cluster_is_open_runs_here_not_on_it(two_workers):
    import dask
    import dask.array as da

    # our client is not dask's default: a lazy layer's tiles are read in this process
    assert dask.config.get("scheduler", None) is None
    with pytest.raises(ValueError):
        distributed.default_client()
    assert int(da.ones(8, chunks=4).sum().compute()) == 8


@pytest.fixture
def files(tmp_path, content, style):
    paths = []
    for number in range(3):
        path = tmp_path / f"in{number}.tif"
        # 16-bit inputs: results are float32 TIFFs, compared without PNG's rounding
        Image.fromarray(np.roll(content[..., number % 3], number * 5, axis=1).astype(np.uint16) * 200).save(
            path
        )
        paths.append(path)
    style_path = tmp_path / "style.png"
    Image.fromarray(to_uint8(style)).save(style_path)
    return paths, style_path


#: How far a result on the cluster may be from the same run here, on as many torch threads:
#: measured 0.0 (the same arithmetic in another process).
SAME_RUN = 1e-6


def options(weights_file):
    return {"steps": 2, "size": 32, "weights": str(weights_file), "seed": 4}


def test_batch_results_on_a_cluster_equal_single_runs_with_the_same_seed(
    tmp_path, files, two_workers, weights_file, one_thread
):
    import tifffile

    inputs, style = files
    records = stylize_batch(inputs, [style], tmp_path / "out", client=two_workers, **options(weights_file))
    assert [r["status"] for r in records] == ["done"] * 3
    for path in inputs:
        alone = stylize(read_image(path, "content"), read_image(style, "style"), **options(weights_file))
        written = tifffile.imread(tmp_path / "out" / f"{path.stem}__style.tif")
        np.testing.assert_allclose(written, alone, rtol=0, atol=SAME_RUN)


def test_each_worker_keeps_its_network_between_items(tmp_path, files, two_workers, weights_file):
    inputs, style = files
    stylize_batch(inputs, [style], tmp_path / "out", client=two_workers, **options(weights_file))
    # a lambda travels by value (this test module cannot be imported on the workers); three
    # items on two workers: one worker ran two or more, and loaded the weights once
    loads = two_workers.run(lambda: __import__("napari_style_transfer.weights", fromlist=["x"])._KEPT.loads)
    assert set(loads.values()) <= {0, 1} and 1 in loads.values()


def test_a_corrupt_input_on_a_cluster_is_recorded_and_the_others_finish(
    tmp_path, files, two_workers, weights_file
):
    inputs, style = files
    (tmp_path / "broken.tif").write_bytes(b"II*\x00 damaged")
    records = stylize_batch(
        [tmp_path / "broken.tif", inputs[0]],
        [style],
        tmp_path / "out",
        client=two_workers,
        **options(weights_file),
    )
    assert [r["status"] for r in records] == ["failed", "done"]
    on_disk = json.loads((tmp_path / "out" / "batch.json").read_text())["items"]
    assert "could not read input image" in on_disk[0]["message"]


def test_a_worker_killed_mid_batch_loses_no_item(tmp_path, files, two_workers, weights_file):
    inputs, style = files
    killed = []

    def kill_a_busy_worker(record):
        if killed:
            return
        busy = {address: keys for address, keys in two_workers.processing().items() if keys}
        assert busy, "no task in flight when the first item finished"
        address = next(iter(busy))
        pid = two_workers.run(os.getpid, workers=[address])[address]
        os.kill(pid, signal.SIGKILL)
        killed.append((address, busy[address]))

    records = stylize_batch(
        inputs,
        [style],
        tmp_path / "out",
        client=two_workers,
        on_item=kill_a_busy_worker,
        **options(weights_file),
    )
    assert killed
    assert [r["status"] for r in records] == ["done"] * 3
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tif")) == [
        f"{p.stem}__style.tif" for p in inputs
    ]


def test_a_stacks_frames_on_a_cluster_equal_the_single_process_run(
    two_workers, weights_file, content, style, one_thread
):
    stack = np.stack([content[..., 0], content[..., 1], content[..., 2]]).astype(np.uint16) * 250
    spread = stylize(stack, style, client=two_workers, **options(weights_file))
    alone = stylize(stack, style, **options(weights_file))
    np.testing.assert_allclose(spread, alone, rtol=0, atol=SAME_RUN)


def test_a_time_series_cannot_be_spread_over_a_cluster(two_workers, weights_file, content, style):
    stack = np.stack([content, content])
    with pytest.raises(StyleTransferError, match="frames='independent'"):
        stylize(stack, style, client=two_workers, frames="time", **options(weights_file))


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path, image_files, capsys):
    content_path, style_path = image_files
    argv = ["batch", "-o", str(tmp_path / "out"), "--style", str(style_path), str(content_path)]
    assert main([*argv, "--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "1", "-q"]) == 2
    error = capsys.readouterr().err
    assert "cannot reach the dask scheduler at tcp://127.0.0.1:9 within 1 s" in error


@pytest.fixture
def dask_cluster_processes(tmp_path):
    """A scheduler and one worker started with dask's own commands, as separate processes."""
    scheduler_file = tmp_path / "scheduler.json"
    command = Path(sys.executable).with_name("dask")  # dask's own command, beside this Python
    dask = (
        [str(command), "scheduler"]
        if command.is_file()
        else [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    )
    worker_cli = (
        [str(command), "worker"]
        if command.is_file()
        else [sys.executable, "-m", "distributed.cli.dask_worker"]
    )
    started = [
        subprocess.Popen(
            [
                *dask,
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(scheduler_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        with distributed.Client(scheduler_file=str(scheduler_file), timeout=300) as probe:
            address = probe.scheduler.address
        started.append(
            subprocess.Popen(
                [*worker_cli, address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        yield address
    finally:
        for process in reversed(started):
            process.terminate()
        for process in started:
            process.wait(timeout=60)


def test_the_batch_command_runs_on_a_scheduler_and_worker_started_with_dask_commands(
    tmp_path, files, dask_cluster_processes, weights_file
):
    inputs, style = files
    argv = ["batch", "-o", str(tmp_path / "out"), "--style", str(style), *map(str, inputs[:2])]
    run = ["--steps", "2", "--size", "32", "--weights", str(weights_file), "-q", "--connect-timeout", "300"]
    assert main([*argv, *run, "--scheduler", dask_cluster_processes]) == 0
    assert sorted(Path(p).name for p in (tmp_path / "out").glob("*.tif")) == [
        "in0__style.tif",
        "in1__style.tif",
    ]


def test_a_scheduler_without_workers_is_a_clear_error():
    from napari_style_transfer.distributed import connect

    with (
        distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as empty,
        pytest.raises(StyleTransferError, match="has no workers after 1 s; start one with `dask worker"),
    ):
        connect(empty.scheduler_address, timeout=1)


def test_a_cluster_started_here_has_one_worker_per_gpu_each_pinned_to_its_own(monkeypatch):
    from types import SimpleNamespace

    import torch

    from napari_style_transfer.distributed import _THREADS_VARIABLE, WorkerSetup, default_workers

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert default_workers() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # restored after the test, as is the next
    monkeypatch.setenv(_THREADS_VARIABLE, "")
    setup = WorkerSetup(gpus=2, workers_here=2)
    pinned = []
    for name in (0, 1, 2):  # a restarted worker gets the next number
        setup.setup(SimpleNamespace(name=name, state=SimpleNamespace(nthreads=1)))
        pinned.append(os.environ["CUDA_VISIBLE_DEVICES"])
    assert pinned == ["0", "1", "0"]


def test_a_rerun_on_a_cluster_skips_everything_done_and_leaves_the_files_untouched(
    tmp_path, files, two_workers, weights_file
):
    inputs, style = files
    out = tmp_path / "out"
    stylize_batch(inputs, [style], out, client=two_workers, **options(weights_file))
    before = {path.name: path.stat().st_mtime_ns for path in out.glob("*.tif")}
    records = stylize_batch(inputs, [style], out, client=two_workers, **options(weights_file))
    assert [r["status"] for r in records] == ["skipped"] * 3
    assert {path.name: path.stat().st_mtime_ns for path in out.glob("*.tif")} == before


def test_the_dask_dashboard_address_is_printed_when_there_is_one(
    tmp_path, files, two_workers, weights_file, monkeypatch, capsys
):
    from napari_style_transfer import distributed as ours

    inputs, style = files
    monkeypatch.setattr(ours, "dashboard", lambda client: "http://127.0.0.1:8787/status")
    stylize_batch(
        inputs[:1], [style], tmp_path / "out", client=two_workers, progress=True, **options(weights_file)
    )
    assert "dask dashboard: http://127.0.0.1:8787/status" in capsys.readouterr().err


def listening(pids):
    """(host, port) of every socket that the processes ``pids`` listen on."""
    import psutil

    return {
        (sock.laddr.ip, sock.laddr.port)
        for pid in pids
        for sock in psutil.Process(pid).net_connections("tcp")
        if sock.status == psutil.CONN_LISTEN
    }


def test_a_cluster_started_here_serves_no_dashboard_and_listens_on_this_machine_only(two_workers):
    from napari_style_transfer.distributed import dashboard

    assert dashboard(two_workers) is None
    info = two_workers.scheduler_info()
    ports = {int(info["address"].rsplit(":", 1)[1]), *info["services"].values()}  # its info pages
    for worker in info["workers"].values():
        ports |= {int(worker["nanny"].rsplit(":", 1)[1])}
    ours = {address for address in listening([os.getpid()]) if address[1] in ports}
    workers = listening(two_workers.run(os.getpid).values())
    assert len(ours) == len(ports) and workers
    assert {host for host, _ in ours | workers} == {"127.0.0.1"}


def test_the_dashboard_flag_serves_it_on_this_machine_only_and_prints_its_address(
    tmp_path, image_files, weights_file, monkeypatch, capsys
):
    from napari_style_transfer import distributed as ours

    content_path, style_path = image_files
    bound = []

    def dashboard_seen(client):
        link = original(client)
        port = int(link.split(":")[2].split("/")[0])
        bound.extend(host for host, number in listening([os.getpid()]) if number == port)
        return link

    original = ours.dashboard
    monkeypatch.setattr(ours, "dashboard", dashboard_seen)
    argv = ["batch", "-o", str(tmp_path / "out"), "--style", str(style_path), str(content_path)]
    run = ["--workers", "1", "--steps", "1", "--size", "32", "--weights", str(weights_file), "--dashboard"]
    assert main([*argv, *run]) == 0
    assert "dask dashboard: http://127.0.0.1:" in capsys.readouterr().err
    assert bound == ["127.0.0.1"]


def test_the_workers_of_one_machine_share_its_cpus_among_their_torch_threads(monkeypatch):
    from types import SimpleNamespace

    from napari_style_transfer import distributed as ours
    from napari_style_transfer import memory

    monkeypatch.setattr(memory, "usable_cpus", lambda: 8)
    monkeypatch.setenv(ours._THREADS_VARIABLE, "")  # restored after the test
    threads = []
    for setup in (
        ours.WorkerSetup(workers_here=2),
        ours.WorkerSetup(workers_here=3),
        ours.WorkerSetup(workers_here=16),
    ):
        setup.setup(SimpleNamespace(name=0, state=SimpleNamespace(nthreads=1)))
        threads.append(os.environ[ours._THREADS_VARIABLE])
    assert threads == ["4", "2", "1"]


class CountedFrames:
    """A frame source (see ``_image.is_frame_source``) that records each frame read; the
    frame ``bad`` (if given) is unreadable, as a NaN frame is."""

    def __init__(self, stack, bad=None, on_read=None):
        self.stack, self.bad, self.on_read = stack, bad, on_read
        self.shape, self.dtype, self.ndim = stack.shape, stack.dtype, stack.ndim
        self.value_range = (0.0, 1.0)
        self.read = []

    def __getitem__(self, index):
        self.read.append(index)
        if self.on_read is not None:
            self.on_read()
        if index == self.bad:
            raise StyleTransferError(f"frame {index} contains NaN values")
        return self.stack[index]


class RecordingClient:
    """What ``iter_frames`` asks of a dask client before any task comes back: submit and cancel."""

    def __init__(self):
        self.submitted, self.cancelled = [], []

    def submit(self, *args, **kwargs):
        future = object()
        self.submitted.append(future)
        return future

    def cancel(self, futures):
        self.cancelled.extend(futures)


def a_stack(content):
    return np.stack([content[..., 0], content[..., 1], content[..., 2]])


def test_a_stop_set_before_the_frames_are_submitted_reads_and_submits_none(content, style):
    import threading

    from napari_style_transfer.distributed import iter_frames

    source, client, stop = CountedFrames(a_stack(content)), RecordingClient(), threading.Event()
    stop.set()
    assert list(iter_frames(client, source, style, stop=stop, frames="independent", weights="random")) == []
    assert source.read == [] and client.submitted == []


def test_a_stop_during_submission_reads_no_further_frame_and_cancels_those_submitted(content, style):
    import threading

    from napari_style_transfer.distributed import iter_frames

    stop = threading.Event()
    source, client = CountedFrames(a_stack(content), on_read=stop.set), RecordingClient()
    assert list(iter_frames(client, source, style, stop=stop, frames="independent", weights="random")) == []
    assert source.read == [(0,)]
    assert len(client.submitted) == 2  # the style and the first frame
    assert sorted(map(id, client.cancelled)) == sorted(map(id, client.submitted))


def test_a_frame_that_fails_partway_through_submission_cancels_the_frames_submitted(content, style):
    from napari_style_transfer.distributed import iter_frames

    source, client = CountedFrames(a_stack(content), bad=(1,)), RecordingClient()
    with pytest.raises(StyleTransferError, match="NaN"):
        list(iter_frames(client, source, style, frames="independent", weights="random"))
    assert len(client.submitted) == 2  # the style and the first frame
    assert sorted(map(id, client.cancelled)) == sorted(map(id, client.submitted))


#: A dask worker preload (``distributed.worker.preload``) that makes each worker misbehave by
#: file name: ``raises*`` makes the reader raise an error foreign to this package, ``escapes*``
#: raises one outside the item's run (so that dask itself records the task as failed),
#: ``dies*`` ends the worker process at once, as a crash or the kernel's out-of-memory killer
#: would. A preload runs again in each restarted worker, so a task that kills its worker kills
#: the next one too.
MISBEHAVING_READER = """
import os
from pathlib import Path

from napari_style_transfer import batch, distributed

_read = batch.read_image
_run_task = distributed._run_task


def _misbehaving_read(path, *args, **kwargs):
    name = Path(path).name
    if name.startswith("raises"):
        raise ZeroDivisionError("a reader bug, not a StyleTransferError")
    if name.startswith("dies"):
        os._exit(3)
    return _read(path, *args, **kwargs)


def _escaping_run_task(item, *args):
    if Path(item.input).name.startswith("escapes"):
        raise ZeroDivisionError("a bug outside the item's run")
    return _run_task(item, *args)


def dask_setup(worker):
    batch.read_image = _misbehaving_read
    distributed._run_task = _escaping_run_task  # tasks name it: the worker looks it up here
"""


def test_a_task_that_raises_and_one_that_kills_its_worker_fail_alone(
    tmp_path, image_files, weights_file, monkeypatch, capsys
):
    import dask

    from napari_style_transfer import distributed as ours

    content_path, style_path = image_files
    # the next item after the one that kills its worker must not die with it
    inputs = [tmp_path / f"{name}.png" for name in ("dies", "a", "raises", "escapes", "b")]
    for path in inputs:
        path.write_bytes(content_path.read_bytes())
    preload = tmp_path / "misbehaving_reader.py"
    preload.write_text(MISBEHAVING_READER)
    monkeypatch.setattr(ours, "ALLOWED_FAILURES", 1)  # KilledWorker after the second death
    argv = ["batch", "-o", str(tmp_path / "out"), "--style", str(style_path), *map(str, inputs)]
    run = ["--workers", "1", "--steps", "2", "--size", "32", "--weights", str(weights_file), "-q"]
    with dask.config.set({"distributed.worker.preload": [str(preload)]}):
        assert main([*argv, *run]) == 1
    assert "2 done, 0 skipped, 3 failed of 5 items" in capsys.readouterr().out
    record = json.loads((tmp_path / "out" / "batch.json").read_text())["items"]
    assert [item["status"] for item in record] == ["failed", "done", "failed", "failed", "done"]
    assert "its worker died 2 times running it" in record[0]["message"]
    assert "ZeroDivisionError: a reader bug, not a StyleTransferError" in record[2]["message"]
    assert record[3]["message"] == "ZeroDivisionError: a bug outside the item's run"
    assert sorted(path.name for path in (tmp_path / "out").glob("*.png")) == ["a__style.png", "b__style.png"]


class _Future:
    """As a dask future looks to run_batch once as_completed has handed it over."""

    def __init__(self, key, status):
        self.key, self.status, self.released = key, status, False

    def exception(self):
        return None

    def release(self):
        self.released = True


class _Client:
    """Submits nothing: each task's future ends in the status its key names."""

    cluster = loop = None

    def __init__(self, ends):
        self.ends, self.submitted, self.cancelled = ends, [], []

    def scheduler_info(self):
        return {}

    def submit(self, function, *args, key, pure):
        future = _Future(key, self.ends.get(key.rsplit("-", 1)[0], "finished"))
        self.submitted.append(future)
        return future

    def cancel(self, futures):
        self.cancelled.extend(futures)


def test_a_result_that_came_back_counts_though_its_worker_died_after_and_an_error_is_named(monkeypatch):
    from types import SimpleNamespace

    from distributed import KilledWorker
    from distributed.client import FutureCancelledError

    from napari_style_transfer import distributed as ours
    from napari_style_transfer.batch import Outcome

    done = Outcome(np.zeros((2, 2)), {}, "", 1.0)
    error = ZeroDivisionError("a reader bug")
    killed = KilledWorker("stylize-2", None, 1)
    # what as_completed yields: the value fetched, while the status is read later (CI saw a
    # worker die between the two: the handed-over result was then "lost", not "finished")
    values = {
        "stylize-0": (done, []),
        "stylize-1": (ZeroDivisionError, error, None),
        "stylize-2": (KilledWorker, killed, None),
        "stylize-3": FutureCancelledError("stylize-3", "scheduler restarted"),
    }

    def as_completed(futures, *, loop, with_results, raise_errors):
        assert with_results and not raise_errors  # a failed task must not end the batch
        return [(f, values[f.key.rsplit("-", 1)[0]]) for f in list(futures)]

    monkeypatch.setattr(ours, "as_completed", as_completed)
    client = _Client(
        {"stylize-0": "lost", "stylize-1": "error", "stylize-2": "error", "stylize-3": "cancelled"}
    )
    batch = SimpleNamespace(styles=[np.zeros((2, 2))], items=[SimpleNamespace(style_index=0)] * 4, options={})
    outcomes = dict(ours.run_batch(client, batch, [0, 1, 2, 3]))
    assert outcomes[0] is done
    assert outcomes[1].error == "ZeroDivisionError: a reader bug"
    assert outcomes[2].error.startswith("its worker died 2 times running it")
    assert outcomes[3].error.startswith("its task was cancelled on the cluster")
    tasks = [future for future in client.submitted if future.key.startswith("stylize")]
    assert all(future.released for future in tasks)  # a result lost later is not computed again
    assert not set(tasks) & set(client.cancelled)


def test_on_a_cluster_started_here_a_task_that_kills_its_worker_takes_no_other_task_with_it(monkeypatch):
    import time

    from distributed import as_completed

    from napari_style_transfer import distributed as ours

    # functions defined here travel by value (this module cannot be imported on the workers)
    def keep(value):
        return value

    def task(name, style):
        if name == "dies":
            os._exit(3)
        time.sleep(0.3)  # an item takes a while: the next one waits for the worker meanwhile
        return name

    monkeypatch.setattr(ours, "ALLOWED_FAILURES", 1)
    with ours.cluster_client(workers=1, torch_threads=1) as client:
        style = client.submit(keep, 1, key="style-0-test")  # as run_batch's tasks, each needs its style
        futures = {
            client.submit(task, name, style, key=f"stylize-{number}-test"): name
            for number, name in enumerate(("dies", "next", "last"))
        }
        ended = {futures[f]: f.status for f in as_completed(futures, loop=client.loop)}
    assert ended == {"dies": "error", "next": "finished", "last": "finished"}
