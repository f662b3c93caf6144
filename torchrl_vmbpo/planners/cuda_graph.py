"""Replay a pure tensor function as one CUDA graph (the planner's launch-overhead fix).

Why: one PETS planned action is ``iterations x horizon`` ensemble passes of ~30 small kernels each.
Launched one by one from Python that is ~0.8 ms per pass on an H200 (0.12 s per action at PETS's
settings, the GPU busy 15% of it: benchmarks/results/pets_planning_cost_h200_gpu_*.md), and runs
sharing the GPU time-slice it. Captured once as a CUDA graph, a planned action is one replay.

What a captured function must be (the planner's CEM + trajectory sampling is): tensors in, tensors
out, fixed shapes, no host synchronisation (no ``.item()``, no data-dependent shapes, no host-to-
device copies), randomness from the default CUDA generator (a graph replay draws fresh numbers).
Tensors the function READS besides its inputs (model weights, normaliser, elite indices) are baked
in by address: update them in place (``load_state_dict``, ``copy_``), never by reassignment.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils._pytree import tree_map


class CapturedFunction:
    """``fn`` captured as a CUDA graph for inputs shaped like ``example_inputs``; call it like ``fn``.

    Each call copies the inputs into the graph's static input buffers, replays the graph and returns
    clones of its static outputs (so a later replay does not overwrite what the caller holds).

    Args:
        fn: ``(*tensors) -> pytree of tensors``, capturable (module docstring).
        example_inputs: CUDA tensors with the shapes and dtypes of every later call's inputs.
        warmup: eager calls on a side stream before the capture (cuBLAS handles, allocator).

    Raises:
        RuntimeError: from the capture when ``fn`` is not capturable (the caller may fall back).
    """

    def __init__(self, fn: Callable, example_inputs: Sequence[torch.Tensor], *, warmup: int = 2):
        if not all(isinstance(x, torch.Tensor) and x.is_cuda for x in example_inputs):
            raise ValueError("CapturedFunction needs CUDA tensors as example inputs")
        self.inputs = [x.detach().clone() for x in example_inputs]
        device = self.inputs[0].device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                fn(*self.inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: CUDA calls of other threads (a collector's, a logger's) do not void the capture.
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.outputs = fn(*self.inputs)

    def matches(self, inputs: Sequence[torch.Tensor]) -> bool:
        """Whether ``inputs`` have the captured shapes, dtypes and devices."""
        return len(inputs) == len(self.inputs) and all(
            x.shape == s.shape and x.dtype == s.dtype and x.device == s.device for x, s in zip(inputs, self.inputs)
        )

    def __call__(self, *inputs: torch.Tensor):
        if not self.matches(inputs):
            raise ValueError("inputs differ in shape, dtype or device from the captured ones")
        for static, x in zip(self.inputs, inputs):
            static.copy_(x)
        self.graph.replay()
        return tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, self.outputs)
