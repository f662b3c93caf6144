"""The ONE training loop over real env steps, shared by every algorithm.

Per collector batch of real steps (each phase a function of ``phases.py``; which ones run is the
agent's ``capabilities``, never a settings value):
    collect -> [fit model (+ agent hook) -> imagine]   every ``model_retrain_every`` steps, if the agent
                                                        fits a model (imagines, if it imagines)
            -> update x (utd * steps)                   if the agent updates (target updates inside ``agent.update``)
            -> evaluate                                  every ``eval_every`` steps and at the end
            -> checkpoint (resumable)                    every ``checkpoint_every`` steps and at the end
            -> stop on SIGINT / SIGTERM                  after a checkpoint at the current step
After each update batch the divergence guard (``training.divergence``) compares the critic with the
range the rewards allow: a warning and ``diverged`` in summary.json, or (``divergence="stop"``) a
checkpoint, summary.json and :class:`CriticDiverged`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from torchrl.collectors import Collector
from torchrl.envs import EnvBase
from tqdm.auto import tqdm

from torchrl_vmbpo.compat import tensordict_find_spec_cached
from torchrl_vmbpo.data.buffers import make_buffer
from torchrl_vmbpo.errors import ConfigError, CriticDiverged, RunInterrupted
from torchrl_vmbpo.training.agent import Agent
from torchrl_vmbpo.training.checkpoint import save_checkpoint
from torchrl_vmbpo.training.config import ExtraSettings, TrainConfig
from torchrl_vmbpo.training.device import on_device
from torchrl_vmbpo.training.divergence import DivergenceGuard, warn_divergence
from torchrl_vmbpo.training.interrupts import StopRequest, stop_on_signals
from torchrl_vmbpo.training.loggers import make_logger
from torchrl_vmbpo.training.loop_state import LoopState, refuse_finished_run, set_rng_states
from torchrl_vmbpo.training.phases import (
    ModelBuffer,
    PhaseTimer,
    collect,
    evaluate_policy,
    fit_model,
    imagine_rollouts,
    model_fit_due,
    run_updates,
)
from torchrl_vmbpo.training.results import (
    MetricsCSV,
    atomic_write_text,
    git_commit,
    machine_info,
    plot_learning_curve,
    write_summary,
)


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
    with stop_on_signals() as stop, tensordict_find_spec_cached():
        return _Loop(cfg, agent, env, eval_env, Path(out_dir), max_episode_steps, progress, resume, run_id).run(stop)


class _Loop:
    """One run of the loop: its buffers, logs and state, and :meth:`run`, which reads as its phases."""

    def __init__(self, cfg, agent, env, eval_env, out: Path, max_episode_steps, progress, resume, run_id):
        self.cfg, self.agent, self.env, self.eval_env, self.out = cfg, agent, env, eval_env, out
        self.max_episode_steps, self.run_id = max_episode_steps, run_id
        self.caps = agent.capabilities
        if self.caps.imagination and cfg.rollouts_per_step < 1:
            raise ConfigError(
                f"{cfg.algo} imagines model rollouts: rollouts_per_step must be >= 1, got {cfg.rollouts_per_step}"
            )
        self.commit = git_commit()  # the code this run imported, before anyone can commit during the run
        self.real_buffer = make_buffer(cfg.buffer_size, agent.device)
        if resume is None:
            self.state = LoopState.fresh(cfg)
        else:
            self.state, real_data, rng = LoopState.from_checkpoint(resume)
            refuse_finished_run(self.state.env_steps, cfg.steps)
            if real_data is not None:
                self.real_buffer.extend(real_data)
            self.state.resumed_at.append(self.state.env_steps)
            _truncate_scalars(out / "logs", self.state.env_steps)  # rows a killed run logged after its checkpoint
            set_rng_states(rng)
        self.state.commits.append(self.commit)
        self.timer = PhaseTimer(self.state.phase_seconds)
        self.model = ModelBuffer(cfg, agent.device)
        self.guard = DivergenceGuard(  # r_max from D: a resumed run's real data included
            agent.critic_scale(),
            gamma=cfg.gamma,
            factor=cfg.divergence_factor,
            real_data=self.real_buffer[:] if len(self.real_buffer) else None,
        )
        self.last_fit: int | None = None  # a resumed run refits q_d at its first learning step
        self.logger = make_logger(cfg, out)  # TorchRL's CSV logger unless cfg.logger says otherwise
        (out / "logs").mkdir(exist_ok=True)
        atomic_write_text(out / "logs" / "run_id", run_id + "\n")  # which run the scalar logs belong to
        self.curve = MetricsCSV(out / "metrics.csv", rows=self.state.curve, run_id=run_id)
        self.start = time.perf_counter() - self.state.wall_seconds
        self.bar = tqdm(
            total=cfg.steps,
            initial=self.state.env_steps,
            disable=not progress,
            unit="step",
            dynamic_ncols=True,
            desc=f"{cfg.algo} {cfg.env}",
        )

    def run(self, stop: StopRequest) -> dict:
        cfg, caps, state = self.cfg, self.caps, self.state
        collector = Collector(
            self.env,
            on_device(self.agent.policy, self.agent.device),  # the env on the CPU, the policy on the device
            frames_per_batch=cfg.collect_steps,
            total_frames=cfg.steps - state.env_steps,
            init_random_frames=max(0, cfg.init_random_steps - state.env_steps),
            trust_policy=True,
        )
        try:
            for batch in _timed(collector, self.timer, "collect"):
                with self.timer("collect"):
                    new_steps = collect(batch, self.real_buffer, state, cfg.env)
                    self.guard.observe(batch)
                self.bar.update(new_steps)
                if caps.model_fit and model_fit_due(cfg, state.env_steps, self.last_fit):
                    self.fit_model_and_imagine()
                if caps.updates and self.ready_to_update():
                    with self.timer("update"):
                        metrics = run_updates(cfg, self.agent, self.real_buffer, self.model.buffer, state, new_steps)
                    state.train_metrics = metrics if metrics is not None else state.train_metrics
                    if metrics is not None:
                        self.check_divergence()
                self.log_train_metrics()
                if state.env_steps >= state.next_eval:
                    state.next_eval += cfg.eval_every
                    self.evaluate()
                if self.checkpoint_due():
                    self.write_checkpoint()
                if stop.requested and state.env_steps < cfg.steps:
                    self.write_checkpoint()
                    raise RunInterrupted(stop.name, state.env_steps, str(self.out), stop.exit_code)
            if not self.curve.rows or self.curve.rows[-1]["env_steps"] != state.env_steps:
                self.evaluate()
        finally:
            self.bar.close()
            collector.shutdown()
        if cfg.checkpoint:  # with the loop state: `vmbpo train --resume --steps MORE` extends the run
            self.write_checkpoint()
        return self.finish()

    # --- phases --------------------------------------------------------------------------------

    def fit_model_and_imagine(self) -> None:
        self.last_fit = self.state.env_steps
        with self.timer("model_fit"):
            metrics = fit_model(self.cfg, self.agent, self.real_buffer)
        if self.caps.imagination:
            with self.timer("imagine"):
                metrics.update(
                    imagine_rollouts(self.cfg, self.agent, self.env, self.real_buffer, self.model, self.state.env_steps)
                )
        for key, value in metrics.items():
            _check_finite("model-fit metric", key, value, self.state.env_steps)
            self.logger.log_scalar(key, value, step=self.state.env_steps)

    def ready_to_update(self) -> bool:
        """Past the random steps, a model fitted (if the agent fits one), a batch's worth of data in D."""
        state = self.state
        return (
            state.env_steps >= self.cfg.init_random_steps
            and (not self.caps.model_fit or self.last_fit is not None)
            and len(self.real_buffer) >= self.cfg.batch_size
        )

    def check_divergence(self) -> None:
        """The guard on the latest update's metrics (it adds ``critic_divergence_ratio`` to them)."""
        state, cfg = self.state, self.cfg
        found = self.guard.check(state.train_metrics, state.env_steps)
        if found is None:
            return
        if state.diverged is None:  # the first divergence is the record, and warned once
            state.diverged = found.to_json()
            if cfg.divergence == "warn":
                warn_divergence(found, cfg.divergence_factor)
        if cfg.divergence == "stop":
            if not self.curve.rows or self.curve.rows[-1]["env_steps"] != state.env_steps:
                self.evaluate()  # the summary's final return is the policy's at the divergence
            self.write_checkpoint()
            self.finish()
            raise CriticDiverged(found.message(cfg.divergence_factor), state.env_steps, str(self.out))

    def log_train_metrics(self) -> None:
        state = self.state
        if state.env_steps < state.next_log or not state.train_metrics:
            return
        state.next_log += self.cfg.log_every
        for key, value in state.train_metrics.items():
            _check_finite("training metric", key, value, state.env_steps)
            self.logger.log_scalar(key, value, step=state.env_steps)

    def evaluate(self) -> None:
        state = self.state
        with self.timer("evaluate"):
            mean, std, length = evaluate_policy(
                self.cfg, self.agent, self.eval_env, max_episode_steps=self.max_episode_steps
            )
        state.best = max(state.best, mean)
        row = {
            "env_steps": state.env_steps,
            "eval_return_mean": mean,
            "eval_return_std": std,
            "wall_seconds": round(time.perf_counter() - self.start, 3),
            "updates": state.updates,
        }
        self.curve.append(row)
        state.curve.append(row)
        self.logger.log_scalar("eval_return_mean", mean, step=state.env_steps)
        self.logger.log_scalar("eval_return_std", std, step=state.env_steps)
        self.logger.log_scalar("eval_episode_length", length, step=state.env_steps)
        self.bar.set_postfix(eval=f"{mean:.1f}", updates=state.updates)

    def checkpoint_due(self) -> bool:
        cfg, state = self.cfg, self.state
        if not (cfg.checkpoint and cfg.checkpoint_every and state.next_checkpoint <= state.env_steps < cfg.steps):
            return False
        while state.next_checkpoint <= state.env_steps:
            state.next_checkpoint += cfg.checkpoint_every
        return True

    def write_checkpoint(self) -> None:
        with self.timer("checkpoint"):
            self.state.wall_seconds = time.perf_counter() - self.start
            self.state.phase_seconds = dict(self.timer.seconds)
            save_checkpoint(
                self.out / "checkpoint.pt",
                self.agent,
                config=self.cfg.to_dict(),
                env_steps=self.state.env_steps,
                loop_state=self.state.to_checkpoint(self.real_buffer[:]),
                run_id=self.run_id,
            )

    def finish(self) -> dict:
        """The learning curve and summary.json."""
        cfg, state, out = self.cfg, self.state, self.out
        wall = time.perf_counter() - self.start
        plot_learning_curve(self.curve.rows, out / "learning_curve.png", f"{cfg.algo} on {cfg.env} (seed {cfg.seed})")
        update_seconds = self.timer.seconds.get("update", 0.0)
        summary = {
            "algo": cfg.algo,
            "env": cfg.env,
            "seed": cfg.seed,
            "env_steps": state.env_steps,
            "run_id": self.run_id,
            "final_return": self.curve.rows[-1]["eval_return_mean"],
            "best_return": state.best,
            "wall_seconds": round(wall, 2),
            "wall_seconds_per_1000_steps": round(1000.0 * wall / max(state.env_steps, 1), 2),
            "updates": state.updates,
            "updates_per_second": round(state.updates / update_seconds, 2) if update_seconds > 0 else None,
            "phase_seconds": {k: round(v, 2) for k, v in sorted(self.timer.seconds.items())},
            "final_train_metrics": state.train_metrics,
            "diverged": state.diverged,  # the guard's first record ({env_step, value, bound, ratio}) or None
            **self.agent.run_statistics(),
            "commit": self.commit,
            **({"resumed_at": state.resumed_at, "commits": state.commits} if state.resumed_at else {}),
            "device": self.caps.device,  # what cfg.device ("auto" by default) resolved to
            "compiled": {"updates": self.agent.compiled_update, "model_fit": self.agent.compile_model_fit},
            "machine": machine_info(cfg.num_threads, device=self.caps.device),  # names a GPU used
            "config": cfg.to_dict(),
            # Every algorithm setting as the agent resolved it (config.extra of older records held only
            # what was set, and defaults change between commits).
            "settings": _resolved_settings(self.agent),
        }
        write_summary(out / "summary.json", summary)
        return summary


def _check_finite(what: str, key: str, value, env_steps: int) -> None:
    """A NaN or inf in a logged value stops the run with a message naming it (FloatingPointError)."""
    if isinstance(value, (int, float)) and not math.isfinite(value):
        raise FloatingPointError(f"{what} {key} became {value} at env step {env_steps}")


def _timed(iterable, timer: PhaseTimer, phase: str):
    """Iterate, timing each ``next`` under ``phase`` (a collector steps the env inside ``next``)."""
    iterator = iter(iterable)
    while True:
        with timer(phase):
            try:
                item = next(iterator)
            except StopIteration:
                return
        yield item


def _resolved_settings(agent) -> dict:
    """The agent's settings dataclass as JSON values ({} for presets without one)."""
    settings = getattr(agent, "settings", None)
    return settings.to_json() if isinstance(settings, ExtraSettings) else {}


def _truncate_scalars(log_dir: Path, env_steps: int) -> None:
    """Drop the scalar rows logged after ``env_steps`` (TorchRL's CSV logger writes ``step,value``)."""
    for path in (log_dir / "scalars").glob("*.csv"):
        rows = path.read_text().splitlines(keepends=True)
        kept = [row for row in rows if not row.strip() or float(row.split(",", 1)[0]) <= env_steps]
        if len(kept) != len(rows):
            path.write_text("".join(kept))
