"""The phases of the ONE loop, each a function of what it reads and writes (``loop.py`` runs them).

collect -> fit model -> imagine -> update -> evaluate -> checkpoint; which of them an agent uses is
its :class:`~torchrl_vmbpo.training.agent.Capabilities`, never a settings value.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

import torch
from tensordict import TensorDictBase
from torchrl.data import ReplayBuffer
from torchrl.envs import EnvBase

from torchrl_vmbpo.data.buffers import TRANSITION_KEYS, make_buffer
from torchrl_vmbpo.objectives.functional import assert_finite
from torchrl_vmbpo.training.agent import Agent
from torchrl_vmbpo.training.config import TrainConfig
from torchrl_vmbpo.training.device import on_device
from torchrl_vmbpo.training.evaluate import Evaluation, evaluate
from torchrl_vmbpo.training.imagine import imagine
from torchrl_vmbpo.training.loop_state import LoopState
from torchrl_vmbpo.training.model_fit import fit_dynamics, with_fit_weights


class PhaseTimer:
    """Wall seconds per phase (collect, model_fit, imagine, update, evaluate, checkpoint)."""

    def __init__(self, seconds: dict[str, float] | None = None):
        self.seconds: dict[str, float] = defaultdict(float, seconds or {})

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start


def collect(batch: TensorDictBase, real_buffer: ReplayBuffer, state: LoopState, env_id: str) -> int:
    """Store a collector batch of real transitions in D (refusing NaN/inf); returns its size."""
    flat = batch.reshape(-1)
    assert_finite(flat, TRANSITION_KEYS, f"real transitions from {env_id}")
    # The real env's CPU transitions move to the agent's device here (its actions come back through
    # training.device.PolicyOnDevice).
    real_buffer.extend(flat.select(*TRANSITION_KEYS).to(real_buffer.storage.device))
    state.env_steps += flat.shape[0]
    return flat.shape[0]


def model_fit_due(cfg: TrainConfig, env_steps: int, last_fit: int | None) -> bool:
    """The first learning step (and a resumed run's first step: its model buffer is not saved), then
    every ``model_retrain_every`` env steps."""
    return env_steps >= cfg.init_random_steps and (last_fit is None or env_steps - last_fit >= cfg.model_retrain_every)


def model_fit_settings(cfg: TrainConfig) -> dict[str, int | float]:
    """The run's :func:`~torchrl_vmbpo.training.model_fit.fit_dynamics` keyword arguments: batch size,
    holdout split, early stopping and epoch cap (shared with tools that refit a run's model)."""
    return {
        "batch_size": cfg.model_batch_size,
        "holdout": cfg.model_holdout,
        "max_holdout": cfg.model_max_holdout,
        "patience": cfg.model_patience,
        "max_epochs": cfg.model_max_epochs,
    }


def fit_model(cfg: TrainConfig, agent: Agent, real_buffer: ReplayBuffer) -> dict[str, float]:
    """Fit q_d on all of D (holdout, per-member bootstraps, early stopping, elites), then the agent's
    :meth:`~Agent.after_model_fit` hook (VMBPO fits its ratio network there)."""
    objective = agent.dynamics_loss()  # its holdout_loss ranks members: MSE for MLE, eq. 19's NLL when twisted
    metrics = fit_dynamics(
        agent.dynamics,
        agent.dynamics_step_loss(),
        agent.model_optimizer,
        with_fit_weights(objective, real_buffer[:]),  # the step may be compiled: score eq. 19's weights here
        holdout_score=getattr(objective, "holdout_loss", None),
        **model_fit_settings(cfg),
    )
    metrics.update(agent.after_model_fit(real_buffer))
    return metrics


class ModelBuffer:
    """The model buffer E, sized for ``model_retain_epochs`` epochs of imagined data at the current
    rollout length (MBPO) and rebuilt, keeping its newest rows, when that length changes."""

    def __init__(self, cfg: TrainConfig, device: torch.device | str = "cpu"):
        self.cfg, self.device = cfg, torch.device(device)
        self.buffer: ReplayBuffer | None = None
        self.horizon = 0

    def capacity(self, horizon: int) -> int:
        cfg = self.cfg
        per_fit = cfg.rollouts_per_step * cfg.model_retrain_every * horizon
        return max(per_fit, cfg.rollouts_per_step * 1000 * horizon * cfg.model_retain_epochs)

    def for_horizon(self, horizon: int) -> ReplayBuffer:
        if self.buffer is None or horizon != self.horizon:
            new = make_buffer(self.capacity(horizon), self.device)
            if self.buffer is not None and len(self.buffer):
                keep = min(len(self.buffer), new._storage.max_size)
                new.extend(self.buffer[:][-keep:])
            self.buffer, self.horizon = new, horizon
        return self.buffer


def imagine_rollouts(
    cfg: TrainConfig, agent: Agent, env: EnvBase, real_buffer: ReplayBuffer, model: ModelBuffer, env_steps: int
) -> dict[str, float]:
    """Branched k-step rollouts of q_d with ``agent.rollout_policy`` from start states in D into E
    (``rollouts_per_step`` per env step since the last fit; k from ``rollout_schedule``)."""
    horizon = cfg.rollout_length(env_steps)
    metrics = imagine(
        agent.dynamics,
        env,
        real_buffer,
        model.for_horizon(horizon),
        agent.rollout_policy,
        num_rollouts=cfg.rollouts_per_step * cfg.model_retrain_every,
        horizon=horizon,
        termination_fn=agent.termination_fn,
        reward_fn=agent.reward_fn,
        label=agent.label_imagined,
    )
    return {**metrics, "rollout_length": float(horizon)}


def run_updates(
    cfg: TrainConfig,
    agent: Agent,
    real_buffer: ReplayBuffer,
    model_buffer: ReplayBuffer | None,
    state: LoopState,
    new_steps: int,
) -> dict[str, float] | None:
    """``utd`` updates per new env step (fractions carry over in ``state.updates_owed``), each on a
    batch of :meth:`Agent.sample_batch` with the agent's real ratio; the last update's metrics, or
    None when none was due (utd < 1)."""
    state.updates_owed += new_steps * cfg.utd
    metrics = None
    while state.updates_owed >= 1.0:
        batch = agent.sample_batch(real_buffer, model_buffer, cfg.batch_size, agent.capabilities.real_ratio)
        metrics = agent.update(batch)
        state.updates += 1
        state.updates_owed -= 1.0
    return None if metrics is None else {k: float(v) for k, v in metrics.items()}


def evaluate_policy(cfg: TrainConfig, agent: Agent, eval_env: EnvBase, *, max_episode_steps: int) -> Evaluation:
    """The return (mean, std) and mean length of ``eval_episodes`` episodes of the policy's mode on the
    evaluation env."""
    policy = on_device(agent.policy, agent.device)
    return evaluate(eval_env, policy, episodes=cfg.eval_episodes, max_steps=max_episode_steps)
