"""The one configuration record of a training run: a frozen, validated dataclass.

Every field is documented here; presets (``torchrl_vmbpo.algorithms``) change defaults per
(algorithm, env), and the command line overrides any field with ``--set name=value``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Annotated, ClassVar, Literal

from torchrl_vmbpo.errors import ConfigError
from torchrl_vmbpo.training.device import check_device_name
from torchrl_vmbpo.training.loggers import check_logger
from torchrl_vmbpo.training.precision import Precision
from torchrl_vmbpo.training.validation import (
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Range,
    check_fields,
)


@dataclass(frozen=True)
class TrainConfig:
    # --- run ---
    algo: str = "mbpo"  #: preset name (see ``torchrl_vmbpo.algorithms.PRESETS``)
    env: str = "Pendulum-v1"  #: Gymnasium env id (continuous Box actions)
    seed: NonNegativeInt = 0  #: the one seeding point: torch, numpy, python, train env (eval env: seed + 10_000)
    steps: PositiveInt = 3000  #: real env steps to train for (more than init_random_steps)
    num_threads: PositiveInt = 1  #: torch intra-op threads; 1 is fastest for these small nets on 2 cores
    device: str = "auto"
    """Where the agent computes: "cpu", "cuda", "cuda:N", or "auto" (the first GPU when torch sees one,
    else the CPU; summary.json records the device used). Networks, both replay buffers, the model fit,
    imagination and every update run there; the real env stays on the CPU. A resume may change it."""
    compile: Literal["auto", "on", "off"] = "auto"
    """``torch.compile`` the updates' losses and the model fit's step (training/compile.py): "auto"
    compiles runs of at least 5,000 updates (the updates) or 4 model fits (the fit), where the one-off
    compile time of 10-40 s per function on a CPU core pays off; "off" for tests and short runs."""
    precision: Precision = "fp32"
    """The number format of each gradient step's forward (training/precision.py): "fp32", or "bf16"
    (the hidden layers' matmuls of the updates' losses and the model fits' steps in bfloat16 under
    autocast; weights, optimizer states, output layers, losses and targets float32). bf16 is about 2x
    faster where the hardware has bfloat16 units (AVX512-BF16 / AMX CPUs, Ampere-on GPUs), slower
    elsewhere; benchmarks/results/precision_bf16/ has the measurements."""
    # --- evaluation and logging ---
    eval_every: PositiveInt = 500  #: env steps between deterministic evaluations (also at the end)
    eval_episodes: PositiveInt = 5  #: episodes per evaluation, on a separate env
    log_every: PositiveInt = 250  #: env steps between training-metric log rows
    logger: Literal["csv", "tensorboard", "wandb", "mlflow"] = "csv"
    """Training-metric logger (TorchRL's): csv writes DIR/logs/scalars/*.csv; the others need their
    optional package (``torchrl_vmbpo.training.loggers``)."""
    checkpoint: bool = True
    """Write DIR/checkpoint.pt every ``checkpoint_every`` steps and at the end (``vmbpo train --resume``
    continues or extends it). False: none of those; an interrupt (SIGINT, SIGTERM) still writes one."""
    checkpoint_every: NonNegativeInt = 5000
    """Env steps between checkpoints written DURING the run (0: only at the end), each replacing the
    last: a killed run resumes from the latest with ``vmbpo train --resume --out DIR``."""
    # --- divergence guard (training.divergence) ---
    divergence: Literal["warn", "stop"] = "warn"
    """What a run does when its critic leaves the range the rewards allow: |Q| in reward units beyond
    ``divergence_factor`` x (max |r| in D so far + the agent's per-step bound) / (1 - gamma) (VMBPO:
    |Q / eta| and the bound log_ratio_bound / eta). Either way it logs ``critic_divergence_ratio`` each
    log row, warns once and records ``diverged`` in summary.json; "stop" also ends the run with a
    checkpoint, summary.json and a one-line CriticDiverged error."""
    divergence_factor: Annotated[float, Range(1, low_open=True)] = 10.0
    """How many times the rewards' range counts as diverged (``critic_divergence_ratio`` above it)."""
    # --- real data ---
    init_random_steps: NonNegativeInt = 1000  #: uniformly random actions before the policy acts
    collect_steps: PositiveInt = 1  #: real steps per collector batch (updates follow each batch)
    buffer_size: PositiveInt = 1_000_000  #: real replay buffer capacity (transitions)
    # --- agent updates (SAC-style actor-critic) ---
    batch_size: PositiveInt = 256  #: transitions per gradient update
    utd: NonNegativeFloat = 1.0  #: gradient updates per real env step
    gamma: Fraction = 0.99  #: discount
    tau: Fraction = 0.005  #: Polyak rate of target networks
    actor_lr: PositiveFloat = 3e-4  #: Adam learning rate of the policy
    critic_lr: PositiveFloat = 3e-4  #: Adam learning rate of the critics (value functions)
    alpha_lr: PositiveFloat = 3e-4  #: entropy-temperature learning rate
    alpha_init: PositiveFloat = 1.0  #: initial entropy temperature
    target_entropy: float | None = None  #: None = -action_dim (SAC's "auto")
    hidden: Annotated[tuple[int, ...], Range(1)] = (256, 256)  #: actor / critic hidden widths
    max_grad_norm: PositiveFloat | None = None  #: gradient-norm clip (None: no clipping)
    critic_layer_norm: bool = False  #: LayerNorm in each hidden layer of Q and V (models.networks._value_net)
    # --- learned dynamics (model-based presets) ---
    num_members: PositiveInt = 7  #: ensemble size
    num_elites: PositiveInt = 5  #: members used in rollouts, chosen by holdout loss
    model_hidden: Annotated[tuple[int, ...], Range(1)] = (200, 200, 200, 200)  #: hidden widths of each ensemble member
    model_lr: PositiveFloat = 1e-3  #: Adam learning rate of the dynamics ensemble
    model_weight_decay: NonNegativeFloat = 5e-5  #: L2 on ensemble weights (MBPO uses 2.5e-5 ... 1e-4 per layer)
    model_batch_size: PositiveInt = 256  #: transitions per gradient step of the model fit (per member)
    model_holdout: Fraction = 0.2  #: holdout fraction (capped at model_max_holdout)
    model_max_holdout: PositiveInt = 5000  #: cap on holdout transitions (MBPO: 5000)
    model_patience: NonNegativeInt = 5  #: epochs without > 1% holdout improvement before stopping
    model_max_epochs: PositiveInt = 200  #: cap on epochs per fit (bounds the first fit's cost)
    model_retrain_every: PositiveInt = 250  #: env steps between model fits (and imagination phases)
    rollouts_per_step: NonNegativeInt = 400
    """Model rollouts started per real env step, for agents that imagine (their capabilities say so)."""
    rollout_schedule: Annotated[tuple[float, float, float, float], Range(0)] = (20, 100, 1, 1)
    """[epoch_a, epoch_b, k_a, k_b]: rollout length k, linear in epoch (1 epoch = 1000 env steps)."""
    model_retain_epochs: PositiveInt = 1  #: model-buffer capacity in epochs of imagined data
    real_ratio: Fraction = 0.05  #: fraction of each update batch drawn from real data
    # --- algorithm-specific settings ---
    extra: ExtraSettings | dict = field(default_factory=dict)
    """The algorithm's own settings: an instance of its typed settings dataclass (``settings_class(algo)``;
    ``--set extra.NAME=VALUE``); a dict of entries is taken and made into one (unset entries keep the
    class's defaults). ``vmbpo config`` lists every entry."""

    def __post_init__(self):
        check_fields(self)
        check_device_name(self.device)
        check_logger(self.logger)
        if _SETTINGS:  # filled when torchrl_vmbpo.algorithms is imported (importing torchrl_vmbpo does it)
            object.__setattr__(self, "extra", settings_class(self.algo).from_extra(self.extra))
        else:
            object.__setattr__(self, "extra", dict(self.extra) if isinstance(self.extra, dict) else self.extra)
        if self.num_elites > self.num_members:
            raise ConfigError(f"num_elites ({self.num_elites}) must be <= num_members ({self.num_members})")
        if self.steps <= self.init_random_steps:
            raise ConfigError(
                f"steps ({self.steps}) must be more than init_random_steps ({self.init_random_steps}): the first "
                f"{self.init_random_steps} steps act at random, so no learning would happen; raise steps or lower "
                "init_random_steps"
            )

    def target_entropy_for(self, action_dim: int) -> float:
        """``target_entropy``, or SAC's "auto" ``-action_dim`` when it is None."""
        return -float(action_dim) if self.target_entropy is None else self.target_entropy

    def replace(self, **changes) -> TrainConfig:
        known = {f.name for f in fields(self)}
        if unknown := sorted(set(changes) - known):
            raise ConfigError(f"unknown config field(s) {unknown}; known fields: {sorted(known)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def with_overrides(self, assignments: list[str]) -> TrainConfig:
        """Apply ``name=value`` strings; values parse as JSON (``hidden=[64,64]``) or fall back to text,
        then are checked as one new config. ``extra.KEY=value`` sets an algorithm-specific entry."""
        changes, extra = parse_assignments(assignments)
        current = self.extra if isinstance(self.extra, dict) else dataclasses.asdict(self.extra)
        return self.replace(**changes, extra={**current, **extra})

    def rollout_length(self, env_steps: int) -> int:
        """MBPO's schedule: k grows linearly from k_a at epoch_a to k_b at epoch_b."""
        epoch_a, epoch_b, k_a, k_b = self.rollout_schedule
        epoch = env_steps / 1000.0
        if epoch <= epoch_a or epoch_b <= epoch_a:
            k = k_a if epoch <= epoch_a else k_b
        else:
            frac = min((epoch - epoch_a) / (epoch_b - epoch_a), 1.0)
            k = k_a + frac * (k_b - k_a)
        return max(1, int(k))


def parse_assignments(assignments) -> tuple[dict, dict]:
    """``name=value`` strings as (field changes, extra entries); values parse as JSON or stay text.
    Types and ranges are checked where the config is made (``TrainConfig.__post_init__``)."""
    known = {f.name for f in fields(TrainConfig)}
    changes, extra = {}, {}
    for item in assignments:
        name, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects name=value, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if name.startswith("extra."):
            extra[name[len("extra.") :]] = value
        elif name in known and name != "extra":
            changes[name] = value
        else:
            raise ConfigError(
                f"unknown config field {name!r}; known fields: {sorted(known - {'extra'})} (or extra.KEY)"
            )
    return changes, extra


class ExtraSettings:
    """Base of each preset's frozen settings dataclass, parsed from ``TrainConfig.extra``.

    Subclasses are ``@dataclass(frozen=True)`` with documented, annotated fields (types, ``Literal``
    choices and ``Range`` bounds of :mod:`torchrl_vmbpo.training.validation`, checked here for every
    field) and set ``algorithm`` (the name used in error messages); unknown keys are refused by name.
    A subclass with checks across fields overrides :meth:`check` (calling ``super().check()`` first).
    """

    algorithm: ClassVar[str] = "algorithm"

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        check_fields(self, prefix="extra.")

    @classmethod
    def from_extra(cls, extra: dict | ExtraSettings):
        """The settings from a dict of entries (unknown names refused), or ``extra`` itself if it
        already is this class's instance."""
        if isinstance(extra, cls):
            return extra
        if isinstance(extra, ExtraSettings):
            raise ConfigError(f"extra holds {type(extra).__name__}, but {cls.algorithm} takes {cls.__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(extra) - known)
        if unknown:
            raise ConfigError(
                f"unknown {cls.algorithm} setting(s) {unknown}; known: {sorted(known) or 'none'} "
                "(set as extra.NAME=VALUE)"
            )
        return cls(**extra)

    def to_json(self) -> dict:
        """Every setting, defaults included, as JSON values (what summary.json records as ``settings``)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


_SETTINGS: dict[str, type[ExtraSettings]] = {}


def register_settings(algo: str, settings: type[ExtraSettings]) -> None:
    """Declare ``algo`` and the settings class its ``extra`` entries are checked against
    (``torchrl_vmbpo.algorithms.presets`` registers every preset)."""
    _SETTINGS[algo] = settings


def settings_class(algo: str) -> type[ExtraSettings]:
    """The settings class registered for ``algo``; ConfigError naming the known ones otherwise."""
    if algo not in _SETTINGS:
        raise ConfigError(f"unknown algorithm {algo!r}; available: {sorted(_SETTINGS)}")
    return _SETTINGS[algo]
