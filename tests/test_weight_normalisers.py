"""benchmarks/weight_normalisers.py reads a VMBPO run's checkpoint and compares eq. 19's normalisers on
its real data; it refuses a run of another algorithm."""

import pytest
from benchmark_scripts import load_script, train_checkpoint


def test_compares_both_normalisers_on_a_vmbpo_checkpoint(tmp_path, capsys):
    load_script("weight_normalisers").main([str(train_checkpoint(tmp_path / "run", "vmbpo")), "--rows", "128"])
    out = capsys.readouterr().out
    assert "vmbpo on Pendulum-v1, env step 200, 128 real rows" in out
    rows = [line for line in out.splitlines() if line.startswith(("| critic |", "| model |"))]
    assert len(rows) == 2 and "nan" not in out


def test_final_weights_temper_each_batch_to_the_fits_ess():
    import torch

    from torchrl_vmbpo.objectives.functional import effective_sample_size

    log_w = torch.cat([torch.zeros(31), torch.tensor([20.0]), torch.linspace(0, 1, 32)])
    weights, betas = load_script("weight_normalisers").final_weights(
        log_w, batch=32, min_ess=0.5, max_weight=None, mix=0.0
    )
    assert weights.shape == (64,) and betas.shape == (2,)
    assert betas[0] < 1 and betas[1] == 1  # the spiked batch is tempered, the flat one is not
    assert effective_sample_size(weights[:32] / 32) == pytest.approx(16.0, rel=1e-3)
    assert weights[:32].mean() == pytest.approx(1.0) and weights[32:].mean() == pytest.approx(1.0)


def test_refuses_another_algorithms_run(tmp_path):
    with pytest.raises(SystemExit, match="mbpo run"):
        load_script("weight_normalisers").main([str(train_checkpoint(tmp_path / "run", "mbpo"))])
