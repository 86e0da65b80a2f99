"""The core install (no extra) serves the Python API and the command line: napari, Qt and
dask's distributed are extras. An environment without them is simulated by a sitecustomize
that makes their imports fail, for this process's children too.

That the plugin loads in napari with every extra installed is tests/test_packaging.py's
(npe2 validate) and tests/_napari's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SRC = Path(__file__).resolve().parents[1] / "src"

#: What the extras bring ([napari], [distributed]) and the core must not need; magicgui and
#: superqt are core dependencies (the widget's), but the API and the CLI need them neither.
NOT_INSTALLED = (
    "napari",
    "qtpy",
    "PyQt5",
    "PyQt6",
    "PySide2",
    "PySide6",
    "magicgui",
    "superqt",
    "distributed",
    "dask",
)

SITECUSTOMIZE = f"""
import sys

class NotInstalled:
    '''Refuses the imports of packages this environment is to lack.'''

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {NOT_INSTALLED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
"""


@pytest.fixture
def lean(tmp_path):
    """Run Python as in a core install: (args) -> CompletedProcess."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(SRC)]), "OMP_NUM_THREADS": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600
        )

    return run


@pytest.fixture
def pictures(tmp_path, content, style):
    paths = []
    for name, image in (("content", content), ("style", style)):
        path = tmp_path / f"{name}.png"
        Image.fromarray((image * 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_the_blocked_packages_cannot_be_imported(lean):
    code = (
        "import importlib\n"
        f"for name in {NOT_INSTALLED!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError:\n"
        "        print(name)\n"
    )
    result = lean("-c", code)
    assert result.stdout.split() == list(NOT_INSTALLED), result.stderr


def test_the_api_runs_without_napari_qt_or_distributed(lean, pictures):
    code = (
        "import json, sys\n"
        "from napari_style_transfer import __version__, stylize\n"
        "import numpy as np\n"
        "from PIL import Image\n"
        f"content, style = (np.asarray(Image.open(p)) for p in {pictures!r})\n"
        "result = stylize(content, style, size=32, steps=2, weights='random')\n"
        "loaded = [m for m in sys.modules if m.partition('.')[0] in "
        f"{NOT_INSTALLED!r}]\n"
        "print(json.dumps({'shape': result.shape, 'version': __version__, 'loaded': loaded}))\n"
    )
    result = lean("-c", code)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert max(out["shape"][:2]) == 32 and out["shape"][2] == 3  # the working size, RGB
    assert out["version"] and out["loaded"] == []


def test_the_command_line_runs_without_napari_qt_or_distributed(lean, pictures, tmp_path):
    output = tmp_path / "styled.png"
    args = ("-o", str(output), "--size", "32", "--steps", "2", "--weights", "random", "-q")
    result = lean("-m", "napari_style_transfer", *pictures, *args)
    assert result.returncode == 0, result.stderr
    assert output.is_file() and "wrote" in result.stdout


def test_a_batch_in_this_process_runs_without_distributed(lean, pictures, tmp_path):
    content, style = pictures
    args = ("--workers", "0", "--size", "32", "--steps", "2", "--weights", "random", "-q")
    result = lean(
        "-m", "napari_style_transfer", "batch", "-o", str(tmp_path / "out"), "--style", style, *args, content
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "content__style.png").is_file()


def test_a_cluster_without_distributed_names_the_extra_to_install(lean):
    result = lean("-c", "import napari_style_transfer.distributed")
    assert result.returncode != 0
    assert "pip install 'napari-style-transfer[distributed]'" in result.stderr.strip().splitlines()[-1]
