"""The code keeps the project's rules: ruff's lint rules (complexity at most 12 in src/),
ruff's formatting, and mypy's types in src/ (configured in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ["src", "tests", "benchmarks", "docs", "sample_data", ".ci"]


def run_tool(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *arguments], cwd=ROOT, capture_output=True, text=True)


def test_ruff_finds_nothing_to_fix():
    checked = run_tool("ruff", "check", "--no-cache", *CHECKED)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_code_is_ruff_formatted():
    checked = run_tool("ruff", "format", "--check", "--no-cache", *CHECKED)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_mypy_finds_no_type_errors_in_the_package():
    checked = run_tool("mypy", "--no-incremental")
    assert checked.returncode == 0, checked.stdout + checked.stderr
