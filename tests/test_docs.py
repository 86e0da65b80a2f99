"""The documentation: the site builds with warnings as errors, its generated parts follow the
code, the README stays short and keeps the commands .ci/run reads, and the napari hub's
description is Markdown with its picture.

The site is built here rather than in .ci/run: the suite runs wherever the README's test
command runs, so a broken link or a renamed option fails where it was made."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from napari_style_transfer.cli import option_flag
from napari_style_transfer.options import StyleOptions

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = [field.name for field in dataclasses.fields(StyleOptions)]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built by ``mkdocs build --strict`` into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def page(site: Path, name: str) -> str:
    return (site / name / "index.html").read_text()


def test_every_page_of_the_nav_is_built(site):
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def files(entries):
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            yield from files(value) if isinstance(value, list) else [value]

    for source in files(nav["nav"]):
        built = "index.html" if source == "index.md" else source.removesuffix(".md") + "/index.html"
        assert (site / built).is_file(), source


def test_the_option_table_is_generated_with_every_option(site):
    html = page(site, "options")
    for name in OPTIONS:
        assert f"<code>{name}</code>" in html, name
        assert f"<code>{option_flag(name)}" in html, name
    assert "<!-- options-table -->" not in html
    source = (ROOT / "docs" / "options.md").read_text()
    assert not any(f"`{option_flag(name)}`" in source for name in OPTIONS)  # never by hand


def test_the_command_line_page_shows_the_help_as_the_command_prints_it(site):
    html = page(site, "command-line")
    for text in (
        "usage: napari-style-transfer CONTENT STYLE",
        "usage: napari-style-transfer batch",
        "examples:",
    ):
        assert text in html


def test_the_api_reference_comes_from_the_docstrings(site):
    html = page(site, "api")
    assert "Style transfer of numpy images; returns the result as float32 in [0, 1]." in html
    assert "stylize_batch" in html and "StyleOptions" in html
    assert not re.search(r":(func|class|meth):", html)  # Sphinx roles shown as code


def test_the_tutorials_show_their_pictures_and_say_the_weights_were_untrained():
    for tutorial in (ROOT / "docs" / "tutorials").glob("*.md"):
        text = tutorial.read_text()
        pictures = re.findall(r"!\[[^\]]*\]\(\.\./images/([^)]+)\)", text)
        assert pictures, tutorial.name
        for picture in pictures:
            assert (ROOT / "docs" / "images" / picture).is_file(), picture
        assert "**untrained** VGG19" in text, tutorial.name


def test_the_readme_is_short_and_keeps_the_two_commands_ci_reads():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 150
    script = (ROOT / ".ci" / "run").read_text()
    (program,) = re.findall(r"awk '([^']+)' README.md", script)
    command = subprocess.run(  # through bash, as .ci/run does (also on Windows: Git's bash)
        ["bash", "-c", f"awk '{program}' README.md"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert command == "bash .ci/install && .venv/bin/python -m pytest"
    assert "bash .ci/install && .venv/bin/napari-style-transfer demo -o demo-output" in readme


def test_the_readmes_links_lead_to_files_of_the_checkout():
    readme = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\((?!https?://)([^)#]+)", readme):
        assert (ROOT / target).exists(), target


def test_the_hub_description_is_markdown_with_a_picture_and_a_how_to():
    import markdown

    text = (ROOT / ".napari-hub" / "DESCRIPTION.md").read_text()
    html = markdown.markdown(text)
    assert "<h2>For whom</h2>" in html and "<h2>How to use it</h2>" in html and "<ol>" in html
    (picture,) = re.findall(r'<img alt="[^"]+" src="([^"]+)"', html)
    # the hub shows pictures by absolute address; the file is this checkout's
    assert picture.startswith("https://raw.githubusercontent.com/")
    assert (ROOT / picture.split("/main/", 1)[1]).is_file()


def test_the_hub_config_names_labels_and_links():
    config = yaml.safe_load((ROOT / ".napari-hub" / "config.yml").read_text())
    assert config["labels"]["ontology"].startswith("EDAM-BIOIMAGING")
    assert config["labels"]["terms"]
    assert set(config["project_urls"]) >= {"Documentation", "Report Issues", "Project Site"}
    assert all(url.startswith("https://") for url in config["project_urls"].values())
