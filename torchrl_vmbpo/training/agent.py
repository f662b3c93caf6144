"""What the training loop drives: an :class:`Agent` built by a preset (``torchrl_vmbpo.algorithms``)."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn
from torchrl.data import ReplayBuffer
from torchrl.objectives import LossModule

from torchrl_vmbpo.data.buffers import sample_mixed
from torchrl_vmbpo.envs.termination import TerminationFn
from torchrl_vmbpo.envs.world_model import RewardFn
from torchrl_vmbpo.models.dynamics import DynamicsModel


def borrow(module: nn.Module, **references) -> None:
    """Set attributes that refer to modules owned elsewhere (e.g. inside the agent's loss) without
    registering them: ``state_dict``, ``parameters()`` and ``.to`` see each tensor once, through its owner."""
    for name, value in references.items():
        module._modules.pop(name, None)
        module.__dict__[name] = value


class Agent(nn.Module):
    """The components of one algorithm, as the loop sees them.

    Subclasses set:
      * ``policy``: acts in the real env (sampled in RANDOM mode, its mode in evaluation);
      * ``rollout_policy``: acts in the world model (defaults to ``policy``);
      * for model-based agents, ``dynamics``, ``model_loss`` (a LossModule whose ``loss_dynamics``
        fits q_d), ``model_optimizer``, ``termination_fn`` and optionally ``reward_fn``;
    and implement :meth:`update` (one gradient update on a batch, target networks included).
    Every ``nn.Module`` attribute is saved in checkpoints through ``state_dict``.
    """

    policy: TensorDictModuleBase
    dynamics: DynamicsModel | None
    model_loss: LossModule | None
    model_optimizer: torch.optim.Optimizer | None
    termination_fn: TerminationFn | None
    reward_fn: RewardFn | None

    def __init__(self):
        super().__init__()
        # Instance attributes, not class defaults: a class-level `dynamics = None` would shadow the
        # submodule nn.Module registers later (attribute lookup finds the class attribute first).
        self.dynamics = None
        self.model_loss = None
        self.model_optimizer = None
        self.termination_fn = None
        self.reward_fn = None
        # (algo, env id) when a preset built the agent: loading a checkpoint of another pair is refused.
        self.identity: tuple[str, str] | None = None

    @property
    def rollout_policy(self) -> TensorDictModuleBase:
        return self.policy

    @property
    def model_based(self) -> bool:
        return self.dynamics is not None

    def dynamics_loss(self) -> LossModule:
        """The loss the "fit model" phase minimises now (VMBPO switches from MLE to eq. 19)."""
        return self.model_loss

    def sample_batch(
        self, real_buffer: ReplayBuffer, model_buffer: ReplayBuffer | None, batch_size: int, real_ratio: float
    ) -> TensorDictBase:
        """The batch of one :meth:`update`: ``real_ratio`` of ``batch_size`` real rows, the rest model rows.

        The loop passes ``real_ratio = 1`` to model-free agents. Override when an update needs its real
        and model data apart (VMBPO-MFE: E-step on real transitions, M-step on model states).
        """
        return sample_mixed(real_buffer, model_buffer, batch_size, real_ratio)

    def update(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """One gradient update on a batch from :meth:`sample_batch`; returns detached scalar metrics."""
        raise NotImplementedError

    def after_model_fit(self, real_buffer: ReplayBuffer) -> dict[str, float]:
        """Hook run after each fit of q_d (VMBPO fits its ratio network here)."""
        return {}

    def run_statistics(self) -> dict[str, float]:
        """Algorithm-specific numbers for the run's summary.json (PETS: seconds per planned action)."""
        return {}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimizer, by name, for checkpoints."""
        return {} if self.model_optimizer is None else {"model": self.model_optimizer}
