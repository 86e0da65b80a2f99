"""size="full" on a dask cluster: each level's tiles run as tasks on the workers, written
into the store as they finish (by the workers where the store is a path they reach, else by
the client), recorded so that a rerun resumes; a level's composition and blending stay on
the client, so the result is the run in one thread's (docs/slides.md, "On a cluster")."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import zarr
from test_full_resolution import FAST as TILED

from napari_style_transfer import api
from napari_style_transfer.cli import main
from napari_style_transfer.errors import StyleTransferError
from napari_style_transfer.pipeline import tile_tasks, tiled
from napari_style_transfer.pipeline.executors import elsewhere

distributed = pytest.importorskip("distributed")

# test_full_resolution's shallow layers (small windows, quick runs), two steps a tile
FAST = TILED | {"steps": 2, "size": "full", "tile_size": 32}

#: How far a tile run on a worker may be from the same tile run here on as many torch
#: threads: the same arithmetic in another process (measured 0.0).
SAME_RUN = 1e-6


@pytest.fixture(scope="module")
def client():
    from napari_style_transfer.distributed import cluster_client

    with cluster_client(workers=2, torch_threads=1) as client:
        yield client


@pytest.fixture
def slide(rng):
    # two levels: the composition at 32 x 24, then 64 x 48 in 2 x 2 tiles of 32
    return rng.random((64, 48, 3)).astype(np.float32)


def stored(out):
    return np.asarray(zarr.open_group(str(out))["0"][...])


def in_one_thread(slide, style, out):
    api.stylize(slide, style, out=str(out), **FAST)
    return stored(out)


def test_a_slide_on_a_cluster_equals_the_run_in_one_thread(tmp_path, slide, style, client, one_thread):
    fp = tiled.plan_full(slide, style, **FAST)
    assert [level.shape for level in fp.levels] == [(32, 24), (64, 48)]
    here = in_one_thread(slide, style, tmp_path / "here.ome.zarr")
    out = tmp_path / "cluster.ome.zarr"
    result = api.stylize(slide, style, client=client, out=str(out), **FAST)
    assert isinstance(result, zarr.Array)
    np.testing.assert_allclose(np.asarray(result[...]), here, rtol=0, atol=SAME_RUN)
    assert np.asarray(zarr.open_group(str(out))["finished_tiles"][...]).all()


@pytest.fixture
def written_here(monkeypatch):
    """The groups and cells that this process writes into result stores (workers are others)."""
    from napari_style_transfer.zarr_output import ResultStore

    writes = []
    write_tile = ResultStore.write_tile

    def recorded(store, row, column, pixels, frame=()):
        writes.append((store.group.path, row, column))
        write_tile(store, row, column, pixels, frame)

    monkeypatch.setattr(ResultStore, "write_tile", recorded)
    return writes


def test_workers_write_the_tiles_of_a_store_on_a_file_system_themselves(
    tmp_path, slide, style, client, written_here
):
    fp = tiled.plan_full(slide, style, **FAST)
    store = tiled.open_store(fp, str(tmp_path / "r.ome.zarr"))
    assert tile_tasks.shared_location(store) is not None
    records = list(tiled.run_full(fp, store, elsewhere(client)))
    # here: the composition's cell and the blended cells of the full level, no tile's piece
    assert sorted(written_here) == [
        ("", 0, 0),
        ("", 0, 1),
        ("", 1, 0),
        ("", 1, 1),
        ("scratch/level-32x24", 0, 0),
    ]
    # the composition's steps here, then one record per tile, each its last step's
    tile_records = records[FAST["steps"] :]
    assert sorted(r.frame_number for r in tile_records) == [1, 2, 3, 4]
    assert all(r.step == r.steps == FAST["steps"] and r.image is None for r in tile_records)
    assert records[-1].progress == pytest.approx(1.0)
    # the full level's pieces were recorded by the workers, blended here at the level's end
    pieces = store.scratch("pieces-64x48", (0,))
    assert pieces.finished().all() and store.finished().all()


def test_a_store_in_memory_gets_the_tiles_back_from_the_workers(
    slide, style, client, one_thread, written_here
):
    here = api.stylize(slide, style, **FAST)  # no out=: a store in memory, a numpy array back
    fp = tiled.plan_full(slide, style, **FAST)
    memory = tiled.open_store(fp, zarr.storage.MemoryStore())
    assert tile_tasks.shared_location(memory) is None
    written_here.clear()
    there = api.stylize(slide, style, client=client, **FAST)
    assert isinstance(there, np.ndarray)
    np.testing.assert_allclose(there, here, rtol=0, atol=SAME_RUN)
    pieces = sorted((row, column) for group, row, column in written_here if group.endswith("pieces-64x48"))
    assert pieces == [(0, 0), (0, 1), (1, 0), (1, 1)]  # each tile's piece came back and was written here


def test_a_run_stopped_here_resumes_on_the_cluster_and_ends_as_one_run(
    tmp_path, slide, style, client, one_thread
):
    whole = in_one_thread(slide, style, tmp_path / "whole.ome.zarr")
    out = str(tmp_path / "r.ome.zarr")
    fp = tiled.plan_full(slide, style, **FAST)
    run = tiled.run_full(fp, tiled.open_store(fp, out))
    for _ in range(FAST["steps"] * (1 + 2)):  # the composition and two of the four tiles
        next(run)
    run.close()
    store = tiled.open_store(fp, out)
    records = list(tiled.run_full(fp, store, elsewhere(client)))
    assert sorted(r.frame_number for r in records) == [0, 1]  # the two tiles left, numbered from 0
    np.testing.assert_allclose(np.asarray(store.levels[0][...]), whole, rtol=0, atol=SAME_RUN)
    assert list(tiled.run_full(fp, store, elsewhere(client))) == []  # nothing left to run


def test_a_tile_task_that_raises_is_tried_again_on_the_cluster(tmp_path, slide, style, client, one_thread):
    def fail_first_tile():  # defined here: it travels by value to the workers
        from napari_style_transfer.pipeline import tiled

        read = tiled.TileLevel.read

        def read_or_fail(self, jobs):
            if not getattr(tiled, "_failed_once", False):
                tiled._failed_once = True
                raise RuntimeError("the worker's disk went away")
            return read(self, jobs)

        tiled._read = read
        tiled.TileLevel.read = read_or_fail

    def restore():
        from napari_style_transfer.pipeline import tiled

        tiled.TileLevel.read = tiled._read
        return getattr(tiled, "_failed_once", False)

    here = in_one_thread(slide, style, tmp_path / "here.ome.zarr")
    client.run(fail_first_tile)
    try:
        out = tmp_path / "cluster.ome.zarr"
        api.stylize(slide, style, client=client, out=str(out), **FAST)
    finally:
        failed = client.run(restore)
    assert any(failed.values())  # a tile did fail once, and the run still finished
    np.testing.assert_allclose(stored(out), here, rtol=0, atol=SAME_RUN)


def test_a_tile_that_fails_for_good_is_named_by_position_and_the_finished_tiles_are_kept(
    tmp_path, slide, style, monkeypatch, one_thread
):
    run_tile = tile_tasks.run_tile

    def fail_at_row_1_column_0(work, job, coarse):
        if job.tile.row == 1 and job.tile.column == 0 and work.level == 1:
            raise OSError("No space left on device")
        return run_tile(work, job, coarse)

    out = str(tmp_path / "r.ome.zarr")
    fp = tiled.plan_full(slide, style, **FAST)
    store = tiled.open_store(fp, out)
    monkeypatch.setattr(tile_tasks, "run_tile", fail_at_row_1_column_0)
    with ThreadPoolExecutor(2) as pool, pytest.raises(StyleTransferError) as error:
        list(tiled.run_full(fp, store, elsewhere(pool)))
    message = str(error.value)
    assert "1 of 4 tiles of the 64x48 px level failed" in message
    assert "row 1, column 0 (pixels 32:64, 0:32): OSError: No space left on device" in message
    assert "run again with the same settings to resume" in message
    pieces = store.scratch("pieces-64x48", (0,))
    assert pieces.finished().tolist() == [[True, True], [False, True]]
    assert not store.finished().any()  # the level is blended only once all its tiles are in
    monkeypatch.undo()
    records = list(tiled.run_full(fp, tiled.open_store(fp, out), elsewhere(ThreadPoolExecutor(1))))
    assert len(records) == 1  # only the failed tile runs again
    whole = in_one_thread(slide, style, tmp_path / "whole.ome.zarr")
    np.testing.assert_allclose(stored(out), whole, rtol=0, atol=SAME_RUN)


def test_the_command_runs_a_slides_tiles_on_a_local_cluster(tmp_path, slide, style, capsys, one_thread):
    content, style_path = tmp_path / "slide.npy", tmp_path / "style.npy"
    np.save(content, slide)
    np.save(style_path, style)
    flags = "--steps 2 --seed 1 --weights random --content-layers conv2_2 --style-layers conv1_1,conv2_1"
    # fp32 on one torch thread here and on the worker (which would take both CPUs): other counts
    # split the convolutions' sums differently, and bf16 (auto on CPUs with AVX-512 BF16) came out
    # 3e-4 apart between the two processes; two L-BFGS steps amplify such rounding
    flags = [
        *flags.split(),
        "--schedule",
        "none",
        "--size",
        "full",
        "--tile-size",
        "32",
        "--threads",
        "1",
        "--precision",
        "fp32",
    ]
    here, there = tmp_path / "here.ome.zarr", tmp_path / "there.ome.zarr"
    assert main([str(content), str(style_path), "-o", str(here), "-q", *flags]) == 0
    assert main([str(content), str(style_path), "-o", str(there), "-q", "--workers", "1", *flags]) == 0
    np.testing.assert_allclose(stored(there), stored(here), rtol=0, atol=SAME_RUN)
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("flag", [["--workers", "2"], ["--scheduler", "tcp://127.0.0.1:1"], ["--dashboard"]])
def test_cluster_flags_without_size_full_are_refused(tmp_path, image_files, capsys, flag):
    content, style = map(str, image_files)
    assert main([content, style, "-o", str(tmp_path / "r.png"), *flag]) == 2
    assert "--size full" in capsys.readouterr().err
    assert not (tmp_path / "r.png").exists()


def test_a_slide_on_a_cluster_without_distributed_names_the_extra(tmp_path, image_files):
    from test_cli_help import run_python

    content, style = map(str, image_files)
    argv = [content, style, "-o", str(tmp_path / "r.ome.zarr"), "--size", "full", "--workers", "2"]
    result = run_python(
        f"from napari_style_transfer.cli import main\nprint(main({argv!r}))\n", blocked=("distributed",)
    )
    assert result.stdout.split() == ["2"], result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert (
        "pip install 'napari-style-transfer[distributed]'" in line
        and "run the tiles here with --workers 0" in line
    )
    assert not (tmp_path / "r.ome.zarr").exists()


def test_a_worker_that_dies_mid_level_loses_no_tile(tmp_path, slide, style, client, one_thread):
    def die_at_the_first_tile(marker):  # defined here: it travels by value to the workers
        import os

        from napari_style_transfer.pipeline import tiled

        read = tiled.TileLevel.read

        def read_or_die(self, jobs):
            try:  # exactly one tile of one worker, whichever reads first
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return read(self, jobs)
            os._exit(3)  # the worker's process dies in the middle of the level

        tiled._read_before_dying = read
        tiled.TileLevel.read = read_or_die

    def restore():  # on the worker that lived; the one started in the dead one's place is plain
        from napari_style_transfer.pipeline import tiled

        tiled.TileLevel.read = getattr(tiled, "_read_before_dying", tiled.TileLevel.read)

    import os

    here = in_one_thread(slide, style, tmp_path / "here.ome.zarr")
    marker = tmp_path / "a-worker-died"
    workers = client.run(os.getpid)
    client.run(die_at_the_first_tile, str(marker))
    try:
        out = tmp_path / "cluster.ome.zarr"
        api.stylize(slide, style, client=client, out=str(out), **FAST)
    finally:
        client.run(restore)
    assert marker.exists()
    assert set(client.run(os.getpid).values()) != set(workers.values())  # one was started anew
    np.testing.assert_allclose(stored(out), here, rtol=0, atol=SAME_RUN)
    assert np.asarray(zarr.open_group(str(out))["finished_tiles"][...]).all()


@pytest.mark.parametrize("kind", ["tiff", "zarr", "npy"])
def test_a_slide_given_by_its_path_reaches_the_workers_and_equals_the_run_in_one_thread(
    tmp_path, slide, style, client, one_thread, kind
):
    import tifffile

    pixels = (slide * 255).astype(np.uint8)
    path = tmp_path / f"slide.{kind}"
    if kind == "tiff":  # tiled, opened through tifffile's zarr store: an open file, which never pickles
        tifffile.imwrite(path, pixels, tile=(16, 16))
    elif kind == "zarr":
        zarr.create_array(str(path), data=pixels, chunks=(32, 32, 3))
    else:  # a memmap, which would pickle every pixel
        np.save(path, pixels)
    here = in_one_thread(str(path), style, tmp_path / "here.ome.zarr")
    np.testing.assert_array_equal(here, in_one_thread(pixels, style, tmp_path / "memory.ome.zarr"))
    out = tmp_path / "cluster.ome.zarr"
    api.stylize(str(path), style, client=client, out=str(out), **FAST)
    np.testing.assert_allclose(stored(out), here, rtol=0, atol=SAME_RUN)


def test_a_stack_with_style_regions_from_paths_on_a_cluster_equals_the_run_in_one_thread(
    tmp_path, rng, style, client, one_thread
):
    stack, labels = tmp_path / "stack.npy", tmp_path / "labels.npy"
    np.save(stack, (rng.random((2, 64, 48, 3)) * 255).astype(np.uint8))
    regions = np.ones((2, 128, 96), np.uint8)  # one per frame, twice the content's size
    regions[0, :, 48:], regions[1, 64:] = 2, 2
    np.save(labels, regions)
    styles = [style, style[::-1].copy()]
    guided = FAST | {"style_regions": str(labels)}
    here = np.asarray(api.stylize(str(stack), styles, out=str(tmp_path / "here.ome.zarr"), **guided)[...])
    there = api.stylize(str(stack), styles, client=client, out=str(tmp_path / "there.ome.zarr"), **guided)
    assert there.shape == (2, 3, 64, 48)
    np.testing.assert_allclose(np.asarray(there[...]), here, rtol=0, atol=SAME_RUN)


def test_the_command_on_two_workers_resumes_after_being_killed_and_ends_as_one_run(
    tmp_path, rng, style, capsys
):
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import time

    import tifffile
    from test_cli_help import SRC

    content, style_path = tmp_path / "slide.tif", tmp_path / "style.npy"
    # 128 x 96 px in tiles of 32: the composition, 2 x 2 tiles at 64 x 48, 4 x 3 at 128 x 96
    tifffile.imwrite(content, (rng.random((128, 96, 3)) * 255).astype(np.uint8), tile=(32, 32))
    np.save(style_path, style)
    # fp32 on one torch thread everywhere: see test_the_command_runs_a_slides_tiles_on_a_local_cluster
    flags = [
        "--steps", "2", "--seed", "1", "--weights", "random", "--content-layers", "conv2_2",
        "--style-layers", "conv1_1,conv2_1", "--schedule", "none", "--size", "full", "--tile-size", "32",
        "--threads", "1", "--precision", "fp32", "-q",
    ]  # fmt: skip
    out = tmp_path / "result.ome.zarr"
    argv = [str(content), str(style_path), "-o", str(out), "--workers", "2", *flags]
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "napari_style_transfer", *argv]
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, start_new_session=True) as run:
        try:
            deadline = time.monotonic() + 240
            # a tile of a tiled level finished: its piece recorded by a worker
            while not any(out.glob("**/pieces-*/finished_tiles/c/*/*")) and run.poll() is None:
                assert time.monotonic() < deadline, "no tile finished in 240 s"
                time.sleep(0.05)
            run.send_signal(signal.SIGKILL)  # the command, as the OOM killer or `kill -9` would
            run.wait(timeout=60)
            workers_left = _group_alive(run.pid, seconds=60)
        finally:  # any process of the command's group still alive is ended here
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == -signal.SIGKILL, run.stderr.read().decode()
    # its workers exit with it (the pipe from their parent closes), writing no tile after it
    assert not workers_left
    assert not np.asarray(zarr.open_group(str(out))["finished_tiles"][...]).all()
    assert main(argv) == 0
    said = capsys.readouterr()
    done = re.search(r", (\d+) already done\)", said.out)
    assert done and 0 < int(done.group(1)) < 17, said
    once = tmp_path / "once.ome.zarr"
    assert main([str(content), str(style_path), "-o", str(once), "--workers", "0", *flags]) == 0
    np.testing.assert_allclose(stored(out), stored(once), rtol=0, atol=SAME_RUN)


def _group_alive(group: int, seconds: float) -> bool:
    """Whether a live process (not a zombie: an orphan whose reaper is slow, as PID 1 in a
    container without init, is one) of process group ``group`` is left after ``seconds``."""
    import os
    import time
    from pathlib import Path

    def alive() -> bool:
        if not Path("/proc/self/stat").exists():  # no /proc: signal 0 asks the group
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return False
            return True
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:  # fields after the command's closing parenthesis: state, ppid, pgrp
                state, _, pgrp = stat.read_text().rpartition(")")[2].split()[:3]
            except (OSError, ValueError):  # gone meanwhile
                continue
            if int(pgrp) == group and state != "Z":
                return True
        return False

    deadline = time.monotonic() + seconds
    while alive():
        if time.monotonic() > deadline:
            return True
        time.sleep(0.1)
    return False
