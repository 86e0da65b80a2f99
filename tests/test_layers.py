"""The layering of docs/architecture.md holds: import-linter's contracts in pyproject.toml
pass, and a forbidden import (one inside a function too) breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import napari_style_transfer

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(napari_style_transfer.__file__).resolve().parent


def lint_imports(source_root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter's contracts checked against the package found under ``source_root``."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
            "--no-cache",
            str(ROOT / "pyproject.toml"),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(source_root)},
        capture_output=True,
        text=True,
    )


def test_the_packages_imports_keep_every_layering_contract():
    checked = lint_imports(PACKAGE.parent)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "0 broken" in checked.stdout


def test_the_pipeline_importing_the_cluster_code_inside_a_function_breaks_the_layers(tmp_path):
    copy = tmp_path / "napari_style_transfer"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "pipeline" / "runner.py", "a") as runner:
        runner.write("\n\ndef _on_the_cluster():\n    from ..distributed import stylize_on_cluster\n")
    checked = lint_imports(tmp_path)
    assert checked.returncode != 0
    assert "napari_style_transfer.pipeline.runner -> napari_style_transfer.distributed" in checked.stdout


def test_the_engine_importing_napari_breaks_the_gui_contract(tmp_path):
    copy = tmp_path / "napari_style_transfer"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "engine.py", "a") as engine:
        engine.write("\n\ndef _show():\n    import napari\n")
    checked = lint_imports(tmp_path)
    assert checked.returncode != 0
    assert "Only the napari skin imports napari, Qt or magicgui BROKEN" in checked.stdout
