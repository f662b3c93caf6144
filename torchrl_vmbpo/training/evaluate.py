"""Deterministic evaluation on a separate env."""

from __future__ import annotations

import torch
from tensordict.nn import TensorDictModuleBase
from torchrl.envs import EnvBase, ExplorationType, set_exploration_type


@torch.no_grad()
def evaluate(env: EnvBase, policy: TensorDictModuleBase, *, episodes: int, max_steps: int) -> tuple[float, float]:
    """Mean and std of the undiscounted return over ``episodes`` episodes of the policy's mode."""
    returns = []
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        for _ in range(episodes):
            td = env.rollout(max_steps, policy, break_when_any_done=True, auto_cast_to_device=False)
            returns.append(float(td["next", "reward"].sum()))
    t = torch.tensor(returns)
    return float(t.mean()), float(t.std(unbiased=False))
