"""Presets: one record per algorithm (builder, settings class, defaults) and the per-env defaults of
``presets.toml`` (MBPO's public configs where they exist; each per-(algorithm, env) choice made by
measurement with its reason and the record that chose it).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torchrl.envs import EnvBase

from torchrl_vmbpo.algorithms.mpo import MPO_DEFAULTS, MPOSettings, build_mpo
from torchrl_vmbpo.algorithms.pets import PETS_DEFAULTS, PETSSettings, build_pets
from torchrl_vmbpo.algorithms.sac import SACAgent, SACSettings
from torchrl_vmbpo.algorithms.steve import STEVE_DEFAULTS, STEVESettings, build_steve
from torchrl_vmbpo.algorithms.vmbpo import VMBPOAgent, VMBPOPaperSettings, VMBPOSettings, VMBPOTwistOffSettings
from torchrl_vmbpo.algorithms.vmbpo_mfe import VMBPO_MFE_DEFAULTS, VMBPOMFESettings, build_vmbpo_mfe
from torchrl_vmbpo.envs.functions import EnvFunctions, env_functions_for
from torchrl_vmbpo.envs.real import env_dims
from torchrl_vmbpo.envs.termination import TerminationFn
from torchrl_vmbpo.envs.world_model import RewardFn
from torchrl_vmbpo.errors import ConfigError
from torchrl_vmbpo.training.agent import Agent
from torchrl_vmbpo.training.compile import compile_enabled
from torchrl_vmbpo.training.config import (
    ExtraSettings,
    TrainConfig,
    parse_assignments,
    register_settings,
    settings_class,
)
from torchrl_vmbpo.training.device import resolve_device
from torchrl_vmbpo.training.model_fit import make_dynamics

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

PRESETS_FILE = Path(__file__).with_name("presets.toml")


def _sac(cfg: TrainConfig, env: EnvBase, fns: EnvFunctions) -> Agent:
    obs_dim, _ = env_dims(env)
    return SACAgent(cfg, obs_dim, env.action_spec)


def _mbpo(cfg: TrainConfig, env: EnvBase, fns: EnvFunctions) -> Agent:
    obs_dim, act_dim = env_dims(env)
    return SACAgent(
        cfg,
        obs_dim,
        env.action_spec,
        dynamics=lambda: make_dynamics(cfg, obs_dim, act_dim),  # drawn after the actor: paired seeds
        termination_fn=fns.termination(),
        reward_fn=fns.reward_fn,
    )


def _vmbpo(cfg: TrainConfig, env: EnvBase, fns: EnvFunctions) -> Agent:
    obs_dim, _ = env_dims(env)
    # The variants' settings classes subclass VMBPOSettings: the registered one parses cfg.extra.
    settings = settings_class(cfg.algo).from_extra(cfg.extra)
    return VMBPOAgent(
        cfg, obs_dim, env.action_spec, termination_fn=fns.termination(), reward_fn=fns.reward_fn, settings=settings
    )


@dataclass(frozen=True)
class Algorithm:
    """One algorithm: how its agent is built, which settings class checks its ``extra`` entries, and
    its defaults over :class:`TrainConfig` (per-env ones are in ``presets.toml``)."""

    name: str
    build: Callable[[TrainConfig, EnvBase, EnvFunctions], Agent]
    """The agent for an env, from the run config and the env's termination / reward functions."""
    settings: type[ExtraSettings]
    defaults: dict
    """TrainConfig fields for every env."""
    model_schedule: bool = False
    """Takes MBPO's per-env rollout schedule (``[model_schedule.ENV]``)."""
    dyna_utd: bool = False
    """Takes MBPO's per-env updates per env step (``[dyna_utd]``)."""
    description: str = ""
    """One line: what the preset is (``vmbpo config`` prints it)."""


# 5% real rows (MBPO's) anchor Q to real returns; nu = 0 on them (VMBPOAgent.sample_batch). The paper's
# eqs. 22-24 hold for model transitions (a ~ q_c, x' ~ q_d) only: vmbpo-paper has no real rows.
# Plain-MLP critics: the value ceiling (VMBPOSettings.value_ceiling) bounds Q's target where the
# rewards do, and LayerNorm in Q and V only cost on Hopper (learning curve 200 against 391 without it,
# seed 0; benchmarks/tuning/vmbpo-critic-layernorm). vmbpo-paper has no ceiling
# (eq. 23 as written), so it keeps LayerNorm, its only bound on an over-valued region feeding itself
# (Reacher7DoF's critic diverged without either: benchmarks/tuning/vmbpo-reacher7dof); the paper does
# not fix its networks' architecture.
_VMBPO_DEFAULTS = dict(utd=20.0, real_ratio=0.05)
_VMBPO_PAPER_DEFAULTS = dict(_VMBPO_DEFAULTS, real_ratio=0.0, critic_layer_norm=True)
ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm("sac", _sac, SACSettings, dict(utd=1.0), description="SAC (Haarnoja et al. 2018), TorchRL's SACLoss"),
        # MBPO (Janner et al. 2019): UTD 20, 5% real data.
        Algorithm(
            "mbpo",
            _mbpo,
            SACSettings,
            dict(utd=20.0, real_ratio=0.05),
            model_schedule=True,
            dyna_utd=True,
            description="MBPO (Janner et al. 2019): SAC on branched rollouts of an MLE Gaussian ensemble",
        ),
        Algorithm(
            "vmbpo",
            _vmbpo,
            VMBPOSettings,
            _VMBPO_DEFAULTS,
            model_schedule=True,
            dyna_utd=True,
            description="VMBPO with eq. 19's twist and this library's stabilisers (VMBPOSettings; README, VMBPO presets)",
        ),
        Algorithm(
            "vmbpo-paper",
            _vmbpo,
            VMBPOPaperSettings,
            _VMBPO_PAPER_DEFAULTS,
            model_schedule=True,
            dyna_utd=True,
            description="VMBPO as the paper's text fixes it: copy M-step, one Q, V' bootstrap, eq. 19 verbatim",
        ),
        Algorithm(
            "vmbpo-twist-off",
            _vmbpo,
            VMBPOTwistOffSettings,
            _VMBPO_DEFAULTS,
            model_schedule=True,
            dyna_utd=True,
            description="ablation: vmbpo with q_d by plain MLE (eq. 19's twist off, weight_mix=1)",
        ),
        Algorithm("mpo", build_mpo, MPOSettings, MPO_DEFAULTS, description="MPO (Abdolmaleki et al. 2018)"),
        Algorithm(
            "vmbpo-mfe",
            build_vmbpo_mfe,
            VMBPOMFESettings,
            VMBPO_MFE_DEFAULTS,
            model_schedule=True,
            description="VMBPO-MFE: model-free E-step by exponential TD on real transitions (paper, App. D)",
        ),
        Algorithm(
            "pets",
            build_pets,
            PETSSettings,
            PETS_DEFAULTS,
            description="PETS (Chua et al. 2018): CEM over the ensemble",
        ),
        Algorithm(
            "steve",
            build_steve,
            STEVESettings,
            STEVE_DEFAULTS,
            description="STEVE (Buckman et al. 2018): SAC with ensemble value expansion targets",
        ),
    )
}
PRESETS = tuple(ALGORITHMS)
for _algorithm in ALGORITHMS.values():  # a TrainConfig then checks its algo and extra when made
    register_settings(_algorithm.name, _algorithm.settings)


@dataclass(frozen=True)
class EnvDefaults:
    """``presets.toml``: per-env defaults, MBPO's model schedules and UTDs, per-(algo, env) overrides."""

    env: dict[str, dict]
    model_schedule: dict[str, dict]
    dyna_utd: dict[str, float]
    overrides: dict[tuple[str, str], dict]
    """(algo, env) -> {"settings": {...}, "extra": {...}, "reason": str, "record": str}."""

    @classmethod
    def load(cls, path: Path = PRESETS_FILE) -> EnvDefaults:
        try:
            data = tomllib.loads(path.read_text())
            overrides = {}
            for entry in data.get("override", []):
                unknown = set(entry) - {"algo", "env", "settings", "extra", "reason", "record"}
                missing = {"algo", "env", "reason", "record"} - set(entry)
                if unknown or missing or entry["algo"] not in ALGORITHMS:
                    raise ConfigError(
                        f"{path}: override {entry} has unknown keys {sorted(unknown)}, lacks "
                        f"{sorted(missing)} or names an unknown algorithm"
                    )
                overrides[(entry["algo"], entry["env"])] = entry
            return cls(data.get("env", {}), data.get("model_schedule", {}), data.get("dyna_utd", {}), overrides)
        except (tomllib.TOMLDecodeError, OSError) as err:
            raise ConfigError(f"{path} is not a readable presets file ({err})") from None

    def fields(self, algorithm: Algorithm, env: str) -> tuple[dict, dict]:
        """(TrainConfig fields, extra entries) of the preset for ``(algorithm, env)``."""
        fields = {**self.env.get(env, {}), **algorithm.defaults}
        if algorithm.model_schedule:
            fields.update(self.model_schedule.get(env, {}))
        if algorithm.dyna_utd and env in self.dyna_utd:
            fields["utd"] = self.dyna_utd[env]
        override = self.overrides.get((algorithm.name, env), {})
        fields.update(override.get("settings", {}))
        return fields, dict(override.get("extra", {}))


ENV_DEFAULTS = EnvDefaults.load()


def default_config(algo: str, env: str, *, overrides: Sequence[str] = (), **changes) -> TrainConfig:
    """The preset's config for ``(algo, env)``; ``changes`` (field=value) and ``overrides`` (``--set``
    strings, ``"utd=10"``, ``"extra.eta=2"``) override any field, ``extra`` entries merge, and the result
    is checked once as a whole (so ``steps=300`` with ``init_random_steps=100`` passes together).

    Example:
        >>> default_config("mbpo", "Pendulum-v1", steps=300, overrides=["init_random_steps=100"]).steps
        300
    """
    settings_class(algo)  # ConfigError naming the presets for an unknown one
    fields, preset_extra = ENV_DEFAULTS.fields(ALGORITHMS[algo], env)
    set_fields, set_extra = parse_assignments(overrides)
    # extra.* entries merge (as ``--set extra.KEY=...`` does): a change keeps the preset's other entries.
    extra = {**preset_extra, **changes.pop("extra", {}), **set_extra}
    for name, given in (("algo", algo), ("env", env)):
        for value in (changes.get(name, given), set_fields.get(name, given)):
            if value != given:  # the preset's defaults were chosen for (algo, env)
                raise ConfigError(
                    f"{name} is the preset's ({given!r}); to use {value!r}, choose it with --{name} "
                    f"(default_config's {name} argument), not as a setting"
                )
    fields.update(changes)
    fields.update(set_fields)
    fields.update(algo=algo, env=env)
    return TrainConfig(extra=extra, **fields)


def build_agent(
    cfg: TrainConfig, env: EnvBase, *, termination_fn: TerminationFn | None = None, reward_fn: RewardFn | None = None
) -> Agent:
    """The preset's agent for ``env`` on ``cfg.device``, compiled as ``cfg.compile`` says, its gradient
    steps in ``cfg.precision``; ``termination_fn`` / ``reward_fn`` for an env the library does not know
    (else those registered with ``register_env_functions``, else the library's known ones)."""
    settings_class(cfg.algo)  # a TrainConfig made before the presets were registered was not checked
    device = resolve_device(cfg.device)  # a missing GPU is a ConfigError before anything is built
    agent = ALGORITHMS[cfg.algo].build(cfg, env, env_functions_for(cfg.env, termination_fn, reward_fn))
    agent.identity = (cfg.algo, cfg.env)  # checked when a checkpoint is loaded into it
    return agent.setup_compute(
        device,
        compile_updates=compile_enabled(cfg, what="updates"),
        compile_model_fit=compile_enabled(cfg, what="model_fit"),
        compile_ratio_fit=compile_enabled(cfg, what="ratio_fit"),
        precision=cfg.precision,
    )
