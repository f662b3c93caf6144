"""One run: seed, make envs, build the preset's agent, and hand it to the shared loop."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import torch

from torchrl_vmbpo.algorithms.presets import build_agent
from torchrl_vmbpo.envs.real import make_env
from torchrl_vmbpo.training.checkpoint import read_checkpoint, restore_checkpoint
from torchrl_vmbpo.training.config import TrainConfig
from torchrl_vmbpo.training.loop import train
from torchrl_vmbpo.training.results import check_out_dir
from torchrl_vmbpo.training.seeding import seed_everything


def run(cfg: TrainConfig, out_dir: str | Path, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Train ``cfg.algo`` on ``cfg.env``; returns the summary also written to ``out_dir/summary.json``."""
    out = Path(out_dir)
    env = make_env(cfg.env)  # validates the env id and action space before anything is written
    check_out_dir(out, overwrite=overwrite)
    return _train_on(cfg, env, out, progress=progress)


RESUME_SETTINGS = ("num_threads", "checkpoint_every", "extra.device", "extra.cuda_graph")
"""The settings a resume may change: where and how fast the run computes, not what it computes (a run
started on a CPU can go on planning on a GPU). Any other change would make one record of two configs."""


def resume(
    out_dir: str | Path, *, steps: int | None = None, progress: bool = True, overrides: list[str] = ()
) -> dict:
    """Continue the run in ``out_dir`` from its ``checkpoint.pt`` (written every ``checkpoint_every`` env
    steps and at the end), with the config it was started with; ``steps`` raises its length (extends a
    finished run). Its metrics.csv and logs continue from the checkpoint's env step.

    ``overrides`` (``name=value`` as in :meth:`TrainConfig.with_overrides`) may change only
    :data:`RESUME_SETTINGS`; restating any other setting at its run's value is allowed (so a sweep can
    pass the same ``--set`` list to a fresh and a resumed run), changing it is a ValueError."""
    out = Path(out_dir)
    payload = read_checkpoint(out / "checkpoint.pt")
    if payload.get("loop_state") is None:
        raise ValueError(f"{out / 'checkpoint.pt'} holds no loop state (written before resuming existed); "
                         "it can be loaded with load_checkpoint but not resumed")
    try:
        cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in payload["config"].items()})
    except TypeError as err:  # a field this version does not know
        raise ValueError(f"{out / 'checkpoint.pt'}: its config does not fit this version's TrainConfig ({err})") from err
    if overrides:
        changed = _changed_settings(cfg, new := cfg.with_overrides(list(overrides)))
        if refused := [name for name in changed if name not in RESUME_SETTINGS]:
            raise ValueError(f"--resume cannot change {', '.join(f'{n} ({changed[n]})' for n in refused)}: "
                             f"the run was started with it; a resume may change only {', '.join(RESUME_SETTINGS)}")
        cfg = new
    if steps is not None:
        cfg = cfg.replace(steps=steps)
    return _train_on(cfg, make_env(cfg.env), out, progress=progress, checkpoint=payload)


def _changed_settings(old: TrainConfig, new: TrainConfig) -> dict[str, str]:
    """``{name: "a -> b"}`` for each field (``extra.KEY`` for extra's entries) that differs."""
    def flat(cfg: TrainConfig) -> dict:
        fields = cfg.to_dict()
        extra = fields.pop("extra")
        return {**fields, **{f"extra.{k}": v for k, v in extra.items()}}

    a, b = flat(old), flat(new)
    return {k: f"{a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _train_on(cfg: TrainConfig, env, out: Path, *, progress: bool, checkpoint: dict | None = None) -> dict:
    """The one seeding point, the eval env, the agent (restored from ``checkpoint`` when resuming), the loop."""
    torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)  # a resumed loop then restores the checkpoint's RNG states
    # A resumed run's envs are seeded afresh from its env step: a new episode, not the first one's again.
    offset = 0 if checkpoint is None else checkpoint["loop_state"]["env_steps"]
    env.set_seed(cfg.seed + offset)
    eval_env = make_env(cfg.env, seed=cfg.seed + 10_000 + offset)
    agent = build_agent(cfg, env)
    if checkpoint is not None:
        restore_checkpoint(checkpoint, agent, source=out / "checkpoint.pt")
    try:
        return train(
            cfg, agent, env, eval_env, out, max_episode_steps=gym.spec(cfg.env).max_episode_steps or 1000,
            progress=progress, resume=None if checkpoint is None else checkpoint["loop_state"],
        )
    finally:
        env.close()
        eval_env.close()
