"""run_in_fresh_process: a new interpreter that returns the call's result or raises its error, and loads only the
called function's module (not the caller's libraries)."""
from __future__ import annotations

import math
import os
import sys

import pytest

from samunet.utils.processes import run_in_fresh_process


def loaded(names: list[str]) -> list[str]:
    return [name for name in names if name in sys.modules]


def test_the_call_runs_in_another_process_and_returns_its_result():
    assert run_in_fresh_process(os.getpid) != os.getpid()
    assert run_in_fresh_process(math.hypot, 3.0, 4.0) == 5.0


def test_the_childs_error_is_raised_here_with_where_it_happened():
    with pytest.raises(ValueError, match="math domain error") as raised:
        run_in_fresh_process(math.sqrt, -1.0)
    assert any("child process" in note for note in getattr(raised.value, "__notes__", []))


def test_the_child_loads_only_the_functions_module():
    import SimpleITK  # noqa: F401  (loaded here, as samunet_plan's process has it)

    heavy = ["SimpleITK", "torch", "scipy"]
    assert "SimpleITK" in loaded(heavy)
    assert run_in_fresh_process(loaded, heavy) == []
