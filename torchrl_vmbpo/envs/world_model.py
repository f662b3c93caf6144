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
from torchrl.data import Categorical, Composite, Unbounded
from torchrl.envs import EnvBase
from torchrl.envs.model_based import ModelBasedEnvBase

from torchrl_vmbpo.envs.termination import TerminationFn
from torchrl_vmbpo.models.dynamics import DynamicsModel

StartStateSampler = Callable[[int], torch.Tensor]
RewardFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
INIT_KEY = "is_init"  # InitTracker's entry: True on the step a row was reset


class NoStartStates(RuntimeError):
    """Raised by a start-state sampler that has nothing to sample yet (an empty real buffer)."""


class _EnsembleTransition(nn.Module):
    """One model step, written at the ROOT keys as ``ModelBasedEnvBase._step`` expects."""

    def __init__(
        self,
        dynamics: DynamicsModel,
        termination_fn: TerminationFn,
        reward_fn: RewardFn | None,
        observation_key="observation",
        action_key="action",
        reward_key="reward",
    ):
        super().__init__()
        self.dynamics = dynamics
        self.termination_fn = termination_fn
        self.reward_fn = reward_fn
        self.observation_key, self.action_key, self.reward_key = observation_key, action_key, reward_key

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        obs, action = td.get(self.observation_key), td.get(self.action_key)
        next_obs, reward = self.dynamics.sample(obs, action)
        if self.reward_fn is not None:  # a known reward replaces the learned head (paper, after eq. 23)
            reward = self.reward_fn(obs, action, next_obs)
        terminated = self.termination_fn(next_obs)
        td.set(self.observation_key, next_obs)
        td.set(self.reward_key, reward.to(obs.dtype))
        td.set("terminated", terminated)
        td.set("done", terminated.clone())
        td.set(INIT_KEY, torch.zeros_like(terminated, dtype=torch.bool))
        return td


class WorldModelEnv(ModelBasedEnvBase):
    """Batched imagined env: ``batch_size=[N]`` rows, each a rollout of the learned dynamics.

    Every row draws its next state from a uniformly random elite member. Rows are reset from start
    states given by the caller (``reset(TensorDict({"observation": x0}))``) or, failing that, drawn
    from ``start_state_sampler`` (typically the real replay buffer); partial resets of finished rows
    inside a collector draw fresh start states the same way. A row stops when ``termination_fn``
    says its next state is terminal.

    Start states are drawn lazily, at each reset, never at construction: a TorchRL ``Collector``
    resets its env when it is built, possibly before the real buffer holds anything. Such a reset
    (the sampler raises :class:`NoStartStates`, as :func:`buffer_start_states` does on an empty
    buffer) yields placeholder zero states that cannot be stepped: a ``Collector`` built with
    ``reset_at_each_iter=True`` (as :func:`~torchrl_vmbpo.training.imagine.imagine` builds it) resets
    again, from the filled buffer, before its first step. The env writes InitTracker's ``is_init``
    entry (True on reset), so collectors find the transform their policies may need.

    Dtype: observations, actions and rewards are in the dynamics model's dtype (``model.double()``
    gives a float64 world model whatever the real env's dtype), read at each reset.

    Args:
        dynamics: the learned model q_d.
        real_env: the real env whose unbatched observation/action/reward/done specs are copied.
        start_state_sampler: ``n -> [n, obs_dim]`` start states (see :func:`buffer_start_states`).
        termination_fn: ``next_obs -> bool [..., 1]`` (see :mod:`torchrl_vmbpo.envs.termination`).
        reward_fn: optional known reward ``(obs, action, next_obs) -> [..., 1]``.
        batch_size: number of parallel rows ``N`` (``[]`` for a single row, as planners need).
        observation_key, action_key, reward_key: the entries read from the real env's specs and written
            by the env (TorchRL's names by default); renamed, they carry through imagination into the
            model buffer, to losses renamed with the same ``set_keys``.
        device: where the env's tensors live (default: the dynamics model's device); start states are
            moved there.

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
        observation_key="observation",
        action_key="action",
        reward_key="reward",
        device: torch.device | str | None = None,
    ):
        if not callable(termination_fn):
            raise TypeError("termination_fn must be a callable next_obs -> bool tensor [..., 1]")
        super().__init__(
            _EnsembleTransition(dynamics, termination_fn, reward_fn, observation_key, action_key, reward_key),
            batch_size=torch.Size(batch_size),
            device=torch.device(device) if device is not None else _device_of(dynamics),
        )
        self.start_state_sampler = start_state_sampler
        self._observation_key = observation_key
        self._placeholder_states = False
        self._dtype = self._model_dtype()
        shape = self.batch_size
        # Copy only the keys the model produces (not step_count etc. from the real env's transforms).
        # Observations and rewards are Unbounded: a learned model may leave the real env's box.
        obs_spec = real_env.full_observation_spec_unbatched[observation_key]
        done_spec = real_env.full_done_spec_unbatched.clone()
        for key in list(done_spec.keys()):
            if key not in ("done", "terminated"):  # the model never truncates: rollouts stop at k steps
                del done_spec[key]
        self.observation_spec = Composite(
            {
                observation_key: Unbounded((*shape, *obs_spec.shape), dtype=self._dtype),
                INIT_KEY: Categorical(2, (*shape, *done_spec["done"].shape), dtype=torch.bool),
            },
            shape=shape,
        )
        action_spec = real_env.full_action_spec_unbatched[action_key].clone().to(self._dtype)
        self.full_action_spec = Composite({action_key: action_spec.expand(*shape, *action_spec.shape)}, shape=shape)
        reward_spec = real_env.full_reward_spec_unbatched[reward_key]
        self.full_reward_spec = Composite(
            {reward_key: Unbounded((*shape, *reward_spec.shape), dtype=self._dtype)}, shape=shape
        )
        self.done_spec = done_spec.expand(*shape, *done_spec.shape)
        self._done_unbatched = done_spec

    def _model_dtype(self) -> torch.dtype:
        param = next(self.world_model.parameters(), None)
        return torch.get_default_dtype() if param is None else param.dtype

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        if self._placeholder_states:
            raise RuntimeError(
                "WorldModelEnv: the last reset had no start states (the sampler raised NoStartStates, e.g. an empty "
                "real buffer); reset again once it has some (a Collector does with reset_at_each_iter=True)"
            )
        return super()._step(tensordict)

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        shape = self.batch_size
        n = int(torch.Size(shape).numel())
        key = self._observation_key
        given = None if tensordict is None else tensordict.get(key, None)
        reset_mask = None if tensordict is None else tensordict.get("_reset", None)
        self._placeholder_states = False
        if given is not None and reset_mask is None:
            obs = given.reshape(*shape, -1)
        elif self.start_state_sampler is not None:
            try:
                obs = self.start_state_sampler(n).reshape(*shape, -1)
            except NoStartStates:  # e.g. a Collector's reset at construction, before any real data
                self._placeholder_states = True
                obs = self.observation_spec[key].zero()
        else:
            raise RuntimeError(
                f"WorldModelEnv.reset needs start states: pass reset(TensorDict({{{key!r}: x0}}, batch_size)) "
                "or construct the env with start_state_sampler=<n -> [n, obs_dim] tensor>."
            )
        out = TensorDict({key: obs.to(self.device, self._model_dtype())}, batch_size=shape, device=self.device)
        out.update(self._done_unbatched.zero(shape).to(self.device))
        out.set(INIT_KEY, torch.ones_like(out.get("done")))
        return out

    def _set_seed(self, seed: int | None) -> None:
        # Randomness comes from torch's global generator, seeded once by the training loop.
        return None


def _device_of(module: nn.Module) -> torch.device:
    return next((p.device for p in module.parameters()), torch.device("cpu"))


def buffer_start_states(replay_buffer, key="observation") -> StartStateSampler:
    """Start states drawn uniformly from a TorchRL replay buffer of real transitions, at each call.

    Raises :class:`NoStartStates` while the buffer is empty.
    """

    def sample(n: int) -> torch.Tensor:
        if len(replay_buffer) == 0:
            raise NoStartStates("The real replay buffer is empty: collect real transitions before imagining")
        idx = torch.randint(len(replay_buffer), (n,))
        return replay_buffer[idx][key]

    return sample
