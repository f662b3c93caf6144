"""Checkpoints: every module and optimizer of an agent, the config and the step, written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from torchrl_vmbpo.training.agent import Agent

_FORMAT = "torchrl_vmbpo.checkpoint.v1"


def save_checkpoint(
    path: str | Path, agent: Agent, *, config: dict, env_steps: int, loop_state: dict | None = None
) -> None:
    """Write to a temporary file, then rename: an interrupted save never destroys the previous one.

    ``loop_state`` (written by the training loop) is what resuming needs besides the agent: the real
    replay buffer, counters, RNG states, the evaluation curve (``torchrl_vmbpo.training.loop``).
    """
    path = Path(path)
    payload = {
        "format": _FORMAT,
        "agent": agent.state_dict(),
        "optimizers": {name: opt.state_dict() for name, opt in agent.optimizers().items()},
        "config": config,
        "env_steps": env_steps,
        "loop_state": loop_state,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint's payload (agent and optimizer states, config, env_steps, loop_state), validated.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a torchrl_vmbpo checkpoint or is corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises several types for truncated/garbled files
        raise ValueError(
            f"{path} is not a readable checkpoint ({type(err).__name__}: {err}); expected a file written by "
            "torchrl_vmbpo.training.save_checkpoint"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a torchrl_vmbpo checkpoint (expected format {_FORMAT!r})")
    return payload


def restore_checkpoint(payload: dict, agent: Agent, *, source: str | Path = "checkpoint") -> None:
    """Load a payload of :func:`read_checkpoint` into ``agent`` (modules and optimizers), in place."""
    try:
        agent.load_state_dict(payload["agent"])
        optimizers = agent.optimizers()
        for name, state in payload["optimizers"].items():
            optimizers[name].load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as err:
        raise ValueError(
            f"{source} does not match this agent (algo/env/sizes differ?): {err}"
        ) from err


def load_checkpoint(path: str | Path, agent: Agent) -> dict:
    """Restore ``agent`` (modules and optimizers) in place; returns the payload (config, env_steps).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a torchrl_vmbpo checkpoint, is corrupt, or does not match the agent.
    """
    payload = read_checkpoint(path)
    restore_checkpoint(payload, agent, source=path)
    return payload
