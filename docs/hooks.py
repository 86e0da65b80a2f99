"""MkDocs hooks: the pages that must follow the code are generated from it at every build.

- ``<!-- options-table -->``: every run option, from :class:`StyleOptions` (default, values,
  help) and the command line's groups and flags; never written by hand.
- ``<!-- cli-help: run|demo|batch -->``: the command's ``--help``, as it prints it.
- Sphinx roles in docstrings (``:func:`~.api.stylize```) read as code in the API reference.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's code

_ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj):<code>~?\.?([\w.]+)</code>")
_CLI_HELP = re.compile(r"<!-- cli-help: (run|demo|batch) -->")


def on_page_markdown(markdown: str, **_: Any) -> str:
    if "<!-- options-table -->" in markdown:
        markdown = markdown.replace("<!-- options-table -->", options_table())
    return _CLI_HELP.sub(lambda match: cli_help(match.group(1)), markdown)


def on_page_content(html: str, **_: Any) -> str:
    return _ROLE.sub(lambda match: f"<code>{match.group(1).rsplit('.', 1)[-1]}</code>", html)


def options_table() -> str:
    """One table per group of the command line's ``--help``, one row per StyleOptions field."""
    from napari_style_transfer.cli import OPTION_GROUPS, option_flag
    from napari_style_transfer.options import StyleOptions, choices, help_text

    fields = {field.name: field for field in dataclasses.fields(StyleOptions)}
    defaults = StyleOptions()
    sections = []
    for title, names in OPTION_GROUPS.items():
        rows = ["| keyword (Python, napari) | flag (command line) | default | values | what it does |"]
        rows.append("| --- | --- | --- | --- | --- |")
        for name in names:
            values = _values(fields[name], choices(name))
            flag = option_flag(name)
            if isinstance(getattr(defaults, name), bool):
                flag += f" / --no-{name.replace('_', '-')}"
            cells = (f"`{name}`", f"`{flag}`", _shown(getattr(defaults, name)), values, help_text(name))
            rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        sections.append(f"### {title[0].upper() + title[1:]}\n\n" + "\n".join(rows))
    return "\n\n".join(sections)


def _values(field: dataclasses.Field, names: tuple[str, ...] | None) -> str:
    if names:
        return ", ".join(f"`{name}`" for name in names)
    low, high = field.metadata.get("minimum"), field.metadata.get("maximum")
    if low is not None and high is not None:
        return f"{low:g} to {high:g}"
    return f">= {low:g}" if low is not None else ""


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return "`" + ",".join(map(str, value)) + "`" if value else "(empty)"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def cli_help(command: str) -> str:
    """The help text at 100 columns, in a code block."""
    from napari_style_transfer.cli import build_batch_parser, build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal's width
    parser = {
        "run": build_parser,
        "demo": lambda: build_parser(demo=True),
        "batch": build_batch_parser,
    }[command]()
    return "```text\n" + parser.format_help().rstrip() + "\n```"
