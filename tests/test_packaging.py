"""The package: manifest and sample data inside it (wheel and editable), npe2 accepts it.

napari.yaml and sample_data/ live at the top level of the checkout, without symbolic links
(.ci/hatch_build.py puts them where the package looks).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from importlib.resources import files
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """A wheel built from a copy of the source tree, without installing any dependency."""
    source = tmp_path_factory.mktemp("src") / "tree"
    shutil.copytree(
        ROOT,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "*.egg-info", "__pycache__", ".pytest_cache", "build", "dist"
        ),
    )
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("napari_style_transfer-*.whl")
    return zipfile.ZipFile(path)


@pytest.fixture(scope="module")
def editable(tmp_path_factory) -> tuple[Path, zipfile.ZipFile]:
    """A copy of the checkout (without the manifest copy an editable install writes) and the
    editable wheel hatchling builds from it."""
    from hatchling.builders.wheel import WheelBuilder

    source = tmp_path_factory.mktemp("editable") / "tree"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "napari.yaml"))
    shutil.copytree(ROOT / "sample_data", source / "sample_data")
    (source / ".ci").mkdir()
    for name in ("napari.yaml", "pyproject.toml", ".ci/hatch_build.py", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("editable-wheel")
    path = next(WheelBuilder(str(source)).build(directory=str(out), versions=["editable"]))
    return source, zipfile.ZipFile(path)


def test_the_checkout_has_no_symbolic_links():
    paths = [
        ROOT / "napari.yaml",
        ROOT / "sample_data",
        *(ROOT / "sample_data").iterdir(),
        *(ROOT / "src").rglob("*"),
    ]
    assert [p for p in paths if p.is_symlink()] == []
    assert (ROOT / "napari.yaml").is_file() and (ROOT / "sample_data").is_dir()


def test_the_wheel_holds_the_manifest_and_the_sample_data(wheel):
    names = set(wheel.namelist())
    assert "napari_style_transfer/napari.yaml" in names
    bundled = {Path(n).name for n in names if n.startswith("napari_style_transfer/sample_data/")}
    expected = {p.name for p in (ROOT / "sample_data").iterdir() if p.is_file()}
    assert expected <= bundled
    assert wheel.read("napari_style_transfer/napari.yaml") == (ROOT / "napari.yaml").read_bytes()


def test_the_wheel_registers_the_manifest_and_the_command(wheel):
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "[napari.manifest]" in text and "napari-style-transfer = napari_style_transfer:napari.yaml" in text
    assert "napari-style-transfer = napari_style_transfer.cli:main" in text


def test_an_editable_install_puts_src_on_the_path_and_copies_the_manifest_into_the_package(editable):
    source, wheel = editable
    names = wheel.namelist()
    assert not [n for n in names if n.startswith("napari_style_transfer/")], (
        "an editable wheel holds no package files"
    )
    (pth,) = [n for n in names if n.endswith(".pth")]
    assert Path(wheel.read(pth).decode().strip()) == source / "src"
    copy = source / "src" / "napari_style_transfer" / "napari.yaml"
    assert not copy.is_symlink() and copy.read_bytes() == (ROOT / "napari.yaml").read_bytes()


def test_an_editable_install_resolves_the_entry_point_and_the_sample_data(editable):
    source, _ = editable
    code = (
        "import importlib.util; from pathlib import Path; "
        "from napari_style_transfer._sample_data import sample_path; "
        "spec = importlib.util.find_spec('napari_style_transfer'); "
        "print(Path(spec.submodule_search_locations[0], 'napari.yaml').is_file()); "
        "print(sample_path('astronaut'))"
    )
    env = {**os.environ, "PYTHONPATH": str(source / "src")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    assert out == ["True", str(source / "sample_data" / "astronaut.png")]


def test_the_manifest_npe2_reads_is_the_top_level_one():
    """Fails after napari.yaml changed until the editable install is redone (pip install -e .)."""
    package = files("napari_style_transfer")
    assert (package / "napari.yaml").read_bytes() == (ROOT / "napari.yaml").read_bytes()


def test_the_wheel_leaves_torchvision_to_the_test_extra(wheel):
    """The plugin never imports torchvision (it would bring torch._dynamo and triton along)."""
    (metadata_file,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    requires = [
        line.split(":", 1)[1].strip()
        for line in wheel.read(metadata_file).decode().splitlines()
        if line.startswith("Requires-Dist:")
    ]
    torchvision = [r for r in requires if r.startswith("torchvision")]
    assert torchvision and all("extra ==" in r for r in torchvision)
    assert any("extra == 'testing'" in r or 'extra == "testing"' in r for r in torchvision)


def test_the_installed_package_holds_the_manifest_and_the_sample_data():
    from napari_style_transfer._sample_data import sample_path

    assert (files("napari_style_transfer") / "napari.yaml").is_file()
    assert sample_path("astronaut").is_file()


def test_npe2_finds_and_validates_the_manifest_through_the_entry_point():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-style-transfer")
    assert manifest.name == "napari-style-transfer"
    assert manifest.display_name == "Style Transfer"
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-style-transfer", "--imports"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def requirements(wheel: zipfile.ZipFile) -> dict[str, set[str]]:
    """The wheel's Requires-Dist names by extra ("" for the core)."""
    (metadata_file,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    by_extra: dict[str, set[str]] = {}
    for line in wheel.read(metadata_file).decode().splitlines():
        if line.startswith("Requires-Dist:"):
            requirement, _, marker = line.split(":", 1)[1].partition(";")
            extra = marker.split("extra ==")[1].strip(" '\"") if "extra ==" in marker else ""
            name = requirement.strip().split("[")[0]
            for sign in "<>=!~ ":
                name = name.split(sign)[0]
            by_extra.setdefault(extra, set()).add(name.lower())
    return by_extra


def test_the_core_holds_what_the_engine_and_the_command_line_need(wheel):
    core = requirements(wheel)[""]
    assert {"torch", "numpy", "pillow", "tifffile", "scikit-image", "scipy", "tqdm"} <= core
    assert {"magicgui", "qtpy"} <= core  # the widget module imports them (no Qt binding)
    assert not core & {"napari", "distributed", "dask", "pyqt5", "pyqt6", "pyside2", "pyside6"}


def test_the_extras_add_napari_with_a_qt_binding_and_distributed(wheel):
    extras = requirements(wheel)
    assert {"napari", "pyqt6"} <= extras["napari"]
    assert extras["distributed"] == {"distributed"}
    assert extras["all"] == {"napari", "pyqt6", "distributed"}  # hatchling expands [napari,distributed]
    # the suite runs napari, a cluster, the docs build and the release build
    assert {"napari", "pyqt6", "distributed", "mkdocs", "pytest", "twine", "build", "ruff"} <= extras[
        "testing"
    ]
    assert {"mkdocs", "mkdocs-material", "mkdocstrings"} <= extras["docs"]


def test_all_and_testing_name_the_extras_they_gather():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["all"] == ["napari-style-transfer[napari,distributed]"]
    assert "napari-style-transfer[all,docs]" in extras["testing"]  # the suite runs napari and a cluster


def test_the_manifest_preferences_default_to_the_engine_defaults():
    import yaml

    from napari_style_transfer.options import StyleOptions

    manifest = yaml.safe_load((ROOT / "napari.yaml").read_text())
    properties = manifest["contributions"]["configurations"]["run"]["properties"]
    assert set(properties) == {"device", "weights", "snapshot_every", "scheduler"}
    assert properties.pop("scheduler")["default"] == ""  # not a run option: where stacks run
    for name, schema in properties.items():
        assert schema["default"] == getattr(StyleOptions(), name), name
        assert schema["description"]


def test_the_widget_is_a_dock_widget_and_a_layers_filter():
    import yaml

    contributions = yaml.safe_load((ROOT / "napari.yaml").read_text())["contributions"]
    assert contributions["widgets"] == [
        {"command": "napari-style-transfer.make_widget", "display_name": "Style Transfer"}
    ]
    assert contributions["menus"]["napari/layers/filter"] == [
        {"command": "napari-style-transfer.make_widget"}
    ]


def test_the_wheel_carries_the_licence_and_the_classifiers(wheel):
    names = wheel.namelist()
    (licence,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    assert wheel.read(licence) == (ROOT / "LICENSE").read_bytes()
    (metadata_file,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    metadata = wheel.read(metadata_file).decode()
    assert "License-Expression: BSD-3-Clause" in metadata
    for classifier in ("Intended Audience :: Science/Research", "Programming Language :: Python :: 3.13"):
        assert f"Classifier: {classifier}" in metadata


def test_the_manifest_is_public_and_names_its_categories():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(ROOT / "napari.yaml")
    assert manifest.visibility == "public"
    assert "Image Processing" in manifest.categories


def test_a_tree_without_git_history_builds_with_the_fallback_version(wheel):
    # the fixture's copy has no .git: hatch-vcs falls back (pyproject.toml, fallback-version)
    (metadata_file,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    assert "\nVersion: 0.0.0\n" in wheel.read(metadata_file).decode()
