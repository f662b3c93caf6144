"""What VMBPO and VMBPO-MFE share over their EM loss: the E-step and M-step updates, the optimizers,
the update counter and the networks by the paper's names (each agent builds its own networks)."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torchrl.objectives import LossModule

from torchrl_vmbpo.errors import ConfigError
from torchrl_vmbpo.objectives import functional_vmbpo as fv
from torchrl_vmbpo.training.agent import Agent, borrow
from torchrl_vmbpo.training.config import TrainConfig
from torchrl_vmbpo.training.optim import optimize, optimize_together, total_loss
from torchrl_vmbpo.training.target_update import SoftUpdate


class EMAgent(Agent):
    """An agent whose ``loss`` (``VMBPOLoss`` or ``VMBPOMFELoss``) owns pi, q_c, V, Q and their targets.

    Subclasses build ``self.loss`` and then call :meth:`_setup_em`; their ``update`` runs
    :meth:`e_step_update` on the E-step's batch and :meth:`m_step_update` on the M-step's states, or both at
    once on one batch (:meth:`em_update`, VMBPO with the weighted-MAP M-step).
    """

    loss: LossModule

    def _setup_em(self, cfg: TrainConfig, pi, q_c, *, acting_policy: str, m_step_row_stride: int = 1) -> None:
        """References into ``self.loss`` by the paper's names (not registered again), the target updater,
        one Adam for the E-step and pi's Adam, the update counter, and the policy acting in the real env.
        ``m_step_row_stride``: :meth:`em_update`'s M-step fits pi on every this-many-th row of the batch."""
        if cfg.batch_size % m_step_row_stride:
            raise ConfigError(
                f"batch_size ({cfg.batch_size}) must be a multiple of extra.m_step_row_stride ({m_step_row_stride}): "
                "the M-step takes every m_step_row_stride-th row of each batch"
            )
        self.m_step_row_stride = m_step_row_stride
        borrow(self, pi=pi, q_c=q_c, critic=self.loss.critic, actor_loss=self.loss.actor, m_step=self.loss.m_step)
        self.target_updater = SoftUpdate(self.critic, tau=cfg.tau)
        # Critic and actor gradients are disjoint (each loss detaches the other's networks), so one
        # Adam with two groups and one backward per update equals two separate steps.
        self.e_step_optimizer = torch.optim.Adam(
            [
                {"params": list(self.critic.parameters()), "lr": cfg.critic_lr},
                {"params": list(self.actor_loss.parameters()), "lr": cfg.actor_lr},
            ],
            fused=True,  # one kernel per group instead of ~10 tensor ops per parameter tensor
        )
        self.pi_optimizer = torch.optim.Adam(pi.parameters(), lr=cfg.actor_lr, fused=True)
        self.max_grad_norm = cfg.max_grad_norm
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        borrow(self, policy=pi if acting_policy == "pi" else q_c)
        self.bind_loss_forwards()

    def _eager_e_step_losses(self, batch: TensorDictBase) -> tuple[TensorDictBase, TensorDictBase]:
        # V's target (eq. 24) is read at the actor's draw a ~ q_c (eq. 25): one q_c, pi and Q pass fewer.
        actor, value_sample = self.actor_loss.forward_with_value_sample(batch)
        return self.critic(batch, value_sample=value_sample), actor

    def _eager_em_losses(self, batch: TensorDictBase) -> tuple[TensorDictBase, TensorDictBase, TensorDictBase]:
        """The E-step's critic and actor losses and the M-step's (eq. 27) on one batch, in one pass: pi at x
        is evaluated once (with its gradient for the M-step, detached as the actor's prior) and the M-step
        fits pi to the actor's own draw a ~ q_c(.|x) (2 of the 15 network passes of the two apart), on
        every ``m_step_row_stride``-th row: pi's gradient and pi_old's pass cost that much less."""
        obs = batch.get(self.actor_loss.tensor_keys.observation)
        k = self.m_step_row_stride
        if k == 1:
            pi_params = self.pi.get_dist_params(fv.module_input(self.pi, obs))
            prior_params, m_obs = pi_params.detach(), obs
        else:  # rows j k (with pi's gradient) and the rest (without), put back in the batch's order
            grouped = obs.reshape(obs.shape[0] // k, k, obs.shape[-1])
            m_obs, rest_obs = grouped[:, 0], grouped[:, 1:].reshape(-1, obs.shape[-1])
            pi_params = self.pi.get_dist_params(fv.module_input(self.pi, m_obs))
            with torch.no_grad():
                rest = self.pi.get_dist_params(fv.module_input(self.pi, rest_obs))
            prior_params = torch.cat([pi_params.detach().unsqueeze(1), rest.reshape(-1, k - 1)], 1).reshape(-1)
        actor, value_sample, draw = self.actor_loss.forward_with_draw(
            batch, self.pi.build_dist_from_params(prior_params)
        )
        critic = self.critic(batch, value_sample=value_sample)
        if k > 1:
            draw = draw._replace(
                **{
                    n: getattr(draw, n)[::k]
                    for n in ("preimage", "action", "loc", "scale")
                    if getattr(draw, n) is not None
                }
            )
        return critic, actor, self.m_step.loss_at(m_obs, self.pi.build_dist_from_params(pi_params), draw)

    def loss_forwards(self) -> dict:
        """The E-step's critic and actor losses as one function, the M-step's loss, and the two together
        (:meth:`em_update`)."""
        return {
            "_e_step_losses": self._eager_e_step_losses,
            "_m_step_loss": self.m_step.__call__,
            "_em_losses": self._eager_em_losses,
        }

    # --- the critic's networks, by the paper's names ---
    @property
    def V(self):  # noqa: N802 (the paper's symbol); None where V is Monte Carlo (VMBPOSettings.value_estimate)
        return self.critic.value_network_params if self.critic.has_value_network else None

    @property
    def Q(self):  # noqa: N802
        return self.critic.qvalue_network_params

    @property
    def V_target(self):  # noqa: N802
        return self.critic.target_value_network_params if self.critic.has_value_network else None

    @property
    def Q_target(self):  # noqa: N802
        return self.critic.target_qvalue_network_params

    @property
    def rollout_policy(self):
        return self.q_c  # E holds (x, a ~ q_c, x' ~ q_d): trajectories of q = (q_c, q_d), eq. 26

    def e_step_update(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """Critic (VMBPO: eqs. 22-24 on E; VMBPO-MFE: eq. 9 on D) and actor (eq. 25) in one backward, then
        the target update."""
        critic, actor = self._e_step_losses(batch)
        # Every loss_* of the critic: Q, V and, under an entropy constraint, its multiplier's dual.
        optimize(total_loss(critic) + actor["loss_actor"], self.e_step_optimizer, max_grad_norm=self.max_grad_norm)
        return self._finish_update(critic, actor)

    def m_step_update(self, states: TensorDictBase | None) -> dict[str, torch.Tensor]:
        """The M-step (eq. 27): every ``period`` updates copy pi <- q_c or snapshot pi_old; in weighted-MAP
        mode one gradient step per update on ``states`` towards the snapshot's trust region."""
        m_step = self.m_step
        m_step.on_update(int(self.num_updates))
        if m_step.mode != "weighted_map":
            return {}
        if states is None:
            raise KeyError(f"{type(self).__name__}'s weighted-MAP M-step needs a batch of states, got none")
        out = self._m_step_loss(states)
        optimize(out["loss_policy"], self.pi_optimizer, max_grad_norm=self.max_grad_norm)
        return {f"m_step_{k}": v.detach() for k, v in out.items()}

    def em_update(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """:meth:`e_step_update` then :meth:`m_step_update` on one batch (weighted-MAP M-step), computed
        together (:meth:`_eager_em_losses`) with one backward. Differs from the two apart only in that the
        M-step fits pi to q_c as it was before this update's E-step step (one Adam step older), at the
        actor's draw instead of a fresh one; pi_old is re-taken at the same updates, before pi's step."""
        m_step = self.m_step
        if m_step.mode != "weighted_map":
            raise ValueError(f"em_update needs the weighted-MAP M-step, got mode={m_step.mode!r}")
        m_step.on_update(int(self.num_updates) + 1)  # the schedule m_step_update follows, before pi's step
        critic, actor, m_out = self._em_losses(batch)
        e_loss = total_loss(critic) + actor["loss_actor"]
        pairs = [(e_loss, self.e_step_optimizer), (m_out["loss_policy"], self.pi_optimizer)]
        optimize_together(pairs, max_grad_norm=self.max_grad_norm)
        return {**self._finish_update(critic, actor), **{f"m_step_{k}": v.detach() for k, v in m_out.items()}}

    def _finish_update(self, critic: TensorDictBase, actor: TensorDictBase) -> dict[str, torch.Tensor]:
        """After the E-step's optimizer step: the target update, the counter, the detached metrics."""
        self.critic.project_entropy_weight_()  # alpha_H's floor, after the step that moved it
        self.target_updater.step()
        self.num_updates += 1
        return {**{k: v.detach() for k, v in critic.items()}, **{f"actor_{k}": v.detach() for k, v in actor.items()}}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {**super().optimizers(), "e_step": self.e_step_optimizer, "pi": self.pi_optimizer}
