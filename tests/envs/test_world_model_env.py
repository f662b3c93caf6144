import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs

from torchrl_vmbpo.data.buffers import make_buffer
from torchrl_vmbpo.envs.real import make_env
from torchrl_vmbpo.envs.termination import (
    hopper_done,
    inverted_pendulum_done,
    never_done,
    termination_fn_for,
    walker2d_done,
)
from torchrl_vmbpo.envs.world_model import WorldModelEnv, buffer_start_states
from torchrl_vmbpo.models.dynamics import DynamicsModel
from torchrl_vmbpo.models.networks import make_tanh_gaussian_actor
from torchrl_vmbpo.training.imagine import imagine


@pytest.fixture(scope="module")
def pendulum():
    return make_env("Pendulum-v1")


def _filled_buffer(real_env, n=64):
    buffer = make_buffer(1000)
    buffer.extend(
        real_env.rollout(n).select(
            "observation",
            "action",
            ("next", "observation"),
            ("next", "reward"),
            ("next", "done"),
            ("next", "terminated"),
        )
    )
    return buffer


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "Hopper-v5"])
@pytest.mark.parametrize("batch_size", [[], [5]])
def test_world_model_env_passes_check_env_specs(env_id, batch_size):
    real = make_env(env_id)
    obs_dim, act_dim = real.observation_spec["observation"].shape[-1], real.action_spec.shape[-1]
    model = DynamicsModel(obs_dim, act_dim, hidden=(8,))
    env = WorldModelEnv(
        model,
        real,
        start_state_sampler=lambda n: torch.zeros(n, obs_dim) + 1.0,
        termination_fn=never_done,
        batch_size=batch_size,
    )
    check_env_specs(env)
    assert env.action_spec.shape == (*batch_size, act_dim)


def test_reset_draws_start_states_from_the_real_buffer(pendulum):
    buffer = _filled_buffer(pendulum)
    model = DynamicsModel(3, 1, hidden=(8,))
    env = WorldModelEnv(
        model, pendulum, start_state_sampler=buffer_start_states(buffer), termination_fn=never_done, batch_size=[32]
    )
    obs = env.reset()["observation"]
    stored = buffer[:]["observation"]
    # Every start state is one of the stored real observations.
    assert ((obs.unsqueeze(1) - stored.unsqueeze(0)).abs().amax(-1) < 1e-6).any(1).all()


def test_reset_uses_caller_given_states(pendulum):
    env = WorldModelEnv(DynamicsModel(3, 1, hidden=(8,)), pendulum, termination_fn=never_done, batch_size=[2])
    x0 = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, -0.5]])
    torch.testing.assert_close(env.reset(TensorDict({"observation": x0}, [2]))["observation"], x0)
    with pytest.raises(RuntimeError, match="start states"):
        env.reset()


def test_rows_stop_at_termination(pendulum):
    # A termination rule "done when obs[0] > 0" on a model that predicts no change: rows that start
    # with obs[0] > 0 are done after their first step, the others never are.
    model = DynamicsModel(3, 1, hidden=(8,))
    model.ensemble.output_layer.weight.data.zero_()
    model.ensemble.output_layer.bias.data.zero_()
    model.ensemble.max_logvar.data.fill_(-30.0)  # (near) deterministic
    model.ensemble.min_logvar.data.fill_(-40.0)
    rule = lambda x: x[..., :1] > 0  # noqa: E731
    # Finished rows restart from the sampler's (alive) state.
    env = WorldModelEnv(
        model,
        pendulum,
        termination_fn=rule,
        batch_size=[2],
        start_state_sampler=lambda n: torch.tensor([[-2.0, 0.0, 0.0]]).expand(n, 3),
    )
    x0 = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    td = env.rollout(
        4, auto_reset=False, tensordict=env.reset(TensorDict({"observation": x0}, [2])), break_when_any_done=False
    )
    done = td["next", "done"].squeeze(-1)
    assert done[0, 0] and not done[0, 1:].any() and not done[1].any()
    torch.testing.assert_close(td["observation"][0, 1], torch.tensor([-2.0, 0.0, 0.0]))  # reset row


@pytest.mark.parametrize(
    "fn, alive, dead",
    [
        (hopper_done, [1.25, 0.0] + [0.0] * 9, [0.5, 0.0] + [0.0] * 9),
        (walker2d_done, [1.25, 0.0] + [0.0] * 15, [1.25, 1.5] + [0.0] * 15),
        (inverted_pendulum_done, [0.0, 0.1, 0.0, 0.0], [0.0, 0.3, 0.0, 0.0]),
    ],
)
def test_known_termination_functions(fn, alive, dead):
    out = fn(torch.tensor([alive, dead]))
    assert out.shape == (2, 1) and out.dtype == torch.bool
    assert out.squeeze(-1).tolist() == [False, True]
    assert hopper_done(torch.tensor([[1.25, float("nan")] + [0.0] * 9])).item()


def test_unknown_termination_function_names_the_known_ones():
    with pytest.raises(KeyError, match="Hopper-v5"):
        termination_fn_for("Ant-v5")


def test_imagined_transitions_land_in_the_model_buffer(pendulum):
    real_buffer = _filled_buffer(pendulum)
    model_buffer = make_buffer(10_000)
    policy = make_tanh_gaussian_actor(3, pendulum.action_spec, hidden=(8,))
    stats = imagine(
        DynamicsModel(3, 1, hidden=(8,)),
        pendulum,
        real_buffer,
        model_buffer,
        policy,
        num_rollouts=20,
        horizon=3,
        termination_fn=never_done,
    )
    assert len(model_buffer) == 60 == stats["imagined_transitions"]
    sample = model_buffer[:]
    assert set(sample.keys(True, True)) >= {"observation", "action", ("next", "observation"), ("next", "reward")}
    # Branches start from real states: each row's first observation is in the real buffer.
    stored = real_buffer[:]["observation"]
    from_real = ((sample["observation"].unsqueeze(1) - stored.unsqueeze(0)).abs().amax(-1) < 1e-6).any(1)
    assert from_real.sum() >= 20  # at least the first step of each of the 20 branches
    assert torch.isfinite(sample["next", "observation"]).all()
