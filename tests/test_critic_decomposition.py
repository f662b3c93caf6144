"""benchmarks/critic_decomposition.py reads a VMBPO run's checkpoint and prints its Q target's parts;
it refuses a run of another algorithm."""

import pytest
from benchmark_scripts import load_script, train_checkpoint


def test_prints_the_parts_of_a_vmbpo_checkpoints_target(tmp_path, capsys):
    load_script("critic_decomposition").main([str(train_checkpoint(tmp_path / "run", "vmbpo")), "--rows", "64"])
    out = capsys.readouterr().out
    assert "vmbpo on Pendulum-v1, env step 200" in out
    assert "known reward at the model's x'" in out  # Pendulum-v1 has a known reward function
    assert "Q'/eta at real x, by action: q_c" in out and "Q'/eta at model x'" in out
    assert "bootstrap minus Q" in out and "nan" not in out


def test_refuses_another_algorithms_run(tmp_path):
    with pytest.raises(SystemExit, match="mbpo run"):
        load_script("critic_decomposition").main([str(train_checkpoint(tmp_path / "run", "mbpo"))])
