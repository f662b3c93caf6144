"""Smoke runs of every preset through the command line, run outputs, and bad inputs."""

import csv
import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from tiny_configs import SMALL_RUN, train_argv

from torchrl_vmbpo.algorithms import build_agent, default_config, run
from torchrl_vmbpo.cli import main
from torchrl_vmbpo.envs.real import make_env
from torchrl_vmbpo.training.checkpoint import load_checkpoint

TINY = SMALL_RUN


@pytest.mark.parametrize("algo", ["sac", "mbpo", "vmbpo", "vmbpo-paper", "vmbpo-twist-off", "mpo", "vmbpo-mfe"])
def test_preset_smoke_run_writes_metrics_summary_plot_and_checkpoint(tmp_path, algo):
    out = tmp_path / algo
    code = main(train_argv(algo, out, steps=300, seed=3, sets=TINY + ["utd=2"]))
    assert code == 0
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"env_steps", "eval_return_mean", "eval_return_std", "wall_seconds"} <= set(rows[0])
    assert [int(r["env_steps"]) for r in rows] == [1, 150, 300]  # evaluations at 1, 150 and the end
    lengths = (out / "logs" / "scalars" / "eval_episode_length.csv").read_text().split()
    assert [line.split(",") for line in lengths] == [[r["env_steps"], "200.0"] for r in rows]  # Pendulum's 200
    summary = json.loads((out / "summary.json").read_text())
    for field in [
        "algo",
        "env",
        "seed",
        "env_steps",
        "final_return",
        "best_return",
        "wall_seconds",
        "updates_per_second",
        "commit",
        "config",
    ]:
        assert field in summary
    assert summary["algo"] == algo and summary["seed"] == 3 and summary["env_steps"] == 300
    assert summary["updates"] == 2 * 201  # utd 2 for each of steps 100..300 (learning starts at step 100)
    assert np.isfinite(summary["final_return"])
    assert (out / "learning_curve.png").stat().st_size > 1000
    if algo in ("mbpo", "vmbpo", "vmbpo-paper", "vmbpo-twist-off", "vmbpo-mfe"):
        assert summary["phase_seconds"]["model_fit"] > 0 and summary["phase_seconds"]["imagine"] > 0

    # The checkpoint restores every network into a fresh agent.
    cfg = default_config(algo, "Pendulum-v1").with_overrides(TINY)
    agent = build_agent(cfg, make_env("Pendulum-v1"))
    payload = load_checkpoint(out / "checkpoint.pt", agent)
    assert payload["env_steps"] == 300
    saved = torch.load(out / "checkpoint.pt", weights_only=True)["agent"]
    for key, value in agent.state_dict().items():
        torch.testing.assert_close(value, saved[key])


def test_existing_run_is_never_overwritten_silently(tmp_path, capsys):
    (tmp_path / "summary.json").write_text('{"keep": true}')
    code = main(["train", "--steps", "10", "--set", "init_random_steps=5", "--out", str(tmp_path), "--no-progress"])
    assert code == 2 and "already holds a run" in capsys.readouterr().err
    assert json.loads((tmp_path / "summary.json").read_text()) == {"keep": True}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--env", "NoSuchEnv-v0"], "Unknown env id 'NoSuchEnv-v0'"),
        (["--env", "CartPole-v1"], "continuous, bounded"),
        (["--set", "utd"], "name=value"),
        (["--set", "bogus=3"], "unknown config field 'bogus'"),
    ],
)
def test_bad_inputs_give_clear_errors_and_write_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert (
        main(["train", "--out", str(out), "--steps", "10", "--set", "init_random_steps=5", "--no-progress", *argv]) == 2
    )
    assert message in capsys.readouterr().err
    assert not (out / "metrics.csv").exists()


def test_corrupt_or_foreign_checkpoint_is_rejected_clearly(tmp_path):
    agent = build_agent(default_config("sac", "Pendulum-v1", hidden=(8,)), make_env("Pendulum-v1"))
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "garbage.pt", agent)
    torch.save({"something": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a torchrl_vmbpo checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt", agent)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt", agent)


class _NaNAfterTenSteps(gym.Env):
    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, **kwargs):  # torchrl's GymEnv passes frameskip
        super().__init__()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        obs = np.full(2, np.nan if self.t >= 10 else 0.0, np.float32)
        return obs, 0.0, False, False, {}


def test_nan_observations_from_the_env_raise_a_clear_error(tmp_path):
    gym.register("NaNAfterTen-v0", entry_point=_NaNAfterTenSteps, max_episode_steps=50)
    try:
        cfg = default_config("sac", "NaNAfterTen-v0", steps=40, init_random_steps=5, hidden=(8,))
        with pytest.raises(ValueError, match="NaNAfterTen-v0.*NaN"):
            run(cfg, tmp_path / "nan", progress=False)
    finally:
        gym.registry.pop("NaNAfterTen-v0")


def test_commit_of_a_copy_without_git_metadata_can_be_declared(monkeypatch):
    from torchrl_vmbpo.training.results import git_commit

    monkeypatch.delenv("TORCHRL_VMBPO_COMMIT", raising=False)
    assert "(declared)" not in git_commit()
    monkeypatch.setenv("TORCHRL_VMBPO_COMMIT", "abc123")
    assert git_commit() == "abc123 (declared)"
