"""How much RAM a run may take: the machine's, within cgroup (v1, v2) and address-space limits.

Each test builds a fake /proc and a fake cgroup tree in a temporary folder; the real limits of
the machine running the tests play no part.
"""

from __future__ import annotations

import resource
from pathlib import Path

import pytest
from tiny_runs import tiny_options

from napari_style_transfer import memory
from napari_style_transfer.memory import available_ram_bytes

GB = 2**30
MACHINE = 64 * GB  # MemAvailable of the fake machine


@pytest.fixture
def proc(tmp_path, monkeypatch):
    """A fake /proc: 64 GB available, the process in cgroup /job/step (v2), 1 GB mapped; and
    no address-space limit."""
    folder = tmp_path / "proc"
    (folder / "self").mkdir(parents=True)
    (folder / "meminfo").write_text(f"MemTotal: {128 * GB // 1024} kB\nMemAvailable: {MACHINE // 1024} kB\n")
    (folder / "self" / "cgroup").write_text("0::/job/step\n")
    (folder / "self" / "status").write_text(f"Name:\tpython\nVmSize:\t{GB // 1024} kB\n")
    monkeypatch.setattr(resource, "getrlimit", lambda which: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    return folder


def write_group(folder, **files):
    """A cgroup folder with files such as memory_max="max" (underscores for dots)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_", ".", 1)).write_text(f"{text}\n")


@pytest.fixture
def v2(tmp_path):
    root = tmp_path / "cgroup"
    write_group(root, cgroup_controllers="cpu memory pids")
    return root


def test_without_cgroup_limits_the_machines_available_memory_counts(proc, v2):
    write_group(v2 / "job" / "step", memory_max="max", memory_high="max", memory_current=str(5 * GB))
    assert available_ram_bytes(proc, v2) == MACHINE


def test_cgroup_v2_room_is_its_limit_less_usage_that_cannot_be_reclaimed(proc, v2):
    write_group(
        v2 / "job" / "step",
        memory_max=str(8 * GB),
        memory_current=str(5 * GB),
        memory_stat=f"anon {3 * GB}\ninactive_file {2 * GB}\n",
    )
    assert available_ram_bytes(proc, v2) == 5 * GB  # 8 - (5 - 2 of page cache)


def test_cgroup_v2_limit_on_a_parent_group_holds_for_the_groups_inside(proc, v2):
    write_group(v2 / "job", memory_max=str(16 * GB), memory_current=str(10 * GB))
    write_group(v2 / "job" / "step", memory_max="max", memory_current=str(4 * GB))
    assert available_ram_bytes(proc, v2) == 6 * GB


def test_cgroup_v2_tightest_group_on_the_way_up_wins(proc, v2):
    write_group(v2 / "job", memory_max=str(16 * GB), memory_current=str(10 * GB))
    write_group(v2 / "job" / "step", memory_max=str(8 * GB), memory_current=str(4 * GB))
    assert available_ram_bytes(proc, v2) == 4 * GB


def test_cgroup_v2_memory_high_counts_as_a_limit(proc, v2):
    # above memory.high the kernel throttles the process until it crawls
    write_group(v2 / "job" / "step", memory_max="max", memory_high=str(3 * GB), memory_current=str(GB))
    assert available_ram_bytes(proc, v2) == 2 * GB


def test_container_without_cgroup_namespace_reads_the_group_mounted_as_the_root(proc, v2):
    # /proc/self/cgroup names the host's path, but the container sees its own group as the root
    write_group(v2, memory_max=str(4 * GB), memory_current=str(GB))
    assert available_ram_bytes(proc, v2) == 3 * GB


@pytest.fixture
def v1(tmp_path, proc):
    (proc / "self" / "cgroup").write_text("12:pids:/slurm/job\n4:memory:/slurm/job\n1:name=systemd:/\n0::/\n")
    root = tmp_path / "cgroup_v1"
    write_group(root / "memory", memory_limit_in_bytes=str(2**63 - 4096), memory_usage_in_bytes=str(40 * GB))
    (root / "unified").mkdir()  # the hybrid layout: v2 mounted beside the controllers
    return root


def test_cgroup_v1_room_is_its_limit_less_usage_that_cannot_be_reclaimed(proc, v1):
    write_group(
        v1 / "memory" / "slurm" / "job",
        memory_limit_in_bytes=str(8 * GB),
        memory_usage_in_bytes=str(6 * GB),
        memory_stat=f"total_inactive_file {GB}\nhierarchical_memory_limit {8 * GB}\n",
    )
    assert available_ram_bytes(proc, v1) == 3 * GB


def test_cgroup_v1_no_limit_is_a_huge_number(proc, v1):
    no_limit = str(2**63 - 4096)
    write_group(
        v1 / "memory" / "slurm" / "job",
        memory_limit_in_bytes=no_limit,
        memory_usage_in_bytes=str(6 * GB),
        memory_stat=f"hierarchical_memory_limit {no_limit}\n",
    )
    assert available_ram_bytes(proc, v1) == MACHINE


def test_cgroup_v1_limit_on_a_parent_group_holds_for_the_groups_inside(proc, v1):
    write_group(
        v1 / "memory" / "slurm", memory_limit_in_bytes=str(10 * GB), memory_usage_in_bytes=str(7 * GB)
    )
    write_group(
        v1 / "memory" / "slurm" / "job",
        memory_limit_in_bytes=str(2**63 - 4096),
        memory_usage_in_bytes=str(6 * GB),
    )
    assert available_ram_bytes(proc, v1) == 3 * GB


def test_address_space_limit_less_what_is_mapped_counts(proc, v2, monkeypatch):
    monkeypatch.setattr(resource, "getrlimit", lambda which: (6 * GB, resource.RLIM_INFINITY))
    assert available_ram_bytes(proc, v2) == 5 * GB  # 6 less the 1 GB VmSize


def test_the_least_of_machine_cgroup_and_address_space_wins(proc, v2, monkeypatch):
    write_group(v2 / "job" / "step", memory_max=str(8 * GB), memory_current=str(GB))
    monkeypatch.setattr(resource, "getrlimit", lambda which: (20 * GB, resource.RLIM_INFINITY))
    assert available_ram_bytes(proc, v2) == 7 * GB


def test_the_given_procs_meminfo_counts_before_psutil(proc, v2):
    (proc / "meminfo").write_text(f"MemAvailable: {3 * GB // 1024} kB\n")
    assert available_ram_bytes(proc, v2) == 3 * GB


def test_a_group_over_its_limit_has_no_room(proc, v2):
    write_group(v2 / "job" / "step", memory_max=str(GB), memory_current=str(2 * GB))
    assert available_ram_bytes(proc, v2) == 0


# --- the checks before a run, and failures during one ------------------------------------

FAST = tiny_options(steps=2)


@pytest.fixture
def free_ram(monkeypatch):
    """Set the free memory the API sees (every device) to ``free_ram(bytes)``."""

    def set_free(count):
        monkeypatch.setattr(
            "napari_style_transfer.pipeline.memory_checks.free_memory_bytes", lambda device: count
        )

    return set_free


def test_a_stacks_result_that_does_not_fit_in_ram_is_refused_before_the_run(style, free_ram):
    import numpy as np

    from napari_style_transfer import OutOfMemoryError, iter_stylize

    frame = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    stack = np.broadcast_to(frame, (20000, 32, 32))  # 20000 frames in the memory of one
    free_ram(400 * 2**20)  # the run (about 300 MB) fits, its 20000 results (78 MB) beside it do not
    with pytest.raises(
        OutOfMemoryError,
        match=r"the result, 20000 frames of 32x32 px, needs about 78 MB .* "
        r"style at most \d+ frames at a time",
    ):
        iter_stylize(stack, style, **FAST)


def test_a_grey_stack_styled_in_colour_counts_three_channels_of_result(style, free_ram):
    import numpy as np

    from napari_style_transfer import OutOfMemoryError, iter_stylize

    frame = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    stack = np.broadcast_to(frame, (20000, 32, 32))
    free_ram(
        int(
            (memory.FIXED_BYTES + 32 * 32 * memory.bytes_per_pixel("lbfgs", 30) + 20000 * 32 * 32 * 4 * 2)
            / 0.9
        )
    )
    iter_stylize(stack, style, **FAST).close()  # grey results (78 MB) fit
    with pytest.raises(OutOfMemoryError, match=r"needs about 234 MB"):  # RGB results do not
        iter_stylize(stack, style, **FAST, keep_grey=False)


def test_following_the_stacks_frame_advice_fits(style, free_ram):
    import re

    import numpy as np

    from napari_style_transfer import OutOfMemoryError, iter_stylize

    frame = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    free_ram(400 * 2**20)
    with pytest.raises(OutOfMemoryError) as refused:
        iter_stylize(np.broadcast_to(frame, (20000, 32, 32)), style, **FAST)
    frames = int(re.search(r"at most (\d+) frames", str(refused.value)).group(1))
    iter_stylize(np.broadcast_to(frame, (frames, 32, 32)), style, **FAST).close()


@pytest.mark.parametrize(
    "failure",
    [
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:118] data. DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 68719476736 bytes. Error code 12 (Cannot allocate memory)"
        ),
        RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 68719476736 bytes."),
        MemoryError("Unable to allocate 64.0 GiB for an array with shape (4, 4096, 4096, 256)"),
    ],
    ids=["linux", "windows", "numpy"],
)
def test_running_out_of_ram_during_a_run_becomes_the_projects_message(content, style, monkeypatch, failure):
    from napari_style_transfer import OutOfMemoryError, stylize

    def exhausted(*args, **kwargs):
        raise failure
        yield  # pragma: no cover

    monkeypatch.setattr("napari_style_transfer.pipeline.optimise.optimize", exhausted)
    with pytest.raises(
        OutOfMemoryError, match="cpu ran out of memory at a working size of 32 px: use a smaller size"
    ):
        stylize(content, style, **FAST)


def test_other_runtime_errors_during_a_run_pass_unchanged(content, style, monkeypatch):
    from napari_style_transfer import stylize

    def broken(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
        yield  # pragma: no cover

    monkeypatch.setattr("napari_style_transfer.pipeline.optimise.optimize", broken)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        stylize(content, style, **FAST)


def test_a_gpu_runs_result_is_checked_against_ram_not_gpu_memory(monkeypatch):
    import numpy as np
    import torch

    from napari_style_transfer import OutOfMemoryError, api
    from napari_style_transfer._image import describe_image
    from napari_style_transfer.options import StyleOptions

    free = {"cuda": 100 * GB, "cpu": 50 * 2**20}  # the GPU has room for anything; RAM has not
    monkeypatch.setattr(
        "napari_style_transfer.pipeline.memory_checks.free_memory_bytes", lambda device: free[device.type]
    )
    stack = describe_image(np.broadcast_to(np.eye(32, dtype=np.float32), (20000, 32, 32)), "content")
    with pytest.raises(
        OutOfMemoryError,
        match=r"needs about 78 MB but the computer has 50 MB of RAM free: "
        r"style at most \d+ frames at a time",
    ):
        api._check_memory(stack, (32, 32), (32, 32), StyleOptions().validated(), torch.device("cuda"))


def _resident_anonymous_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon in /proc/self/status")


@pytest.mark.skipif(not memory.release_freed_memory(), reason="glibc's malloc_trim only (Linux)")
def test_freed_heap_blocks_are_given_back_to_the_system():
    """What a tile leaves freed in the middle of the heap stays resident (a block still in use
    above it stops glibc trimming the heap's top) until release_freed_memory."""
    blocks = [bytearray(b"x" * 65536) for _ in range(1600)]  # 100 MiB, each below mmap's threshold
    pinned = bytearray(b"x" * 65536)  # above them: the heap's top stays in use
    del blocks
    before = _resident_anonymous_bytes()
    assert memory.release_freed_memory()
    assert before - _resident_anonymous_bytes() > 50 * 2**20
    del pinned


def test_what_time_passes_keep_of_every_frame_is_counted_and_one_forward_pass_offered(style, free_ram):
    import numpy as np

    from napari_style_transfer import OutOfMemoryError, iter_stylize

    frame = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    stack = np.broadcast_to(frame, (2000, 32, 32))
    run, result = memory.FIXED_BYTES + 48 * 48 * memory.bytes_per_pixel("lbfgs", 30), 2000 * 32 * 32 * 4
    free_ram(int((run + result + 20 * 2**20) / 0.9))  # the grey results (8 MB) fit, the 80 MB kept do not
    iter_stylize(stack, style, **FAST, frames="time", time_passes=0).close()
    with pytest.raises(
        OutOfMemoryError,
        match=r"the result and what time passes keep of each frame, 2000 frames .* time_passes 0",
    ):
        iter_stylize(stack, style, **FAST, frames="time", time_passes=2)
