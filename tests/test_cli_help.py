"""What a newcomer meets first: ``--help`` opens with worked examples and groups its options,
and a bad option value is refused before torch is imported."""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from napari_style_transfer.cli import (
    BATCH_GROUP,
    OPTION_GROUPS,
    PROG,
    build_batch_parser,
    build_parser,
    main,
    parse_arguments,
    parse_batch_arguments,
)
from napari_style_transfer.options import StyleOptions

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

PARSERS = {"run": build_parser, "demo": lambda: build_parser(demo=True), "batch": build_batch_parser}


def help_of(command: str) -> str:
    return PARSERS[command]().format_help()


def examples(text: str) -> list[str]:
    """The command lines under 'examples:' in a help text."""
    lines = text.split("examples:\n", 1)[1].splitlines()
    return [line.strip() for line in lines if line.startswith(f"  {PROG}")]


def test_every_run_option_has_exactly_one_group():
    grouped = [name for names in OPTION_GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(field.name for field in dataclasses.fields(StyleOptions))


@pytest.mark.parametrize("command", PARSERS)
def test_help_opens_with_three_worked_examples(command):
    text = help_of(command)
    head = text.splitlines()
    assert head[0].startswith(f"usage: {PROG}") and len(head[0]) < 110  # one short usage line
    assert text.index("examples:") < text.index("--steps")  # before any option
    assert len(examples(text)) == 3


@pytest.mark.parametrize("command", PARSERS)
def test_every_example_in_the_help_is_accepted(command):
    for line in examples(help_of(command)):
        argv = shlex.split(line)[1:]
        if command == "batch":
            args = parse_batch_arguments(argv[1:])
            assert args.styles and args.inputs
        else:
            parse_arguments(PARSERS[command](), argv[1:] if command == "demo" else argv)


@pytest.mark.parametrize("command", PARSERS)
def test_help_groups_the_options(command):
    text = help_of(command)
    titles = [*OPTION_GROUPS, *([BATCH_GROUP] if command == "batch" else [])]
    places = [text.index(f"\n{title}:\n") for title in titles]
    assert places == sorted(places)
    # each option sits under its own group's title
    for title, names in OPTION_GROUPS.items():
        section = text.split(f"\n{title}:\n", 1)[1].split("\n\n", 1)[0]
        for name in names:
            assert "--" + name.replace("_", "-") in section, (title, name)
    outputs = text.split("\ninputs and outputs:\n", 1)[1].split("\n\n", 1)[0]
    assert "-o " in outputs or "-o," in outputs


def test_batch_help_puts_the_cluster_options_in_the_batch_group():
    section = help_of("batch").split(f"\n{BATCH_GROUP}:\n", 1)[1]
    for flag in ("--workers", "--scheduler", "--connect-timeout", "--force"):
        assert flag in section


def run_python(code: str, *, blocked: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``code`` in a new Python with this checkout's package, in which ``blocked`` packages
    cannot be imported, as if they were not installed (see tests/test_lean_install.py)."""
    return subprocess.run(
        [sys.executable, "-c", blocking(blocked) + code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"},
        timeout=300,
    )


def blocking(packages: tuple[str, ...]) -> str:
    """Python that makes every import of ``packages`` (and their submodules) fail, through a
    finder placed first on sys.meta_path: what an environment without them does."""
    return (
        "import sys\n"
        "class NotInstalled:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.partition('.')[0] in {packages!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NotInstalled())\n"
    )


@pytest.mark.parametrize(
    ("command", "bad"),
    [
        ("run", ["--steps", "-5"]),
        ("run", ["--style-layers", "conv9_9"]),
        ("demo", ["--size", "0"]),
        ("batch", ["--steps", "-5"]),
    ],
)
def test_a_bad_option_value_is_refused_before_torch_is_imported(image_files, tmp_path, command, bad):
    content, style = map(str, image_files)
    argv = {
        "run": [content, style, "-o", str(tmp_path / "r.png")],
        "demo": ["demo", "-o", str(tmp_path / "demo")],
        "batch": ["batch", "-o", str(tmp_path / "out"), "--style", style, "--workers", "0", content],
    }[command] + bad
    code = (
        "from napari_style_transfer.cli import main\n"
        f"status = main({argv!r})\n"
        "print(status, 'torch' in sys.modules)\n"
    )
    result = run_python(code)
    assert result.stdout.split() == ["2", "False"], result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"{PROG}: error: ")


def test_a_batch_on_a_cluster_without_distributed_names_the_extra(image_files, tmp_path):
    content, style = map(str, image_files)
    argv = ["batch", "-o", str(tmp_path / "out"), "--style", style, content]
    result = run_python(
        f"from napari_style_transfer.cli import main\nprint(main({argv!r}))\n", blocked=("distributed",)
    )
    assert result.stdout.split() == ["2"], result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "pip install 'napari-style-transfer[distributed]'" in line and "--workers 0" in line
    assert not (tmp_path / "out").exists()


def test_a_bad_value_in_the_parser_keeps_its_one_line(capsys):
    with pytest.raises(SystemExit):
        main(["c.png", "s.png", "-o", "r.png", "--steps", "many"])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--help" in err
