"""Session memos that keep the suite fast without changing what any test runs or asserts.

Most of a plain test run's time went to work repeated with identical inputs: every planning run measured the
same ``tiny`` models at the same sizes (up to its 20 s cap), and every training, validation and prediction
converted the same frozen encoder to an OpenVINO graph again (2-4 s each on 2 cores). Within one test run:

- ``measure_input_size`` (the planner's cost measurement), and ``measure_in_child_process`` that samunet_plan
  runs it through, measure once per argument set and torch thread count; later calls get a copy of that real
  measurement (and the seconds it took, which the planner's time cap spends); the child's measurement is made in
  the worker, without the fresh interpreter's start;
- an OpenVINO encoder build is done once per encoder identity (its class, its modules' settings, the bytes of
  its weights and buffers) and input layout, precision and threads; a later runner with the same identity
  reuses the compiled graph, which computes the same function.

Under pytest-xdist the workers share the cost measurements (``SharedCosts``: a file per measurement in the run's
base temporary folder, written under a lock), so two workers planning the same tiny dataset measure it once;
compiled graphs stay per worker (an OpenVINO build costs 0.3-3 s, a cost measurement 6-11 s in a fresh process).

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
import time

import pytest

MARKER = "unmemoised"


class SessionMemo:
    """A dictionary of results that can be switched off for one test."""

    def __init__(self):
        self.results: dict = {}
        self.enabled = True
        self.hits = 0
        self.real = 0
        self.seconds = 0.0  # spent on the real calls
        self.shared: SharedCosts | None = None  # the other workers' results (cost measurements only)

    def fill(self, key, real_call):
        """The memoised result of ``real_call()`` under ``key``: called once per key in the whole run."""
        if key in self.results:
            self.hits += 1
        elif self.shared is None:
            self.results[key] = self._call(real_call)
        else:
            with self.shared.lock(key):  # a worker measuring this key now: wait for its result, not measure twice
                found = self.shared.get(key)
                if found is None:
                    found = self._call(real_call)
                    self.shared.put(key, found)
                else:
                    self.hits += 1
            self.results[key] = found
        return self.results[key]

    def _call(self, real_call):
        start = time.perf_counter()
        result = real_call()
        self.real += 1
        self.seconds += time.perf_counter() - start
        return result

    def describe(self) -> str:
        return f"{self.real} real ({self.seconds:.0f} s), {self.hits} reused"


class SharedCosts:
    """Cost measurements shared by the pytest-xdist workers of one run: one JSON file per key in a folder of the
    run's base temporary directory, written under a lock per key (pytest-xdist's recipe for session data)."""

    def __init__(self, folder):
        from pathlib import Path

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, key):
        return self.folder / hashlib.sha256(repr(key).encode()).hexdigest()[:24]

    def lock(self, key):
        from filelock import FileLock

        return FileLock(str(self._path(key)) + ".lock")

    def get(self, key):
        import json

        from samunet.planning.cost_model import MeasuredCost

        path = self._path(key).with_suffix(".json")
        if not path.is_file():
            return None
        stored = json.loads(path.read_text())
        cost = MeasuredCost(**stored["cost"])
        return cost if stored["seconds"] is None else (cost, stored["seconds"])

    def put(self, key, result) -> None:
        from samunet.utils.atomic import write_json

        cost, seconds = result if isinstance(result, tuple) else (result, None)
        write_json({"key": repr(key), "cost": dataclasses.asdict(cost), "seconds": seconds},
                   self._path(key).with_suffix(".json"))  # renamed into place: a reader sees all of it or nothing


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
        return dataclasses.replace(COST_MEMO.fill(key, lambda: real(*args, **kwargs)))

    return measure_input_size


def _memoised_child_measurement(real, measure_input_size):
    """samunet_plan measures in a fresh interpreter: (cost, the seconds it measured for), memoised the same way.

    A miss measures in this worker instead: the same ``measure_input_size`` with the child's seed and this
    worker's threads, so only the interpreter's start and imports (about 4 s each, 16 times a run) are saved. The
    fresh interpreter itself is tested where ``samunet_plan`` runs as a subprocess (test_plan_cli) and in
    test_processes; an ``unmemoised`` test gets the real child."""

    def measure_here(arguments: tuple):
        import torch

        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the child's seed (cost_model._measure_seeded)
            cost = measure_input_size(*arguments)
        return cost, time.perf_counter() - start

    def measure_in_child_process(arguments: tuple):
        import torch

        if not COST_MEMO.enabled:
            return real(arguments)
        key = ("child process", tuple(arguments), torch.get_num_threads())
        cost, seconds = COST_MEMO.fill(key, lambda: measure_here(arguments))
        return dataclasses.replace(cost), seconds

    return measure_in_child_process


def _memoised_openvino_build(real):
    def _build_openvino(self, example):
        if not OPENVINO_MEMO.enabled:
            return real(self, example)
        key = (module_identity(self.encoder), tuple(example.shape[1:]), str(example.dtype), example.device.type,
               str(self.policy.autocast_dtype), self.threads)
        return OPENVINO_MEMO.fill(key, lambda: real(self, example))

    return _build_openvino


@pytest.fixture(scope="session", autouse=True)
def session_memos(tmp_path_factory, worker_id):
    """Install both memos for the whole test run (see the module docstring)."""
    from samunet.modeling import encoder_runtime
    from samunet.planning import cost_model

    if worker_id != "master":  # pytest-xdist: the workers' base temporary folders share a parent
        COST_MEMO.shared = SharedCosts(tmp_path_factory.getbasetemp().parent / "samunet_cost_memo")
    real_measurement = cost_model.measure_input_size
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cost_model, "measure_input_size", _memoised_cost_measurement(real_measurement))
        patch.setattr(cost_model, "measure_in_child_process",
                      _memoised_child_measurement(cost_model.measure_in_child_process, real_measurement))
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


def pytest_sessionfinish(session):
    line = f"cost measurements {COST_MEMO.describe()}; OpenVINO builds {OPENVINO_MEMO.describe()}"
    if hasattr(session.config, "workeroutput"):  # a pytest-xdist worker: the controller prints it
        session.config.workeroutput["samunet_memos"] = line
    else:  # one process, or the controller (its workers' lines came first; it measured nothing itself)
        session.config.__dict__.setdefault("_samunet_memos", {"main": line})


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    line = getattr(node, "workeroutput", {}).get("samunet_memos")
    if line:
        node.config.__dict__.setdefault("_samunet_memos", {})[node.gateway.id] = line


def pytest_terminal_summary(terminalreporter, config):
    """Where the memos' time went, per worker: what repeats there is what a faster suite removes next."""
    for worker, line in sorted(getattr(config, "_samunet_memos", {}).items()):
        terminalreporter.write_line(f"samunet session memos, {worker}: {line}")
