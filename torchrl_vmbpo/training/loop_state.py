"""The training loop's state: one typed record, saved in and restored from checkpoints as a whole."""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from torchrl_vmbpo.errors import CheckpointError, ConfigError
from torchrl_vmbpo.training.config import TrainConfig


@dataclass
class LoopState:
    """Counters, schedule, curve and provenance of a run; what ``--resume`` needs besides the agent,
    the real transitions and the RNG states (saved beside it by :meth:`to_checkpoint`)."""

    env_steps: int = 0  #: real env steps collected
    updates: int = 0  #: gradient updates done
    updates_owed: float = 0.0  #: fractional updates carried to the next batch (utd not an integer)
    next_eval: int = 0  #: env step of the next evaluation
    next_log: int = 0  #: env step of the next training-metric log row
    next_checkpoint: int = 0  #: env step of the next periodic checkpoint
    best: float = -math.inf  #: best evaluation return so far
    train_metrics: dict[str, float] = field(default_factory=dict)  #: the latest update's metrics
    wall_seconds: float = 0.0  #: wall time of the run up to the checkpoint
    phase_seconds: dict[str, float] = field(default_factory=dict)  #: wall time per loop phase
    curve: list[dict] = field(default_factory=list)  #: evaluation rows (metrics.csv without run_id)
    commits: list[str] = field(default_factory=list)  #: the commit of each part of the run
    resumed_at: list[int] = field(default_factory=list)  #: env steps where the run was resumed
    diverged: dict | None = None  #: the critic's first divergence ({env_step, value, bound, ratio}), if any

    @classmethod
    def fresh(cls, cfg: TrainConfig) -> LoopState:
        return cls(next_log=cfg.log_every, next_checkpoint=cfg.checkpoint_every)

    def to_checkpoint(self, real_data: TensorDictBase | None) -> dict:
        """Plain containers and tensors only (checkpoints load with ``weights_only=True``): the state's
        fields, ``real_data`` as a nested dict and the RNG states of torch, numpy and Python."""
        return {
            **dataclasses.asdict(self),
            # clone: a buffer's [:] is a view, and torch.save writes a view's whole storage (all
            # buffer_size rows: 128 MB for a 1e6 Hopper buffer holding 5,000 transitions).
            # on the CPU: a checkpoint resumes on any device
            "real_data": real_data.to("cpu").clone().to_dict() if real_data is not None and len(real_data) else None,
            "rng": rng_states(),
        }

    @classmethod
    def from_checkpoint(cls, saved: dict) -> tuple[LoopState, TensorDict | None, dict]:
        """(state, real transitions, RNG states) of a checkpoint's ``loop_state``."""
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            state = cls(**{k: v for k, v in saved.items() if k in names})
            real = saved.get("real_data")
            return state, None if real is None else _tensordict(real), saved["rng"]
        except (TypeError, KeyError, StopIteration) as err:
            raise CheckpointError(f"the checkpoint's loop state is malformed ({type(err).__name__}: {err})") from None


def refuse_finished_run(env_steps: int, steps: int) -> None:
    """A resumed run must go past the env steps it already has (the CLI checks before building
    anything; the loop checks again for callers that resume it directly)."""
    if env_steps >= steps:
        raise ConfigError(f"the run already has {env_steps} env steps; resume with more steps (--steps > {env_steps})")


def rng_states() -> dict:
    """The current torch (CPU, and each GPU's once CUDA is in use), numpy and Python RNG states as tensors
    and plain containers."""
    states = plain_rng_states(
        {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    )
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def plain_rng_states(states: dict) -> dict:
    """RNG states as tensors and plain containers (numpy's key array as an int64 tensor)."""
    kind, key, pos, has_gauss, cached = states["numpy"]
    key = torch.as_tensor(np.asarray(key).astype(np.int64))
    return {
        "torch": states["torch"],
        "numpy": (str(kind), key, int(pos), int(has_gauss), float(cached)),
        "python": states["python"],
    }


def set_rng_states(states: dict) -> None:
    """Restore :func:`rng_states`; the GPUs' states where the saved run used GPUs and as many are here (a
    run resumed on another kind of device continues from the CPU, numpy and Python states alone)."""
    torch.set_rng_state(states["torch"])
    cuda = states.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    kind, key, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(key, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _tensordict(data: dict) -> TensorDict:
    """Real transitions saved as a nested dict of tensors, as a TensorDict over their rows."""
    leaf = next(iter(TensorDict(data, batch_size=[]).values(True, True)))
    return TensorDict(data, batch_size=[leaf.shape[0]])
