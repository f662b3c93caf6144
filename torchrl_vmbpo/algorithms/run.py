"""One run: seed, make envs, build the preset's agent, and hand it to the shared loop."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import torch

from torchrl_vmbpo.algorithms.presets import build_agent
from torchrl_vmbpo.envs.real import make_env
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
