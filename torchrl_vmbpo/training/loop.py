"""The ONE training loop over real env steps, shared by every algorithm.

Per collector batch of real steps:
    collect -> [fit model (+ agent hook) -> imagine]   every ``model_retrain_every`` steps, model-based only
                                                        (no imagination when ``rollouts_per_step == 0``)
            -> update x (utd * steps)                   (target updates happen inside ``agent.update``)
            -> evaluate                                  every ``eval_every`` steps and at the end
            -> checkpoint (resumable)                    every ``checkpoint_every`` steps and at the end
            -> stop on SIGINT / SIGTERM                  after a checkpoint at the current step
"""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDict
from torchrl.collectors import Collector
from torchrl.envs import EnvBase
from tqdm.auto import tqdm

from torchrl_vmbpo.data.buffers import TRANSITION_KEYS, make_buffer
from torchrl_vmbpo.errors import ConfigError, RunInterrupted
from torchrl_vmbpo.objectives.functional import assert_finite
from torchrl_vmbpo.training.agent import Agent
from torchrl_vmbpo.training.checkpoint import plain_rng_states, save_checkpoint
from torchrl_vmbpo.training.config import ExtraSettings, TrainConfig
from torchrl_vmbpo.training.evaluate import evaluate
from torchrl_vmbpo.training.imagine import imagine
from torchrl_vmbpo.training.interrupts import stop_on_signals
from torchrl_vmbpo.training.loggers import make_logger
from torchrl_vmbpo.training.model_fit import fit_dynamics
from torchrl_vmbpo.training.results import (
    MetricsCSV,
    atomic_write_text,
    git_commit,
    machine_info,
    plot_learning_curve,
    write_summary,
)


class _Timer:
    """Wall seconds per phase (collect, model_fit, imagine, update, evaluate)."""

    def __init__(self):
        self.seconds = defaultdict(float)

    def __call__(self, phase: str):
        timer = self

        class _Section:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timer.seconds[phase] += time.perf_counter() - self.t0

        return _Section()


def _model_buffer_capacity(cfg: TrainConfig, horizon: int) -> int:
    # MBPO: room for `retain_epochs` epochs of imagined data at the current rollout length.
    per_fit = cfg.rollouts_per_step * cfg.model_retrain_every * horizon
    return max(per_fit, cfg.rollouts_per_step * 1000 * horizon * cfg.model_retain_epochs)


def train(
    cfg: TrainConfig,
    agent: Agent,
    env: EnvBase,
    eval_env: EnvBase,
    out_dir: str | Path,
    *,
    max_episode_steps: int,
    progress: bool = True,
    resume: dict | None = None,
    run_id: str = "",
) -> dict:
    """Train ``agent`` on ``env`` for ``cfg.steps`` real steps; write metrics, summary, plot, checkpoint.

    Seeding happens before this call (``torchrl_vmbpo.algorithms.run``), once. ``resume`` is the
    ``loop_state`` of a checkpoint whose agent and optimizers are already restored
    (:func:`torchrl_vmbpo.algorithms.run.resume`): the loop continues from that env step with its
    real data, counters, RNG states and curve. What it does not restore, by design: the real env's
    episode (a fresh one starts), the model buffer (the first step refits q_d and imagines anew).

    ``run_id`` (the folder's ``run.json``) goes into every row of metrics.csv, ``logs/run_id``, the
    checkpoint and the summary. SIGINT or SIGTERM stops the run after the current collector batch with
    a checkpoint at that step (whatever ``cfg.checkpoint`` says) and raises :class:`RunInterrupted`.
    """
    with stop_on_signals() as stop:
        return _train(cfg, agent, env, eval_env, Path(out_dir), max_episode_steps=max_episode_steps,
                      progress=progress, resume=resume, run_id=run_id, stop=stop)


def _train(cfg, agent, env, eval_env, out: Path, *, max_episode_steps, progress, resume, run_id, stop) -> dict:
    commit = git_commit()  # the code this run imported, before anyone can commit during the run
    state = resume or {}
    timer = _Timer()
    timer.seconds.update(state.get("phase_seconds", {}))
    env_steps = state.get("env_steps", 0)
    if env_steps >= cfg.steps:
        raise ConfigError(f"the run already has {env_steps} env steps; resume with more steps (--steps > {env_steps})")
    if resume is not None:
        _truncate_scalars(out / "logs", env_steps)  # rows a killed run logged after its checkpoint
    logger = make_logger(cfg, out)  # TorchRL's CSV logger unless cfg.logger says otherwise
    (out / "logs").mkdir(exist_ok=True)
    atomic_write_text(out / "logs" / "run_id", run_id + "\n")  # which run the scalar logs belong to
    curve = MetricsCSV(out / "metrics.csv", rows=state.get("curve", []), run_id=run_id)
    real_buffer = make_buffer(cfg.buffer_size)
    if state.get("real_data") is not None:
        real_buffer.extend(_tensordict(state["real_data"]))
    model_buffer = None
    model_horizon = 0
    collector = Collector(
        env,
        agent.policy,
        frames_per_batch=cfg.collect_steps,
        total_frames=cfg.steps - env_steps,
        init_random_frames=max(0, cfg.init_random_steps - env_steps),
        trust_policy=True,
    )
    start = time.perf_counter() - state.get("wall_seconds", 0.0)
    updates, updates_owed = state.get("updates", 0), state.get("updates_owed", 0.0)
    last_fit = None  # a resumed run refits q_d at its first learning step (the model buffer is not saved)
    next_eval, next_log = state.get("next_eval", 0), state.get("next_log", cfg.log_every)
    next_checkpoint = state.get("next_checkpoint", cfg.checkpoint_every)
    train_metrics: dict[str, float] = dict(state.get("train_metrics", {}))
    best = state.get("best", -math.inf)
    history = {"commits": state.get("commits", []) + [commit], "resumed_at": state.get("resumed_at", [])}
    if resume is not None:
        history["resumed_at"] = history["resumed_at"] + [env_steps]
        _set_rng_states(state["rng"])
    bar = tqdm(total=cfg.steps, initial=env_steps, disable=not progress, unit="step", dynamic_ncols=True,
               desc=f"{cfg.algo} {cfg.env}")

    def loop_state() -> dict:
        return {
            "env_steps": env_steps, "updates": updates, "updates_owed": updates_owed, "next_eval": next_eval,
            "next_log": next_log, "next_checkpoint": next_checkpoint, "best": best,
            "train_metrics": train_metrics, "wall_seconds": time.perf_counter() - start,
            "phase_seconds": dict(timer.seconds),
            "curve": [{k: v for k, v in row.items() if k != "run_id"} for row in curve.rows],
            # clone: real_buffer[:] is a view, and torch.save writes a view's whole storage (all
            # buffer_size rows: 128 MB for a 1e6 Hopper buffer holding 5,000 transitions). A plain
            # dict of tensors: checkpoints load with weights_only=True.
            "real_data": real_buffer[:].clone().to_dict() if len(real_buffer) else None,
            "rng": plain_rng_states(_rng_states()), **history,
        }

    def write_checkpoint():
        with timer("checkpoint"):
            save_checkpoint(out / "checkpoint.pt", agent, config=cfg.to_dict(), env_steps=env_steps,
                            loop_state=loop_state(), run_id=run_id)

    def run_eval():
        nonlocal best
        with timer("evaluate"):
            mean, std = evaluate(eval_env, agent.policy, episodes=cfg.eval_episodes, max_steps=max_episode_steps)
        best = max(best, mean)
        row = {
            "env_steps": env_steps,
            "eval_return_mean": mean,
            "eval_return_std": std,
            "wall_seconds": round(time.perf_counter() - start, 3),
            "updates": updates,
        }
        curve.append(row)
        logger.log_scalar("eval_return_mean", mean, step=env_steps)
        logger.log_scalar("eval_return_std", std, step=env_steps)
        bar.set_postfix(eval=f"{mean:.1f}", updates=updates)

    collect_iter = iter(collector)
    while True:
        with timer("collect"):
            try:
                batch = next(collect_iter)
            except StopIteration:
                break
            flat = batch.reshape(-1)
            assert_finite(flat, TRANSITION_KEYS, f"real transitions from {cfg.env}")
            real_buffer.extend(flat.select(*TRANSITION_KEYS))
        n_new = flat.shape[0]
        env_steps += n_new
        bar.update(n_new)
        learning = env_steps >= cfg.init_random_steps

        if agent.model_based and learning and (last_fit is None or env_steps - last_fit >= cfg.model_retrain_every):
            last_fit = env_steps
            with timer("model_fit"):
                fit = fit_dynamics(
                    agent.dynamics,
                    agent.dynamics_loss(),
                    agent.model_optimizer,
                    real_buffer[:],
                    batch_size=cfg.model_batch_size,
                    holdout=cfg.model_holdout,
                    max_holdout=cfg.model_max_holdout,
                    patience=cfg.model_patience,
                    max_epochs=cfg.model_max_epochs,
                )
                fit.update(agent.after_model_fit(real_buffer))
            if cfg.rollouts_per_step > 0:  # 0: the model is used without imagined data (PETS, STEVE)
                horizon = cfg.rollout_length(env_steps)
                if model_buffer is None or horizon != model_horizon:
                    # Rebuild at the capacity the new rollout length needs, keeping the newest data (MBPO).
                    new_buffer = make_buffer(_model_buffer_capacity(cfg, horizon))
                    if model_buffer is not None and len(model_buffer):
                        keep = min(len(model_buffer), new_buffer._storage.max_size)
                        new_buffer.extend(model_buffer[:][-keep:])
                    model_buffer, model_horizon = new_buffer, horizon
                with timer("imagine"):
                    fit.update(
                        imagine(
                            agent.dynamics,
                            env,
                            real_buffer,
                            model_buffer,
                            agent.rollout_policy,
                            num_rollouts=cfg.rollouts_per_step * cfg.model_retrain_every,
                            horizon=horizon,
                            termination_fn=agent.termination_fn,
                            reward_fn=agent.reward_fn,
                        )
                    )
                fit["rollout_length"] = float(horizon)
            for key, value in fit.items():
                logger.log_scalar(key, value, step=env_steps)

        ready = learning and (not agent.model_based or last_fit is not None) and len(real_buffer) >= cfg.batch_size
        if ready:
            updates_owed += n_new * cfg.utd
            metrics = None  # utd < 1: most batches owe no update yet
            with timer("update"):
                while updates_owed >= 1.0:
                    sample = agent.sample_batch(
                        real_buffer, model_buffer, cfg.batch_size, cfg.real_ratio if agent.model_based else 1.0
                    )
                    metrics = agent.update(sample)
                    updates += 1
                    updates_owed -= 1.0
                if metrics is not None:
                    train_metrics = {k: float(v) for k, v in metrics.items()}

        if env_steps >= next_log and train_metrics:
            next_log += cfg.log_every
            for key, value in train_metrics.items():
                if not math.isfinite(value):
                    raise FloatingPointError(f"training metric {key} became {value} at env step {env_steps}")
                logger.log_scalar(key, value, step=env_steps)
        if env_steps >= next_eval:
            next_eval += cfg.eval_every
            run_eval()
        if cfg.checkpoint and cfg.checkpoint_every and env_steps >= next_checkpoint and env_steps < cfg.steps:
            while next_checkpoint <= env_steps:
                next_checkpoint += cfg.checkpoint_every
            write_checkpoint()
        if stop.requested and env_steps < cfg.steps:
            write_checkpoint()
            bar.close()
            collector.shutdown()
            raise RunInterrupted(stop.name, env_steps, str(out), stop.exit_code)
    if not curve.rows or curve.rows[-1]["env_steps"] != env_steps:
        run_eval()
    bar.close()
    collector.shutdown()

    wall = time.perf_counter() - start
    if cfg.checkpoint:  # with the loop state: `vmbpo train --resume --steps MORE` extends the run
        write_checkpoint()
    plot_learning_curve(curve.rows, out / "learning_curve.png", f"{cfg.algo} on {cfg.env} (seed {cfg.seed})")
    update_seconds = timer.seconds.get("update", 0.0)
    summary = {
        "algo": cfg.algo,
        "env": cfg.env,
        "seed": cfg.seed,
        "env_steps": env_steps,
        "run_id": run_id,
        "final_return": curve.rows[-1]["eval_return_mean"],
        "best_return": best,
        "wall_seconds": round(wall, 2),
        "wall_seconds_per_1000_steps": round(1000.0 * wall / max(env_steps, 1), 2),
        "updates": updates,
        "updates_per_second": round(updates / update_seconds, 2) if update_seconds > 0 else None,
        "phase_seconds": {k: round(v, 2) for k, v in sorted(timer.seconds.items())},
        "final_train_metrics": train_metrics,
        **agent.run_statistics(),
        "commit": commit,
        **({"resumed_at": history["resumed_at"], "commits": history["commits"]} if history["resumed_at"] else {}),
        "machine": machine_info(cfg.num_threads, device=cfg.extra.get("device")),  # names a GPU used
        "config": cfg.to_dict(),
        # Every algorithm setting as resolved (defaults included): config.extra holds only what was set,
        # and defaults change between commits.
        "settings": _resolved_settings(agent),
    }
    write_summary(out / "summary.json", summary)
    return summary


def _resolved_settings(agent) -> dict:
    """The agent's settings dataclass as JSON values ({} for presets without one)."""
    settings = getattr(agent, "settings", None)
    return settings.to_json() if isinstance(settings, ExtraSettings) else {}


def _rng_states() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    kind, key, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(key, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _tensordict(data: dict) -> TensorDict:
    """The real transitions of a checkpoint (a nested dict of tensors) as a TensorDict."""
    leaf = next(v for v in TensorDict(data, batch_size=[]).values(True, True))
    return TensorDict(data, batch_size=[leaf.shape[0]])


def _truncate_scalars(log_dir: Path, env_steps: int) -> None:
    """Drop the scalar rows logged after ``env_steps`` (TorchRL's CSV logger writes ``step,value``)."""
    for path in (log_dir / "scalars").glob("*.csv"):
        rows = path.read_text().splitlines(keepends=True)
        kept = [row for row in rows if not row.strip() or float(row.split(",", 1)[0]) <= env_steps]
        if len(kept) != len(rows):
            path.write_text("".join(kept))
