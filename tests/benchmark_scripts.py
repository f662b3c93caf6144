"""Helpers for the tests of benchmarks/ scripts that read a run's checkpoint."""

import importlib.util
from pathlib import Path

from tiny_configs import SMALL_RUN, train_argv

from torchrl_vmbpo.cli import main as cli

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    """benchmarks/NAME.py as a module (the folder is a script folder, not a package)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_checkpoint(out: Path, algo: str) -> Path:
    """A 200-step run of ``algo`` on Pendulum-v1 in ``out``; its checkpoint's path."""
    sets = [*SMALL_RUN, "utd=1", "checkpoint_every=200"]
    assert cli(train_argv(algo, out, steps=200, seed=0, sets=sets)) == 0
    return out / "checkpoint.pt"
