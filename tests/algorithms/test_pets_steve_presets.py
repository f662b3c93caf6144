"""The pets and steve presets: smoke runs through the shared loop, checkpoints, settings, known rewards."""

import csv

import numpy as np
import pytest
import torch
from tiny_configs import SMALL_RUN

from torchrl_vmbpo.algorithms import presets
from torchrl_vmbpo.algorithms.pets import KNOWN_REWARD_FNS, PETSSettings, build_pets
from torchrl_vmbpo.algorithms.run import run
from torchrl_vmbpo.envs.real import make_env
from torchrl_vmbpo.planners.pets import PETSPlanner
from torchrl_vmbpo.training.checkpoint import load_checkpoint

TINY = [s for s in SMALL_RUN if not s.startswith("rollouts_per_step")]  # STEVE keeps its preset's rollouts
TINY_PETS = [
    "extra.planning_horizon=5",
    "extra.population=16",
    "extra.elites=4",
    "extra.iterations=2",
    "extra.particles=5",
]


@pytest.fixture
def registered():
    """The two presets are records of presets.ALGORITHMS."""
    assert {"pets", "steve"} <= set(presets.ALGORITHMS)


def _config(algo, *overrides, **changes):
    return presets.default_config(algo, "Pendulum-v1", overrides=TINY + list(overrides), **changes)


def _env_steps(out):
    with open(out / "metrics.csv") as f:
        return [int(r["env_steps"]) for r in csv.DictReader(f)]


def _assert_checkpoint_restores(cfg, out):
    agent = presets.build_agent(cfg, make_env("Pendulum-v1"))
    assert load_checkpoint(out / "checkpoint.pt", agent)["env_steps"] == 300
    saved = torch.load(out / "checkpoint.pt", weights_only=True)["agent"]
    for key, value in agent.state_dict().items():
        torch.testing.assert_close(value, saved[key])


@pytest.mark.parametrize("propagation", ["ts_inf", "ts1"])
def test_pets_smoke_run_plans_with_the_fitted_model_and_never_updates_a_policy(tmp_path, registered, propagation):
    cfg = _config("pets", *TINY_PETS, f"extra.propagation={propagation}", steps=300, seed=3)
    assert cfg.utd == 0 and cfg.rollouts_per_step == 0  # descriptive: the loop asks PETS's capabilities
    summary = run(cfg, tmp_path / "run", progress=False)
    assert _env_steps(tmp_path / "run") == [1, 150, 300]
    assert summary["env_steps"] == 300 and summary["updates"] == 0
    assert np.isfinite(summary["final_return"])
    phases = summary["phase_seconds"]
    assert phases["model_fit"] > 0 and "imagine" not in phases and phases.get("update", 0.0) < 0.05
    # Every plan is counted: the one TorchRL's Collector makes when it is built (its output check),
    # 200 real steps after the 100 random ones, 3 evaluations of 200 steps.
    assert summary["planned_actions"] == 1 + 200 + 3 * 200
    assert summary["seconds_per_planned_action"] == pytest.approx(
        summary["planning_seconds"] / summary["planned_actions"], abs=1e-4
    )
    assert 0 < summary["planning_seconds"] < summary["wall_seconds"]
    _assert_checkpoint_restores(cfg, tmp_path / "run")


def test_steve_smoke_run_updates_on_real_data_with_model_expanded_targets(tmp_path, registered):
    cfg = _config("steve", "extra.horizon=2", steps=300, seed=3)
    summary = run(cfg, tmp_path / "run", progress=False)
    assert _env_steps(tmp_path / "run") == [1, 150, 300]
    # Updates start with the first model fit (step 100) and no imagined data: utd 1 for steps 100..300.
    assert summary["updates"] == 201
    assert "imagine" not in summary["phase_seconds"] and summary["phase_seconds"]["model_fit"] > 0
    metrics = summary["final_train_metrics"]
    assert all(np.isfinite(v) for v in metrics.values())
    weights = [metrics[f"steve_weight_h{i}"] for i in range(3)]
    assert abs(sum(weights) - 1.0) < 1e-4 and min(weights) >= 0
    _assert_checkpoint_restores(cfg, tmp_path / "run")


def test_pets_agent_acts_with_its_planner_and_its_settings(registered):
    cfg = _config("pets", *TINY_PETS, "extra.propagation=ts1")
    agent = presets.build_agent(cfg, make_env("Pendulum-v1"))
    assert isinstance(agent.policy, PETSPlanner)
    assert (agent.policy.population, agent.policy.elites, agent.policy.planning_horizon) == (16, 4, 5)
    assert agent.policy.propagation == "ts1" and agent.reward_fn is KNOWN_REWARD_FNS["Pendulum-v1"]
    assert agent.policy.env.world_model.dynamics is agent.dynamics  # plans with the model the loop fits
    assert PETSSettings() == PETSSettings(planning_horizon=30, population=400, elites=40, iterations=5, particles=20)


@pytest.mark.parametrize(
    "algo, overrides, message",
    [
        ("pets", ["extra.bogus=1"], "unknown PETS setting"),
        ("pets", ["extra.propagation=ts2"], "extra.propagation"),
        ("pets", ["extra.elites=500"], "extra.elites"),
        ("steve", ["extra.horizon=-1"], "extra.horizon"),
        ("steve", ["extra.typo=1"], "unknown STEVE setting"),
    ],
)
def test_bad_settings_give_clear_errors(registered, algo, overrides, message):
    with pytest.raises(ValueError, match=message):  # settings when the config is made, the rest by the agent
        presets.build_agent(_config(algo, *overrides), make_env("Pendulum-v1"))


def test_reward_source_known_model_or_auto(registered):
    env = make_env("Pendulum-v1")
    for reward, expected in [
        ("auto", KNOWN_REWARD_FNS["Pendulum-v1"]),
        ("known", KNOWN_REWARD_FNS["Pendulum-v1"]),
        ("model", None),
    ]:
        agent = build_pets(_config("pets", *TINY_PETS, f"extra.reward={reward}"), env)
        assert agent.reward_fn is expected and agent.policy.env.world_model.reward_fn is expected
    # An env without a known reward: "auto" falls back to the model, "known" is a clear error.
    other = presets.default_config("pets", "HalfCheetah-v5")
    assert build_pets(other.with_overrides(TINY + TINY_PETS), env).reward_fn is None
    with pytest.raises(KeyError, match="No known reward function"):
        build_pets(other.with_overrides(["extra.reward=known"]), env)


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "InvertedPendulum-v5"])
def test_known_reward_functions_equal_the_env_rewards(env_id):
    env = make_env(env_id, seed=0)
    td = env.rollout(60, break_when_any_done=False)  # random actions (and resets) on the real env
    reward = KNOWN_REWARD_FNS[env_id](td["observation"], td["action"], td["next", "observation"])
    if env_id == "InvertedPendulum-v5":
        assert td["next", "terminated"].any()  # the terminal reward 0 is exercised
    torch.testing.assert_close(reward, td["next", "reward"], atol=1e-4, rtol=1e-4)


def test_pets_plans_with_the_agents_own_q_d_on_the_agents_device(registered):
    # TrainConfig.device moves the whole agent: the planner needs no device copy of q_d.
    agent = presets.build_agent(_config("pets", *TINY_PETS, "device=cpu"), make_env("Pendulum-v1"))
    assert agent.policy.dynamics is agent.dynamics
    assert agent.policy.action_low.device == agent.device
    # ... and a restored agent (a resumed run) plans with the restored q_d, not its fresh weights.
    with torch.no_grad():
        agent.dynamics.ensemble.output_layer.bias.add_(1.0)
    fresh = presets.build_agent(_config("pets", *TINY_PETS, "device=cpu"), make_env("Pendulum-v1"))
    fresh.load_state_dict(agent.state_dict())
    torch.testing.assert_close(fresh.policy.dynamics.state_dict(), agent.dynamics.state_dict(), rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown PETS setting"):
        PETSSettings.from_extra({"device": "cuda"})
