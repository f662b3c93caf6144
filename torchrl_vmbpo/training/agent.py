"""What the training loop drives: an :class:`Agent` built by a preset (``torchrl_vmbpo.algorithms``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

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
from torchrl_vmbpo.objectives.ensemble_nll import GaussianEnsembleNLLLoss
from torchrl_vmbpo.training.compile import compile_fn
from torchrl_vmbpo.training.divergence import CriticScale
from torchrl_vmbpo.training.model_fit import make_model_optimizer
from torchrl_vmbpo.training.precision import in_precision


@dataclass(frozen=True)
class Capabilities:
    """What an agent uses of the loop; the agent declares it (its algorithm knows), the loop asks.

    Example: MBPO is ``Capabilities(model_fit=True, imagination=True, real_ratio=0.05)``; PETS is
    ``Capabilities(updates=False, model_fit=True, planning=True)``.
    """

    updates: bool = True
    """Gradient updates (``utd`` per env step) on batches from :meth:`Agent.sample_batch`."""
    model_fit: bool = False
    """Fit ``agent.dynamics`` every ``model_retrain_every`` env steps (then :meth:`Agent.after_model_fit`)."""
    imagination: bool = False
    """After each fit, roll q_d out with ``agent.rollout_policy`` into the model buffer E."""
    planning: bool = False
    """The acting policy plans with q_d (PETS); the loop treats it as any policy."""
    real_ratio: float = 1.0
    """Fraction of each update batch drawn from the real buffer D (the rest from E)."""
    device: str = "cpu"
    """Where the agent computes (set by :meth:`Agent.setup_compute`; recorded in the summary, where a CUDA
    device also names its GPU)."""


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
      * ``capabilities``: the loop phases it uses (:class:`Capabilities`; default: model-free updates);
    and implement :meth:`update` (one gradient update on a batch, target networks included) when
    ``capabilities.updates``, naming the loss forwards it calls in :meth:`loss_forwards` (compiled and run
    in the run's precision by :meth:`setup_compute`).
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
        self.capabilities = Capabilities()
        # Set by setup_compute: whether the model fit's step is compiled, and its compiled functions.
        self._compile_backend: str | None = None
        self.precision = "fp32"  # TrainConfig.precision of the gradient steps, set by setup_compute
        self.compiled_update = False
        self.compile_model_fit = False
        self.compile_ratio_fit = False
        self._compiled_fit: dict[int, object] = {}

    @property
    def rollout_policy(self) -> TensorDictModuleBase:
        return self.policy

    @property
    def model_based(self) -> bool:
        """Fits a dynamics model (``capabilities.model_fit``)."""
        return self.capabilities.model_fit

    def attach_dynamics(
        self, dynamics: DynamicsModel, cfg, *, termination_fn: TerminationFn, reward_fn: RewardFn | None = None
    ) -> None:
        """Make ``dynamics`` this agent's q_d with MBPO's fit: its NLL loss, Adam with L2 on the weight
        matrices (``model_lr``, ``model_weight_decay``), and the env's termination / reward functions."""
        if termination_fn is None:
            raise ValueError(f"a model-based {type(self).__name__} needs termination_fn")
        self.dynamics = dynamics
        borrow(self, model_loss=GaussianEnsembleNLLLoss(dynamics))  # holds q_d, registered as dynamics
        self.model_optimizer = make_model_optimizer(dynamics, lr=cfg.model_lr, weight_decay=cfg.model_weight_decay)
        self.termination_fn, self.reward_fn = termination_fn, reward_fn

    def dynamics_loss(self) -> LossModule:
        """The loss the "fit model" phase minimises now (VMBPO switches from MLE to eq. 19)."""
        return self.model_loss

    @property
    def device(self) -> torch.device:
        return torch.device(self.capabilities.device)

    def setup_compute(
        self,
        device: torch.device | str,
        *,
        compile_updates: bool = False,
        compile_model_fit: bool = False,
        compile_ratio_fit: bool = False,
        backend: str | None = None,
        precision: str = "fp32",
    ) -> Agent:
        """Move everything the agent owns to ``device`` (optimizer states follow their parameters, which
        ``.to`` moves in place), compile its update's losses (:meth:`bind_loss_forwards`), model-fit step
        and (VMBPO) ratio-fit step as asked, and run the losses of every gradient step in ``precision``
        (training/precision.py). ``build_agent`` calls it from ``TrainConfig.device`` / ``compile`` /
        ``precision``; ``backend="eager"`` traces with Dynamo (graph breaks raise) without generating
        code, as the tests do."""
        device = torch.device(device)
        self.to(device)
        self.capabilities = replace(self.capabilities, device=str(device))
        self._compile_backend = backend
        self.compile_model_fit = compile_model_fit and self.capabilities.model_fit
        self.compile_ratio_fit = compile_ratio_fit and self.capabilities.model_fit
        self._compiled_fit.clear()
        self.compiled_update = compile_updates and self.capabilities.updates
        self.precision = precision
        self.bind_loss_forwards(compiled=self.compiled_update, backend=backend)
        return self

    def loss_forwards(self) -> dict[str, Callable]:
        """The eager forward of each loss :meth:`update` calls, by the attribute it calls it through
        (SAC: ``{"_loss_fn": self.loss.__call__}``); none for an agent without updates."""
        return {}

    def bind_loss_forwards(self, *, compiled: bool = False, backend: str | None = None) -> None:
        """Set the attributes of :meth:`loss_forwards`: each forward compiled (training/compile.py) when
        ``compiled``, run in the agent's ``precision``. Agents call it once their losses exist (eager,
        fp32); :meth:`setup_compute` again with the run's choices. The forwards are functions (a
        module's bound ``__call__``, not the module): an attribute holding a module would add its
        parameters to the state dict a second time."""
        for name, forward in self.loss_forwards().items():
            if compiled:
                forward = compile_fn(forward, device=self.device, backend=backend)
            setattr(self, name, in_precision(forward, self.precision, self.device))

    def dynamics_step_loss(self):
        """The model fit's per-step loss: :meth:`dynamics_loss`, compiled when the run compiles its model fit."""
        return self.fit_step_loss(self.dynamics_loss(), compiled=self.compile_model_fit)

    def fit_step_loss(self, loss: LossModule, *, compiled: bool):
        """``loss`` for the steps of the model-fit phase (q_d's fit; VMBPO's ratio fit) in the agent's
        ``precision``: compiled once per loss module when ``compiled``, else ``loss`` itself."""
        if not compiled:
            return in_precision(loss, self.precision, self.device)
        if id(loss) not in self._compiled_fit:
            self._compiled_fit[id(loss)] = compile_fn(loss, device=self.device, backend=self._compile_backend)
        return in_precision(self._compiled_fit[id(loss)], self.precision, self.device)

    def sample_batch(
        self, real_buffer: ReplayBuffer, model_buffer: ReplayBuffer | None, batch_size: int, real_ratio: float
    ) -> TensorDictBase:
        """The batch of one :meth:`update`: ``real_ratio`` of ``batch_size`` real rows, the rest model rows.

        The loop passes ``capabilities.real_ratio``. Override when an update needs its real
        and model data apart (VMBPO-MFE: E-step on real transitions, M-step on model states).
        """
        return sample_mixed(real_buffer, model_buffer, batch_size, real_ratio)

    def update(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """One gradient update on a batch from :meth:`sample_batch`; returns detached scalar metrics."""
        raise NotImplementedError

    def after_model_fit(self, real_buffer: ReplayBuffer) -> dict[str, float]:
        """Hook run after each fit of q_d (VMBPO fits its ratio network here)."""
        return {}

    def label_imagined(self, rows: TensorDictBase) -> TensorDictBase:
        """Hook on each batch of imagined rows (flat, on the agent's device) before it enters E: returns the
        rows to store, here unchanged (VMBPO records nu on them)."""
        return rows

    def critic_scale(self) -> CriticScale | None:
        """How the loop's divergence guard reads this agent's critic (``training.divergence``): by default
        the ``q_value`` update metric in reward units (SAC, MBPO, STEVE and MPO report it); ``None`` for
        an agent without a critic."""
        return CriticScale()

    def run_statistics(self) -> dict[str, float]:
        """Algorithm-specific numbers for the run's summary.json (PETS: seconds per planned action)."""
        return {}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimizer, by name, for checkpoints."""
        return {} if self.model_optimizer is None else {"model": self.model_optimizer}
