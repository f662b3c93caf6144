"""The divergence guard: a critic beyond the range the rewards allow is reported, or stops the run."""

import json
import math

import pytest
import torch
from tensordict import TensorDict
from tiny_configs import TINY_NETS

from torchrl_vmbpo.algorithms import PRESETS, build_agent, default_config, run
from torchrl_vmbpo.algorithms.sac import SACAgent
from torchrl_vmbpo.cli import main
from torchrl_vmbpo.data.buffers import make_buffer
from torchrl_vmbpo.envs.real import make_env
from torchrl_vmbpo.errors import CriticDiverged, VMBPOError
from torchrl_vmbpo.training.checkpoint import read_checkpoint
from torchrl_vmbpo.training.divergence import CriticDivergenceWarning, CriticScale, DivergenceGuard

TINY = [*TINY_NETS, "batch_size=8", "model_batch_size=16", "rollouts_per_step=2"]
RUN = dict(
    steps=160, overrides=[*TINY, "init_random_steps=100", "eval_episodes=1", "eval_every=150", "utd=1", "log_every=50"]
)


def _rewards(*values):
    return TensorDict({("next", "reward"): torch.tensor(values).unsqueeze(-1)}, [len(values)])


def test_the_bound_is_the_largest_reward_so_far_plus_the_per_step_bound_over_one_minus_gamma():
    guard = DivergenceGuard(CriticScale("q_value", per_reward=2.0, per_step_bound=0.5), gamma=0.9, factor=10.0)
    assert guard.check({"q_value": 1e9}, env_step=1) is None  # no reward seen yet, no bound
    guard.observe(_rewards(1.0, -1.5))
    guard.observe(_rewards(0.5))
    assert guard.bound == pytest.approx((1.5 + 0.5) / 0.1)
    metrics = {"q_value": -200.0}  # |Q / eta| = 100 reward units: 5x the bound of 20
    assert guard.check(metrics, env_step=2) is None and metrics["critic_divergence_ratio"] == pytest.approx(5.0)
    found = guard.check({"q_value": 402.0}, env_step=3)
    assert found.to_json() == pytest.approx({"env_step": 3, "value": 201.0, "bound": 20.0, "ratio": 10.05})
    assert guard.check({"q_value": math.nan}, env_step=4).ratio == math.inf  # a NaN critic has diverged
    assert DivergenceGuard(None, gamma=0.9, factor=10.0, real_data=_rewards(1.0)).check({"q_value": 1e9}, 5) is None


def _filled(n, obs_dim, act_dim, label=lambda rows: rows):
    """A buffer of ``n`` random transitions; ``label``: what imagination applies to model rows."""
    buffer = make_buffer(n)
    buffer.extend(
        label(
            TensorDict(
                {
                    "observation": torch.randn(n, obs_dim),
                    "action": torch.rand(n, act_dim) * 2 - 1,
                    ("next", "observation"): torch.randn(n, obs_dim),
                    ("next", "reward"): -torch.rand(n, 1),
                    ("next", "done"): torch.zeros(n, 1, dtype=torch.bool),
                    ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool),
                },
                [n],
            )
        )
    )
    return buffer


@pytest.mark.parametrize("algo", PRESETS)
def test_every_agent_with_a_critic_reports_the_metric_its_guard_reads(algo):
    cfg = default_config(algo, "Pendulum-v1", overrides=TINY)
    agent = build_agent(cfg, make_env("Pendulum-v1"))
    scale = agent.critic_scale()
    if not agent.capabilities.updates:  # PETS plans: no critic
        assert scale is None
        return
    real, model = _filled(32, 3, 1), _filled(32, 3, 1, label=agent.label_imagined)
    metrics = agent.update(agent.sample_batch(real, model, 8, agent.capabilities.real_ratio))
    assert scale.metric in metrics and torch.isfinite(torch.as_tensor(metrics[scale.metric]))
    eta = getattr(getattr(agent, "settings", None), "eta", None)
    assert scale.per_reward == (eta if algo.startswith("vmbpo") else 1.0)  # VMBPO's Q is eta x reward units
    if algo in ("vmbpo", "vmbpo-paper", "vmbpo-twist-off"):
        assert scale.per_step_bound == pytest.approx(agent.settings.log_ratio_bound / eta)


def _inflated_q(monkeypatch, after_updates=20):
    """SAC's q_value reads 1e6 (Pendulum allows about 16 / 0.01 = 1,600) once it has done ``after_updates``."""
    update = SACAgent.update
    calls = []

    def inflated(self, batch):
        metrics = update(self, batch)
        calls.append(1)
        if len(calls) > after_updates:
            metrics["q_value"] = torch.tensor(1e6)
        return metrics

    monkeypatch.setattr(SACAgent, "update", inflated)


def test_warn_records_the_divergence_in_the_summary_and_the_run_completes(tmp_path, monkeypatch):
    _inflated_q(monkeypatch)
    cfg = default_config("sac", "Pendulum-v1", **RUN)
    assert cfg.divergence == "warn"
    with pytest.warns(CriticDivergenceWarning, match="critic diverged at env step 120") as caught:
        summary = run(cfg, tmp_path / "warn", progress=False)
    assert len([w for w in caught if w.category is CriticDivergenceWarning]) == 1  # once per run
    assert summary["env_steps"] == 160
    diverged = json.loads((tmp_path / "warn" / "summary.json").read_text())["diverged"]
    assert diverged["env_step"] == 120 and diverged["value"] == 1e6 and 0 < diverged["bound"] < 1e4
    assert summary["final_train_metrics"]["critic_divergence_ratio"] > 10
    assert (tmp_path / "warn" / "logs" / "scalars" / "critic_divergence_ratio.csv").exists()


def test_a_healthy_run_records_no_divergence(tmp_path):
    summary = run(default_config("sac", "Pendulum-v1", **RUN), tmp_path / "ok", progress=False)
    assert summary["diverged"] is None and summary["final_train_metrics"]["critic_divergence_ratio"] < 10


def test_stop_writes_a_checkpoint_and_the_summary_then_raises_one_line(tmp_path, monkeypatch, capsys):
    _inflated_q(monkeypatch)
    out = tmp_path / "stop"
    sets = [arg for item in [*RUN["overrides"], "divergence=stop"] for arg in ("--set", item)]
    argv = ["train", "--algo", "sac", "--env", "Pendulum-v1", "--steps", "160", "--out", str(out), "--no-progress"]
    assert main(argv + sets) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vmbpo: error: critic diverged at env step 120")
    assert read_checkpoint(out / "checkpoint.pt")["env_steps"] == 120
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps"] == 120 and summary["diverged"]["env_step"] == 120
    assert issubclass(CriticDiverged, VMBPOError)
    with pytest.raises(CriticDiverged, match="checkpoint.pt and summary.json"):
        run(default_config("sac", "Pendulum-v1", **RUN).replace(divergence="stop"), tmp_path / "again", progress=False)


def test_divergence_settings_are_checked():
    with pytest.raises(ValueError, match="divergence must be one of"):
        default_config("sac", "Pendulum-v1", overrides=["divergence=halt"])
    with pytest.raises(ValueError, match="divergence_factor"):
        default_config("sac", "Pendulum-v1", overrides=["divergence_factor=1"])
