"""Replay-buffer factories and the real/model mixing sampler."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

from torchrl_vmbpo import keys

# What a transition needs downstream; actor outputs (loc, scale, log-prob) are not stored.
TRANSITION_KEYS = (keys.OBSERVATION, keys.ACTION, keys.NEXT_OBSERVATION, keys.REWARD, keys.DONE, keys.TERMINATED)


def make_buffer(capacity: int) -> TensorDictReplayBuffer:
    """A uniform TorchRL replay buffer of flat transitions held in memory."""
    if capacity < 1:
        raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
    return TensorDictReplayBuffer(storage=LazyTensorStorage(capacity))


def sample_mixed(
    real: TensorDictReplayBuffer, model: TensorDictReplayBuffer | None, batch_size: int, real_ratio: float
) -> TensorDictBase:
    """A batch with ``round(real_ratio * batch_size)`` real rows and the rest from the model buffer.

    Only :data:`TRANSITION_KEYS` are kept: real and model rows carry different extra keys. Without a
    model buffer (or while it is empty) the whole batch is real.
    """
    if model is None or len(model) == 0:
        return real.sample(batch_size).select(*TRANSITION_KEYS)
    n_real = int(round(real_ratio * batch_size))
    parts = []
    if n_real > 0:
        parts.append(real.sample(n_real).select(*TRANSITION_KEYS))
    if batch_size - n_real > 0:
        parts.append(model.sample(batch_size - n_real).select(*TRANSITION_KEYS))
    return torch.cat(parts, 0) if len(parts) > 1 else parts[0]
