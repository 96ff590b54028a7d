"""ruff's rules, the complexity limits among them, hold in CI as in ``tox -e lint``.

The suite is what CI runs (``.ci/run`` calls ``./run-tests``), so the lint
that issue 19 asked to keep (C901 and the PLR09 family, with the limits and
their reasons in pyproject.toml) runs here too; ruff takes under a second.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TREES = ["lib", "src", "tests", "tools"]


def _ruff() -> str:
    found = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("ruff is not installed; CI installs it from requirements/dev.txt")
        pytest.skip("ruff is not installed (pip install -r requirements/dev.txt)")
    return found


def test_ruff_check_is_clean() -> None:
    run = subprocess.run(
        [_ruff(), "check", "--no-cache", *TREES], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_ruff_format_is_clean() -> None:
    run = subprocess.run(
        [_ruff(), "format", "--check", "--no-cache", *TREES],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_complexity_rules_are_on() -> None:
    """A limit switched off in pyproject.toml would let the check above pass vacuously."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    select = next(line for line in text.splitlines() if line.startswith("select = ["))
    for rule in ("C901", "PLR0911", "PLR0912", "PLR0913", "PLR0915"):
        assert f'"{rule}"' in select, rule
