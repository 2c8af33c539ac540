"""Session memos that keep the suite fast without changing what any test runs or asserts.

Most of a plain test run's time went to work repeated with identical inputs: every planning run measured the
same ``tiny`` models at the same sizes (up to its 20 s cap), and every training, validation and prediction
converted the same frozen encoder to an OpenVINO graph again (2-4 s each on 2 cores). Within one test run:

- ``measure_input_size`` (the planner's cost measurement), and ``measure_in_child_process`` that samunet_plan
  runs it through, measure once per argument set and torch thread count; later calls get a copy of that real
  measurement (and the seconds it took, which the planner's time cap spends);
- an OpenVINO encoder build is done once per encoder identity (its class, its modules' settings, the bytes of
  its weights and buffers) and input layout, precision and threads; a later runner with the same identity
  reuses the compiled graph, which computes the same function.

Subprocesses never see the memos. A test whose ``samunet_plan`` runs in a subprocess (the benchmarks that run the
commands as a user does) hands them over through the product's own on-disk cost cache instead: the
``seed_cost_cache`` fixture writes this worker's measurements into a preprocessed root's cache before the command
runs, as a second plan on the same machine finds it, and takes what the command measured back afterwards.

A test that measures or builds for real (what it asserts happens inside these calls: the order of the timed
steps, the warnings a build prints) says so with ``@pytest.mark.unmemoised`` (a module: ``pytestmark``);
the memos are off for its duration.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect

import pytest

MARKER = "unmemoised"


class SessionMemo:
    """A dictionary of results that can be switched off for one test."""

    def __init__(self):
        self.results: dict = {}
        self.enabled = True
        self.hits = 0


COST_MEMO, OPENVINO_MEMO = SessionMemo(), SessionMemo()
SEEDED_CACHE_ENTRIES: dict[str, dict] = {}  # cost-cache entries subprocesses of this worker measured


def pytest_configure(config):
    config.addinivalue_line("markers", f"{MARKER}: the test measures costs or builds encoder runtimes itself; "
                                       f"the session memos of tests/fixtures_runtime.py are off for it")


def module_identity(module) -> str:
    """What an exported graph of ``module`` depends on: each submodule's class and plain settings (window sizes,
    global attention, ...) and every parameter's and buffer's name, dtype, shape and bytes."""
    import torch

    digest = hashlib.sha256()
    for name, sub in module.named_modules():
        settings = {k: v for k, v in vars(sub).items()
                    if not k.startswith("_") and isinstance(v, (bool, int, float, str, tuple, list, type(None)))}
        digest.update(f"{name}|{type(sub).__module__}.{type(sub).__qualname__}|{sorted(settings.items())!r}".encode())
    for name, tensor in module.state_dict(keep_vars=False).items():
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}".encode())
        digest.update(data.view(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def _memoised_cost_measurement(real):
    signature = inspect.signature(real)

    @functools.wraps(real)  # its signature stays readable (_memo_as_cache_entries)
    def measure_input_size(*args, **kwargs):
        import torch

        if not COST_MEMO.enabled:
            return real(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        key = (tuple(sorted(bound.arguments.items())), torch.get_num_threads())
        if key not in COST_MEMO.results:
            COST_MEMO.results[key] = real(*args, **kwargs)
        else:
            COST_MEMO.hits += 1
        return dataclasses.replace(COST_MEMO.results[key])

    return measure_input_size


def _memoised_child_measurement(real):
    """samunet_plan measures in a spawned child process: (cost, the child's seconds), memoised the same way."""

    def measure_in_child_process(arguments: tuple):
        import torch

        if not COST_MEMO.enabled:
            return real(arguments)
        key = ("child process", tuple(arguments), torch.get_num_threads())
        if key not in COST_MEMO.results:
            COST_MEMO.results[key] = real(arguments)
        else:
            COST_MEMO.hits += 1
        cost, seconds = COST_MEMO.results[key]
        return dataclasses.replace(cost), seconds

    return measure_in_child_process


def _memoised_openvino_build(real):
    def _build_openvino(self, example):
        if not OPENVINO_MEMO.enabled:
            return real(self, example)
        key = (module_identity(self.encoder), tuple(example.shape[1:]), str(example.dtype), example.device.type,
               str(self.policy.autocast_dtype), self.threads)
        if key not in OPENVINO_MEMO.results:
            OPENVINO_MEMO.results[key] = real(self, example)
        else:
            OPENVINO_MEMO.hits += 1
        return OPENVINO_MEMO.results[key]

    return _build_openvino


@pytest.fixture(scope="session", autouse=True)
def session_memos():
    """Install both memos for the whole test run (see the module docstring)."""
    from samunet.modeling import encoder_runtime
    from samunet.planning import cost_model

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cost_model, "measure_input_size", _memoised_cost_measurement(cost_model.measure_input_size))
        patch.setattr(cost_model, "measure_in_child_process",
                      _memoised_child_measurement(cost_model.measure_in_child_process))
        patch.setattr(encoder_runtime.EncoderRunner, "_build_openvino",
                      _memoised_openvino_build(encoder_runtime.EncoderRunner._build_openvino))
        yield {"cost": COST_MEMO, "openvino": OPENVINO_MEMO}


@pytest.fixture(autouse=True)
def _memos_off_where_marked(request):
    if request.node.get_closest_marker(MARKER) is None:
        yield
        return
    COST_MEMO.enabled = OPENVINO_MEMO.enabled = False
    try:
        yield
    finally:
        COST_MEMO.enabled = OPENVINO_MEMO.enabled = True


def _memo_as_cache_entries() -> dict[str, dict]:
    """COST_MEMO's measurements under the keys samunet_plan's cost cache gives them on this machine."""
    from dataclasses import asdict

    from samunet.planning import cost_model
    from samunet.planning.cost_model import CostCache, MeasuredCosts

    import torch

    parameters = list(inspect.signature(cost_model.measure_input_size).parameters)
    entries = {}
    for key, result in COST_MEMO.results.items():
        if key[-1] != torch.get_num_threads():  # the cache's machine key names this process's thread count
            continue
        if key[0] == "child process":
            arguments, cost = dict(zip(parameters, key[1])), result[0]
        else:
            arguments, cost = dict(key[0]), result
        table = MeasuredCosts(arguments["backbone"], arguments["adapter_name"], arguments["precision"],
                              arguments["device"], CostCache(None), batch=arguments["batch"],
                              global_attention=arguments["global_attention"],
                              encoder_runtime=arguments["encoder_runtime"])
        entries[table._key(arguments["input_size"])] = asdict(cost)
    return entries


@pytest.fixture
def seed_cost_cache(request):
    """``seed(preprocessed_root)``: this worker's measurements into that root's cost cache (see the module
    docstring); at teardown the entries the test's commands measured are kept for the next seeded root. Nothing
    is seeded for a test marked unmemoised."""
    from samunet.planning.cost_model import CostCache, cost_cache_path

    roots = []

    def seed(preprocessed_root):
        from pathlib import Path

        root = Path(preprocessed_root)
        root.mkdir(parents=True, exist_ok=True)
        roots.append(root)
        if request.node.get_closest_marker(MARKER) is not None:
            return
        cache = CostCache(cost_cache_path(root))
        cache.entries.update({**_memo_as_cache_entries(), **SEEDED_CACHE_ENTRIES})
        cache.save()

    yield seed
    for root in roots:
        SEEDED_CACHE_ENTRIES.update(CostCache(cost_cache_path(root)).entries)
