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
    torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    env.set_seed(cfg.seed)
    eval_env = make_env(cfg.env, seed=cfg.seed + 10_000)
    agent = build_agent(cfg, env)
    try:
        return train(
            cfg, agent, env, eval_env, out, max_episode_steps=gym.spec(cfg.env).max_episode_steps or 1000,
            progress=progress,
        )
    finally:
        env.close()
        eval_env.close()


def resume(out_dir: str | Path, *, steps: int | None = None, progress: bool = True) -> dict:
    """Continue the run in ``out_dir`` from its ``checkpoint.pt`` (written every ``checkpoint_every`` env
    steps and at the end), with the config it was started with; ``steps`` raises its length (extends a
    finished run). Its metrics.csv and logs continue from the checkpoint's env step."""
    out = Path(out_dir)
    payload = read_checkpoint(out / "checkpoint.pt")
    state = payload.get("loop_state")
    if state is None:
        raise ValueError(f"{out / 'checkpoint.pt'} holds no loop state (written before resuming existed); "
                         "it can be loaded with load_checkpoint but not resumed")
    try:
        cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in payload["config"].items()})
    except TypeError as err:  # a field this version does not know
        raise ValueError(f"{out / 'checkpoint.pt'}: its config does not fit this version's TrainConfig ({err})") from err
    if steps is not None:
        cfg = cfg.replace(steps=steps)
    env = make_env(cfg.env)
    torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)  # the loop then restores the checkpoint's RNG states
    env.set_seed(cfg.seed + state["env_steps"])  # a fresh episode, not the first one's start again
    eval_env = make_env(cfg.env, seed=cfg.seed + 10_000 + state["env_steps"])
    agent = build_agent(cfg, env)
    restore_checkpoint(payload, agent, source=out / "checkpoint.pt")
    try:
        return train(
            cfg, agent, env, eval_env, out, max_episode_steps=gym.spec(cfg.env).max_episode_steps or 1000,
            progress=progress, resume=state,
        )
    finally:
        env.close()
        eval_env.close()
