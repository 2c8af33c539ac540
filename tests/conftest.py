"""Shared test fixtures.

Every end-to-end test runs on a fresh clone: the real Hippocampus cases it needs ship in ``tests/data/``.
Tests that need the larger data of ``../shared/datasets`` (all 260 Hippocampus cases, the CT example) are
marked ``slow``. CI and developers have that folder and run them; where it is absent (a user's clone) they are
deselected, not skipped, with one line saying so. ``SAMUNET_TEST_SHARED_DATASETS`` points elsewhere (e.g. from
a git worktree, whose ``..`` holds no ``shared``).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = REPO_ROOT / "tests" / "data"
HIPPOCAMPUS_SUBSET = TEST_DATA / "Task04_Hippocampus"  # 8 real cases, MSD layout (CC-BY-SA 4.0, see LICENCE.md)
SHARED_DATASETS = Path(os.environ.get("SAMUNET_TEST_SHARED_DATASETS")
                       or REPO_ROOT / ".." / "shared" / "datasets").resolve()
HIPPOCAMPUS_TASK = SHARED_DATASETS / "Task04_Hippocampus"  # all 260 cases
CT_EXAMPLE = SHARED_DATASETS / "Example_CT_TotalSegmentator"
# a test using one of these fixtures (directly or through another fixture) must be marked slow
SHARED_DATA_FIXTURES = {"hippocampus_task_full": HIPPOCAMPUS_TASK, "ct_example": CT_EXAMPLE}

# fixtures that build real pipelines live in these modules (one per stage); fixtures_runtime holds the session
# memos of cost measurements and OpenVINO builds
pytest_plugins = ["tests.fixtures_data", "tests.fixtures_pipeline", "tests.fixtures_models", "tests.fixtures_runtime"]


def pytest_configure(config):
    """Under pytest-xdist each worker gets its share of the cores for torch and for the commands it starts: two
    workers with a thread per core each would run twice as many OpenMP threads as there are cores."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2:
        return
    from samunet.utils.processes import usable_cpu_count

    threads = max(1, usable_cpu_count() // workers)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    import torch

    torch.set_num_threads(threads)


def _shared_data_present() -> bool:
    return all(path.is_dir() for path in SHARED_DATA_FIXTURES.values())


def pytest_collection_modifyitems(config, items):
    unmarked = [item.nodeid for item in items if SHARED_DATA_FIXTURES.keys() & set(getattr(item, "fixturenames", ()))
                and item.get_closest_marker("slow") is None]
    if unmarked:
        raise pytest.UsageError(f"{unmarked[0]} uses ../shared/datasets but is not marked @pytest.mark.slow "
                                f"(a fresh clone lacks that folder)")
    if _shared_data_present():
        return
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item.get_closest_marker("slow") is None]
        config._samunet_deselected_slow = len(slow)
        if hasattr(config, "workeroutput"):  # a pytest-xdist worker: the controller prints the summary
            config.workeroutput["samunet_deselected_slow"] = len(slow)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist's controller collects nothing itself: it takes the count from its workers (each collects all)."""
    count = getattr(node, "workeroutput", {}).get("samunet_deselected_slow", 0)
    node.config._samunet_deselected_slow = max(count, getattr(node.config, "_samunet_deselected_slow", 0))


def pytest_terminal_summary(terminalreporter, config):
    count = getattr(config, "_samunet_deselected_slow", 0)
    if count:
        terminalreporter.write_line(f"samunet: deselected {count} slow test(s): they need {SHARED_DATASETS} "
                                    f"(developers and CI have it; set SAMUNET_TEST_SHARED_DATASETS to run them)")


def _shared(path: Path) -> Path:
    if not path.is_dir():  # only reachable when a slow test is selected by hand without the data
        raise FileNotFoundError(f"{path} is absent: this slow test needs ../shared/datasets")
    return path


@pytest.fixture
def hippocampus_task() -> Path:
    """The 8-case MSD-layout Hippocampus task shipped in tests/data (read-only)."""
    return HIPPOCAMPUS_SUBSET


@pytest.fixture(scope="session")
def hippocampus_task_full() -> Path:
    """All 260 cases of MSD Task04_Hippocampus from ../shared/datasets (slow tests only)."""
    return _shared(HIPPOCAMPUS_TASK)


@pytest.fixture(scope="session")
def ct_example() -> Path:
    return _shared(CT_EXAMPLE)


@pytest.fixture
def samunet_dirs(tmp_path, monkeypatch) -> dict[str, Path]:
    """Point SAMUNET_RAW/PREPROCESSED/RESULTS at fresh folders under tmp_path."""
    dirs = {}
    for var, sub in (("SAMUNET_RAW", "raw"), ("SAMUNET_PREPROCESSED", "preprocessed"), ("SAMUNET_RESULTS", "results")):
        d = tmp_path / sub
        d.mkdir()
        monkeypatch.setenv(var, str(d))
        dirs[sub] = d
    return dirs


@pytest.fixture(scope="module")
def single_torch_thread():
    """Tiny test models are made of microsecond-sized ops: a second OpenMP thread only adds barriers, and on a
    busy machine each barrier can wait for a descheduled thread (measured up to 8-13x slower). Modules that run
    tiny models use it with ``pytestmark = pytest.mark.usefixtures("single_torch_thread")``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
