"""Turn the run directories under benchmarks/results/ into RESULTS.md and one plot per env.

Usage: python benchmarks/report.py [RESULTS_DIR]

Runs are grouped by ``RESULTS_DIR/<label>/<env>/seed<S>/``: ``label`` is the algorithm for the
recorded benchmarks, and a variant's name for a settings sweep (e.g. benchmarks/tuning/), whose
``--set extra.*`` settings the table's last column shows.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from torchrl_vmbpo.sweeps.report import fmt as _fmt
from torchrl_vmbpo.sweeps.report import plot_bands
from torchrl_vmbpo.training.divergence import RATIO_METRIC
from torchrl_vmbpo.training.results import read_metrics, read_scalars

CHECKPOINT_STEPS = (3000, 5000, 10000, 20000)


def _load_runs(results: Path) -> list[dict]:
    """Finished runs: a summary.json, and no evaluation past its ``env_steps`` (a run resumed with more
    steps keeps its earlier segment's summary.json until it ends: :func:`_in_progress`)."""
    runs = []
    for summary_path in sorted(results.glob("*/*/seed*/summary.json")):
        summary = json.loads(summary_path.read_text())
        curve = read_metrics(summary_path.parent / "metrics.csv")
        if not _in_progress(summary, curve):
            run_dir = summary_path.parent
            runs.append({"summary": summary, "curve": curve, "dir": run_dir, "scalars": read_scalars(run_dir)})
    return runs


def _in_progress(summary: dict, curve: list[dict]) -> bool:
    """A run being extended (``vmbpo train --resume --steps MORE``): metrics.csv already has evaluations
    past its summary's ``env_steps``."""
    return bool(curve) and max(row["env_steps"] for row in curve) > summary["env_steps"]


def _non_finite(run_dir: Path, scalars: dict[str, list[tuple[float, float]]]) -> tuple[int, list[str]]:
    """Count the run's logged numbers (metrics.csv and its training ``scalars``, ``read_scalars``) and
    name the non-finite ones as ``name@step`` (issues 4 and 6: no NaN or inf in any logged quantity)."""
    count, bad = 0, []
    if (run_dir / "metrics.csv").exists():
        with open(run_dir / "metrics.csv", newline="") as f:
            for row in csv.reader(f):
                for cell in row:
                    try:
                        value = float(cell)
                    except ValueError:
                        continue  # the header, the run id
                    count += 1
                    if not math.isfinite(value):
                        bad.append(f"metrics.csv@{row[0]}")
    for name, points in sorted(scalars.items()):
        count += len(points)
        bad += [f"{name}@{step:g}" for step, value in points if not math.isfinite(value)]
    return count, bad


def _divergence(run: dict) -> tuple[str, float | None]:
    """The divergence guard's verdict on a run (issue 24: no run with a diverged critic) and the largest
    ``critic_divergence_ratio`` it logged (None where it logged none): ``"diverged"`` (its summary names
    the first crossing), ``"ok"``, or ``"unguarded"`` (recorded before the guard existed)."""
    ratios = [value for _, value in run["scalars"].get(RATIO_METRIC, [])]
    peak = max(ratios) if ratios else None
    if "diverged" not in run["summary"]:
        return "unguarded", peak
    return ("diverged" if run["summary"]["diverged"] else "ok"), peak


def _divergence_lines(runs: list[dict], results: Path) -> list[str]:
    verdicts = {run["dir"]: _divergence(run) for run in runs}
    count = defaultdict(int)
    for verdict, _ in verdicts.values():
        count[verdict] += 1
    peaks = [(peak, d) for d, (_, peak) in verdicts.items() if peak is not None]
    line = (
        f"Critic divergence guard (|Q| in reward units over the range the real rewards allow, "
        f"`critic_divergence_ratio`; diverged past `divergence_factor`, 10): {count['ok']} runs within it, "
        f"{count['diverged']} diverged, {count['unguarded']} recorded before the guard existed"
    )
    if peaks:
        peak, where = max(peaks, key=lambda p: p[0])
        line += f"; largest ratio logged {peak:.3g} ({where.relative_to(results)})"
    lines = ["", line + "."]
    lines += [
        f"- diverged: {run['dir'].relative_to(results)}: {json.dumps(run['summary']['diverged'])}"
        for run in runs
        if verdicts[run["dir"]][0] == "diverged"
    ]
    return lines


def _row_at(curve: list[dict], step: float) -> dict | None:
    """The last metrics row with env_steps <= step (None before the first)."""
    rows = [r for r in curve if r["env_steps"] <= step]
    return rows[-1] if rows else None


def _return_at(curve: list[dict], step: int) -> float | None:
    """The evaluation at the last row with env_steps <= step (None if the run is shorter)."""
    if curve[-1]["env_steps"] < step:
        return None
    row = _row_at(curve, step)
    return row["eval_return_mean"] if row else None


def _best_mean(curves: list[list[dict]]) -> str:
    """The best mean-over-seeds return and its env step, for bars "mean return >= X within N steps": at
    each evaluation step every seed reached, the mean of each seed's evaluation at or before it."""
    best = None
    for step in sorted({r["env_steps"] for curve in curves for r in curve}):
        values = [_return_at(curve, step) for curve in curves]
        if None not in values and (best is None or statistics.mean(values) > best[0]):
            best = (statistics.mean(values), step)
    return "—" if best is None else f"{best[0]:.1f} @{int(best[1])}"


def _compared_steps(curves: list[list[dict]]) -> list[float]:
    """Evaluation steps (of any of ``curves``) up to the shortest curve's last one: where every curve has a value."""
    last = min(curve[-1]["env_steps"] for curve in curves)
    return sorted({r["env_steps"] for curve in curves for r in curve if r["env_steps"] <= last})


def _learning_steps(curves: list[list[dict]], steps: list[float]) -> list[float]:
    """The ``steps`` at which every curve's evaluation came after at least one gradient update: before
    that an evaluation scores only the initial weights, which differ between algorithms of the same seed
    (each draws its own networks)."""
    return [s for s in steps if all(_row_at(curve, s)["updates"] > 0 for curve in curves)]


def _final_and_curve_mean(curves: list[list[dict]], steps: list[float]) -> tuple[float, float]:
    """Mean over seeds at the last of ``steps``, and that mean averaged over all ``steps`` (the learning curve)."""
    per_step = [statistics.mean(_return_at(curve, step) for curve in curves) for step in steps]
    return per_step[-1], statistics.mean(per_step)


COMPARED = ("vmbpo", "mbpo", "vmbpo-twist-off", "vmbpo-paper", "sac")
"""Labels of the VMBPO-against-MBPO table (issue 24's bar), in its column order."""


def _comparison(groups: dict) -> list[str]:
    """Per env with both ``vmbpo`` and ``mbpo`` runs: each compared label's mean over seeds at the last
    evaluation every run reached and averaged over the evaluations up to it, and whether VMBPO's is at
    least MBPO's on both."""
    envs = sorted(
        {env for env, label in groups if label == "vmbpo"} & {env for env, label in groups if label == "mbpo"}
    )
    if not envs:
        return []
    lines = [
        "",
        "VMBPO against MBPO: mean over seeds at the last evaluation every run of the row reached (final) and",
        "averaged over the evaluations up to it (curve); seeds in brackets. The last column averages the",
        "curve only over the evaluations after learning starts (every run of the row past its first gradient",
        "update), where the initial weights no longer decide the score: SAC and VMBPO draw the same initial",
        "actor for a seed (their first network); MBPO has since commit ede78d6, and its records made before",
        "drew their model first and so a different actor (tests/algorithms/test_paired_seeds.py).",
        "",
        "| env | up to step | "
        + " | ".join(f"{label}: final / curve" for label in COMPARED)
        + " | vmbpo >= mbpo (final, curve) | vmbpo - mbpo, curve after learning starts (from step) |",
        "|---|---|" + "---|" * len(COMPARED) + "---|---|",
    ]
    wins = wins_learning = 0
    for env in envs:
        labels = [label for label in COMPARED if (env, label) in groups]
        curves = {label: [m["curve"] for m in groups[(env, label)]] for label in labels}
        steps = _compared_steps([c for cs in curves.values() for c in cs])
        values = {label: _final_and_curve_mean(curves[label], steps) for label in labels}
        cells = []
        for label in COMPARED:
            if label in values:
                seeds = ",".join(
                    str(m["summary"]["seed"]) for m in sorted(groups[(env, label)], key=lambda m: m["summary"]["seed"])
                )
                cells.append(f"{values[label][0]:.1f} / {values[label][1]:.1f} ({seeds})")
            else:
                cells.append("—")
        (v_final, v_curve), (m_final, m_curve) = values["vmbpo"], values["mbpo"]
        ok = v_final >= m_final and v_curve >= m_curve
        wins += ok
        verdict = "yes" if ok else f"no ({v_final - m_final:+.1f}, {v_curve - m_curve:+.1f})"
        pair = curves["vmbpo"] + curves["mbpo"]
        learning = _learning_steps(pair, steps)
        after = "—"  # no evaluation after every run's first update
        if learning:
            gap = (
                _final_and_curve_mean(curves["vmbpo"], learning)[1] - _final_and_curve_mean(curves["mbpo"], learning)[1]
            )
            wins_learning += v_final >= m_final and gap >= 0
            after = f"{gap:+.1f} ({int(learning[0])})"
        lines.append(f"| {env} | {int(steps[-1])} | " + " | ".join(cells) + f" | {verdict} | {after} |")
    lines += [
        "",
        f"VMBPO at least MBPO on both measures: {wins} of {len(envs)} envs with both; "
        f"{wins_learning} of {len(envs)} with the curve averaged after learning starts.",
    ]
    return lines


_MISSING = object()


def _extra_defaults(algo: str, env: str) -> dict:
    """Today's ``extra`` settings of the preset for ``(algo, env)`` (JSON values), or {} if it has none."""
    from torchrl_vmbpo.algorithms import default_config
    from torchrl_vmbpo.algorithms.presets import ALGORITHMS

    if algo not in ALGORITHMS:
        return {}
    return ALGORITHMS[algo].settings.from_extra(default_config(algo, env).extra).to_json()


def _settings(summary: dict) -> str:
    """The run's settings that differ from its preset as the code defines it now (``extra.*`` included)."""
    from torchrl_vmbpo.algorithms import default_config

    config = summary["config"]
    preset = json.loads(json.dumps(default_config(summary["algo"], summary["env"]).to_dict()))
    run_only = ("seed", "steps", "extra", "checkpoint", "checkpoint_every")  # not settings of the algorithm
    changed = {k: v for k, v in config.items() if k not in run_only and preset.get(k) != v}
    if "settings" in summary:  # resolved settings (recorded since 2026-11-27): exact against today's defaults
        defaults = _extra_defaults(summary["algo"], summary["env"])
        changed.update({f"extra.{k}": v for k, v in summary["settings"].items() if defaults.get(k, _MISSING) != v})
        # a setting added since the run: the run had none (it behaved as before the setting existed)
        changed.update({f"extra.{k}": "(none)" for k in defaults if k not in summary["settings"]})
    else:  # older runs recorded only the extra.* that were set; their defaults of the time are unknown here
        changed.update({f"extra.{k}": v for k, v in config.get("extra", {}).items()})
    return ", ".join(f"{k}={v}" for k, v in sorted(changed.items())) or "preset"


def write_report(results: Path) -> Path:
    runs = _load_runs(results)
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for run in runs:
        groups[(run["summary"]["env"], run["dir"].parent.parent.name)].append(run)
    lines = [
        "# Benchmark results",
        "",
        "Generated by `python benchmarks/report.py` from the run directories beside this file (each has",
        "its metrics.csv and a summary.json with commit, seed, full config and machine). Returns are",
        "deterministic-policy evaluation returns (mean over the eval episodes), as mean ± std over seeds",
        'at the last evaluation at or before the given env step; "best mean @step" is the best such mean',
        'over the evaluation steps all seeds reached (for bars of the form "within N steps").',
        "",
        "| env | algo | seeds | steps | "
        + " | ".join(f"return @{s // 1000}k" for s in CHECKPOINT_STEPS)
        + " | final | best mean @step | wall s / 1k steps | updates/s | s / planned action | phase seconds (mean) | commit"
        " | settings (vs today's preset) |",
        "|---|---|---|---|" + "---|" * len(CHECKPOINT_STEPS) + "---|---|---|---|---|---|---|---|",
    ]
    for (env, algo), members in sorted(groups.items()):
        seeds = sorted(m["summary"]["seed"] for m in members)
        at = [_fmt([v for m in members if (v := _return_at(m["curve"], s)) is not None]) for s in CHECKPOINT_STEPS]
        final = _fmt([m["summary"]["final_return"] for m in members])
        best = _best_mean([m["curve"] for m in members])
        wall = _fmt([m["summary"]["wall_seconds_per_1000_steps"] for m in members])
        ups = _fmt([m["summary"]["updates_per_second"] or 0.0 for m in members])
        # Planners (PETS) record their own rate; runs recorded before it existed have none.
        plan = _fmt([v for m in members if (v := m["summary"].get("seconds_per_planned_action")) is not None], 3)
        phases = defaultdict(list)
        for m in members:
            for k, v in m["summary"]["phase_seconds"].items():
                phases[k].append(v)
        phase = ", ".join(f"{k} {statistics.mean(v):.0f}" for k, v in sorted(phases.items()))
        commits = ", ".join(sorted({m["summary"]["commit"][:10] for m in members}))
        steps = max(m["summary"]["env_steps"] for m in members)
        extra = " / ".join(sorted({_settings(m["summary"]) for m in members}))
        lines.append(
            f"| {env} | {algo} | {','.join(map(str, seeds))} | {steps} | "
            + " | ".join(at)
            + f" | {final} | {best} | {wall} | {ups} | {plan} | {phase} | {commits} | {extra} |"
        )
    lines += _comparison(groups)
    scanned = {m["dir"]: _non_finite(m["dir"], m["scalars"]) for m in runs}
    bad = [
        f"{d.relative_to(results)}: {', '.join(b[:5])}{' ...' if len(b) > 5 else ''}"
        for d, (_, b) in scanned.items()
        if b
    ]
    lines += [
        "",
        f"Logged values scanned for NaN/inf (metrics.csv and logs/scalars of every run): "
        f"{sum(n for n, _ in scanned.values())} values in {len(runs)} runs, "
        + (f"non-finite in {len(bad)} runs:" if bad else "none non-finite."),
    ]
    lines += [f"- {b}" for b in bad]
    lines += _divergence_lines(runs, results)
    machines = {json.dumps(m["summary"].get("machine", {}), sort_keys=True) for m in runs}
    lines += ["", "Machines:", ""] + [f"- `{m}`" for m in sorted(machines)]
    lines += ["", "Plots: " + ", ".join(f"[{p.name}]({p.name})" for p in _plot(results, groups))]
    out = results / "RESULTS.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def _plot(results: Path, groups) -> list[Path]:
    """One plot per env: each label's mean evaluation return over seeds with a ± one std band."""
    paths = []
    for env in sorted({env for env, _ in groups}):
        curves = {algo: [m["curve"] for m in members] for (e, algo), members in sorted(groups.items()) if e == env}
        paths.append(plot_bands(curves, results / f"curves_{env.replace('/', '_')}.png", env))
    return paths


if __name__ == "__main__":
    print(write_report(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "results"))
