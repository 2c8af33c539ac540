"""README's first two commands work as written on a fresh machine: command 1 (install + demo) installs everything
command 2 (the test command) needs, and .ci/run runs exactly those two commands."""
from __future__ import annotations

import ast
import importlib.metadata
import re
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCAL_PACKAGES = {"samunet", "tests", "benchmarks"}


def readme_commands() -> tuple[str, str]:
    """(install + demo command, test command): the indented command lines of README.md before its first ``---``."""
    head = REPO.joinpath("README.md").read_text().split("\n---\n", 1)[0]
    commands = [line.strip() for line in head.splitlines() if line.startswith("    ") and line.strip()]
    assert len(commands) == 2, f"README.md's head should give two commands, found {commands}"
    install, test = commands
    assert "samunet_demo" in install and "pip install" in install, install
    assert "pytest" in test, test
    return install, test


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec.strip())
    assert match, f"unreadable requirement {spec!r}"
    return canonical(match.group(0))


def setup_requirements() -> tuple[list[str], dict[str, list[str]]]:
    """setup.py's install_requires and extras_require, read as literals (setup.py is not run)."""
    tree = ast.parse(REPO.joinpath("setup.py").read_text())
    call = next(node for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup")
    keywords = {k.arg: k.value for k in call.keywords}
    return ast.literal_eval(keywords["install_requires"]), ast.literal_eval(keywords.get("extras_require", "{}"))


def installed_by(command: str) -> set[str]:
    """The distributions the ``pip install`` parts of ``command`` install (the project with its extras resolved
    through setup.py; what pip pulls in transitively is not counted)."""
    runtime, extras = setup_requirements()
    names: set[str] = set()
    for part in command.split("&&"):
        words = shlex.split(part)
        if words[:2] != ["pip", "install"]:
            continue
        args = [w for w in words[2:] if w != "-e" and not w.startswith("--")]
        for arg in args:
            project = re.fullmatch(r"\.(?:\[(?P<extras>[^\]]*)\])?", arg)
            if project is None:
                names.add(requirement_name(arg))
                continue
            names.add("samunet")
            names.update(requirement_name(r) for r in runtime)
            for extra in filter(None, (e.strip() for e in (project.group("extras") or "").split(","))):
                assert extra in extras, f"README installs the extra [{extra}], which setup.py does not define"
                names.update(requirement_name(r) for r in extras[extra])
    return names


def top_level_imports(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules


def imported_by_the_tests() -> set[str]:
    """Top-level third-party modules that the test files import, and the benchmark scripts they load (by
    ``load_benchmark("name")`` or path) with the benchmark modules those import in turn."""
    tests = sorted(REPO.joinpath("tests").glob("*.py"))
    benchmarks = REPO / "benchmarks"
    modules = set().union(*(top_level_imports(path) for path in tests))
    reference = re.compile(r'load_benchmark\("(\w+)"\)|benchmarks/(\w+)\.py')
    named = {name for path in tests for pair in reference.findall(path.read_text()) for name in pair}
    pending = {name for name in named if (benchmarks / f"{name}.py").is_file()}
    loaded: set[str] = set()
    while pending:
        name = pending.pop()
        loaded.add(name)
        imports = top_level_imports(benchmarks / f"{name}.py")
        local = {m for m in imports if (benchmarks / f"{m}.py").is_file()}
        pending |= local - loaded
        modules |= imports - local
    return {m for m in modules if m not in sys.stdlib_module_names and m not in LOCAL_PACKAGES}


def needed_by(test_command: str) -> set[str]:
    """The distributions ``test_command`` needs: the runner it names and what the test code imports."""
    words = shlex.split(test_command)
    assert words[:3] == ["python", "-m", "pytest"], f"unexpected test command {test_command!r}"
    distributions = importlib.metadata.packages_distributions()
    needed = {"pytest"}
    for module in imported_by_the_tests():
        assert module in distributions, f"the tests import {module!r}, which no installed distribution provides"
        needed.update(canonical(d) for d in distributions[module])
    return needed


def test_the_install_command_installs_what_the_test_command_needs():
    install, test = readme_commands()
    missing = needed_by(test) - installed_by(install)
    assert not missing, f"README's command 1 does not install {sorted(missing)}, which command 2 needs"


def test_dropping_the_test_extra_would_leave_pytest_missing():
    """The check above can fail: command 1 without its extra does not install pytest."""
    install, test = readme_commands()
    bare = re.sub(r"\.\[[^\]]*\]", ".", install).replace('"."', ".")
    assert bare != install
    assert "pytest" in needed_by(test) - installed_by(bare)


def test_ci_runs_exactly_the_readme_commands_in_order():
    install, test = readme_commands()
    lines = [line.strip() for line in REPO.joinpath(".ci", "run").read_text().splitlines()]
    commands = [line for line in lines if line and not line.startswith("#")]
    assert commands.count(install) == 1, f".ci/run should run README's command 1 as written: {install}"
    runs_tests = [i for i, line in enumerate(commands) if line == test or line.startswith(f"{test} ||")]
    assert len(runs_tests) == 1, f".ci/run should run README's command 2 as written: {test}"
    assert commands.index(install) < runs_tests[0]
    assert not [line for line in commands if "pip install" in line and line != install], \
        ".ci/run installs something README's command 1 does not"
    assert "set -euo pipefail" in commands
