"""Weights that hold up: random weights without the global RNG, damaged or hostile weight
files refused with the file and the problem named, a shared hub cache, leftovers of a kill."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import zipfile

import pytest
import torch
from torch import nn

from napari_style_transfer import WeightsError
from napari_style_transfer import weights as weights_module
from napari_style_transfer.vgg import vgg19_features_module
from napari_style_transfer.weights import (
    PARTIAL_SUFFIX,
    STALE_PARTIAL_SECONDS,
    download_imagenet,
    features_copy_path,
    imagenet_cache_path,
    load_vgg19_features,
)

VGG19_SHAPES = {
    key: value.shape for key, value in vgg19_features_module("meta", init=False).state_dict().items()
}


def filled_state(value, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """A VGG19 features state dict whose every tensor holds ``value``: each stores one number,
    expanded to its shape, so the file is a few kB."""
    return {
        key: torch.full((1,) * len(shape), value, dtype=dtype).expand(shape)
        for key, shape in VGG19_SHAPES.items()
    }


def saved(state, path, **kwargs):
    torch.save(state, path, **kwargs)
    return path


def in_hub_cache(state, torch_home) -> os.PathLike[str]:
    """``state`` saved where the ImageNet file is looked for (a features-only state suits it)."""
    path = torch_home / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    return saved(state, path)


def same_parameters(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_random_weights_built_in_two_threads_at_once_match_a_build_alone():
    alone = load_vgg19_features("random").features
    barrier = threading.Barrier(2)
    built = [None, None]

    def build(slot: int) -> None:
        barrier.wait()
        built[slot] = load_vgg19_features("random").features

    threads = [threading.Thread(target=build, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert same_parameters(built[0], alone) and same_parameters(built[1], alone)


def test_random_weights_leave_the_global_random_stream_of_other_threads_alone(monkeypatch):
    """Another thread draws from torch's global RNG while the network is built: it must get
    the next values of its own stream, and no earlier value may come round again after."""
    torch.manual_seed(5)
    expected = torch.rand(3)
    drawn_meanwhile = []
    kaiming_normal = nn.init.kaiming_normal_

    def draw_while_building(*args, **kwargs):
        if not drawn_meanwhile:  # stands in for a draw in another thread in mid-build
            drawn_meanwhile.append(torch.rand(1))
        return kaiming_normal(*args, **kwargs)

    monkeypatch.setattr(nn.init, "kaiming_normal_", draw_while_building)
    torch.manual_seed(5)
    load_vgg19_features("random")
    after = torch.rand(2)
    torch.testing.assert_close(torch.cat([drawn_meanwhile[0], after]), expected)


def test_keys_that_are_not_names_are_refused_naming_the_file(tmp_path):
    path = saved({0: torch.zeros(1), 1: torch.zeros(1)}, tmp_path / "numbered.pth")
    with pytest.raises(WeightsError, match=r"numbered\.pth has keys that are not parameter names \(0, 1\)"):
        load_vgg19_features(path)


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        pytest.param(
            {key: torch.empty(shape, device="meta") for key, shape in VGG19_SHAPES.items()},
            "0.weight holds no values (a meta tensor)",
            id="meta",
        ),
        pytest.param(
            {
                key: torch.sparse_coo_tensor(
                    torch.zeros(len(shape), 0, dtype=torch.long), torch.zeros(0), shape, check_invariants=True
                )
                for key, shape in VGG19_SHAPES.items()
            },
            "0.weight is a sparse_coo tensor",
            id="sparse",
        ),
        pytest.param(filled_state(1j, torch.complex64), "0.weight has dtype complex64", id="complex"),
        pytest.param(filled_state(1, torch.int8), "0.weight has dtype int8", id="integer"),
        pytest.param(filled_state(float("nan")), "0.weight holds NaN or infinite values", id="nan"),
        pytest.param(filled_state(float("inf")), "0.weight holds NaN or infinite values", id="inf"),
    ],
)
@pytest.mark.filterwarnings("ignore:.*[Ss]parse.*:UserWarning")
def test_tensors_that_cannot_be_weights_are_refused_naming_the_file_and_the_problem(tmp_path, state, problem):
    path = saved(state, tmp_path / "odd.pth")
    with pytest.raises(WeightsError, match=r"odd\.pth cannot be used: ") as caught:
        load_vgg19_features(path)
    assert problem in str(caught.value) and "learning_rate" not in str(caught.value)


def test_a_compressed_file_is_refused_before_it_is_unpacked(tmp_path):
    """torch.save never compresses: a deflated entry is how a small file unpacks to gigabytes."""
    plain = saved({"0.weight": torch.zeros(4_000_000)}, tmp_path / "plain.pth")
    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as packed:
        for entry in source.infolist():
            packed.writestr(entry.filename, source.read(entry))
    assert bomb.stat().st_size < plain.stat().st_size / 100
    with pytest.raises(WeightsError, match=r"bomb\.pth has compressed entries"):
        load_vgg19_features(bomb)


def test_a_file_in_torchs_legacy_format_loads(tmp_path):
    path = saved(filled_state(0.25), tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    features = load_vgg19_features(path).features
    assert all(bool((parameter == 0.25).all()) for parameter in features.parameters())


def test_the_features_copy_has_the_mode_the_umask_gives(torch_home):
    in_hub_cache(filled_state(0.25), torch_home)
    umask = os.umask(0o027)
    try:
        load_vgg19_features("imagenet")
    finally:
        os.umask(umask)
    copy = features_copy_path(imagenet_cache_path())
    assert copy.stat().st_mode & 0o777 == 0o640


def test_a_damaged_features_copy_falls_back_to_the_full_file_says_so_and_is_replaced(torch_home, caplog):
    full = in_hub_cache(filled_state(0.25), torch_home)
    copy = features_copy_path(full)
    copy.write_bytes(b"cut off by a full disk")
    with caplog.at_level(logging.WARNING, logger=weights_module.__name__):
        loaded = load_vgg19_features("imagenet")
    assert loaded.kind == "imagenet" and str(full) in loaded.description
    assert "reading the full file instead" in caplog.text and str(copy) in caplog.text
    assert str(copy) in load_vgg19_features("imagenet").description


def dead_pid() -> int:
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(finished.stdout)


def test_partial_files_left_by_killed_writers_are_removed_and_others_kept(torch_home):
    in_hub_cache(filled_state(0.25), torch_home)
    folder = torch_home / "hub" / "checkpoints"
    host = weights_module._HOST

    def partial(pid: int, tag: str, idle_seconds: float = 0.0):
        path = folder / f".vgg19-dcbb9e9d.pth.{host}.{pid}.{tag}{PARTIAL_SUFFIX}"
        path.write_bytes(b"half a download")
        stamp = time.time() - idle_seconds
        os.utime(path, (stamp, stamp))
        return path

    killed = partial(dead_pid(), "0a")
    running = partial(os.getppid(), "0b")  # a live process still writing
    hung = partial(os.getppid(), "0c", idle_seconds=2 * STALE_PARTIAL_SECONDS)
    elsewhere = folder / f".vgg19-dcbb9e9d.pth.other-host.{dead_pid()}.0123abcd{PARTIAL_SUFFIX}"
    elsewhere.write_bytes(b"a download on another machine of a shared cache")
    not_ours = folder / "notes.partial"
    not_ours.write_bytes(b"someone else's")

    load_vgg19_features("imagenet")
    assert not killed.exists() and not hung.exists()
    assert running.exists() and elsewhere.exists() and not_ours.exists()


def test_a_download_writes_a_partial_file_named_for_its_process(torch_home, weights_server, monkeypatch):
    folder, base = weights_server
    (folder / "vgg19-00000000.pth").write_bytes(bytes(4 * weights_module.DOWNLOAD_CHUNK_BYTES))
    monkeypatch.setattr(weights_module, "imagenet_url", lambda: f"{base}/vgg19-00000000.pth")
    chunks = download_imagenet()
    next(chunks)
    (partial,) = (torch_home / "hub" / "checkpoints").iterdir()
    chunks.close()
    assert partial.name.startswith(".vgg19-00000000.pth.") and partial.name.endswith(PARTIAL_SUFFIX)
    assert f".{os.getpid()}." in partial.name
    assert not partial.exists()
