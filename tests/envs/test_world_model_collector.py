"""WorldModelEnv inside a user's TorchRL Collector: renamed keys, lazy start states, InitTracker, dtype."""

import warnings

import pytest
import torch
from torchrl.collectors import Collector
from torchrl.envs import RenameTransform, TransformedEnv

from torchrl_vmbpo.data.buffers import make_buffer
from torchrl_vmbpo.envs.real import make_env
from torchrl_vmbpo.envs.termination import never_done
from torchrl_vmbpo.envs.world_model import WorldModelEnv, buffer_start_states
from torchrl_vmbpo.models import DynamicsModel, make_q_value, make_state_value, make_tanh_gaussian_actor
from torchrl_vmbpo.objectives import VMBPOActorLoss, VMBPOCriticLoss, VMBPODynamicsLoss
from torchrl_vmbpo.training.imagine import imagine


def _renamed_pendulum():
    return TransformedEnv(make_env("Pendulum-v1", seed=0), RenameTransform(["observation", "reward"], ["obs", "rew"]))


def test_set_keys_renames_reach_through_imagination_to_the_losses():
    real = _renamed_pendulum()
    pi = make_tanh_gaussian_actor(3, real.action_spec, hidden=(8,), observation_key="obs")
    q_c = make_tanh_gaussian_actor(3, real.action_spec, hidden=(8,), observation_key="obs")
    real_buffer, model_buffer = make_buffer(100), make_buffer(100)
    with torch.no_grad():
        real_buffer.extend(real.rollout(16, pi).reshape(-1))
    q_d = DynamicsModel(3, 1, hidden=(8,))
    imagine(
        q_d,
        real,
        real_buffer,
        model_buffer,
        q_c,
        num_rollouts=4,
        horizon=2,
        termination_fn=never_done,
        observation_key="obs",
        reward_key="rew",
    )
    batch = model_buffer.sample(8)
    assert {"obs", ("next", "obs"), ("next", "rew")} <= set(batch.keys(True, True))
    assert "observation" not in batch.keys() and ("next", "reward") not in batch.keys(True, True)
    critic = VMBPOCriticLoss(
        make_q_value(3, 1, hidden=(8,)), make_state_value(3, hidden=(8,)), q_c, pi, eta=1.0, gamma=0.99
    )
    actor = VMBPOActorLoss(q_c, critic, pi)
    dynamics = VMBPODynamicsLoss(q_d, critic, mix=0.5)
    for loss in (critic, actor, dynamics):
        loss.set_keys(observation="obs", **({"reward": "rew"} if hasattr(loss.tensor_keys, "reward") else {}))
        assert all(key in batch.keys(True, True) for key in loss.in_keys), (type(loss).__name__, loss.in_keys)
    assert ("next", "rew") in critic.in_keys and ("next", "obs") in critic.in_keys
    assert all(torch.isfinite(v).all() for v in critic(batch).values())
    assert torch.isfinite(actor(batch)["loss_actor"])
    assert torch.isfinite(dynamics(real_buffer.sample(8))["loss_dynamics"])


def test_a_collector_is_built_before_the_real_buffer_has_data_and_needs_no_init_tracker():
    real = make_env("Pendulum-v1", seed=0)
    buffer = make_buffer(100)
    env = WorldModelEnv(
        DynamicsModel(3, 1, hidden=(8,)),
        real,
        start_state_sampler=buffer_start_states(buffer),
        termination_fn=never_done,
        batch_size=[4],
    )
    policy = make_tanh_gaussian_actor(3, real.action_spec, hidden=(8,))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the collector's "missing InitTracker" warning
        collector = Collector(
            env,
            policy,
            frames_per_batch=8,
            total_frames=16,
            max_frames_per_traj=2,
            reset_at_each_iter=True,
            trust_policy=True,
        )
    with pytest.raises(RuntimeError, match="no start states"):
        env.step(env.reset().set("action", torch.zeros(4, 1)))  # placeholders cannot be stepped
    with torch.no_grad():
        buffer.extend(real.rollout(10, policy))
    try:
        batch = next(iter(collector))
    finally:
        collector.shutdown()
    starts = batch["observation"][:, 0]
    stored = buffer[:]["observation"]
    assert ((starts.unsqueeze(1) - stored.unsqueeze(0)).abs().amax(-1) < 1e-6).any(1).all()
    assert batch["is_init"][:, 0].all() and not batch["is_init"][:, 1].any()


def test_a_float64_model_rolls_out_in_float64():
    real = make_env("Pendulum-v1", seed=0)
    model = DynamicsModel(3, 1, hidden=(8,)).double()
    policy = make_tanh_gaussian_actor(3, real.action_spec, hidden=(8,)).double()
    env = WorldModelEnv(
        model,
        real,
        start_state_sampler=lambda n: torch.zeros(n, 3, dtype=torch.float64),
        termination_fn=never_done,
        batch_size=[4],
    )
    with torch.no_grad():
        out = env.rollout(3, policy)
    assert out["next", "observation"].dtype == torch.float64
    assert out["next", "reward"].dtype == torch.float64
    assert env.action_spec.dtype == torch.float64
