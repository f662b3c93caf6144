"""Deterministic evaluation on a separate env."""

from __future__ import annotations

from typing import NamedTuple

import torch
from tensordict.nn import TensorDictModuleBase
from torchrl.envs import EnvBase, ExplorationType, set_exploration_type


class Evaluation(NamedTuple):
    """The undiscounted return's mean and std over the episodes, and their mean length in steps. The length
    tells apart returns of equal size: on Hopper-v5 a policy that only stays upright for all 1,000 steps
    collects the healthy reward, about 1,000, as much as one that hops forward and falls after a few hundred."""

    mean: float
    std: float
    episode_length: float


@torch.no_grad()
def evaluate(env: EnvBase, policy: TensorDictModuleBase, *, episodes: int, max_steps: int) -> Evaluation:
    """The return and length of ``episodes`` episodes of the policy's mode."""
    returns, lengths = [], []
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        for _ in range(episodes):
            td = env.rollout(max_steps, policy, break_when_any_done=True, auto_cast_to_device=False)
            returns.append(float(td["next", "reward"].sum()))
            lengths.append(td.shape[-1])
    t = torch.tensor(returns)
    return Evaluation(float(t.mean()), float(t.std(unbiased=False)), sum(lengths) / len(lengths))
