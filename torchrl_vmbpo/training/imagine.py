"""Imagination: branched k-step rollouts of the world-model env, run by a TorchRL Collector."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.collectors import Collector
from torchrl.data import ReplayBuffer
from torchrl.envs import EnvBase

from torchrl_vmbpo.envs.termination import TerminationFn
from torchrl_vmbpo.envs.world_model import RewardFn, WorldModelEnv, buffer_start_states
from torchrl_vmbpo.models.dynamics import DynamicsModel


@torch.no_grad()
def imagine(
    dynamics: DynamicsModel,
    real_env: EnvBase,
    real_buffer: ReplayBuffer,
    model_buffer: ReplayBuffer,
    policy: TensorDictModuleBase,
    *,
    num_rollouts: int,
    horizon: int,
    termination_fn: TerminationFn,
    reward_fn: RewardFn | None = None,
    observation_key="observation",
    action_key="action",
    reward_key="reward",
    label: Callable[[TensorDictBase], TensorDictBase] | None = None,
) -> dict[str, float]:
    """Roll ``num_rollouts`` branches of ``horizon`` model steps from real start states into ``model_buffer``.

    The world-model env holds ``num_rollouts`` rows; a Collector with ``max_frames_per_traj=horizon``
    and ``reset_at_each_iter=True`` runs one k-step branch per row, resetting rows that terminate
    early from fresh real start states (so every stored transition starts from a real-state branch).
    The policy acts stochastically (the Collector's RANDOM exploration mode), as in MBPO.

    ``observation_key``, ``action_key``, ``reward_key``: the entries' names in the real env, the real
    buffer, the policy and (what is stored) the model buffer; the losses read them after the same
    ``set_keys`` (``("next", reward_key)`` etc., SACLoss's contract). ``label``: applied to each batch of
    stored rows before it enters ``model_buffer`` (``Agent.label_imagined``: VMBPO records nu there).
    """
    env = WorldModelEnv(
        dynamics,
        real_env,
        start_state_sampler=buffer_start_states(real_buffer, observation_key),
        termination_fn=termination_fn,
        reward_fn=reward_fn,
        batch_size=[num_rollouts],
        observation_key=observation_key,
        action_key=action_key,
        reward_key=reward_key,
        device=model_buffer.storage.device,  # q_d, the rollout policy and E live on the agent's device
    )
    stored_keys = (
        observation_key,
        action_key,
        ("next", observation_key),
        ("next", reward_key),
        ("next", "done"),
        ("next", "terminated"),
    )
    frames = num_rollouts * horizon
    collector = Collector(
        env,
        policy,
        frames_per_batch=frames,
        total_frames=frames,
        max_frames_per_traj=horizon,
        reset_at_each_iter=True,
        auto_register_policy_transforms=False,
        trust_policy=True,
    )
    stored, terminated = 0, 0.0
    try:
        for batch in collector:
            flat = batch.reshape(-1).select(*stored_keys)
            if label is not None:
                flat = label(flat)
            model_buffer.extend(flat)
            stored += flat.shape[0]
            terminated += float(flat["next", "terminated"].float().sum())
    finally:
        collector.shutdown()
    return {"imagined_transitions": float(stored), "imagined_terminal_fraction": terminated / max(stored, 1)}
