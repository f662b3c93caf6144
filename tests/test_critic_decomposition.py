"""benchmarks/critic_decomposition.py reads a VMBPO run's checkpoint and prints its Q target's parts;
it refuses a run of another algorithm."""

import importlib.util
from pathlib import Path

import pytest
from tiny_configs import SMALL_RUN, train_argv

from torchrl_vmbpo.cli import main as cli

_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "critic_decomposition.py"


def _script():
    spec = importlib.util.spec_from_file_location("benchmark_critic_decomposition", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _train(out, algo):
    sets = [*SMALL_RUN, "utd=1", "checkpoint_every=200"]
    assert cli(train_argv(algo, out, steps=200, seed=0, sets=sets)) == 0
    return out / "checkpoint.pt"


def test_prints_the_parts_of_a_vmbpo_checkpoints_target(tmp_path, capsys):
    _script().main([str(_train(tmp_path / "run", "vmbpo")), "--rows", "64"])
    out = capsys.readouterr().out
    assert "vmbpo on Pendulum-v1, env step 200" in out
    assert "known reward at the model's x'" in out  # Pendulum-v1 has a known reward function
    assert "Q'/eta at real x, by action: q_c" in out and "Q'/eta at model x'" in out
    assert "bootstrap minus Q" in out and "nan" not in out


def test_refuses_another_algorithms_run(tmp_path):
    with pytest.raises(SystemExit, match="mbpo run"):
        _script().main([str(_train(tmp_path / "run", "mbpo"))])
