"""Every weights mode, with weight files the tests write themselves (untrained VGG19s)."""

from __future__ import annotations

import hashlib
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_style_transfer import WeightsError, stylize
from napari_style_transfer import weights as weights_module
from napari_style_transfer.weights import (
    RandomWeightsWarning,
    features_copy_path,
    imagenet_cache_path,
    load_vgg19_features,
)


def assert_same_weights(features, state, prefix="features."):
    for key, value in features.state_dict().items():
        torch.testing.assert_close(value, state[prefix + key], msg=key)


def put_in_hub_cache(state, torch_home: Path) -> Path:
    path = torch_home / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return path


def test_random_weights_are_the_same_every_time_and_leave_the_global_seed_alone():
    torch.manual_seed(99)
    expected_next = torch.rand(1)
    torch.manual_seed(99)
    a = load_vgg19_features("random")
    assert torch.rand(1) == expected_next
    b = load_vgg19_features("random")
    assert a.kind == "random" and "texture only" in a.description
    for x, y in zip(a.features.parameters(), b.features.parameters(), strict=True):
        torch.testing.assert_close(x, y)


def test_a_whole_vgg19_state_dict_file_loads(tmp_path, untrained_vgg19_state):
    path = tmp_path / "vgg19.pth"
    torch.save(untrained_vgg19_state, path)
    loaded = load_vgg19_features(path)
    assert loaded.kind == "file" and str(path) in loaded.description
    assert_same_weights(loaded.features, untrained_vgg19_state)


def test_a_features_only_state_dict_file_loads(tmp_path, untrained_vgg19_state):
    features_only = {
        k.removeprefix("features."): v for k, v in untrained_vgg19_state.items() if k.startswith("features.")
    }
    path = tmp_path / "features.pth"
    torch.save(features_only, path)
    assert_same_weights(load_vgg19_features(str(path)).features, untrained_vgg19_state)


def test_imagenet_reads_the_torch_hub_cache_and_keeps_a_features_copy(torch_home, untrained_vgg19_state):
    full = put_in_hub_cache(untrained_vgg19_state, torch_home)
    assert imagenet_cache_path() == full
    loaded = load_vgg19_features("imagenet")
    assert loaded.kind == "imagenet" and str(full) in loaded.description
    assert_same_weights(loaded.features, untrained_vgg19_state)

    copy = features_copy_path(full)
    assert copy.is_file() and copy.stat().st_size < full.stat().st_size / 5
    full.unlink()  # from now on only the small copy is read
    again = load_vgg19_features("imagenet")
    assert str(copy) in again.description
    assert_same_weights(again.features, untrained_vgg19_state)


def test_auto_uses_cached_imagenet_weights(torch_home, untrained_vgg19_state, offline):
    put_in_hub_cache(untrained_vgg19_state, torch_home)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomWeightsWarning)
        assert load_vgg19_features("auto").kind == "imagenet"


def test_auto_falls_back_to_random_weights_with_a_warning_when_offline(torch_home, offline):
    with pytest.warns(RandomWeightsWarning, match="texture only"):
        loaded = load_vgg19_features("auto")
    assert loaded.kind == "random"


def test_imagenet_offline_fails_fast_saying_which_file_to_put_where(torch_home, offline):
    started = time.perf_counter()
    with pytest.raises(WeightsError) as caught:
        load_vgg19_features("imagenet")
    assert time.perf_counter() - started < 5
    message = str(caught.value)
    assert "vgg19-dcbb9e9d.pth" in message
    assert str(torch_home / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth") in message
    assert not list((torch_home / "hub" / "checkpoints").glob("*.partial"))


def test_imagenet_downloads_into_the_hub_cache_and_checks_the_hash(
    torch_home, untrained_vgg19_state, weights_server, monkeypatch
):
    folder, base = weights_server
    staging = folder / "staging.pth"
    torch.save(untrained_vgg19_state, staging)
    prefix = hashlib.sha256(staging.read_bytes()).hexdigest()[:8]
    staging.rename(folder / f"vgg19-{prefix}.pth")
    monkeypatch.setattr(weights_module, "imagenet_url", lambda: f"{base}/vgg19-{prefix}.pth")

    loaded = load_vgg19_features("imagenet", progress=False)
    cached = torch_home / "hub" / "checkpoints" / f"vgg19-{prefix}.pth"
    assert cached.is_file() and str(cached) in loaded.description
    assert_same_weights(loaded.features, untrained_vgg19_state)


def test_a_download_with_the_wrong_hash_is_refused_and_not_kept(
    torch_home, untrained_vgg19_state, weights_server, monkeypatch
):
    folder, base = weights_server
    torch.save(untrained_vgg19_state, folder / "vgg19-00000000.pth")
    monkeypatch.setattr(weights_module, "imagenet_url", lambda: f"{base}/vgg19-00000000.pth")
    with pytest.raises(WeightsError, match="is damaged"):
        load_vgg19_features("imagenet", progress=False)
    assert not list((torch_home / "hub" / "checkpoints").iterdir())


def test_a_corrupt_file_gives_a_clear_error(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(WeightsError, match=r"could not read weights file .*broken\.pth.*state dict"):
        load_vgg19_features(path)


def test_a_corrupt_hub_cache_file_names_the_file(torch_home):
    path = torch_home / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError, match="vgg19-dcbb9e9d.pth"):
        load_vgg19_features("imagenet")


def test_a_mismatched_network_says_what_does_not_fit(tmp_path):
    from napari_style_transfer._torch_compat import import_torchvision

    vgg16 = import_torchvision().models.vgg16(weights=None)
    path = tmp_path / "vgg16.pth"
    torch.save(vgg16.state_dict(), path)
    with pytest.raises(WeightsError, match="does not match torchvision's VGG19.*(missing|wrong shape)"):
        load_vgg19_features(path)


def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(WeightsError, match="not a state dict"):
        load_vgg19_features(path)


def test_a_missing_weights_file_is_refused_before_the_run(tmp_path):
    image = np.random.default_rng(0).random((32, 32, 3))
    with pytest.raises(WeightsError, match="does not exist"):
        stylize(image, image, weights=str(tmp_path / "nope.pth"), size=32, steps=1)


def test_a_weights_file_drives_a_whole_run(tmp_path, untrained_vgg19_state):
    path = tmp_path / "vgg19.pth"
    torch.save(untrained_vgg19_state, path)
    image = np.random.default_rng(0).random((32, 32, 3))
    from napari_style_transfer import iter_stylize

    result = list(iter_stylize(image, image[::-1], weights=str(path), size=32, steps=2))[-1]
    assert result.weights_kind == "file" and result.image.shape == (32, 32, 3)


def test_auto_falls_back_to_random_weights_when_the_cache_cannot_be_written(tmp_path, monkeypatch, offline):
    home = tmp_path / "read_only_home"
    home.mkdir()
    home.chmod(0o500)
    monkeypatch.setenv("TORCH_HOME", str(home / "torch"))
    try:
        with pytest.warns(RandomWeightsWarning):
            assert load_vgg19_features("auto").kind == "random"
    finally:
        home.chmod(0o700)


def test_a_features_copy_that_cannot_be_written_does_not_fail_the_load(
    torch_home, untrained_vgg19_state, monkeypatch
):
    put_in_hub_cache(untrained_vgg19_state, torch_home)

    def disk_full(*args, **kwargs):
        raise RuntimeError("PytorchStreamWriter failed writing file: file write failed")

    monkeypatch.setattr(weights_module, "_atomic_save", disk_full)
    assert load_vgg19_features("imagenet").kind == "imagenet"
