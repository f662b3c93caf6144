"""The package is layered (architecture.md): a module imports only its own subpackage or lower layers."""

import ast
from pathlib import Path

import torchrl_vmbpo

LAYERS = {
    "keys": 0,
    "compat": 0,
    "errors": 0,
    "models": 1,
    "data": 1,
    "tabular": 1,
    "envs": 2,
    "objectives": 2,
    "planners": 3,
    "training": 4,
    "algorithms": 5,
    "sweeps": 5.5,  # runs the algorithms' presets as Ray Tune trials; the cli calls it
    "cli": 6,
    "api": 6,
}
ROOT = Path(torchrl_vmbpo.__file__).parent


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("torchrl_vmbpo"):
            yield node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("torchrl_vmbpo"):
                    yield alias.name


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_imports_only_its_own_or_lower_layers():
    violations = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] == "__init__.py":
            continue  # the package root may register envs
        own = rel.parts[0].removesuffix(".py")
        assert own in LAYERS, f"{rel}: add its subpackage to LAYERS"
        for module in _imports(path):
            target = _part(module)
            if target is None or target == own:
                continue
            if LAYERS[target] >= LAYERS[own]:
                violations.append(f"{rel} imports {module}")
    assert not violations, "\n".join(violations)
