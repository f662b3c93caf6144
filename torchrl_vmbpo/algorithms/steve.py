"""STEVE (Buckman et al. 2018) over the shared loop: SAC whose critic target is expanded by the model.

Which phase runs where:
  * loop "collect": the SAC actor acts in the real env into D;
  * loop "fit model": q_d by the ensemble NLL (MBPO's fit), the same as MBPO;
  * no imagination (``STEVEAgent.capabilities``): STEVE trains on REAL transitions only; the model enters
    through the critic's target, computed at each update by :class:`STEVEEstimator` (H-step rollouts
    from every real ``s'`` through each elite, candidates from each Q function, inverse-variance blend);
  * loop "update" (:meth:`STEVEAgent.update`): TorchRL's ``SACLoss`` (actor, critics, temperature)
    with STEVE as its value estimator, one Adam step, Polyak target update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from tensordict import TensorDictBase
from torchrl.data import Bounded
from torchrl.envs import EnvBase

from torchrl_vmbpo.algorithms.sac import SACAgent, SACSettings
from torchrl_vmbpo.envs.functions import EnvFunctions, env_functions_for
from torchrl_vmbpo.envs.real import env_dims
from torchrl_vmbpo.envs.termination import TerminationFn
from torchrl_vmbpo.envs.world_model import RewardFn
from torchrl_vmbpo.objectives.steve import STEVEEstimator
from torchrl_vmbpo.training.agent import Agent, Capabilities
from torchrl_vmbpo.training.config import ExtraSettings, TrainConfig
from torchrl_vmbpo.training.model_fit import make_dynamics
from torchrl_vmbpo.training.validation import NonNegativeInt, PositiveFloat, PositiveInt

# TrainConfig defaults of the "steve" preset: real data only (no imagination; every batch is real),
# one update per env step as the SAC preset it extends.
# real_ratio 1 and rollouts_per_step 0 describe STEVE in its run records; the loop reads neither for it
# (its capabilities: real batches only, no imagination).
STEVE_DEFAULTS: dict = dict(utd=1.0, real_ratio=1.0, rollouts_per_step=0)


@dataclass(frozen=True)
class STEVESettings(ExtraSettings):
    """STEVE's own settings, read from ``TrainConfig.extra`` (``--set extra.horizon=5``)."""

    algorithm: ClassVar[str] = "STEVE"

    horizon: NonNegativeInt = 3
    """H: model steps of the expansion (candidates for horizons 0..H; the STEVE paper uses 3)."""
    num_qvalue_nets: PositiveInt = 2
    """L: Q functions; each is a separate candidate, so their disagreement enters the variance.
    The SAC actor maximises their minimum, as SAC with twin critics."""
    sample_model: bool = True
    """Draw each member's next state from its Gaussian (aleatoric spread counts as uncertainty); False: mean."""
    variance_floor: PositiveFloat = 1e-8
    """Floor on each horizon's candidate variance in the inverse-variance weights."""


class STEVEAgent(SACAgent):
    """SAC (actor, ``L`` critics, automatic temperature) with the STEVE critic target, and q_d.

    :class:`~torchrl_vmbpo.algorithms.sac.SACAgent` (one fused Adam with three groups, ONE backward per
    update) whose ``SACLoss`` takes :class:`STEVEEstimator` as its value estimator. The STEVE target
    is computed without gradients, so no gradient reaches q_d from the critic.

    Example:
        >>> from torchrl_vmbpo.envs.termination import never_done
        >>> cfg = TrainConfig(algo="steve", hidden=(8,), model_hidden=(8,))
        >>> agent = STEVEAgent(cfg, 3, Bounded(-2.0, 2.0, shape=(1,)), STEVESettings(horizon=2),
        ...                    termination_fn=never_done)
        >>> from tensordict import TensorDict
        >>> batch = TensorDict({"observation": torch.randn(5, 3), "action": torch.rand(5, 1),
        ...     ("next", "observation"): torch.randn(5, 3), ("next", "reward"): torch.randn(5, 1),
        ...     ("next", "done"): torch.zeros(5, 1, dtype=torch.bool),
        ...     ("next", "terminated"): torch.zeros(5, 1, dtype=torch.bool)}, [5])
        >>> metrics = agent.update(batch)
        >>> sorted(k for k in metrics if k.startswith("loss_")), metrics["steve_weight_h0"].shape
        (['loss_actor', 'loss_alpha', 'loss_qvalue'], torch.Size([]))
    """

    def __init__(
        self,
        cfg: TrainConfig,
        obs_dim: int,
        action_spec: Bounded,
        settings: STEVESettings,
        *,
        termination_fn: TerminationFn,
        reward_fn: RewardFn | None = None,
    ):
        super().__init__(cfg, obs_dim, action_spec, num_qvalue_nets=settings.num_qvalue_nets, settings=SACSettings())
        self.settings = s = settings
        self.attach_dynamics(
            make_dynamics(cfg, obs_dim, action_spec.shape[-1]), cfg, termination_fn=termination_fn, reward_fn=reward_fn
        )
        # The model enters the critic's target only: real batches, nothing imagined.
        self.capabilities = Capabilities(model_fit=True, real_ratio=1.0)
        # SACAgent made the target updater first: the estimator holds the target Q params, and TorchRL
        # warns when they are read before an updater is associated with the loss.
        self.loss.make_value_estimator(
            STEVEEstimator.from_sac_loss(
                self.loss,
                gamma=cfg.gamma,
                horizon=s.horizon,
                dynamics=self.dynamics,
                termination_fn=termination_fn,
                reward_fn=reward_fn,
                sample_model=s.sample_model,
                eps=s.variance_floor,
            )
        )

    def update(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        metrics = super().update(batch)
        weights = self.loss.value_estimator.last_horizon_weights
        metrics.update({f"steve_weight_h{i}": w for i, w in enumerate(weights)})
        return metrics


def build_steve(cfg: TrainConfig, env: EnvBase, fns: EnvFunctions | None = None) -> Agent:
    """The ``steve`` preset's agent for ``env`` (settings from ``cfg.extra``)."""
    fns = fns or env_functions_for(cfg.env)
    obs_dim, _ = env_dims(env)
    return STEVEAgent(
        cfg,
        obs_dim,
        env.action_spec,
        STEVESettings.from_extra(cfg.extra),
        termination_fn=fns.termination(),
        reward_fn=fns.reward_fn,
    )
