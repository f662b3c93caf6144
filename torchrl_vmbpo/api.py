"""The public Python API: train a preset on any gymnasium id or TorchRL env in one call.

Example (a gymnasium env the library has no termination function for):
    >>> import torch, torchrl_vmbpo
    >>> def never_done(next_obs):
    ...     return torch.zeros(*next_obs.shape[:-1], 1, dtype=torch.bool)
    >>> summary = torchrl_vmbpo.train(  # doctest: +SKIP
    ...     "vmbpo", "MountainCarContinuous-v0", steps=3000, termination_fn=never_done, out="runs/vmbpo-car")
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from torchrl.envs import EnvBase

from torchrl_vmbpo.algorithms.presets import default_config
from torchrl_vmbpo.algorithms.run import EnvSource, run
from torchrl_vmbpo.envs.termination import TerminationFn
from torchrl_vmbpo.envs.world_model import RewardFn


def train(
    algo: str,
    env: str,
    *,
    steps: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    overrides: Sequence[str] = (),
    termination_fn: TerminationFn | None = None,
    reward_fn: RewardFn | None = None,
    make_env: Callable[[], EnvBase] | None = None,
    max_episode_steps: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **changes,
) -> dict:
    """Train preset ``algo`` on ``env``; returns the run's summary (also in ``out/summary.json``).

    Args:
        algo: a preset (``torchrl_vmbpo.PRESETS``).
        env: a gymnasium id, ``module:EnvId`` (the module is imported first), or the name of the env
            ``make_env`` builds.
        steps, seed: the run's length and seed (default: the preset's length, seed 0).
        out: the run folder (default ``runs/{algo}-{env}-{time}``); one that holds a run is refused
            unless ``overwrite``.
        overrides: ``--set`` strings (``"utd=10"``, ``"extra.eta=2"``); ``changes``: fields by keyword.
        termination_fn: ``done(next_obs) -> bool [..., 1]`` for model states, needed by the
            model-based algorithms on an env the library does not know (or register it with
            :func:`register_env_functions`).
        reward_fn: ``r(obs, action, next_obs) -> [..., 1]``; without it the model predicts rewards.
        make_env: a factory of a TorchRL env (flat ``"observation"``, bounded continuous actions),
            called for the training and the evaluation env; needs ``max_episode_steps``.

    Raises:
        ConfigError, EnvError, RunFolderError: bad input, before anything is written.
        RunInterrupted: SIGINT / SIGTERM stopped the run after a checkpoint.
    """
    if steps is not None:
        changes["steps"] = steps
    cfg = default_config(algo, env, overrides=overrides, seed=seed, **changes)
    if out is None:
        out = Path("runs") / f"{algo}-{env.replace(':', '-').replace('/', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
    source = EnvSource(
        termination_fn=termination_fn, reward_fn=reward_fn, make_env=make_env, max_episode_steps=max_episode_steps
    )
    return run(cfg, out, overwrite=overwrite, progress=progress, env_fns=source)
