"""Run a suite's unfinished trials as Ray Tune trials: a local Ray by default, a cluster with ``address``.

Each Tune trial calls :func:`execute_trial` in its worker (one run folder, exactly as ``vmbpo train``
writes it) with ``cpus_per_trial`` torch threads and Ray CPUs, and a GPU fraction when the run's
device is a CUDA device. The run folders are the sweep's state: trials finished before are not
scheduled at all, killed ones resume from their checkpoints, so a killed driver is simply rerun.
Ray's own records (Tune's experiment folders) go to ``OUT/_ray/``.

Ray is imported here only; ``torchrl_vmbpo.sweeps.run_sweep`` imports this module when a sweep runs.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import ray
import torch
from ray import tune

from torchrl_vmbpo.sweeps.suite import Suite, Trial, execute_trial
from torchrl_vmbpo.training.results import read_metrics

RAY_FOLDER = "_ray"


def _trainable(config: dict) -> None:
    """The Tune trainable: one trial's run folder, then its final numbers to Tune."""
    trial = Trial.from_json(config["trial"])
    torch.set_num_threads(trial.cpus)
    action, summary = execute_trial(trial)
    tune.report(
        {
            "final_return": summary["final_return"],
            "best_return": summary["best_return"],
            "env_steps": summary["env_steps"],
            "action": action,
            "run_id": summary.get("run_id", ""),
        }
    )


class SweepProgress(tune.Callback):
    """One line per trial event: trials done, running, failed, and the best configuration so far per
    (algorithm, env) by its mean final return over the seeds finished."""

    def __init__(
        self,
        suite: Suite,
        trials: list[Trial],
        done_before: list[Trial],
        echo: Callable[[str], None],
        status_every: float = 60.0,
    ):
        self.suite, self.total, self.echo = suite, len(trials), echo
        self.status_every, self.last_status = status_every, time.monotonic()
        self.done, self.running, self.failed = len(done_before), 0, []
        self.finals: dict[tuple[str, str, str], list[float]] = defaultdict(list)
        for trial in done_before:
            self.finals[(trial.algo, trial.env, trial.tag)].append(_final_return(trial))

    def _line(self, event: str) -> None:
        best = {}
        for (algo, env, tag), values in self.finals.items():
            mean = statistics.mean(values)
            if (algo, env) not in best or mean > best[(algo, env)][0]:
                best[(algo, env)] = (mean, tag, len(values))
        bests = "; ".join(
            f"{a} {e} {m:.1f} ({t}, {n} seed{'s' * (n > 1)})" for (a, e), (m, t, n) in sorted(best.items())
        )
        self.echo(
            f"[{time.strftime('%H:%M:%S')}] {self.suite.name}: {self.done}/{self.total} done, "
            f"{self.running} running, {len(self.failed)} failed | {event}"
            + (f"\n    best so far: {bests}" if bests else "")
        )

    def on_step_end(self, iteration, trials, **info):
        """Every ``status_every`` seconds: each running trial's latest evaluation (its metrics.csv)."""
        if time.monotonic() - self.last_status < self.status_every:
            return
        self.last_status = time.monotonic()
        running = [_trial(t) for t in trials if t.status == "RUNNING"]
        if running:
            self.echo(
                f"[{time.strftime('%H:%M:%S')}] {self.suite.name}: running "
                + "; ".join(f"{t.name} {_latest(t)}" for t in running)
            )

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running += 1
        self._line(f"started {_trial(trial).name}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.running -= 1
        self.done += 1
        t, result = _trial(trial), trial.last_result or {}
        if "final_return" in result:
            self.finals[(t.algo, t.env, t.tag)].append(result["final_return"])
        self._line(
            f"finished {t.name} ({result.get('action', '?')} run): final return "
            f"{result.get('final_return', float('nan')):.1f}"
        )

    def on_trial_error(self, iteration, trials, trial, **info):
        self.running -= 1
        t = _trial(trial)
        self.failed.append((t, error_line(trial)))
        self._line(f"FAILED {t.name}: {self.failed[-1][1]}")


def _trial(tune_trial) -> Trial:
    return Trial.from_json(tune_trial.config["trial"])


def _latest(trial: Trial) -> str:
    """``at STEP/STEPS: RETURN`` from the trial's metrics.csv (``starting`` before its first evaluation)."""
    try:
        rows = read_metrics(Path(trial.folder) / "metrics.csv")
    except (OSError, ValueError):
        rows = []
    if not rows:
        return "starting"
    return f"at {int(rows[-1]['env_steps'])}/{trial.steps}: {rows[-1]['eval_return_mean']:.1f}"


def _final_return(trial: Trial) -> float:
    import json

    return json.loads((Path(trial.folder) / "summary.json").read_text())["final_return"]


def error_line(tune_trial) -> str:
    """The last line of the trial's error (the exception's type and message), from Tune's error file."""
    path = getattr(tune_trial, "error_file", None) or ""
    try:
        lines = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    except OSError:
        lines = []
    return lines[-1] if lines else str(getattr(tune_trial, "error_msg", "") or "unknown error")


def run_sweep(
    suite: Suite,
    out: str | Path,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    max_concurrent: int | None = None,
    echo: Callable[[str], None] = print,
    status_every: float = 60.0,
) -> dict:
    """Run every unfinished trial of ``suite`` under ``out`` through Ray Tune; returns
    ``{"trials", "skipped", "finished", "failed": [(name, error line)]}``. A failed trial does not stop the
    others. ``echo`` gets the progress lines; every ``status_every`` seconds one names each running
    trial's latest evaluation."""
    out = Path(out).resolve()
    trials = suite.trials(out)
    done_before = [t for t in trials if t.state() == "finished"]
    pending = [t for t in trials if t not in done_before]
    killed = sum(t.state() == "killed" for t in pending)
    echo(
        f"sweep {suite.name} ({suite.path}): {len(trials)} trials in {out}; {len(done_before)} finished before "
        f"(skipped), {killed} to resume from their checkpoints, {len(pending) - killed} to start"
    )
    if not pending:
        return {"trials": len(trials), "skipped": len(done_before), "finished": 0, "failed": []}
    _start_ray(address, num_cpus)
    progress = SweepProgress(suite, trials, done_before, echo, status_every)
    tuner = tune.Tuner(
        tune.with_resources(
            _trainable, lambda config: {"cpu": config["trial"]["cpus"], "gpu": config["trial"]["gpus"]}
        ),
        param_space={"trial": tune.grid_search([t.to_json() for t in pending])},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=max_concurrent,
            reuse_actors=True,  # no new worker (torch import) per trial
            trial_name_creator=lambda tt: _trial(tt).name.replace("/", "-"),
            trial_dirname_creator=lambda tt: f"{tt.trial_id}-{_trial(tt).name.replace('/', '-')}"[:120],
        ),
        run_config=tune.RunConfig(
            name=f"{suite.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(out / RAY_FOLDER),
            callbacks=[progress],
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
        ),
    )
    tuner.fit()
    finished = progress.done - len(done_before)
    echo(
        f"sweep {suite.name}: {progress.done}/{len(trials)} trials finished ({finished} now), "
        f"{len(progress.failed)} failed" + "".join(f"\n  FAILED {t.name}: {err}" for t, err in progress.failed)
    )
    return {
        "trials": len(trials),
        "skipped": len(done_before),
        "finished": finished,
        "failed": [(t.name, err) for t, err in progress.failed],
    }


def _start_ray(address: str | None, num_cpus: int | None) -> None:
    """Connect to ``address`` (a running cluster: ``ray://host:10001`` or ``host:6379``, or ``auto``), or
    start a local Ray with ``num_cpus`` CPUs (default: every core, so as many one-thread trials at once);
    an already initialised Ray (a test's) is used as it is. Ray's dashboard and worker logs stay off:
    progress is :class:`SweepProgress`'s lines, errors come from Tune."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # silence a FutureWarning
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("RAY_enable_metrics_collection", "0")  # no metrics agent: no "exporter" errors
    runtime_env = {"env_vars": {"PYTHONWARNINGS": "ignore"}}
    if "PYTHONPATH" in os.environ and address is None:  # a source checkout: its workers import the same code
        runtime_env["env_vars"]["PYTHONPATH"] = os.environ["PYTHONPATH"]
    if address is None:
        ray.init(
            num_cpus=num_cpus or os.cpu_count(),
            include_dashboard=False,
            log_to_driver=False,
            runtime_env=runtime_env,
            configure_logging=False,
        )
    else:
        ray.init(address=address, log_to_driver=False, runtime_env=runtime_env)
    print(
        f"ray: {ray.available_resources().get('CPU', 0):g} CPUs, {ray.available_resources().get('GPU', 0):g} GPUs",
        file=sys.stderr,
    )
