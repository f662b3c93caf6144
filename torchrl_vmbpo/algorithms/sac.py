"""SAC (Haarnoja et al. 2018) on TorchRL's ``SACLoss``, reused as it is; MBPO is this agent plus a model.

Speed (``benchmarks/sac_update_speed.py`` measures it against Stable-Baselines3 at Hopper sizes): at
batch 256 and 256x256 networks, eager TorchRL spends about as long in tensordict / functional-call /
vmap Python as in the matmuls. ``extra.compile=true`` traces ``SACLoss.forward`` with
``torch.compile`` so that overhead disappears (see :func:`compile_loss`); the optimizer is a fused
Adam either way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from tensordict import TensorDictBase
from torch._inductor.custom_graph_pass import CustomGraphPass
from torch.utils.checkpoint import CheckpointPolicy
from torchrl.data import Bounded
from torchrl.objectives import LossModule, SACLoss, SoftUpdate

from torchrl_vmbpo.envs.termination import TerminationFn
from torchrl_vmbpo.envs.world_model import RewardFn
from torchrl_vmbpo.models.dynamics import DynamicsModel
from torchrl_vmbpo.models.networks import make_q_value, make_tanh_gaussian_actor
from torchrl_vmbpo.training.agent import Agent, Capabilities, borrow
from torchrl_vmbpo.training.config import ExtraSettings, TrainConfig
from torchrl_vmbpo.training.optim import optimize


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
        return "torchrl_vmbpo.sac._RecomputeBoolMasks.v1"


def compile_loss(loss: LossModule) -> Callable[[TensorDictBase], TensorDictBase]:
    """``torch.compile`` (Inductor, CPU C++ kernels) of ``loss(batch)``; same maths and outputs.

    The returned function is a plain function, not a module, so an agent holding it keeps its state-dict
    keys. Only the forward is compiled (its backward becomes one autograd node); the optimizer step and
    the target update stay eager. Compilation happens on the first call (10-30 s on 2 busy cores:
    worth it from a few thousand updates on); a batch with other keys recompiles, and torch.compile
    stops compiling (falls back to eager, with a warning) after 8 compiled loss modules in one process.
    Sampling inside the compiled graph uses Inductor's RNG: seeded from torch's generator (runs stay
    reproducible) but a different stream from an eager run with the same seed.

    Example:
        >>> from torchrl.data import Bounded
        >>> from torchrl_vmbpo.training.config import ExtraSettings, TrainConfig
        >>> agent = SACAgent(TrainConfig(hidden=(8,)), 3, Bounded(-1.0, 1.0, shape=(1,)))
        >>> fn = compile_loss(agent.loss)  # nothing is compiled before the first call
        >>> callable(fn) and not isinstance(fn, torch.nn.Module)
        True
    """
    return torch.compile(lambda batch: loss(batch), options={"joint_custom_pre_pass": _RecomputeBoolMasks()})


@dataclass(frozen=True)
class SACSettings(ExtraSettings):
    """SAC's and MBPO's own settings, read from ``TrainConfig.extra`` (``--set extra.compile=true``)."""

    algorithm: ClassVar[str] = "SAC/MBPO"

    compile: bool = False
    """Compile the loss forward with :func:`compile_loss`: about 1.6x the eager updates per second at
    Hopper sizes, 1.3-1.4x SB3's (``benchmarks/results/sac_update_speed.md``), after a one-off compile
    of 10-30 s, so off by default for short runs and tests."""


class SACAgent(Agent):
    """Twin-Q SAC with automatic entropy tuning; with ``dynamics`` it is MBPO's agent.

    One Adam with three parameter groups (actor, twin critics, log-alpha) and ONE backward per
    update: ``SACLoss`` already detaches the critics in the actor loss and the log-prob in the
    temperature loss, so each ``loss_*`` reaches only its own group and the summed backward equals
    three separate ones at a third of the autograd overhead.

    Settings: :class:`SACSettings` from ``cfg.extra``.

    Example:
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> agent = SACAgent(TrainConfig(hidden=(8,)), 3, Bounded(-1.0, 1.0, shape=(1,)))
        >>> batch = TensorDict({"observation": torch.randn(4, 3), "action": torch.rand(4, 1),
        ...     ("next", "observation"): torch.randn(4, 3), ("next", "reward"): torch.randn(4, 1),
        ...     ("next", "done"): torch.zeros(4, 1, dtype=torch.bool),
        ...     ("next", "terminated"): torch.zeros(4, 1, dtype=torch.bool)}, [4])
        >>> sorted(agent.update(batch))
        ['alpha', 'entropy', 'loss_actor', 'loss_alpha', 'loss_qvalue', 'q_value']
    """

    def __init__(
        self,
        cfg: TrainConfig,
        obs_dim: int,
        action_spec: Bounded,
        *,
        dynamics: DynamicsModel | None = None,
        termination_fn: TerminationFn | None = None,
        reward_fn: RewardFn | None = None,
        num_qvalue_nets: int = 2,
        settings: SACSettings | None = None,
    ):
        super().__init__()
        act_dim = action_spec.shape[-1]
        self.policy = make_tanh_gaussian_actor(obs_dim, action_spec, hidden=cfg.hidden)
        qvalue = make_q_value(obs_dim, act_dim, hidden=cfg.hidden)
        self.loss = SACLoss(
            self.policy,
            qvalue,
            num_qvalue_nets=num_qvalue_nets,
            loss_function="l2",
            alpha_init=cfg.alpha_init,
            target_entropy=cfg.target_entropy_for(act_dim),
            action_spec=action_spec,
        )
        self.loss.make_value_estimator(gamma=cfg.gamma)
        # SACLoss registers its `_target_entropy` buffer lazily, on first use: materialise it now so a
        # fresh agent has the same state-dict keys as a trained one (checkpoints load strictly).
        _ = self.loss.target_entropy
        borrow(self, policy=self.policy)  # the loss owns the actor: state_dict holds each tensor once
        self.target_updater = SoftUpdate(self.loss, tau=cfg.tau)
        # fused: one C++ kernel per parameter group, instead of ~10 tensor ops per parameter tensor.
        self.optimizer = torch.optim.Adam(
            [
                {"params": list(self.loss.actor_network_params.values(True, True)), "lr": cfg.actor_lr},
                {"params": list(self.loss.qvalue_network_params.values(True, True)), "lr": cfg.critic_lr},
                {"params": [self.loss.log_alpha], "lr": cfg.alpha_lr},
            ],
            fused=True,
        )
        self.max_grad_norm = cfg.max_grad_norm
        self.settings = SACSettings.from_extra(cfg.extra) if settings is None else settings
        # A plain function attribute (not a submodule): compiling adds no state-dict keys.
        self._loss_fn = compile_loss(self.loss) if self.settings.compile else self.loss.__call__
        if dynamics is not None:  # MBPO: SAC on real and imagined rows
            self.attach_dynamics(dynamics, cfg, termination_fn=termination_fn, reward_fn=reward_fn)
            self.capabilities = Capabilities(model_fit=True, imagination=True, real_ratio=cfg.real_ratio)

    def update(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        losses = self._loss_fn(batch)
        optimize(losses, self.optimizer, max_grad_norm=self.max_grad_norm)
        self.target_updater.step()
        metrics = {k: v.detach() for k, v in losses.items()}
        # min_k Q_k at the actor's fresh actions, recovered without another forward pass: on the same
        # sample SACLoss's loss_actor = mean(alpha log pi - min_k Q) and entropy = -mean(log pi).
        metrics["q_value"] = -(metrics["loss_actor"] + metrics["alpha"] * metrics["entropy"])
        return metrics

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {**super().optimizers(), "sac": self.optimizer}
