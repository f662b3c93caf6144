"""Checkpoints: every module and optimizer of an agent, the config and the step; safe to load.

Format v2 holds tensors and plain containers only (the config as a JSON string) and is read with
``torch.load(weights_only=True)``, which executes no code from the file: a file that would need
arbitrary unpickling (a crafted file, or a v1 checkpoint of an earlier version) is refused. A v1 file
the user trusts converts with ``vmbpo convert-checkpoint PATH`` (:func:`convert_checkpoint`).

Loading is atomic: :func:`restore_checkpoint` compares algorithm, env, state-dict keys, shapes and
optimizer layouts before it changes anything, and restores the agent's previous state if loading
fails anyway.
"""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import torch
from tensordict import TensorDictBase

from torchrl_vmbpo.errors import CheckpointError, CheckpointNotFound, first_line
from torchrl_vmbpo.training.agent import Agent
from torchrl_vmbpo.training.loop_state import plain_rng_states
from torchrl_vmbpo.training.results import atomic_write

_FORMAT = "torchrl_vmbpo.checkpoint.v2"
_OLD_FORMATS = ("torchrl_vmbpo.checkpoint.v1",)
_SHOWN = 5  # differing keys named in a mismatch message


def save_checkpoint(
    path: str | Path,
    agent: Agent,
    *,
    config: dict,
    env_steps: int,
    loop_state: dict | None = None,
    run_id: str | None = None,
) -> None:
    """Write durably (temporary file, fsync, rename): an interrupted save never destroys the previous one.

    ``loop_state`` (written by the training loop) is what resuming needs besides the agent: the real
    replay buffer, counters, RNG states, the evaluation curve (``torchrl_vmbpo.training.loop``); it
    must hold tensors and plain containers only. ``run_id`` ties the file to its run folder.
    """
    payload = {
        "format": _FORMAT,
        "run_id": run_id,
        "config_json": json.dumps(config),
        "env_steps": int(env_steps),
        "agent": agent.state_dict(),
        "optimizers": {name: opt.state_dict() for name, opt in agent.optimizers().items()},
        "loop_state": loop_state,
    }
    atomic_write(Path(path), lambda f: torch.save(payload, f))


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint's payload (agent and optimizer states, ``config`` as a dict, env_steps, run_id,
    loop_state), validated, read without executing anything from the file.

    Raises:
        CheckpointNotFound: no file at ``path``.
        CheckpointError: the file is not a torchrl_vmbpo v2 checkpoint, is corrupt, or would need
            arbitrary code to load.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFound(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "unsupported global" in str(err).lower():  # a class or function to import: code to run
            raise CheckpointError(
                f"{path} needs arbitrary code to load (it is not a v2 torchrl_vmbpo checkpoint: a file of an "
                "earlier version, or a crafted one); refused, nothing from it was executed. If you wrote it "
                f"with an earlier torchrl_vmbpo and trust it: vmbpo convert-checkpoint {path}"
            ) from None
        raise CheckpointError(f"{path} is not a readable checkpoint ({first_line(err)})") from None
    except Exception as err:  # torch raises several types for truncated/garbled files
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(err).__name__}: {first_line(err)}); expected a file "
            "written by torchrl_vmbpo.training.save_checkpoint"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else None
        raise CheckpointError(f"{path} is not a torchrl_vmbpo checkpoint (format {found!r}; expected {_FORMAT!r})")
    try:
        payload["config"] = json.loads(payload.pop("config_json"))
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: its config is missing or not JSON ({err})") from None
    return payload


def restore_checkpoint(payload: dict, agent: Agent, *, source: str | Path = "checkpoint") -> None:
    """Load a payload of :func:`read_checkpoint` into ``agent`` (modules and optimizers), in place, all
    or nothing: a mismatch found before loading, or an error while loading, leaves ``agent`` unchanged.

    Raises:
        CheckpointError: another algorithm or env (where ``agent.identity`` names them), other
            state-dict keys or shapes, or other optimizers; the message names a few differing keys.
    """
    problems = _mismatches(payload, agent)
    if problems:
        raise CheckpointError(f"{source} does not match this agent: {'; '.join(problems)}; the agent is unchanged")
    modules_before = {k: v.detach().clone() for k, v in agent.state_dict().items()}
    optimizers = agent.optimizers()
    optimizers_before = {name: copy.deepcopy(opt.state_dict()) for name, opt in optimizers.items()}
    try:
        agent.load_state_dict(payload["agent"])
        for name, state in payload["optimizers"].items():
            optimizers[name].load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError) as err:
        agent.load_state_dict(modules_before)
        for name, state in optimizers_before.items():
            optimizers[name].load_state_dict(state)
        raise CheckpointError(
            f"{source} does not load into this agent ({first_line(err)}); the agent is unchanged"
        ) from None


def load_checkpoint(path: str | Path, agent: Agent) -> dict:
    """Restore ``agent`` (modules and optimizers) in place, all or nothing; returns the payload
    (``config`` dict, ``env_steps``, ``run_id``, ``loop_state``).

    Raises:
        CheckpointNotFound: no file at ``path``.
        CheckpointError: the file is not a v2 torchrl_vmbpo checkpoint, is corrupt or unsafe, or does
            not match the agent (which is then unchanged).
    """
    payload = read_checkpoint(path)
    restore_checkpoint(payload, agent, source=path)
    return payload


def convert_checkpoint(path: str | Path, *, run_id: str | None = None) -> Path:
    """Rewrite a v1 checkpoint (pickled by an earlier version) as v2, keeping the original beside it
    as ``PATH.v1``; returns that backup's path.

    UNSAFE ON UNTRUSTED FILES: a v1 file is read with full unpickling, which can run code from the
    file. Run it only on checkpoints you wrote yourself. ``run_id`` is stored in the new file (a run
    folder's ``run.json`` names the run its checkpoint must belong to).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFound(f"no checkpoint at {path}")
    try:
        old = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(f"{path} is not a readable checkpoint ({first_line(err)})") from None
    if not isinstance(old, dict) or old.get("format") not in _OLD_FORMATS:
        found = old.get("format") if isinstance(old, dict) else None
        raise CheckpointError(
            f"{path} is not a checkpoint of an earlier version (format {found!r}); nothing to convert"
        )
    state = old.get("loop_state")
    if state is not None:
        state = dict(state)
        if isinstance(state.get("real_data"), TensorDictBase):
            state["real_data"] = state["real_data"].to_dict()
        if state.get("rng") is not None:
            state["rng"] = plain_rng_states(state["rng"])
    backup = path.with_name(path.name + ".v1")
    if backup.exists():
        raise CheckpointError(f"{backup} already exists; move it away before converting {path}")
    path.rename(backup)
    payload = {
        "format": _FORMAT,
        "run_id": run_id,
        "config_json": json.dumps(old["config"]),
        "env_steps": int(old["env_steps"]),
        "agent": old["agent"],
        "optimizers": old["optimizers"],
        "loop_state": state,
    }
    atomic_write(path, lambda f: torch.save(payload, f))
    return backup


def _mismatches(payload: dict, agent: Agent) -> list[str]:
    problems = []
    identity = getattr(agent, "identity", None)
    config = payload.get("config") or {}
    if identity is not None and (config.get("algo"), config.get("env")) != tuple(identity):
        problems.append(
            f"it holds {config.get('algo')} on {config.get('env')}, the agent is {identity[0]} on {identity[1]}"
        )
    ours, theirs = agent.state_dict(), payload.get("agent") or {}
    missing, unexpected = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    if missing:
        problems.append(f"{len(missing)} key(s) missing from it ({_names(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} key(s) the agent lacks ({_names(unexpected)})")
    shapes = [
        f"{k} {tuple(theirs[k].shape)} vs {tuple(ours[k].shape)}"
        for k in sorted(set(ours) & set(theirs))
        if not isinstance(theirs[k], torch.Tensor) or theirs[k].shape != ours[k].shape
    ]
    if shapes:
        problems.append(f"{len(shapes)} shape(s) differ, checkpoint vs agent ({_names(shapes)})")
    optimizers, saved = agent.optimizers(), payload.get("optimizers") or {}
    if set(optimizers) != set(saved):
        problems.append(f"optimizers {sorted(saved)} vs the agent's {sorted(optimizers)}")
    for name in sorted(set(optimizers) & set(saved)):
        if problem := _optimizer_mismatch(optimizers[name], saved[name]):
            problems.append(f"optimizer {name!r}: {problem}")
    return problems


def _optimizer_mismatch(optimizer: torch.optim.Optimizer, saved: dict) -> str | None:
    groups = optimizer.param_groups
    try:
        saved_groups, saved_state = saved["param_groups"], saved["state"]
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in saved_groups]:
            return (
                f"parameters per group {[len(g['params']) for g in saved_groups]} vs the agent's "
                f"{[len(g['params']) for g in groups]}"
            )
        params = [p for g in groups for p in g["params"]]
        ids = [i for g in saved_groups for i in g["params"]]
        for param, index in zip(params, ids):
            for key, value in (saved_state.get(index) or {}).items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                    return f"state {key} of parameter {index} has shape {tuple(value.shape)}, the parameter {tuple(param.shape)}"
    except (KeyError, TypeError, AttributeError) as err:
        return f"malformed state ({type(err).__name__}: {err})"
    return None


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f", and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")
