"""threads: torch's CPU threads for a run; 0 (auto) is the physical cores this process may use.

The machine's topology, affinity and cgroup quota are faked (a /sys and a cgroup tree in a
temporary folder, the affinity patched): the real machine running the tests plays no part.
No test times anything.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from tiny_runs import tiny_options

from napari_style_transfer import StyleTransferError, iter_stylize, memory, speed_probe
from napari_style_transfer.api import StyleResult


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A fake 4-CPU machine of 2 cores with 2 SMT siblings each (CPUs 0 and 2 share a core,
    1 and 3 the other), every CPU in the affinity, in cgroup /job (v2) with no quota yet."""
    sys_root, proc, cgroup = tmp_path / "sys", tmp_path / "proc", tmp_path / "cgroup"
    for cpu, siblings in {0: "0,2", 1: "1,3", 2: "0,2", 3: "1,3"}.items():
        topology = sys_root / "devices" / "system" / "cpu" / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "core_cpus_list").write_text(siblings + "\n")
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text("0::/job\n")
    (cgroup / "job").mkdir(parents=True)
    (cgroup / "cgroup.controllers").write_text("cpu memory\n")
    monkeypatch.setattr(memory, "_usable_cpu_ids", lambda: {0, 1, 2, 3})

    def cores() -> int:
        return memory.compute_cores(sys_root, proc, cgroup)

    cores.cgroup = cgroup  # type: ignore[attr-defined]
    cores.proc = proc  # type: ignore[attr-defined]
    return cores


def test_smt_siblings_count_as_one_core(machine):
    assert machine() == 2


def test_only_the_cpus_of_the_affinity_count(machine, monkeypatch):
    monkeypatch.setattr(memory, "_usable_cpu_ids", lambda: {0, 2})  # both siblings of one core
    assert machine() == 1


def test_a_cgroup_v2_quota_caps_the_cores_rounded_down(machine):
    (machine.cgroup / "job" / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs
    assert machine() == 1


def test_a_quota_on_a_group_above_holds_for_the_groups_inside(machine):
    (machine.cgroup / "cpu.max").write_text("100000 100000\n")
    (machine.cgroup / "job" / "cpu.max").write_text("max 100000\n")
    assert machine() == 1


def test_no_quota_leaves_the_cores(machine):
    (machine.cgroup / "job" / "cpu.max").write_text("max 100000\n")
    assert machine() == 2


def test_a_quota_under_one_cpu_still_gives_one_thread(machine):
    (machine.cgroup / "job" / "cpu.max").write_text("50000 100000\n")
    assert machine() == 1


def test_a_cgroup_v1_cfs_quota_caps_the_cores(machine, tmp_path):
    (machine.proc / "self" / "cgroup").write_text("4:memory:/job\n2:cpu,cpuacct:/slurm/job\n0::/\n")
    v1 = tmp_path / "cgroup_v1"
    group = v1 / "cpu" / "slurm" / "job"
    group.mkdir(parents=True)
    (group / "cpu.cfs_quota_us").write_text("100000\n")
    (group / "cpu.cfs_period_us").write_text("100000\n")
    (v1 / "unified").mkdir()
    assert memory.cpu_quota(machine.proc, v1) == 1.0
    (group / "cpu.cfs_quota_us").write_text("-1\n")  # no quota
    assert memory.cpu_quota(machine.proc, v1) is None


@pytest.fixture
def torch_threads():
    """Set torch's thread count for a test; the count before comes back afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_auto_is_the_machines_cores_where_torch_takes_more(monkeypatch, torch_threads):
    torch_threads(8)  # torch's default: every core of the host, blind to the cgroup's quota
    monkeypatch.setattr(speed_probe, "compute_cores", lambda: 3)
    assert speed_probe.threads_used(0) == 3


def test_auto_keeps_a_lower_count_set_before_the_run(monkeypatch, torch_threads):
    torch_threads(1)  # OMP_NUM_THREADS=1, torch.set_num_threads(1), a dask worker's share
    monkeypatch.setattr(speed_probe, "compute_cores", lambda: 3)
    assert speed_probe.threads_used(0) == 1


def test_an_explicit_count_wins(monkeypatch):
    monkeypatch.setattr(speed_probe, "compute_cores", lambda: 1)
    assert speed_probe.threads_used(5) == 5


def _run(torch_threads, **options) -> tuple[StyleResult, set[int]]:
    """A tiny run; its result and torch's thread counts seen between its records."""
    content = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    between = set()
    for item in iter_stylize(content, content, **tiny_options(steps=2, channels_last=True, **options)):
        if isinstance(item, StyleResult):
            return item, between
        between.add(torch.get_num_threads())
    raise AssertionError("no result")


def test_a_run_uses_its_threads_and_the_caller_keeps_its_own_between_steps(torch_threads):
    torch_threads(1)
    result, between = _run(torch_threads, threads=2)
    assert result.threads == 2
    assert result.metadata()["threads"] == 2
    assert between == {1}
    assert torch.get_num_threads() == 1


def test_a_run_records_what_auto_became(monkeypatch, torch_threads):
    torch_threads(4)
    monkeypatch.setattr(speed_probe, "compute_cores", lambda: 2)
    result, between = _run(torch_threads)
    assert result.metadata()["threads"] == 2
    assert between == {4}


def test_a_thread_count_must_be_a_whole_number():
    from napari_style_transfer import StyleOptions

    with pytest.raises(StyleTransferError, match=re.escape("threads must be a whole number, got 1.5")):
        StyleOptions(threads=1.5).validated()
