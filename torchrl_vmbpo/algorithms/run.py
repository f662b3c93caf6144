"""One run: seed, make envs, build the preset's agent, and hand it to the shared loop."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torchrl.envs import EnvBase

from torchrl_vmbpo.algorithms.presets import build_agent
from torchrl_vmbpo.envs.real import env_spec, make_env, wrap_env
from torchrl_vmbpo.envs.termination import TerminationFn
from torchrl_vmbpo.envs.world_model import RewardFn
from torchrl_vmbpo.errors import CheckpointError, CheckpointNotFound, ConfigError, RunFolderError
from torchrl_vmbpo.training.checkpoint import read_checkpoint, restore_checkpoint
from torchrl_vmbpo.training.config import TrainConfig, parse_assignments, settings_class
from torchrl_vmbpo.training.loop import train
from torchrl_vmbpo.training.loop_state import refuse_finished_run
from torchrl_vmbpo.training.results import (
    RUN_MANIFEST,
    new_run_id,
    prepare_run_folder,
    read_run_id,
    write_run_manifest,
)
from torchrl_vmbpo.training.seeding import seed_everything


def run(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    env_fns: EnvSource | None = None,
) -> dict:
    """Train ``cfg.algo`` on ``cfg.env``; returns the summary also written to ``out_dir/summary.json``.

    Everything is checked (config, env, agent) before the run folder is touched; a folder that holds a
    run is refused unless ``overwrite``, which removes that run's files first (``prepare_run_folder``).
    ``env_fns`` supplies what the library may not know of the env (its termination and reward
    functions, or a TorchRL env factory): :class:`EnvSource`.

    Raises:
        ConfigError, EnvError, RunFolderError: bad input, before anything is written.
        RunInterrupted: SIGINT / SIGTERM stopped the run after a checkpoint (resumable).
    """
    out = Path(out_dir)
    settings_class(cfg.algo).from_extra(cfg.extra)  # a TrainConfig made before the presets were registered
    session = _Session.open(cfg, env_fns or EnvSource())
    try:
        prepare_run_folder(out, overwrite=overwrite)
        run_id = new_run_id()
        write_run_manifest(out, run_id, cfg.to_dict())
        return session.train(cfg, out, progress=progress, run_id=run_id)
    finally:
        session.close()


RESUME_SETTINGS = ("num_threads", "checkpoint_every", "device", "compile", "extra.cuda_graph", "divergence")
"""The settings a resume may change: where and how fast the run computes, not what it computes (a run
started on a CPU can go on on a GPU, and back), and whether a diverged critic stops it (a run stopped by
``divergence=stop`` can be continued with ``divergence=warn``). Any other change would make one record of
two configs."""


class ResumeDefaultsWarning(UserWarning):
    """A resumed checkpoint predates settings this version has: the run goes on with their defaults."""


def resume(
    out_dir: str | Path,
    *,
    steps: int | None = None,
    progress: bool = True,
    overrides: list[str] = (),
    env_fns: EnvSource | None = None,
) -> dict:
    """Continue the run in ``out_dir`` from its ``checkpoint.pt`` (written every ``checkpoint_every`` env
    steps, at the end and on SIGINT / SIGTERM), with the config it was started with; ``steps`` raises its
    length (extends a finished run). Its metrics.csv and logs continue from the checkpoint's env step.

    The checkpoint must belong to the folder's current run (``run.json``); one left by another run is
    refused, naming both. ``overrides`` (``name=value`` as in :meth:`TrainConfig.with_overrides`) may
    change only :data:`RESUME_SETTINGS`; restating any other setting at its run's value is allowed (so a
    sweep can pass the same ``--set`` list to a fresh and a resumed run), changing it is a ConfigError.
    ``env_fns``: as for :func:`run` (give the same as the run started with)."""
    out = Path(out_dir)
    folder_run = read_run_id(out)
    try:
        payload = read_checkpoint(out / "checkpoint.pt")
    except CheckpointNotFound:
        if folder_run is None:
            raise
        raise CheckpointNotFound(
            f"no checkpoint at {out / 'checkpoint.pt'}: run {folder_run} stopped before its first checkpoint "
            "(checkpoint_every) or ran with checkpoint=false; start it again with --overwrite"
        ) from None
    if payload.get("run_id") != folder_run:
        raise RunFolderError(
            f"{out / 'checkpoint.pt'} belongs to run {payload.get('run_id')}, but {out} holds run {folder_run} "
            f"({RUN_MANIFEST}); refusing to mix two runs in one folder"
        )
    logs_run = out / "logs" / "run_id"
    if logs_run.is_file() and logs_run.read_text().strip() != (folder_run or ""):
        raise RunFolderError(f"{logs_run} names run {logs_run.read_text().strip()}, but {out} holds run {folder_run}")
    if payload.get("loop_state") is None:
        raise CheckpointError(
            f"{out / 'checkpoint.pt'} holds no loop state (written before resuming existed); "
            "it can be loaded with load_checkpoint but not resumed"
        )
    saved = _current_fields(payload["config"])
    try:
        cfg = TrainConfig(**saved)
    except TypeError as err:  # a field this version does not know
        raise CheckpointError(
            f"{out / 'checkpoint.pt'}: its config does not fit this version's TrainConfig ({err})"
        ) from None
    # Settings added to the package after the checkpoint was written: the run never chose them, so a
    # resume may set them, and is told which defaults it takes otherwise (a new default could change
    # what the rest of the run computes).
    added = _added_settings(saved, cfg)
    if overrides:
        changed = _changed_settings(cfg, new := cfg.with_overrides(list(overrides)))
        if refused := [name for name in changed if name not in RESUME_SETTINGS and name not in added]:
            raise ConfigError(
                f"--resume cannot change {', '.join(f'{n} ({changed[n]})' for n in refused)}: "
                f"the run was started with it; a resume may change only {', '.join(RESUME_SETTINGS)}"
                + (f" and the settings its checkpoint predates ({', '.join(added)})" if added else "")
            )
        cfg = new
    changes, extra = parse_assignments(overrides)
    chosen = _flat_settings({**changes, "extra": extra})
    if taken := {name: value for name, value in added.items() if name not in chosen}:
        warnings.warn(
            f"{out / 'checkpoint.pt'} predates setting(s) {', '.join(taken)}: the run goes on with this "
            f"version's default(s) {', '.join(f'{n}={v!r}' for n, v in taken.items())} "
            "(--set NAME=VALUE with --resume chooses another)",
            ResumeDefaultsWarning,
            stacklevel=2,
        )
    if steps is not None:
        cfg = cfg.replace(steps=steps)
    refuse_finished_run(payload["loop_state"]["env_steps"], cfg.steps)
    session = _Session.open(cfg, env_fns or EnvSource(), checkpoint=payload, source=out / "checkpoint.pt")
    try:
        return session.train(cfg, out, progress=progress, run_id=folder_run or "")
    finally:
        session.close()


def _current_fields(saved: dict) -> dict:
    """A checkpoint's config in this version's fields: PETS's ``extra.device`` and SAC/MBPO's
    ``extra.compile`` of earlier versions became ``TrainConfig.device`` and ``compile``."""
    saved = dict(saved)
    extra = dict(saved.get("extra") or {})
    if "device" in extra:
        saved.setdefault("device", extra.pop("device") or "cpu")
    if "compile" in extra:
        saved.setdefault("compile", "on" if extra.pop("compile") else "off")
    saved["extra"] = extra
    saved.setdefault("device", "cpu")  # runs before the setting computed on the CPU
    return saved


def _flat_settings(fields: dict) -> dict:
    """A config dict's fields by their ``--set`` names (``extra.KEY`` for extra's entries)."""
    fields = dict(fields)
    extra = fields.pop("extra", None) or {}
    return {**fields, **{f"extra.{k}": v for k, v in extra.items()}}


def _changed_settings(old: TrainConfig, new: TrainConfig) -> dict[str, str]:
    """``{name: "a -> b"}`` for each field (``extra.KEY`` for extra's entries) that differs."""
    a, b = _flat_settings(old.to_dict()), _flat_settings(new.to_dict())
    return {k: f"{a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _added_settings(saved: dict, cfg: TrainConfig) -> dict:
    """``{name: default}`` for each setting of ``cfg`` that the saved config does not name."""
    known = _flat_settings(saved)
    return {name: value for name, value in sorted(_flat_settings(cfg.to_dict()).items()) if name not in known}


@dataclass(frozen=True)
class EnvSource:
    """How a run gets its env and what it may not know of it.

    ``termination_fn`` / ``reward_fn``: for a model-based algorithm on an env without known ones
    (else those registered with ``register_env_functions``, else the library's). ``make_env``: a
    factory of a TorchRL env (one flat ``"observation"``, a bounded continuous action spec), called
    for the training and the evaluation env, instead of ``gymnasium.make(cfg.env)``; it needs
    ``max_episode_steps``.
    """

    termination_fn: TerminationFn | None = None
    reward_fn: RewardFn | None = None
    make_env: Callable[[], EnvBase] | None = None
    max_episode_steps: int | None = None

    def __post_init__(self):
        if self.make_env is not None and (self.max_episode_steps is None or self.max_episode_steps < 1):
            raise ConfigError("a TorchRL env factory (make_env) needs max_episode_steps >= 1")

    def make(self, env_id: str) -> EnvBase:
        if self.make_env is None:
            return make_env(env_id)
        return wrap_env(self.make_env(), name=env_id, max_episode_steps=self.max_episode_steps)

    def episode_steps(self, env_id: str) -> int:
        if self.max_episode_steps is not None:
            return self.max_episode_steps
        return env_spec(env_id).max_episode_steps or 1000


class _Session:
    """The envs and the agent of one run, made (and a checkpoint restored) before any file is written."""

    def __init__(self, env, eval_env, agent, checkpoint, max_episode_steps):
        self.env, self.eval_env, self.agent, self.checkpoint = env, eval_env, agent, checkpoint
        self.max_episode_steps = max_episode_steps

    @classmethod
    def open(
        cls, cfg: TrainConfig, source_fns: EnvSource, *, checkpoint: dict | None = None, source: Path | None = None
    ) -> _Session:
        """The one seeding point, the envs, the agent (restored from ``checkpoint`` when resuming)."""
        env = source_fns.make(cfg.env)  # validates the env id and spaces
        eval_env = None
        try:
            torch.set_num_threads(cfg.num_threads)
            seed_everything(cfg.seed)  # a resumed loop then restores the checkpoint's RNG states
            # A resumed run's envs are seeded afresh from its env step: a new episode, not the first one's again.
            offset = 0 if checkpoint is None else checkpoint["loop_state"]["env_steps"]
            env.set_seed(cfg.seed + offset)
            eval_env = source_fns.make(cfg.env)
            eval_env.set_seed(cfg.seed + 10_000 + offset)
            agent = build_agent(cfg, env, termination_fn=source_fns.termination_fn, reward_fn=source_fns.reward_fn)
            if checkpoint is not None:
                restore_checkpoint(checkpoint, agent, source=source)
        except BaseException:
            env.close()
            if eval_env is not None:
                eval_env.close()
            raise
        return cls(env, eval_env, agent, checkpoint, source_fns.episode_steps(cfg.env))

    def train(self, cfg: TrainConfig, out: Path, *, progress: bool, run_id: str) -> dict:
        return train(
            cfg,
            self.agent,
            self.env,
            self.eval_env,
            out,
            max_episode_steps=self.max_episode_steps,
            progress=progress,
            resume=None if self.checkpoint is None else self.checkpoint["loop_state"],
            run_id=run_id,
        )

    def close(self) -> None:
        self.env.close()
        self.eval_env.close()
