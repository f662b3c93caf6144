"""``TrainConfig.precision``: the number format of the gradient steps' forward passes.

"fp32" (the default): everything in float32. "bf16": each gradient step's loss forward (every
algorithm's update losses, q_d's fit step, VMBPO's ratio-fit step) runs under ``torch.autocast`` to
bfloat16, so the hidden layers' matmuls (nearly all of the FLOPs) run in bfloat16 and their backward
with them. What stays float32: the weights and Adam's states (autocast casts a copy per matmul), every
network's output layer (``models.networks.OutputLinear``; the ensemble's last layer), so values,
log-probs, predicted states, losses and targets are float32 numbers; and everything outside a gradient
step (acting, imagination, evaluation, holdout scoring). Measured speed and learning records:
benchmarks/results/precision_bf16/README.md. A bfloat16 matmul is fast only on hardware with
bfloat16 units (CPUs with AVX512-BF16 or AMX, NVIDIA GPUs from Ampere on); elsewhere it is slower.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal, get_args

import torch

Precision = Literal["fp32", "bf16"]
"""The choices of ``TrainConfig.precision`` (its annotation: the config checks values against it)."""
PRECISIONS: tuple[str, ...] = get_args(Precision)


def in_precision(fn: Callable, precision: str, device: torch.device | str) -> Callable:
    """``fn`` run under a bfloat16 autocast on ``device`` when ``precision == "bf16"``, else ``fn`` itself.

    Wrapping an already wrapped function replaces the wrapper (an agent's ``setup_compute`` may run
    twice). Compiled functions (``training.compile.compile_fn``) are wrapped from outside: Dynamo
    traces them with the autocast state in force and guards on it.

    Example:
        >>> f = in_precision(lambda a, b: a @ b, "bf16", "cpu")
        >>> f(torch.ones(2, 2), torch.ones(2, 2)).dtype
        torch.bfloat16
        >>> in_precision(f, "fp32", "cpu")(torch.ones(2, 2), torch.ones(2, 2)).dtype
        torch.float32
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    fn = getattr(fn, "__wrapped_for_precision__", fn)
    if precision == "fp32":
        return fn
    device_type = torch.device(device).type

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with torch.autocast(device_type, dtype=torch.bfloat16):
            return fn(*args, **kwargs)

    run.__wrapped_for_precision__ = fn
    return run
