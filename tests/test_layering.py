"""The package layers: a neutral core that imports no other layer, lower layers that never import higher ones,
and no import cycle between packages (function-level imports count too)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "samunet"
# each package may import only the ones listed (and itself)
ALLOWED = {
    "utils": set(),
    "core": {"utils"},
    "dataset": {"core", "utils"},
    "modeling": {"core", "utils"},
    "adapters": {"core", "utils", "modeling", "preprocessing"},
    "preprocessing": {"core", "utils", "dataset"},
    "evaluation": {"core", "utils", "dataset", "preprocessing"},
    "planning": {"core", "utils", "dataset", "preprocessing", "modeling", "adapters"},
    "inference": {"core", "utils", "dataset", "preprocessing", "modeling", "adapters", "evaluation"},
    # samunet_report: HTML pages of results; reads evaluation's metrics and the raw dataset, below training
    "report": {"core", "utils", "dataset", "preprocessing", "evaluation"},
    "training": {"core", "utils", "dataset", "preprocessing", "modeling", "adapters", "evaluation", "inference",
                 "report"},
    "sharing": {"core", "utils", "modeling"},  # export/install: files and hashes; modeling for base-weight names
    # samunet_compare drives training and reads evaluation's find_best: above both
    "compare": {"core", "utils", "dataset", "preprocessing", "modeling", "adapters", "evaluation", "inference",
                "training", "report"},
    "demo": {"core", "utils", "dataset", "preprocessing", "modeling", "adapters", "evaluation", "inference",
             "planning", "training", "report"},
}


def _package_imports() -> dict[str, set[tuple[str, str]]]:
    """package -> {(imported package, importing file)} for every ``samunet.X`` import anywhere in a file."""
    found: dict[str, set[tuple[str, str]]] = {}
    for path in PACKAGE_ROOT.rglob("*.py"):
        rel = path.relative_to(PACKAGE_ROOT)
        if len(rel.parts) < 2:
            continue  # samunet/__init__.py
        package = rel.parts[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "samunet" and len(parts) > 1 and parts[1] != package:
                    found.setdefault(package, set()).add((parts[1], str(rel)))
    return found


def test_every_package_has_a_layer_rule():
    packages = {p.name for p in PACKAGE_ROOT.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages == set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_lower_layers(package):
    bad = sorted(f"{where} imports samunet.{target}" for target, where in _package_imports().get(package, set())
                 if target not in ALLOWED[package])
    assert not bad, "\n".join(bad)


def test_layer_rules_have_no_cycle():
    seen: dict[str, int] = {}

    def visit(package: str, stack: tuple[str, ...]) -> None:
        assert package not in stack, " -> ".join(stack + (package,))
        if seen.get(package):
            return
        for target in ALLOWED[package]:
            visit(target, stack + (package,))
        seen[package] = 1

    for package in ALLOWED:
        visit(package, ())


def test_training_takes_from_inference_only_the_volume_predictor():
    """What training and prediction share (padding, window starts, mirrored views, embedding mirroring) lives in
    preprocessing; training's validation predicts volumes with samunet_predict's own predictor and nothing else."""
    found = set()
    for path in (PACKAGE_ROOT / "training").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("samunet.inference"):
                found |= {(path.name, node.module, alias.name) for alias in node.names}
            elif isinstance(node, ast.Import):
                found |= {(path.name, a.name, "") for a in node.names if a.name.startswith("samunet.inference")}
    assert found == {("validation.py", "samunet.inference.volume_predictor", "predict_preprocessed_volume")}
