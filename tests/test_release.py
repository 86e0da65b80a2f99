"""The release: an sdist and a wheel that ``twine check`` accepts, built from a repository
without tags (a contributor's clone: a development version) and from a tag (its version).

Here rather than in .ci/run: the suite runs wherever the README's test command runs (CI,
GitHub's matrix, a contributor's machine), and a failure reads like any other test's."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: What a checkout holds that a clone would not (build outputs, caches, the venv link).
NOT_IN_A_CLONE = shutil.ignore_patterns(
    ".git", ".venv", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", "build", "dist", "site"
)


def git(repository: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org", *args]
    return subprocess.run(command, cwd=repository, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    """This checkout's files (with uncommitted changes) as a new git repository, no tags."""
    path = tmp_path_factory.mktemp("clone") / "napari-style-transfer"
    shutil.copytree(ROOT, path, ignore=NOT_IN_A_CLONE)
    (path / "src" / "napari_style_transfer" / "napari.yaml").unlink(missing_ok=True)  # git-ignored
    git(path, "init", "-q")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "a clone without tags")
    return path


def build(source: Path, out: Path) -> tuple[Path, Path]:
    """``python -m build`` (sdist, then the wheel from it, as PyPI's users get them)."""
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    (sdist,) = out.glob("napari_style_transfer-*.tar.gz")
    (wheel,) = out.glob("napari_style_transfer-*.whl")
    return sdist, wheel


@pytest.fixture(scope="module")
def untagged(repository, tmp_path_factory) -> tuple[Path, Path]:
    return build(repository, tmp_path_factory.mktemp("dist"))


def wheel_version(wheel: Path) -> str:
    return wheel.name.split("-")[1]


def test_a_clone_without_tags_builds_a_development_version(untagged):
    sdist, wheel = untagged
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?\.dev\d+(\+g[0-9a-f]+)?", wheel_version(wheel))
    assert sdist.name == f"napari_style_transfer-{wheel_version(wheel)}.tar.gz"


def test_twine_accepts_the_sdist_and_the_wheel(untagged):
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, untagged)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2


def test_the_sdist_carries_what_a_wheel_and_the_tests_need(untagged):
    sdist, _ = untagged
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for needed in ("napari.yaml", "pyproject.toml", ".ci/hatch_build.py", "README.md", "LICENSE", "PKG-INFO"):
        assert needed in names
    assert any(name.startswith("sample_data/") for name in names)
    assert any(name.startswith("tests/") for name in names)


def test_the_wheel_names_its_urls_and_its_readme(untagged):
    _, wheel = untagged
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(name).decode()
    for label in ("Homepage", "Documentation", "Source", "Issues"):
        assert f"Project-URL: {label}, https://" in metadata
    assert "Description-Content-Type: text/markdown" in metadata


def test_a_tag_gives_the_release_its_version(repository, tmp_path):
    git(repository, "tag", "v1.2.3")
    try:
        _, wheel = build(repository, tmp_path)
    finally:
        git(repository, "tag", "-d", "v1.2.3")
    assert wheel_version(wheel) == "1.2.3"
