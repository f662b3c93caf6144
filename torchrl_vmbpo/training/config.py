"""The one configuration record of a training run: a frozen, validated dataclass.

Every field is documented here; presets (``torchrl_vmbpo.algorithms``) change defaults per
(algorithm, env), and the command line overrides any field with ``--set name=value``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import ClassVar


@dataclass(frozen=True)
class TrainConfig:
    # --- run ---
    algo: str = "mbpo"  #: preset name (see ``torchrl_vmbpo.algorithms.PRESETS``)
    env: str = "Pendulum-v1"  #: Gymnasium env id (continuous Box actions)
    seed: int = 0  #: the one seeding point: torch, numpy, python, train env (eval env: seed + 10_000)
    steps: int = 3000  #: real env steps to train for
    num_threads: int = 1  #: torch intra-op threads; 1 is fastest for these small nets on 2 cores
    # --- evaluation and logging ---
    eval_every: int = 500  #: env steps between deterministic evaluations (also at the end)
    eval_episodes: int = 5  #: episodes per evaluation, on a separate env
    log_every: int = 250  #: env steps between training-metric log rows
    checkpoint: bool = True  #: write DIR/checkpoint.pt at the end of the run (``vmbpo train --resume`` extends it)
    checkpoint_every: int = 5000
    """Env steps between checkpoints written DURING the run (0: only at the end), each replacing the
    last: a killed run resumes from the latest with ``vmbpo train --resume --out DIR``."""
    # --- real data ---
    init_random_steps: int = 1000  #: uniformly random actions before the policy acts
    collect_steps: int = 1  #: real steps per collector batch (updates follow each batch)
    buffer_size: int = 1_000_000  #: real replay buffer capacity (transitions)
    # --- agent updates (SAC-style actor-critic) ---
    batch_size: int = 256  #: transitions per gradient update
    utd: float = 1.0  #: gradient updates per real env step
    gamma: float = 0.99  #: discount
    tau: float = 0.005  #: Polyak rate of target networks
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4  #: entropy-temperature learning rate
    alpha_init: float = 1.0  #: initial entropy temperature
    target_entropy: float | None = None  #: None = -action_dim (SAC's "auto")
    hidden: tuple[int, ...] = (256, 256)  #: actor / critic hidden widths
    max_grad_norm: float | None = None  #: gradient-norm clip (None: no clipping)
    # --- learned dynamics (model-based presets) ---
    num_members: int = 7  #: ensemble size
    num_elites: int = 5  #: members used in rollouts, chosen by holdout loss
    model_hidden: tuple[int, ...] = (200, 200, 200, 200)
    model_lr: float = 1e-3
    model_weight_decay: float = 5e-5  #: L2 on ensemble weights (MBPO uses 2.5e-5 ... 1e-4 per layer)
    model_batch_size: int = 256
    model_holdout: float = 0.2  #: holdout fraction (capped at model_max_holdout)
    model_max_holdout: int = 5000
    model_patience: int = 5  #: epochs without > 1% holdout improvement before stopping
    model_max_epochs: int = 200  #: cap on epochs per fit (bounds the first fit's cost)
    model_retrain_every: int = 250  #: env steps between model fits (and imagination phases)
    rollouts_per_step: int = 400  #: model rollouts started per real env step (0: no imagination, as PETS, STEVE)
    rollout_schedule: tuple[float, float, float, float] = (20, 100, 1, 1)
    """[epoch_a, epoch_b, k_a, k_b]: rollout length k, linear in epoch (1 epoch = 1000 env steps)."""
    model_retain_epochs: int = 1  #: model-buffer capacity in epochs of imagined data
    real_ratio: float = 0.05  #: fraction of each update batch drawn from real data
    # --- algorithm-specific settings, read by the preset that uses them ---
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        positive = ["steps", "eval_every", "eval_episodes", "log_every", "collect_steps", "buffer_size", "batch_size",
                    "num_members", "num_elites", "model_batch_size", "model_max_epochs", "model_retrain_every",
                    "num_threads", "model_retain_epochs", "model_max_holdout"]
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"config field {name} must be >= 1, got {getattr(self, name)}")
        for name in ["init_random_steps", "model_patience", "utd", "rollouts_per_step", "checkpoint_every"]:
            if getattr(self, name) < 0:
                raise ValueError(f"config field {name} must be >= 0, got {getattr(self, name)}")
        for name in ["gamma", "tau", "real_ratio", "model_holdout"]:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"config field {name} must be in [0, 1], got {getattr(self, name)}")
        if self.num_elites > self.num_members:
            raise ValueError(f"num_elites ({self.num_elites}) must be <= num_members ({self.num_members})")
        if len(self.rollout_schedule) != 4:
            raise ValueError(f"rollout_schedule must be [epoch_a, epoch_b, k_a, k_b], got {self.rollout_schedule}")

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def with_overrides(self, assignments: list[str]) -> "TrainConfig":
        """Apply ``name=value`` strings; values parse as JSON (``hidden=[64,64]``) or fall back to text.

        ``extra.KEY=value`` sets an algorithm-specific entry.
        """
        known = {f.name: f for f in fields(self)}
        changes, extra = {}, dict(self.extra)
        for item in assignments:
            name, sep, raw = item.partition("=")
            if not sep:
                raise ValueError(f"--set expects name=value, got {item!r}")
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            if name.startswith("extra."):
                extra[name[len("extra."):]] = value
                continue
            if name not in known:
                raise ValueError(f"unknown config field {name!r}; known fields: {sorted(known)} (or extra.KEY)")
            if isinstance(value, list):
                value = tuple(value)
            changes[name] = value
        return self.replace(**changes, extra=extra)

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


class ExtraSettings:
    """Base of each preset's frozen settings dataclass, parsed from ``TrainConfig.extra``.

    Subclasses are ``@dataclass(frozen=True)`` with documented fields and set ``algorithm`` (the name
    used in error messages); unknown keys are refused by name.
    """

    algorithm: ClassVar[str] = "algorithm"

    @classmethod
    def from_extra(cls, extra: dict):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(extra) - known)
        if unknown:
            raise ValueError(
                f"unknown {cls.algorithm} setting(s) {unknown}; known: {sorted(known)} (set as extra.NAME=VALUE)"
            )
        return cls(**extra)

    def to_json(self) -> dict:
        """Every setting, defaults included, as JSON values (what summary.json records as ``settings``)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))
