"""PETS (Chua et al. 2018) over the shared loop: the probabilistic ensemble plus MPC, no policy network.

Which phase runs where:
  * loop "collect": the agent's ``policy`` IS the planner (:class:`PETSPlanner`): every real action
    is the first action of a CEM plan scored by trajectory sampling through the ensemble;
  * loop "fit model": q_d by the ensemble NLL (MBPO's fit: holdout, early stopping, elites);
  * no imagination and no gradient updates (``PETSAgent.capabilities``): PETS has nothing but the
    model to train, so ``utd``, ``real_ratio`` and ``rollouts_per_step`` do not apply to it;
  * loop "evaluate": the same planner in DETERMINISTIC mode (its CEM mean, with its own warm start).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import torch
from torchrl.data import Bounded
from torchrl.envs import EnvBase

from torchrl_vmbpo.envs.functions import EnvFunctions, env_functions_for
from torchrl_vmbpo.envs.reacher7dof import ENV_ID as REACHER7DOF_ID
from torchrl_vmbpo.envs.reacher7dof import reacher7dof_reward
from torchrl_vmbpo.envs.real import env_dims
from torchrl_vmbpo.envs.termination import TerminationFn, inverted_pendulum_done
from torchrl_vmbpo.envs.world_model import RewardFn, WorldModelEnv
from torchrl_vmbpo.errors import ConfigError, UnknownEnvFunction
from torchrl_vmbpo.planners.pets import PETSPlanner
from torchrl_vmbpo.training.agent import Agent, Capabilities, borrow
from torchrl_vmbpo.training.config import ExtraSettings, TrainConfig
from torchrl_vmbpo.training.model_fit import make_dynamics
from torchrl_vmbpo.training.validation import PositiveInt, Range

# TrainConfig defaults of the "pets" preset. No imagination, no policy updates. Evaluation episodes
# are planned like training steps (~population x horizon x iterations x particles model rows per
# action), so the preset evaluates less often and on fewer episodes than the gradient-based presets.
# utd 0 and rollouts_per_step 0 describe PETS in its run records; the loop reads neither for it (its
# capabilities: no updates, no imagination).
PETS_DEFAULTS: dict = dict(utd=0.0, rollouts_per_step=0, eval_every=1000, eval_episodes=3)


def _pendulum_reward(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """Pendulum-v1: ``-(theta^2 + 0.1 theta_dot^2 + 0.001 u^2)`` at the state BEFORE the step."""
    theta = torch.atan2(obs[..., 1], obs[..., 0])  # in (-pi, pi]: Gymnasium's angle_normalize
    u = action[..., 0].clamp(-2.0, 2.0)
    return -(theta.pow(2) + 0.1 * obs[..., 2].pow(2) + 0.001 * u.pow(2)).unsqueeze(-1)


def _inverted_pendulum_reward(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """InvertedPendulum-v5: 1 while the next state is healthy, else 0 (``int(not terminated)``)."""
    return (~inverted_pendulum_done(next_obs)).to(next_obs.dtype)


def _reacher7dof_reward(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    return reacher7dof_reward(next_obs, action).reshape(*next_obs.shape[:-1], 1)


# Known reward functions (obs, action, next_obs) -> [..., 1] that PETS may plan with (extra.reward=known).
KNOWN_REWARD_FNS: dict[str, RewardFn] = {
    "Pendulum-v1": _pendulum_reward,
    "InvertedPendulum-v5": _inverted_pendulum_reward,
    REACHER7DOF_ID: _reacher7dof_reward,
}


@dataclass(frozen=True)
class PETSSettings(ExtraSettings):
    """PETS's own settings, read from ``TrainConfig.extra`` (``--set extra.population=500``).

    Defaults are PETS's (Chua et al. 2018, Appendix A.2) on its MuJoCo tasks.
    """

    algorithm: ClassVar[str] = "PETS"

    planning_horizon: PositiveInt = 30
    """Actions per planned sequence."""
    population: PositiveInt = 400
    """Sequences sampled per CEM iteration."""
    elites: PositiveInt = 40
    """Best sequences the CEM distribution is refitted to."""
    iterations: PositiveInt = 5
    """CEM iterations per real step."""
    particles: PositiveInt = 20
    """Particles per sequence (its score is their mean return)."""
    propagation: Literal["ts_inf", "ts1"] = "ts_inf"
    """"ts_inf": a particle keeps its ensemble member for the whole horizon; "ts1": re-drawn every step."""
    momentum: Annotated[float, Range(0, 1, high_open=True)] = 0.1
    """CEM's alpha: weight of the previous mean/variance in each refit."""
    cuda_graph: bool = True
    """On a CUDA device (``TrainConfig.device``; PETS's settings cost 3-7 s per action on one CPU thread
    and ~0.12 s on an H200, benchmarks/results/pets_planning_cost_*.md): capture each plan as one CUDA graph and replay it (PETSPlanner,
    ``cuda_graph``) instead of launching its ~2,000 kernels one by one: 0.029 s instead of 0.144 s per
    action at PETS's published settings on an H100, whose 8 tests/planners/test_cuda_graph.py passed
    there (benchmarks/results/pets_planning_cost_h100_*.md). ``false``: eager planning. No effect on
    the CPU."""
    reward: Literal["auto", "known", "model"] = "auto"
    """"known": the env's known reward function (KNOWN_REWARD_FNS; PETS plans with known rewards);
    "model": the ensemble's reward head; "auto": known where the env has one, else the model's."""

    def check(self) -> None:
        super().check()
        if self.elites > self.population:
            raise ConfigError(f"extra.elites ({self.elites}) must be <= extra.population ({self.population})")


def known_reward_fn_for(env_id: str) -> RewardFn:
    """The known reward function of ``env_id`` (a KeyError lists the known ids otherwise)."""
    try:
        return KNOWN_REWARD_FNS[env_id]
    except KeyError:
        raise UnknownEnvFunction(
            f"No known reward function for {env_id!r}; known: {sorted(KNOWN_REWARD_FNS)}. Use extra.reward=model."
        ) from None


class PETSAgent(Agent):
    """The ensemble q_d, its NLL fit, and the planner that acts with it (``policy``).

    Args:
        cfg: the run's config (model sizes and optimiser).
        env: the real env (specs for the planner's world-model env).
        settings: :class:`PETSSettings`.
        termination_fn: known termination of model states (rewards after it are masked).
        reward_fn: known reward, or ``None`` for the model's reward head.

    Example:
        >>> from torchrl_vmbpo.envs.real import make_env
        >>> from torchrl_vmbpo.envs.termination import never_done
        >>> cfg = TrainConfig(algo="pets", model_hidden=(16,))
        >>> agent = PETSAgent(cfg, make_env("Pendulum-v1"), PETSSettings(planning_horizon=5, population=20,
        ...                   elites=4, iterations=2, particles=5), termination_fn=never_done)
        >>> env = make_env("Pendulum-v1", seed=0)
        >>> env.rollout(2, agent.policy)["action"].shape
        torch.Size([2, 1])
    """

    def __init__(
        self,
        cfg: TrainConfig,
        env: EnvBase,
        settings: PETSSettings,
        *,
        termination_fn: TerminationFn,
        reward_fn: RewardFn | None = None,
    ):
        super().__init__()
        if not isinstance(env.action_spec, Bounded):
            raise TypeError(f"PETS needs a bounded action spec, got {type(env.action_spec).__name__}")
        self.settings = s = settings
        obs_dim, act_dim = env_dims(env)
        # No policy to train and nothing imagined: the planner acts with q_d.
        self.capabilities = Capabilities(updates=False, model_fit=True, planning=True)
        self.attach_dynamics(
            make_dynamics(cfg, obs_dim, act_dim), cfg, termination_fn=termination_fn, reward_fn=reward_fn
        )
        model_env = WorldModelEnv(self.dynamics, env, termination_fn=termination_fn, reward_fn=reward_fn)
        # Not registered: the planner holds q_d (registered as dynamics) through its world-model env.
        self.policy = PETSPlanner(
            model_env,
            planning_horizon=s.planning_horizon,
            population=s.population,
            elites=s.elites,
            iterations=s.iterations,
            particles=s.particles,
            propagation=s.propagation,
            momentum=s.momentum,
            cuda_graph=s.cuda_graph,
        )
        borrow(self, policy=self.policy)

    def setup_compute(self, device, **compile_flags) -> PETSAgent:
        """As for every agent, and the planner (held by reference, not registered) with its world-model
        env and action bounds: it plans on the agent's device with the agent's own q_d."""
        super().setup_compute(device, **compile_flags)
        self.policy.to(self.device)
        return self

    def after_model_fit(self, real_buffer) -> dict[str, float]:
        self.policy.sync_dynamics()  # the planner's device copy of q_d follows every fit
        return {}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load, then refresh the planner's device copy of q_d (no submodule, so not in the state dict):
        a resumed run would otherwise plan with the fresh model's weights until its next fit."""
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.policy.sync_dynamics()
        return result

    def critic_scale(self) -> None:
        """No critic: the divergence guard has nothing to read."""
        return None

    def run_statistics(self) -> dict[str, float]:
        """Actions planned in this process (training and evaluation steps, plus the one plan TorchRL's
        Collector makes when it is built) and their mean wall seconds."""
        n, seconds = self.policy.planned_actions, self.policy.planning_seconds
        return {
            "planned_actions": n,
            "planning_seconds": round(seconds, 2),
            "seconds_per_planned_action": round(seconds / n, 4) if n else None,
        }


def build_pets(cfg: TrainConfig, env: EnvBase, fns: EnvFunctions | None = None) -> Agent:
    """The ``pets`` preset's agent for ``env`` (settings from ``cfg.extra``); a reward function given or
    registered for the env counts as known."""
    fns = fns or env_functions_for(cfg.env)
    settings = PETSSettings.from_extra(cfg.extra)
    given = fns.reward_fn
    known = settings.reward == "known" or (settings.reward == "auto" and (given or cfg.env in KNOWN_REWARD_FNS))
    reward_fn = (given or known_reward_fn_for(cfg.env)) if known else None
    return PETSAgent(cfg, env, settings, termination_fn=fns.termination(), reward_fn=reward_fn)
