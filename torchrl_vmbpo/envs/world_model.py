"""The world-model env: TorchRL's ``ModelBasedEnvBase`` around the learned dynamics q_d.

TorchRL 0.14.1's ``WorldModelEnv`` is broken (wrong action-spec shape, cannot reset without a given
latent; see ``shared/docs/torchrl-notes.md``), so this small subclass is the one place that works
around it. The env owns the rollout contract (specs, reset from start states, termination); the
:class:`~torchrl_vmbpo.models.DynamicsModel` only predicts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn
from torchrl.data import Composite, Unbounded
from torchrl.envs import EnvBase
from torchrl.envs.model_based import ModelBasedEnvBase

from torchrl_vmbpo.envs.termination import TerminationFn
from torchrl_vmbpo.models.dynamics import DynamicsModel

StartStateSampler = Callable[[int], torch.Tensor]
RewardFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class _EnsembleTransition(nn.Module):
    """One model step, written at the ROOT keys as ``ModelBasedEnvBase._step`` expects."""

    def __init__(self, dynamics: DynamicsModel, termination_fn: TerminationFn, reward_fn: RewardFn | None):
        super().__init__()
        self.dynamics = dynamics
        self.termination_fn = termination_fn
        self.reward_fn = reward_fn

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        obs, action = td.get("observation"), td.get("action")
        next_obs, reward = self.dynamics.sample(obs, action)
        if self.reward_fn is not None:  # a known reward replaces the learned head (paper, after eq. 23)
            reward = self.reward_fn(obs, action, next_obs)
        terminated = self.termination_fn(next_obs)
        td.set("observation", next_obs)
        td.set("reward", reward.to(obs.dtype))
        td.set("terminated", terminated)
        td.set("done", terminated.clone())
        return td


class WorldModelEnv(ModelBasedEnvBase):
    """Batched imagined env: ``batch_size=[N]`` rows, each a rollout of the learned dynamics.

    Every row draws its next state from a uniformly random elite member. Rows are reset from start
    states given by the caller (``reset(TensorDict({"observation": x0}))``) or, failing that, drawn
    from ``start_state_sampler`` (typically the real replay buffer); partial resets of finished rows
    inside a collector draw fresh start states the same way. A row stops when ``termination_fn``
    says its next state is terminal.

    Args:
        dynamics: the learned model q_d.
        real_env: the real env whose unbatched observation/action/reward/done specs are copied.
        start_state_sampler: ``n -> [n, obs_dim]`` start states (see :func:`buffer_start_states`).
        termination_fn: ``next_obs -> bool [..., 1]`` (see :mod:`torchrl_vmbpo.envs.termination`).
        reward_fn: optional known reward ``(obs, action, next_obs) -> [..., 1]``.
        batch_size: number of parallel rows ``N`` (``[]`` for a single row, as planners need).

    Example:
        >>> from torchrl_vmbpo.envs.real import make_env
        >>> from torchrl_vmbpo.envs.termination import never_done
        >>> real = make_env("Pendulum-v1")
        >>> model = DynamicsModel(3, 1, hidden=(16,))
        >>> env = WorldModelEnv(model, real, start_state_sampler=lambda n: torch.zeros(n, 3),
        ...                     termination_fn=never_done, batch_size=[4])
        >>> env.rollout(5)["next", "observation"].shape
        torch.Size([4, 5, 3])
    """

    def __init__(
        self,
        dynamics: DynamicsModel,
        real_env: EnvBase,
        *,
        start_state_sampler: StartStateSampler | None = None,
        termination_fn: TerminationFn,
        reward_fn: RewardFn | None = None,
        batch_size: torch.Size | list[int] | tuple = (),
    ):
        if not callable(termination_fn):
            raise TypeError("termination_fn must be a callable next_obs -> bool tensor [..., 1]")
        super().__init__(
            _EnsembleTransition(dynamics, termination_fn, reward_fn), batch_size=torch.Size(batch_size)
        )
        self.start_state_sampler = start_state_sampler
        shape = self.batch_size
        # Copy only the keys the model produces (not step_count etc. from the real env's transforms).
        # Observations and rewards are Unbounded: a learned model may leave the real env's box.
        obs_spec = real_env.full_observation_spec_unbatched["observation"]
        self.observation_spec = Composite(
            observation=Unbounded((*shape, *obs_spec.shape), dtype=obs_spec.dtype), shape=shape
        )
        action_spec = real_env.full_action_spec_unbatched["action"].clone()
        self.action_spec = action_spec.expand(*shape, *action_spec.shape)
        reward_spec = real_env.full_reward_spec_unbatched["reward"]
        self.reward_spec = Unbounded((*shape, *reward_spec.shape), dtype=reward_spec.dtype)
        done_spec = real_env.full_done_spec_unbatched.clone()
        for key in list(done_spec.keys()):
            if key not in ("done", "terminated"):  # the model never truncates: rollouts stop at k steps
                del done_spec[key]
        self.done_spec = done_spec.expand(*shape, *done_spec.shape)
        self._done_unbatched = done_spec

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        shape = self.batch_size
        n = int(torch.Size(shape).numel())
        given = None if tensordict is None else tensordict.get("observation", None)
        reset_mask = None if tensordict is None else tensordict.get("_reset", None)
        if given is not None and reset_mask is None:
            obs = given.reshape(*shape, -1)
        elif self.start_state_sampler is not None:
            obs = self.start_state_sampler(n).reshape(*shape, -1)
        else:
            raise RuntimeError(
                "WorldModelEnv.reset needs start states: pass reset(TensorDict({'observation': x0}, batch_size)) "
                "or construct the env with start_state_sampler=<n -> [n, obs_dim] tensor>."
            )
        out = TensorDict({"observation": obs.to(self.observation_spec["observation"].dtype)}, batch_size=shape)
        out.update(self._done_unbatched.zero(shape))
        return out

    def _set_seed(self, seed: int | None) -> None:
        # Randomness comes from torch's global generator, seeded once by the training loop.
        return None


def buffer_start_states(replay_buffer, key: str = "observation") -> StartStateSampler:
    """Start states drawn uniformly from a TorchRL replay buffer of real transitions."""

    def sample(n: int) -> torch.Tensor:
        if len(replay_buffer) == 0:
            raise RuntimeError("The real replay buffer is empty: collect real transitions before imagining")
        idx = torch.randint(len(replay_buffer), (n,))
        return replay_buffer[idx][key]

    return sample
