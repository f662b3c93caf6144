"""Replay-buffer factories and the real/model mixing sampler."""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

from torchrl_vmbpo import keys

# What a transition needs downstream; actor outputs (loc, scale, log-prob) are not stored.
TRANSITION_KEYS = (keys.OBSERVATION, keys.ACTION, keys.NEXT_OBSERVATION, keys.REWARD, keys.DONE, keys.TERMINATED)


def make_buffer(capacity: int, device: torch.device | str = "cpu") -> TensorDictReplayBuffer:
    """A uniform TorchRL replay buffer of flat transitions held in ``device``'s memory (what is stored is
    copied there; batches are drawn there)."""
    if capacity < 1:
        raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
    return TensorDictReplayBuffer(storage=LazyTensorStorage(capacity, device=torch.device(device)))


def _rows(buffer: TensorDictReplayBuffer, n: int, entries: tuple = TRANSITION_KEYS) -> list[torch.Tensor]:
    """``n`` uniformly drawn rows of each key of ``entries``, read straight from the storage's tensors.

    ``ReplayBuffer.sample`` plus ``select`` and ``torch.cat`` of TensorDicts cost ~1.7 ms per
    256-row batch here, more than a tenth of a gradient update; indexing each stored tensor costs
    ~0.3 ms. This reads ``LazyTensorStorage._storage`` (TorchRL 0.14), the one place that does.
    """
    stored = buffer.storage._storage
    missing = [key for key in entries if stored.get(key, None) is None]
    if missing:
        raise KeyError(f"the replay buffer's rows lack {missing}; they hold {list(stored.keys(True, True))}")
    idx = torch.randint(len(buffer), (n,), device=stored.device)
    return [stored.get(key)[idx] for key in entries]


def real_row_count(model: TensorDictReplayBuffer | None, batch_size: int, real_ratio: float) -> int:
    """How many of a :func:`sample_mixed` batch's rows are real (they come first): all of them while
    there is no model data, else ``round(real_ratio * batch_size)``."""
    return batch_size if model is None or len(model) == 0 else int(round(real_ratio * batch_size))


def sample_mixed(
    real: TensorDictReplayBuffer,
    model: TensorDictReplayBuffer | None,
    batch_size: int,
    real_ratio: float,
    model_keys: tuple = (),
) -> TensorDictBase:
    """A batch with ``round(real_ratio * batch_size)`` real rows first and the rest from the model buffer.

    Only :data:`TRANSITION_KEYS` are kept: real and model rows carry different extra keys. ``model_keys``
    adds entries only model rows carry (VMBPO's recorded nu, :data:`keys.LOG_RATIO`): read from E, zero
    on the real rows, and absent while the batch has no model row. Without a model buffer (or while it
    is empty) the whole batch is real.

    Example:
        >>> from tensordict import TensorDict
        >>> def rows(n, value):
        ...     return TensorDict({"observation": torch.full((n, 2), value), "action": torch.zeros(n, 1),
        ...         ("next", "observation"): torch.zeros(n, 2), ("next", "reward"): torch.zeros(n, 1),
        ...         ("next", "done"): torch.zeros(n, 1, dtype=torch.bool),
        ...         ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool)}, [n])
        >>> real, model = make_buffer(100), make_buffer(100)
        >>> _ = real.extend(rows(10, 1.0)); _ = model.extend(rows(10, 2.0))
        >>> batch = sample_mixed(real, model, 20, real_ratio=0.25)
        >>> int((batch["observation"][:, 0] == 1.0).sum()), batch.shape
        (5, torch.Size([20]))
    """
    n_real = real_row_count(model, batch_size, real_ratio)
    n_model = batch_size - n_real
    entries = TRANSITION_KEYS + tuple(model_keys) if n_model > 0 else TRANSITION_KEYS
    real_cols = _rows(real, n_real) if n_real > 0 else []
    model_cols = _rows(model, n_model, entries) if n_model > 0 else []
    if real_cols and model_cols:  # the model-only entries are zero on the real rows
        extra = model_cols[len(real_cols) :]
        real_cols += [torch.zeros((n_real, *col.shape[1:]), dtype=col.dtype, device=col.device) for col in extra]
        columns = [torch.cat(pair) for pair in zip(real_cols, model_cols)]
    else:
        columns = real_cols or model_cols
    return TensorDict(dict(zip(entries, columns)), batch_size=[batch_size])
