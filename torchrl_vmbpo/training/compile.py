"""Compiled updates: ``torch.compile`` of an agent's loss forward (and the model fit's), one policy for all.

What is compiled: the forward of each update's losses (SAC/MBPO/STEVE: ``SACLoss``; MPO: ``MPOLoss``;
VMBPO and VMBPO-MFE: critic + actor of the E-step, and the M-step; every model-based agent: the
model loss of the fit's inner step; VMBPO: the ratio fit's loss, eq. 21). Their backward becomes one
compiled autograd node; the optimizer step (a fused Adam) and the target update stay eager. ``fullgraph=True``: a graph break is an error,
not a silent slow path (tests/training/test_compile.py compiles every agent's update that way).

On a CUDA device the compiled code is also captured as CUDA graphs (Inductor's ``triton.cudagraphs``,
what ``mode="reduce-overhead"`` selects): one launch per update instead of hundreds of kernels.

Whether a run compiles is ``TrainConfig.compile`` (:func:`compile_enabled`): "auto" compiles runs long
enough for the one-off compile time (10-40 s per function on a CPU core) to pay off; the measurement
behind the threshold is in benchmarks/results/phase_timing_*.md.
"""

from __future__ import annotations

import itertools
import types
from collections.abc import Callable

import torch
from torch._inductor.custom_graph_pass import CustomGraphPass
from torch.utils.checkpoint import CheckpointPolicy

# Break-even from benchmarks/results/phase_timing_cpu_1t.md (Hopper sizes, one CPU thread): compile
# seconds over the time each compiled call saves. SAC 20.0 s / 10.5 ms = 1,900 updates; MBPO
# 13.0 s / 10.9 ms = 1,200; VMBPO 33.6 s / 28.2 ms = 1,200; the model-fit step 3.5 s / 3.3 ms = 1,050
# steps (about 66 epochs on 5,000 transitions, less than a first fit from a fresh ensemble). The
# thresholds sit 2.5-4x above those: compile times varied 2x with the machine's load.
COMPILE_AUTO_MIN_UPDATES = 5000
"""``compile="auto"`` compiles the updates of a run with at least this many gradient updates."""
COMPILE_AUTO_MIN_FITS = 4
"""``compile="auto"`` compiles the model fit's step of a run with at least this many fits of q_d."""
# VMBPO's ratio fit (250 steps of eq. 21 after each fit of q_d; Hopper sizes, one thread, two record
# runs on the 2 cores): 2.70 s eager, 2.32 s compiled per fit, 24 s to compile: break-even at 63 fits.
# The steps are small (nu on 512 rows, one elite pass on 256), so compiling saves little per step.
COMPILE_AUTO_MIN_RATIO_FITS = 160
"""``compile="auto"`` compiles VMBPO's ratio-fit step (eq. 21) in a run with at least this many fits of q_d."""


class _RecomputeBoolMasks(CustomGraphPass):
    """Inductor joint-graph pass: recompute in the backward every bool tensor the backward reads.

    Under ``vmap`` the critics' ReLU runs as ``clamp_min``, whose backward reads the mask
    ``pre-activation >= 0``; Inductor's partitioner saves that mask as a bool tensor, and on this AVX2
    CPU its compiled kernels wrote a [2, 256, 256] bool mask in ~1.7 ms (eager: ~0.15 ms), which made
    the compiled update no faster than the eager one. Tagged ``PREFER_RECOMPUTE``, the mask is
    rebuilt inside the backward's fused kernel from the saved float pre-activation instead. Only
    where the bool tensors are stored changes, not what is computed.
    """

    def __call__(self, graph: torch.fx.Graph) -> None:
        # the backward part of the joint graph: everything downstream of the incoming gradients
        backward = set()
        for node in graph.nodes:
            if (node.op == "placeholder" and node.name.startswith("tangents")) or any(
                arg in backward for arg in node.all_input_nodes
            ):
                backward.add(node)
        for node in graph.nodes:
            val = node.meta.get("val")
            if (
                node.op == "call_function"
                and node not in backward
                and isinstance(val, torch.Tensor)
                and val.dtype == torch.bool
                and any(user in backward for user in node.users)
            ):
                node.meta["recompute"] = CheckpointPolicy.PREFER_RECOMPUTE

    def uuid(self) -> str:  # part of Inductor's cache key
        return "torchrl_vmbpo.compile._RecomputeBoolMasks.v1"


def compile_fn(fn: Callable, *, device: torch.device | str = "cpu", backend: str | None = None) -> Callable:
    """``torch.compile(fn, fullgraph=True)`` with the options this package uses on ``device``.

    The result is a plain function, not a module: an agent holding it keeps its state-dict keys.
    Compilation happens on the first call; a batch with other shapes or keys recompiles. Sampling
    inside the graph uses Inductor's RNG: seeded from torch's generator (runs stay reproducible) but a
    different stream from an eager run with the same seed. ``backend``: Inductor by default; tests pass
    ``"eager"`` (Dynamo's tracing, and so its graph-break check, without Inductor's code generation).

    Example:
        >>> fn = compile_fn(lambda x: (x * 2).sum(), backend="eager")
        >>> float(fn(torch.ones(3)))
        6.0
    """
    device = torch.device(device)
    fn = _own_frame(fn)
    if backend not in (None, "inductor"):
        return torch.compile(fn, fullgraph=True, backend=backend, options={"guard_filter_fn": _drop_memo_guards})
    options: dict = {"joint_custom_pre_pass": _RecomputeBoolMasks(), "guard_filter_fn": _drop_memo_guards}
    if device.type != "cuda":
        return torch.compile(fn, fullgraph=True, options=options)
    options["triton.cudagraphs"] = True  # mode="reduce-overhead": replay each call as one CUDA graph
    compiled = torch.compile(fn, fullgraph=True, options=options)

    def graphed(*args):
        # Each call is a new training step: the previous call's outputs (already consumed by its
        # backward and the metrics) may be overwritten by this replay.
        torch.compiler.cudagraph_mark_step_begin()
        return compiled(*args)

    return graphed


def _drop_memo_guards(entries) -> list[bool]:
    """Dynamo's ``guard_filter_fn``: keep every guard but those on tensordict's ``_TENSORCLASS_MEMO``.

    tensordict caches ``is_tensorclass(cls)`` per class in that global dict, and a traced TensorDict
    operation reads it, so Dynamo guards on the dict's length and keys: any class first seen later,
    outside the compiled code (an evaluation, a checkpoint, another agent built in the process),
    failed the guard and recompiled every compiled function (10-40 s each on a CPU core, and past
    ``recompile_limit`` the function runs eagerly). The memo only caches ``cls._is_tensorclass``, a
    fact of the class, so what the compiled code read from it stays true whatever else it holds.
    """
    return ["_TENSORCLASS_MEMO" not in entry.name for entry in entries]


_compiled_count = itertools.count()


def _own_frame(fn: Callable) -> Callable:
    """``fn`` called from a function with a code object of its own.

    Dynamo caches compiled graphs per code object, up to ``recompile_limit`` (8) entries: compiling
    two losses through one shared wrapper (or two agents' bound methods, which share their class's
    code) would make each a "recompile" of the other, and past the limit everything runs eagerly. A
    fresh code object per compiled function keeps each one's cache to itself.
    """

    def call(*args):
        return fn(*args)

    code = call.__code__.replace(co_name=f"compiled_{next(_compiled_count)}")
    return types.FunctionType(code, call.__globals__, code.co_name, None, call.__closure__)


def compile_enabled(cfg, *, what: str = "updates") -> bool:
    """Whether ``cfg`` compiles ``what`` ("updates", "model_fit" or "ratio_fit"): ``compile`` "on" / "off", or for
    "auto" whether the run is long enough (:data:`COMPILE_AUTO_MIN_UPDATES` updates,
    :data:`COMPILE_AUTO_MIN_FITS` model fits; "ratio_fit", VMBPO's eq.-21 steps after each fit:
    :data:`COMPILE_AUTO_MIN_RATIO_FITS` fits)."""
    if what not in ("updates", "model_fit", "ratio_fit"):
        raise ValueError(f"compile_enabled: what must be 'updates', 'model_fit' or 'ratio_fit', got {what!r}")
    if cfg.compile != "auto":
        return cfg.compile == "on"
    learning_steps = max(cfg.steps - cfg.init_random_steps, 0)
    if what == "updates":
        return learning_steps * cfg.utd >= COMPILE_AUTO_MIN_UPDATES
    fits = learning_steps // cfg.model_retrain_every + 1
    return fits >= (COMPILE_AUTO_MIN_FITS if what == "model_fit" else COMPILE_AUTO_MIN_RATIO_FITS)
