"""PETS (Chua et al. 2018): model-predictive control with CEM and trajectory sampling, as a TorchRL planner.

Why not TorchRL's ``CEMPlanner``: it scores each candidate by ONE rollout of ``env.rollout`` (no
particles, so no TS1/TS-inf and no averaging over the ensemble's aleatoric and epistemic spread), it
samples from an unbounded N(0, 1) and clips, starts every step from scratch (no warm start), and
pays the tensordict/env-step overhead per planning step. :class:`PETSPlanner` keeps TorchRL's
contract — an :class:`~torchrl.modules.planners.MPCPlannerBase` over the world-model env, so it is a
policy module for collectors and ``env.rollout`` — and evaluates all particles x population x elites
of a step in one batched ensemble pass (:mod:`torchrl_vmbpo.planners.trajectory_sampling`).
"""

from __future__ import annotations

import copy
import time
import warnings

import torch
from tensordict import TensorDictBase
from torchrl.data import Bounded
from torchrl.envs.utils import exploration_type
from torchrl.modules.planners import MPCPlannerBase

from torchrl_vmbpo import keys
from torchrl_vmbpo.envs.world_model import WorldModelEnv
from torchrl_vmbpo.planners.cem import cem_search
from torchrl_vmbpo.planners.cuda_graph import CapturedFunction
from torchrl_vmbpo.planners.trajectory_sampling import check_propagation, particle_returns


class PETSPlanner(MPCPlannerBase):
    """CEM over action sequences scored by particles through the learned ensemble; acts by MPC.

    At every real step the planner runs ``iterations`` CEM iterations (:func:`cem_search`) over
    ``population`` sequences of ``planning_horizon`` actions, each scored by the mean undiscounted
    return of ``particles`` particles (:func:`particle_returns`, rewards after a terminal state
    masked), and returns the FIRST action of the final CEM mean — in every exploration mode, so
    evaluation is the planner's mean action. The final mean, shifted by one step and padded with
    the mid-range action, warm-starts the next call (PETS); the warm start is dropped when the
    input says ``is_init`` (a new episode) and is kept apart per exploration mode, so the loop's
    deterministic evaluation episodes do not disturb the training episode's plan.

    The dynamics, termination and (optional) known reward function are the world-model env's.

    Args:
        env: a :class:`WorldModelEnv` with ``batch_size=[]`` (its specs fix the keys and the
            action bounds; planners take inputs of any batch size).
        planning_horizon: ``H`` actions per sequence (PETS: 30 on its MuJoCo tasks).
        population: sequences sampled per CEM iteration (PETS: 400-500).
        elites: sequences the CEM distribution is refitted to (PETS: 40-50).
        iterations: CEM iterations per real step (PETS: 5).
        particles: ``P`` particles per sequence (PETS: 20).
        propagation: ``"ts_inf"`` (a particle keeps its member; PETS's best) or ``"ts1"``.
        momentum: CEM's ``alpha`` (PETS: 0.1).
        action_key: where the action is written.
        device: where to plan (e.g. ``"cuda"``). ``None`` (default): plan with the env's own
            dynamics wherever they live. Otherwise the planner keeps its own copy of the dynamics on
            ``device`` (not a submodule, so checkpoints hold the env's dynamics only): call
            :meth:`sync_dynamics` after each fit of the env's dynamics. Observations go to
            ``device`` and the action comes back to the observation's device.
        cuda_graph: on a CUDA device, capture each plan (all CEM iterations and their rollouts) as
            one CUDA graph on first use per input shape and replay it afterwards
            (:mod:`~torchrl_vmbpo.planners.cuda_graph`); the sampled numbers differ from the eager
            plan's, the distribution does not. Ignored on the CPU. If the capture fails the planner
            warns and plans eagerly. Off by default here; the ``pets`` preset turns it on with a CUDA
            device (``extra.cuda_graph``): tests/planners/test_cuda_graph.py passed on an H100, and
            the Reacher7DoF records planned with it on an H200.

    Example:
        >>> from torchrl_vmbpo.envs.real import make_env
        >>> from torchrl_vmbpo.envs.termination import never_done
        >>> from torchrl_vmbpo.models.dynamics import DynamicsModel
        >>> real = make_env("Pendulum-v1", seed=0)
        >>> model_env = WorldModelEnv(DynamicsModel(3, 1, hidden=(16,)), real, termination_fn=never_done)
        >>> planner = PETSPlanner(model_env, planning_horizon=5, population=20, elites=4, iterations=2,
        ...                       particles=5)
        >>> real.rollout(3, planner)["action"].shape
        torch.Size([3, 1])
    """

    def __init__(
        self,
        env: WorldModelEnv,
        *,
        planning_horizon: int = 30,
        population: int = 400,
        elites: int = 40,
        iterations: int = 5,
        particles: int = 20,
        propagation: str = "ts_inf",
        momentum: float = 0.1,
        action_key=keys.ACTION,
        device: torch.device | str | None = None,
        cuda_graph: bool = False,
    ):
        if not isinstance(env, WorldModelEnv):
            raise TypeError(f"env must be a torchrl_vmbpo WorldModelEnv, got {type(env).__name__}")
        if env.batch_size != torch.Size([]):
            raise ValueError(
                f"the planner's env must have batch_size=[] (planners batch internally), got {env.batch_size}"
            )
        for name, value in [
            ("planning_horizon", planning_horizon),
            ("population", population),
            ("iterations", iterations),
            ("particles", particles),
        ]:
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not 1 <= elites <= population:
            raise ValueError(f"elites must be in [1, population={population}], got {elites}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        super().__init__(env=env, action_key=action_key)
        spec = env.action_spec
        if not isinstance(spec, Bounded):
            raise TypeError(f"PETSPlanner needs a bounded action spec, got {type(spec).__name__}")
        self.planning_horizon, self.population, self.elites = planning_horizon, population, elites
        self.iterations, self.particles, self.momentum = iterations, particles, momentum
        self.propagation = check_propagation(propagation)
        self.planning_device = None if device is None else torch.device(device)
        self.register_buffer("action_low", spec.space.low.clone().to(self.planning_device), persistent=False)
        self.register_buffer("action_high", spec.space.high.clone().to(self.planning_device), persistent=False)
        self._warm_start: dict[str, torch.Tensor] = {}
        # Actions planned by this process (one per planning() call, real steps and the callers' own
        # checks) and their wall seconds; not state: a resumed run counts afresh, the rate stays valid.
        # Read by PETSAgent.run_statistics.
        self.planned_actions, self.planning_seconds = 0, 0.0
        self.cuda_graph = bool(cuda_graph)
        self._graphs: dict[tuple, CapturedFunction] = {}  # per input shape; weights updated in place
        # A plain attribute (a tuple), not a submodule: state_dict and .to() leave it alone.
        self._device_dynamics = None
        if self.planning_device is not None:
            self._device_dynamics = (copy.deepcopy(env.world_model.dynamics).to(self.planning_device),)

    @property
    def dynamics(self):
        """The ensemble the planner scores with: the env's, or its copy on ``device``."""
        return self.env.world_model.dynamics if self._device_dynamics is None else self._device_dynamics[0]

    @torch.no_grad()
    def sync_dynamics(self) -> None:
        """Copy the env's dynamics (weights, normaliser, elites) into the planner's device copy."""
        if self._device_dynamics is not None:
            self._device_dynamics[0].load_state_dict(self.env.world_model.dynamics.state_dict())

    def reset(self) -> None:
        """Forget every warm start (the next call plans from the mid-range action)."""
        self._warm_start.clear()

    def initial_plan(self, batch: torch.Size) -> torch.Tensor:
        """The mid-range action sequence ``[*batch, H, A]``."""
        mid = (self.action_low + self.action_high) / 2.0
        return mid.expand(*batch, self.planning_horizon, mid.shape[-1]).clone()

    @torch.no_grad()
    def plan(
        self, obs: torch.Tensor, init_mean: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """CEM from ``init_mean`` (default: mid-range): ``[*B, D] -> ([*B, H, A] mean plan, history)``.

        ``history`` holds the population's and the elites' mean planned returns per iteration
        (see :func:`cem_search`).
        """
        if init_mean is None:
            init_mean = self.initial_plan(obs.shape[:-1])
        if self.cuda_graph and obs.is_cuda:
            captured = self._captured_plan(obs, init_mean)
            if captured is not None:
                return captured(obs, init_mean)
        return self._plan(obs, init_mean)

    def _plan(self, obs: torch.Tensor, init_mean: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        world = self.env.world_model

        def score(sequences: torch.Tensor) -> torch.Tensor:
            returns = particle_returns(
                self.dynamics,
                obs,
                sequences,
                particles=self.particles,
                propagation=self.propagation,
                termination_fn=world.termination_fn,
                reward_fn=world.reward_fn,
            )
            return returns.mean(-1)  # PETS: the mean over particles

        return cem_search(
            score,
            init_mean,
            self.action_low,
            self.action_high,
            population=self.population,
            elites=self.elites,
            iterations=self.iterations,
            momentum=self.momentum,
        )

    def _captured_plan(self, obs: torch.Tensor, init_mean: torch.Tensor) -> CapturedFunction | None:
        """The plan captured for these input shapes (captured now if new); None if capture failed."""
        key = (obs.shape, init_mean.shape, obs.dtype, obs.device)
        if key not in self._graphs:
            try:
                self._graphs[key] = CapturedFunction(self._plan, (obs, init_mean))
            except Exception as err:  # noqa: BLE001 - any capture failure: plan eagerly, say why
                warnings.warn(
                    f"PETSPlanner: CUDA graph capture failed, planning eagerly from now on: {err}",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self.cuda_graph = False
                return None
        return self._graphs[key]

    def planning(self, tensordict: TensorDictBase) -> torch.Tensor:
        start = time.perf_counter()
        obs = tensordict.get(keys.OBSERVATION)
        out_device = obs.device
        if self.planning_device is not None:
            obs = obs.to(self.planning_device)
        batch = obs.shape[:-1]
        fresh = self.initial_plan(batch)
        mode = str(exploration_type())
        warm = self._warm_start.get(mode)
        if warm is None or warm.shape != fresh.shape:
            warm = fresh
        else:
            is_init = tensordict.get("is_init", None)
            if is_init is not None:  # a new episode starts from scratch
                warm = torch.where(is_init.reshape(*batch, 1, 1).to(warm.device), fresh, warm)
        mean, _ = self.plan(obs, warm)
        self._warm_start[mode] = torch.cat([mean[..., 1:, :], fresh[..., :1, :]], dim=-2)
        action = mean[..., 0, :].to(out_device)  # a copy to the env's device waits for a GPU plan
        self.planned_actions += batch.numel()
        self.planning_seconds += time.perf_counter() - start
        return action
