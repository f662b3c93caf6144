"""SAC (Haarnoja et al. 2018) on TorchRL's ``SACLoss``, reused as it is; MBPO is this agent plus a model."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torchrl.data import Bounded
from torchrl.objectives import SACLoss, SoftUpdate

from torchrl_vmbpo.envs.termination import TerminationFn
from torchrl_vmbpo.envs.world_model import RewardFn
from torchrl_vmbpo.models.dynamics import DynamicsModel
from torchrl_vmbpo.models.networks import make_q_value, make_tanh_gaussian_actor
from torchrl_vmbpo.objectives.ensemble_nll import GaussianEnsembleNLLLoss
from torchrl_vmbpo.training.agent import Agent
from torchrl_vmbpo.training.config import TrainConfig
from torchrl_vmbpo.training.model_fit import make_model_optimizer
from torchrl_vmbpo.training.optim import optimize


class SACAgent(Agent):
    """Twin-Q SAC with automatic entropy tuning; with ``dynamics`` it is MBPO's agent.

    One Adam with three parameter groups (actor, twin critics, log-alpha) and ONE backward per
    update: ``SACLoss`` already detaches the critics in the actor loss and the log-prob in the
    temperature loss, so each ``loss_*`` reaches only its own group and the summed backward equals
    three separate ones at a third of the autograd overhead.
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
    ):
        super().__init__()
        act_dim = action_spec.shape[-1]
        self.policy = make_tanh_gaussian_actor(obs_dim, action_spec, hidden=cfg.hidden)
        qvalue = make_q_value(obs_dim, act_dim, hidden=cfg.hidden)
        target_entropy = cfg.target_entropy if cfg.target_entropy is not None else -float(act_dim)
        self.loss = SACLoss(
            self.policy,
            qvalue,
            num_qvalue_nets=2,
            loss_function="l2",
            alpha_init=cfg.alpha_init,
            target_entropy=target_entropy,
            action_spec=action_spec,
        )
        self.loss.make_value_estimator(gamma=cfg.gamma)
        # SACLoss registers its `_target_entropy` buffer lazily, on first use: materialise it now so a
        # fresh agent has the same state-dict keys as a trained one (checkpoints load strictly).
        _ = self.loss.target_entropy
        self.target_updater = SoftUpdate(self.loss, tau=cfg.tau)
        self.optimizer = torch.optim.Adam(
            [
                {"params": list(self.loss.actor_network_params.values(True, True)), "lr": cfg.actor_lr},
                {"params": list(self.loss.qvalue_network_params.values(True, True)), "lr": cfg.critic_lr},
                {"params": [self.loss.log_alpha], "lr": cfg.alpha_lr},
            ]
        )
        self.max_grad_norm = cfg.max_grad_norm
        if dynamics is not None:
            if termination_fn is None:
                raise ValueError("a model-based SACAgent needs termination_fn")
            self.dynamics = dynamics
            self.model_loss = GaussianEnsembleNLLLoss(dynamics)
            self.model_optimizer = make_model_optimizer(dynamics, lr=cfg.model_lr, weight_decay=cfg.model_weight_decay)
            self.termination_fn = termination_fn
            self.reward_fn = reward_fn

    def update(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        losses = self.loss(batch)
        optimize(losses, self.optimizer, max_grad_norm=self.max_grad_norm)
        self.target_updater.step()
        return {k: v.detach() for k, v in losses.items()}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {**super().optimizers(), "sac": self.optimizer}
