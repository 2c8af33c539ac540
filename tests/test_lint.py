"""The linter's rules (pyproject.toml: lines at most 120 characters, no syntax error, no undefined name) hold for
the package, its tests, its benchmarks and setup.py."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LINTED_PATHS = ["samunet", "tests", "benchmarks", "setup.py"]


def test_ruff_finds_nothing():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", *LINTED_PATHS],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, f"ruff check failed:\n{result.stdout}{result.stderr}"
