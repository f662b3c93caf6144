"""MPO (Abdolmaleki et al. 2018) over the shared loop: model-free, real data only, on :class:`MPOLoss`.

Which phase runs where: the loop collects real steps with the online actor into D; each update
(:meth:`MPOAgent.update`, ``utd`` per env step) takes one batch of real transitions, one backward
through ``loss_critic + loss_policy + loss_dual`` and one step of a three-group Adam, then the
target networks' update (hard copy every ``target_update_period`` updates, as acme, or Polyak).
The target actor is MPO's ``pi_old``: the trust regions bound the change since its last copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import torch
from tensordict import TensorDictBase
from torchrl.data import Bounded
from torchrl.envs import EnvBase
from torchrl.objectives import HardUpdate

from torchrl_vmbpo.envs.functions import EnvFunctions
from torchrl_vmbpo.envs.real import env_dims
from torchrl_vmbpo.models.networks import make_q_value, make_tanh_gaussian_actor
from torchrl_vmbpo.objectives.mpo import MPOLoss
from torchrl_vmbpo.training.agent import Agent, borrow
from torchrl_vmbpo.training.config import ExtraSettings, TrainConfig
from torchrl_vmbpo.training.optim import optimize
from torchrl_vmbpo.training.target_update import SoftUpdate
from torchrl_vmbpo.training.validation import PositiveFloat, PositiveInt, Range

# TrainConfig defaults of the "mpo" preset: model-free (no dynamics, so every batch is real) at one
# update per env step, as SAC; lr of actor and critic from cfg.actor_lr / cfg.critic_lr (3e-4).
MPO_DEFAULTS: dict = dict(utd=1.0)


@dataclass(frozen=True)
class MPOSettings(ExtraSettings):
    """MPO's own settings, read from ``TrainConfig.extra`` (``--set extra.epsilon=0.05``).

    Defaults are those of acme's MPO and the reference facts.
    """

    algorithm: ClassVar[str] = "MPO"

    num_samples: Annotated[int, Range(2)] = 20
    """N actions sampled per state from the target policy (E-step and expected-SARSA target)."""
    epsilon: PositiveFloat = 0.1
    """E-step bound on KL(q || pi_old) (temperature dual)."""
    epsilon_mean: PositiveFloat = 1e-2
    """M-step bound on the mean's KL, total over action dims (acme: 2.5e-3 ... 1e-2)."""
    epsilon_std: PositiveFloat = 1e-6
    """M-step bound on the std's KL, total over action dims."""
    per_dim_constraining: bool = True
    """One multiplier and bound epsilon_* / D per action dimension (acme)."""
    temperature_init: PositiveFloat = 10.0
    """Initial E-step temperature (the dual of the epsilon bound; acme: 10)."""
    alpha_mean_init: PositiveFloat = 10.0
    """Initial multiplier of the mean's KL bound (acme: 10)."""
    alpha_std_init: PositiveFloat = 1000.0
    """Initial multiplier of the std's KL bound (acme: 1000)."""
    action_penalty: bool = False
    """MO-MPO penalty on pre-tanh samples beyond 3 (the tanh already bounds actions)."""
    num_qvalue_nets: PositiveInt = 1
    """Critics (acme: 1). With 2, the minimum enters the target and the E-step (clipped double Q, as
    SAC), at twice the cost: the N sampled actions make critic evaluations MPO's main expense."""
    dual_lr: PositiveFloat = 1e-2
    """Adam lr of the temperature and KL multipliers (acme: 1e-2)."""
    target_update: Literal["hard", "soft"] = "hard"
    """"hard": copy online -> target every target_update_period updates (acme); "soft": Polyak with cfg.tau."""
    target_update_period: PositiveInt = 100
    """Updates between hard target copies (acme: 100)."""


class MPOAgent(Agent):
    """MPO's actor (``policy``, also the real-env actor), critics and duals, all inside ``loss``.

    One Adam with three groups (critic: ``cfg.critic_lr``, policy: ``cfg.actor_lr``, duals:
    ``settings.dual_lr``) and ONE backward per update: :class:`MPOLoss` sends each ``loss_*`` to its
    own parameters only (tested there), so the summed backward equals three separate ones.

    Example:
        >>> from torchrl_vmbpo.training.config import TrainConfig
        >>> spec = Bounded(-2.0, 2.0, shape=(1,))
        >>> agent = MPOAgent(TrainConfig(hidden=(8,)), 3, spec, MPOSettings(num_samples=4))
        >>> from tensordict import TensorDict
        >>> batch = TensorDict({"observation": torch.randn(5, 3), "action": torch.rand(5, 1),
        ...     ("next", "observation"): torch.randn(5, 3), ("next", "reward"): torch.randn(5, 1),
        ...     ("next", "done"): torch.zeros(5, 1, dtype=torch.bool),
        ...     ("next", "terminated"): torch.zeros(5, 1, dtype=torch.bool)}, [5])
        >>> sorted(k for k in agent.update(batch) if k.startswith("loss_"))
        ['loss_critic', 'loss_dual', 'loss_policy']
    """

    def __init__(self, cfg: TrainConfig, obs_dim: int, action_spec: Bounded, settings: MPOSettings):
        super().__init__()
        s = self.settings = settings
        act_dim = action_spec.shape[-1]
        self.policy = make_tanh_gaussian_actor(obs_dim, action_spec, hidden=cfg.hidden)
        critics = [
            make_q_value(obs_dim, act_dim, hidden=cfg.hidden, layer_norm=cfg.critic_layer_norm)
            for _ in range(s.num_qvalue_nets)
        ]
        self.loss = MPOLoss(
            self.policy,
            critics if len(critics) > 1 else critics[0],
            num_samples=s.num_samples,
            gamma=cfg.gamma,
            epsilon=s.epsilon,
            epsilon_mean=s.epsilon_mean,
            epsilon_std=s.epsilon_std,
            per_dim_constraining=s.per_dim_constraining,
            temperature_init=s.temperature_init,
            alpha_mean_init=s.alpha_mean_init,
            alpha_std_init=s.alpha_std_init,
            action_penalty=s.action_penalty,
        )
        borrow(self, policy=self.policy)  # the loss owns the actor: state_dict holds each tensor once
        if s.target_update == "hard":
            # TorchRL's HardUpdate copies when its counter (0, 1, ...) equals the interval, i.e. every
            # interval + 1 steps: interval = period - 1 copies every `period` updates.
            self.target_updater = HardUpdate(self.loss, value_network_update_interval=s.target_update_period - 1)
        else:
            self.target_updater = SoftUpdate(self.loss, tau=cfg.tau)
        groups = self.loss.parameters_by_loss()
        self.optimizer = torch.optim.Adam(
            [
                {"params": groups["loss_critic"], "lr": cfg.critic_lr},
                {"params": groups["loss_policy"], "lr": cfg.actor_lr},
                {"params": groups["loss_dual"], "lr": s.dual_lr},
            ],
            fused=True,  # one kernel per group instead of ~10 tensor ops per parameter tensor
        )
        self.max_grad_norm = cfg.max_grad_norm
        self.bind_loss_forwards()

    def loss_forwards(self) -> dict:
        return {"_loss_fn": self.loss.__call__}

    def update(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        losses = self._loss_fn(batch)
        optimize(losses, self.optimizer, max_grad_norm=self.max_grad_norm)
        self.target_updater.step()
        return {k: v.detach() for k, v in losses.items()}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {**super().optimizers(), "mpo": self.optimizer}


def build_mpo(cfg: TrainConfig, env: EnvBase, fns: EnvFunctions | None = None) -> Agent:
    """The ``mpo`` preset's agent for ``env`` (settings from ``cfg.extra``)."""
    obs_dim, _ = env_dims(env)
    return MPOAgent(cfg, obs_dim, env.action_spec, MPOSettings.from_extra(cfg.extra))
