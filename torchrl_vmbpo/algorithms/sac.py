"""SAC (Haarnoja et al. 2018) on TorchRL's ``SACLoss``, reused as it is; MBPO is this agent plus a model.

Speed (``benchmarks/phase_timing.py``; ``benchmarks/sac_update_speed.py`` against Stable-Baselines3):
at batch 256 and 256x256 networks, eager TorchRL spends about as long in tensordict / functional-call
/ vmap Python as in the matmuls. A compiled run (``TrainConfig.compile``) traces ``SACLoss.forward``
with ``torch.compile`` so that overhead disappears (training/compile.py); the optimizer is a fused
Adam either way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from tensordict import TensorDictBase
from torchrl.data import Bounded
from torchrl.objectives import SACLoss

from torchrl_vmbpo.envs.termination import TerminationFn
from torchrl_vmbpo.envs.world_model import RewardFn
from torchrl_vmbpo.models.dynamics import DynamicsModel
from torchrl_vmbpo.models.networks import make_q_value, make_tanh_gaussian_actor
from torchrl_vmbpo.training.agent import Agent, Capabilities, borrow
from torchrl_vmbpo.training.config import ExtraSettings, TrainConfig
from torchrl_vmbpo.training.optim import optimize
from torchrl_vmbpo.training.target_update import SoftUpdate


@dataclass(frozen=True)
class SACSettings(ExtraSettings):
    """SAC's and MBPO's own settings, read from ``TrainConfig.extra``: none (SAC's hyper-parameters are
    TrainConfig's fields; compiling is ``TrainConfig.compile``), so any ``extra.NAME`` is refused."""

    algorithm: ClassVar[str] = "SAC/MBPO"


class SACAgent(Agent):
    """Twin-Q SAC with automatic entropy tuning; with ``dynamics`` it is MBPO's agent (a model, or a
    function that makes one once the actor and critics are drawn).

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
        dynamics: DynamicsModel | Callable[[], DynamicsModel] | None = None,
        termination_fn: TerminationFn | None = None,
        reward_fn: RewardFn | None = None,
        num_qvalue_nets: int = 2,
        settings: SACSettings | None = None,
    ):
        super().__init__()
        act_dim = action_spec.shape[-1]
        self.policy = make_tanh_gaussian_actor(obs_dim, action_spec, hidden=cfg.hidden)
        qvalue = make_q_value(obs_dim, act_dim, hidden=cfg.hidden, layer_norm=cfg.critic_layer_norm)
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
        self.bind_loss_forwards()
        if dynamics is not None:  # MBPO: SAC on real and imagined rows
            if not isinstance(dynamics, DynamicsModel):
                # A factory is called only now, after the actor and critics are drawn: for a seed, MBPO then
                # starts from SAC's (and VMBPO's, STEVE's) initial actor, so their seeds are paired.
                dynamics = dynamics()
            self.attach_dynamics(dynamics, cfg, termination_fn=termination_fn, reward_fn=reward_fn)
            self.capabilities = Capabilities(model_fit=True, imagination=True, real_ratio=cfg.real_ratio)

    def loss_forwards(self) -> dict:
        """``SACLoss.forward`` (STEVE's target estimator included); compiled, about 1.6x the eager updates
        per second at Hopper sizes on a CPU core (benchmarks/results/phase_timing_*.md)."""
        _ = self.loss.value_estimator.tensor_keys  # set lazily on first read: a first compiled call would recompile
        return {"_loss_fn": self.loss.__call__}

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
