"""Where VGG19 weights come from: the torch hub cache, a download, a local file, or a seed.

``weights=`` takes:

- ``"imagenet"``: torchvision's ``VGG19_Weights.IMAGENET1K_V1``, read from the torch hub
  cache (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``) and
  downloaded there on first use. After the first load a features-only copy (80 MB instead of
  548 MB) is written beside it and used from then on.
- a path to a state dict: a whole VGG19 (``features.0.weight``, ..., ``classifier.*``) or
  only its ``features`` (``0.weight``, ...), with torchvision's key names.
- ``"random"``: an untrained VGG19 from a fixed seed. Results show texture only.
- ``"auto"``: imagenet when cached or downloadable, else random with a warning.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import http.client
import logging
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ._torch_compat import hide_triton
from .atomic import PARTIAL_NAME, WRITER_HOST, replacing
from .atomic import PARTIAL_SUFFIX as PARTIAL_SUFFIX  # where tests and users found it

hide_triton()

import torch  # noqa: E402
from torch import nn  # noqa: E402

from .errors import WeightsError  # noqa: E402
from .options import VGG19_LAYERS  # noqa: E402
from .vgg import vgg19_features_module  # noqa: E402

log = logging.getLogger(__name__)

#: Seconds to wait for the download server before giving up (per socket operation).
DOWNLOAD_TIMEOUT = 10.0
#: Bytes read at a time: small enough that a cancel between two reads is quick on a slow line.
DOWNLOAD_CHUNK_BYTES = 64 * 1024
#: Seed of the untrained network behind ``weights="random"``.
RANDOM_WEIGHTS_SEED = 0
IMAGENET_WEIGHTS_NAME = "VGG19_Weights.IMAGENET1K_V1"
_IMAGENET_SIZE = "548 MB"
#: A partial file of ours left this long without a write is taken for a killed writer's.
STALE_PARTIAL_SECONDS = 600.0
# the partial files that downloads and features copies leave when killed are named by atomic.py
_HOST = WRITER_HOST


class RandomWeightsWarning(UserWarning):
    """The run uses an untrained VGG19: its results show texture, not artistic style."""


@dataclass(frozen=True)
class LoadedWeights:
    """VGG19 ``features`` with weights loaded, and a sentence saying where they came from."""

    features: nn.Sequential
    kind: str  # "imagenet", "file" or "random"
    description: str


#: torchvision's ``VGG19_Weights.IMAGENET1K_V1.url`` (a test checks they agree), so that the
#: cache can be looked up without importing torchvision.
IMAGENET_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"


def imagenet_url() -> str:
    """Download address of the ImageNet VGG19 weights (torchvision's weights API)."""
    return IMAGENET_URL


def hub_checkpoint_dir() -> Path:
    """The torch hub cache's checkpoint folder (honours ``$TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def imagenet_cache_path(url: str | None = None) -> Path:
    """Where torchvision (and this plugin) keep the ImageNet VGG19 file."""
    return hub_checkpoint_dir() / os.path.basename(url or imagenet_url())


def features_copy_path(full_path: Path) -> Path:
    return full_path.with_name(f"{full_path.stem}.features{full_path.suffix}")


def cached_imagenet_file(url: str | None = None) -> Path | None:
    """The cached features copy or full file, or None when neither is there."""
    full = imagenet_cache_path(url)
    for candidate in (features_copy_path(full), full):
        if candidate.is_file():
            return candidate
    return None


def load_vgg19_features(
    weights: str | os.PathLike[str] = "auto", *, progress: bool = True, deepest: str | None = None
) -> LoadedWeights:
    """Build torchvision's VGG19 ``features`` and load ``weights`` into it (on the CPU).
    While this process keeps its weights (:func:`keeping_weights`, :func:`keep_weights_for_good`)
    each weights loads once and every call gets its own copy of the network. With
    ``deepest`` (a layer name) the convolutions after it hold no weights (the meta device):
    a run never uses them (conv5_2 to conv5_4 are 28 MB of the 80)."""
    loaded = _KEPT.get(weights, progress) if _KEPT.active else _load(weights, progress=progress)
    if deepest is not None:
        for module in list(loaded.features)[VGG19_LAYERS.index(deepest) + 1 :]:
            module.to_empty(device="meta")
    return loaded


def _load(weights: str | os.PathLike[str], *, progress: bool) -> LoadedWeights:
    mode = str(weights)
    if mode == "random":
        return _random_weights()
    if mode == "imagenet":
        return _imagenet_weights(progress=progress)
    if mode == "auto":
        try:
            return _imagenet_weights(progress=progress)
        except WeightsError as error:
            warn_random_fallback(error)
            return _random_weights()
    return _file_weights(Path(mode).expanduser())


class _KeptWeights:
    """The weights loaded in this process while it keeps them: each weights (a name, or a
    file by its path, size and time, so that a file changed since is read again) loads once,
    and every caller gets a copy of the network, because a run's extractor shares its
    Parameters and moves them to the run's device, dtype and layout. (Not keyed by device: the
    weights load on the CPU and each run moves its own copy to its device.)"""

    def __init__(self) -> None:
        self._loaded: dict[tuple[object, ...], LoadedWeights] = {}
        self._lock = threading.Lock()
        self._keepers = 0  # keeping_weights() blocks open, in any thread
        self._for_good = False
        self.loads = 0  # weights loaded (not copied) in this process while kept

    @property
    def active(self) -> bool:
        return self._for_good or self._keepers > 0

    def get(self, weights: str | os.PathLike[str], progress: bool) -> LoadedWeights:
        key = _weights_key(weights)
        with self._lock:
            loaded = self._loaded.get(key)
            if loaded is None:
                loaded = self._loaded[key] = _load(weights, progress=progress)
                self.loads += 1
        return dataclasses.replace(loaded, features=copy.deepcopy(loaded.features))

    @contextmanager
    def keeping(self) -> Iterator[None]:
        with self._lock:
            self._keepers += 1
        try:
            yield
        finally:
            with self._lock:
                self._keepers -= 1
                if not self.active:  # the last batch here is over: give the memory back
                    self._loaded.clear()

    def keep_for_good(self) -> None:
        self._for_good = True


def _weights_key(weights: str | os.PathLike[str]) -> tuple[object, ...]:
    path = Path(os.path.expanduser(str(weights)))
    if str(weights) not in ("auto", "imagenet", "random") and path.is_file():
        stat = path.stat()
        return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    return (str(weights),)


_KEPT = _KeptWeights()


def keeping_weights() -> contextlib.AbstractContextManager[None]:
    """Within (any thread, nested too): each weights loads once in this process (a batch's
    items share the network); afterwards the kept networks are let go."""
    return _KEPT.keeping()


def keep_weights_for_good() -> None:
    """From now on each weights loads once in this process (a dask worker's, which is ours)."""
    _KEPT.keep_for_good()


def warn_random_fallback(error: WeightsError) -> None:
    """Say (as a :class:`RandomWeightsWarning`) that ``weights="auto"`` goes on untrained."""
    message = (
        f"ImageNet VGG19 weights are unavailable ({error}). Falling back to an untrained "
        "VGG19: results show texture only, not artistic style."
    )
    warnings.warn(message, RandomWeightsWarning, stacklevel=3)


def imagenet_download_needed(weights: str | os.PathLike[str]) -> bool:
    """Whether loading ``weights`` would first download the ImageNet file (548 MB)."""
    return str(weights) in ("auto", "imagenet") and cached_imagenet_file() is None


def download_imagenet() -> Iterator[tuple[int, int | None]]:
    """Download the ImageNet VGG19 file into the torch hub cache, yielding (bytes done,
    bytes in all or None) after every 64 kB, for a caller that shows progress and can stop:
    closing the generator early stops the download and removes the partial file. Raises
    :class:`WeightsError` (with what to do) when the download fails or is damaged."""
    url = imagenet_url()
    destination = imagenet_cache_path(url)
    remove_stale_partials(destination.parent)
    yield from _download_chunks(url, destination)


def _random_weights() -> LoadedWeights:
    # A generator of its own: seeding torch's global one would change, and then rewind, the
    # random streams of every other thread (and two runs at once would share one stream).
    features = vgg19_features_module(generator=torch.Generator().manual_seed(RANDOM_WEIGHTS_SEED))
    return LoadedWeights(
        features,
        "random",
        f"random (untrained VGG19, seed {RANDOM_WEIGHTS_SEED}; texture only, not artistic style)",
    )


def _imagenet_weights(*, progress: bool) -> LoadedWeights:
    url = imagenet_url()
    full = imagenet_cache_path(url)
    copy = features_copy_path(full)
    remove_stale_partials(full.parent)
    if copy.is_file():
        try:
            return _imagenet(_load_into(_read_state_dict(copy), copy), copy)
        except WeightsError as error:  # another user's copy, a damaged one: the full file still serves
            log.warning(
                "the features-only weights copy cannot be used, reading the full file instead: %s", error
            )
    if not full.is_file():
        _download(url, full, progress=progress)
    features = _load_into(_read_state_dict(full), full)
    _write_features_copy(features, copy)
    return _imagenet(features, full)


def _imagenet(features: nn.Sequential, source: Path) -> LoadedWeights:
    return LoadedWeights(features, "imagenet", f"imagenet (torchvision {IMAGENET_WEIGHTS_NAME}, {source})")


def _file_weights(path: Path) -> LoadedWeights:
    if not path.is_file():
        choices = "auto, imagenet or random"
        raise WeightsError(
            f"weights file {path} does not exist; give an existing .pth file or one of {choices}"
        )
    return LoadedWeights(_load_into(_read_state_dict(path), path), "file", f"file ({path})")


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    """The tensors of ``path``, memory-mapped: those that are never used are never read."""
    zipped = zipfile.is_zipfile(path)  # torch.save's format; older torch wrote a plain pickle
    if zipped:
        _check_zip_entries(path)
    try:
        # mmap needs the zip format; a legacy file is read whole (it cannot be compressed)
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipped)
    except Exception as error:  # torch.load raises many types for a damaged file
        raise WeightsError(
            f"could not read weights file {path}: {type(error).__name__}: {_first_sentence(error)}. "
            "Expected a PyTorch state dict of torchvision's VGG19 (.pth); replace or delete the file."
        ) from error
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(
            f"weights file {path} holds a {type(state).__name__}, not a state dict of tensors; "
            "save it with torch.save(model.state_dict(), path)"
        )
    not_names = [repr(key) for key in state if not isinstance(key, str)]
    if not_names:
        raise WeightsError(
            f"weights file {path} has keys that are not parameter names ({_shorten(not_names)}); a state dict "
            "maps names such as features.0.weight to tensors: save it with torch.save(model.state_dict(), path)"
        )
    return state


def _check_zip_entries(path: Path) -> None:
    """Refuse, from the zip's directory alone, a file that would unpack to more than it holds:
    torch.save stores its entries uncompressed, so a compressed one is crafted or damaged (a
    zip bomb would otherwise be inflated into memory before a key is looked at)."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError):
        return  # torch.load says what is wrong with it
    size = path.stat().st_size
    compressed = [entry.filename for entry in entries if entry.compress_type != zipfile.ZIP_STORED]
    oversized = [entry.filename for entry in entries if entry.file_size > size]
    if compressed or oversized:
        if compressed:
            problem = f"compressed entries ({_shorten(compressed)})"
        else:
            problem = f"entries larger than the file ({_shorten(oversized)})"
        raise WeightsError(
            f"weights file {path} has {problem}, which torch.save never writes: it is damaged or "
            "not a PyTorch checkpoint; replace it, or save the weights again with torch.save(model.state_dict(), path)"
        )


def _first_sentence(error: Exception) -> str:
    """The start of torch's message: its later advice (weights_only=False) is not ours to give."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else "unreadable"
    return text.split(". ")[0].rstrip(".")


def _load_into(state: Mapping[str, torch.Tensor], path: Path) -> nn.Sequential:
    """VGG19 features holding the tensors of ``state`` (no random init, no copies)."""
    features = vgg19_features_module(device="meta", init=False)
    wanted = {}
    for key, value in state.items():
        if key.startswith("classifier."):
            continue
        wanted[key.removeprefix("module.").removeprefix("features.")] = value
    expected = features.state_dict()
    missing = sorted(set(expected) - set(wanted), key=_key_order)
    unexpected = sorted(set(wanted) - set(expected))
    wrong_shape = [
        f"{key} {tuple(wanted[key].shape)} (VGG19 has {tuple(expected[key].shape)})"
        for key in expected
        if key in wanted and wanted[key].shape != expected[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {_shorten(missing)}")
    if unexpected:
        problems.append(f"unexpected {_shorten(unexpected)}")
    if wrong_shape:
        problems.append(f"wrong shape {_shorten(wrong_shape)}")
    if problems:
        raise WeightsError(
            f"weights file {path} does not match torchvision's VGG19 (features.N.weight/bias keys): "
            + "; ".join(problems)
        )
    in_order = sorted(expected, key=_key_order)
    unusable = [f"{key} {problem}" for key in in_order if (problem := _unusable(wanted[key]))]
    if unusable:
        raise WeightsError(
            f"weights file {path} cannot be used: {_shorten(unusable)}. VGG19 weights are dense real "
            "floating-point tensors of finite values; the file is damaged or was saved from a failed training "
            "run: replace it"
        )
    # Copies: the loaded tensors map the file, which may be replaced or truncated while a run goes on.
    features.load_state_dict(
        {key: value.to(torch.float32, copy=True) for key, value in wanted.items()}, assign=True
    )
    return features


def _unusable(tensor: torch.Tensor) -> str | None:
    """What makes ``tensor`` unfit for a weight, or None."""
    if tensor.layout != torch.strided:
        return f"is a {str(tensor.layout).removeprefix('torch.')} tensor"
    if tensor.is_meta:
        return "holds no values (a meta tensor)"
    if not tensor.is_floating_point():  # integers, bools, complex numbers, quantised values
        return f"has dtype {str(tensor.dtype).removeprefix('torch.')}"
    if not bool(torch.isfinite(tensor).all()):
        return "holds NaN or infinite values"
    return None


def _key_order(key: str) -> tuple[int, str]:
    index, _, rest = key.partition(".")
    return (int(index) if index.isdigit() else sys.maxsize, rest)


def _shorten(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _write_features_copy(features: nn.Sequential, copy: Path) -> None:
    try:
        _atomic_save(features.state_dict(), copy)
    except (OSError, RuntimeError) as error:  # read-only cache, full disk: the load itself worked
        log.warning("could not write the features-only weights copy %s: %s", copy, error)


def _atomic_save(state: Mapping[str, torch.Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as out:
        torch.save(dict(state), out)


def remove_stale_partials(folder: Path) -> None:
    """Delete the partial files that a killed download or features copy left in ``folder``:
    ours (by name) whose writing process is gone, or that nobody wrote to for
    :data:`STALE_PARTIAL_SECONDS` (a writer on another machine sharing the cache, or a
    process id taken again). A download in progress writes every few seconds and is kept."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    now = time.time()
    for entry in entries:
        ours = PARTIAL_NAME.match(entry.name)
        earlier = entry.name.startswith("tmp") and entry.name.endswith(
            ".partial"
        )  # earlier versions' mkstemp
        if not (ours or earlier):
            continue
        try:
            idle = now - entry.stat().st_mtime
            gone = ours is not None and ours["host"] == _HOST and not _process_alive(int(ours["pid"]))
            if gone or idle > STALE_PARTIAL_SECONDS:
                os.remove(entry.path)
                log.info("removed %s, left by an interrupted download or weights copy", entry.path)
        except OSError as error:  # removed meanwhile, or another user's in a sticky folder
            log.debug("could not remove the partial file %s: %s", entry.path, error)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name == "nt":
        return True  # there os.kill would end the process: the file's age decides instead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _download(url: str, destination: Path, *, progress: bool) -> None:
    """Download ``url`` to ``destination`` with a progress bar on stderr."""
    bar = None
    for done, total in _download_chunks(url, destination):
        if bar is None:
            bar = _progress_bar(total, destination.name, enabled=progress)
        bar.update(done - bar.n)
    if bar is not None:
        bar.close()


def _download_chunks(url: str, destination: Path) -> Iterator[tuple[int, int | None]]:
    """Download ``url`` to ``destination`` a chunk at a time, yielding (done, total) bytes, and
    check torch hub's hash prefix in the name; nothing is left behind on failure or close."""
    how_to_fix = (
        f"Download {url} ({_IMAGENET_SIZE}) on a machine with internet and put it at {destination} "
        "(set TORCH_HOME to use another cache), pass weights='path/to/vgg19.pth', "
        "or use weights='random' for an untrained network (texture only)."
    )
    digest = hashlib.sha256()
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        with replacing(destination) as out:
            request = urllib.request.Request(url, headers={"User-Agent": "napari-style-transfer"})
            with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                done = 0
                while chunk := response.read(DOWNLOAD_CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    yield done, total
            expected = re.search(r"-([a-f0-9]+)\.", destination.name)
            if expected and not digest.hexdigest().startswith(expected.group(1)):  # not renamed then
                raise WeightsError(
                    f"the downloaded {destination.name} is damaged (SHA-256 {digest.hexdigest()[:12]}..., "
                    f"expected {expected.group(1)}...). Try again, or: {how_to_fix}"
                )
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise WeightsError(
            f"could not download the VGG19 ImageNet weights: {reason}. {how_to_fix}"
        ) from error


def _progress_bar(total: int | None, name: str, *, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, disable=not enabled)
