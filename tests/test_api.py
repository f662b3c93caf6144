"""The public Python API: any gymnasium env with the user's termination function, registration for
the command line (module:EnvId ids), TorchRL env factories (issue 20, item 3)."""

import json
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest
import torch
from tiny_configs import SMALL_RUN
from torchrl.envs import GymEnv

import torchrl_vmbpo
from torchrl_vmbpo.cli import main
from torchrl_vmbpo.envs.functions import env_functions_for
from torchrl_vmbpo.errors import UnknownEnvFunction

TINY = [*SMALL_RUN, "utd=2"]


class PointMass(gym.Env):
    """A 1-D point pushed towards 0; the episode terminates when it leaves [-2, 2]."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, **kwargs):
        super().__init__()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return self.x.copy(), {}

    def step(self, action):
        self.x = self.x + np.array([0.1 * self.x[1], 0.1 * float(action[0])], np.float32)
        terminated = bool(abs(self.x[0]) > 2)
        return self.x.copy(), -float(self.x[0] ** 2), terminated, False, {}


def point_mass_done(next_obs):
    return next_obs[..., :1].abs() > 2


@pytest.fixture
def point_mass():
    gym.register("PointMassTest-v0", entry_point=PointMass, max_episode_steps=100)
    yield "PointMassTest-v0"
    gym.registry.pop("PointMassTest-v0")


def test_train_runs_vmbpo_on_an_unknown_gymnasium_env_with_the_users_termination(tmp_path, point_mass):
    with pytest.raises(UnknownEnvFunction, match="Pass termination_fn="):
        torchrl_vmbpo.train("vmbpo", point_mass, steps=300, overrides=TINY, out=tmp_path / "refused", progress=False)
    assert not (tmp_path / "refused").exists()
    summary = torchrl_vmbpo.train(
        "vmbpo",
        point_mass,
        steps=300,
        seed=2,
        overrides=TINY,
        out=tmp_path / "run",
        termination_fn=point_mass_done,
        progress=False,
    )
    assert summary["env"] == point_mass and summary["env_steps"] == 300 and summary["updates"] == 2 * 201
    assert np.isfinite(summary["final_return"]) and (tmp_path / "run" / "checkpoint.pt").exists()


def test_registered_functions_serve_the_command_line_with_a_module_env_id(tmp_path, monkeypatch):
    module = tmp_path / "my_point_mass.py"
    module.write_text(
        textwrap.dedent("""
        import gymnasium as gym
        import torchrl_vmbpo
        from tests.test_api import PointMass, point_mass_done

        if "MyPointMass-v0" not in gym.registry:
            gym.register("MyPointMass-v0", entry_point=PointMass, max_episode_steps=100)
        torchrl_vmbpo.register_env_functions("MyPointMass-v0", termination_fn=point_mass_done)
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        sets = [arg for item in TINY for arg in ("--set", item)]
        out = tmp_path / "run"
        code = main(
            [
                "train",
                "--algo",
                "vmbpo",
                "--env",
                "my_point_mass:MyPointMass-v0",
                "--steps",
                "300",
                "--out",
                str(out),
                "--no-progress",
                *sets,
            ]
        )
        assert code == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["env"] == "my_point_mass:MyPointMass-v0" and summary["env_steps"] == 300
        assert env_functions_for("my_point_mass:MyPointMass-v0").termination().__name__ == "point_mass_done"
    finally:
        gym.registry.pop("MyPointMass-v0", None)
        sys.modules.pop("my_point_mass", None)


def test_an_unknown_module_in_an_env_id_is_one_line(tmp_path, capsys):
    assert main(["train", "--env", "no_such_module:Env-v0", "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "cannot import module 'no_such_module'" in capsys.readouterr().err


def test_train_takes_a_torchrl_env_factory(tmp_path):
    summary = torchrl_vmbpo.train(
        "sac",
        "pendulum-from-torchrl",
        steps=200,
        overrides=TINY,
        out=tmp_path / "run",
        progress=False,
        make_env=lambda: GymEnv("Pendulum-v1"),
        max_episode_steps=50,
    )
    assert summary["env"] == "pendulum-from-torchrl" and summary["env_steps"] == 200


def test_a_given_reward_function_reaches_the_world_model(point_mass):
    def reward(obs, action, next_obs):
        return -(next_obs[..., :1] ** 2)

    cfg = torchrl_vmbpo.default_config("mbpo", point_mass, overrides=TINY)
    env = torchrl_vmbpo.EnvSource().make(point_mass)
    agent = torchrl_vmbpo.build_agent(cfg, env, termination_fn=point_mass_done, reward_fn=reward)
    assert agent.reward_fn is reward and agent.termination_fn is point_mass_done
    assert agent.termination_fn(torch.tensor([[3.0, 0.0]])).item()


def test_the_public_names_are_exported():
    for name in [
        "train",
        "register_env_functions",
        "default_config",
        "build_agent",
        "TrainConfig",
        "SACAgent",
        "VMBPOAgent",
        "VMBPOMFEAgent",
        "MPOAgent",
        "PETSAgent",
        "STEVEAgent",
        "seed_everything",
    ]:
        assert name in torchrl_vmbpo.__all__ and hasattr(torchrl_vmbpo, name)
