"""VMBPO diagnostics over training from a run directory's TorchRL CSV logs.

Plots the eq.-19 weights' effective sample size (fraction of the batch), the KL(q_d || p)
estimate of eq. 21, the KL(q_c || pi) estimate of the critic's V target, the model's holdout
MSE / training NLL, the largest weight, the tempering exponent beta (``weight_min_ess``), the
critic's Q and q_c's entropy (where the critic diverges: benchmarks/tuning/vmbpo-hopper) and the
evaluation return, against env steps.

Usage: python benchmarks/diagnostics_plot.py RUN_DIR [RUN_DIR ...] --out diagnostics.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from torchrl_vmbpo.training.results import read_scalars

PANELS = [
    ("weight_ess", "eq. 19 weights: ESS / batch"),
    ("kl_qd_p_estimate", "KL(q_d || p) estimate (eq. 21)"),
    ("policy_log_ratio", "KL(q_c || pi) estimate"),
    ("model_holdout_mse", "model holdout MSE"),
    ("model_train_loss", "model training loss (NLL)"),
    ("weight_max", "largest eq. 19 weight"),
    ("weight_beta", "tempering exponent beta (1: eq. 19 untempered)"),
    ("q_value", "Q(x, a) (eta x returns)"),
    ("actor_entropy", "q_c entropy estimate"),
    ("eval_return_mean", "evaluation return"),
]


def _series(run: Path, name: str) -> tuple[list[float], list[float]]:
    points = read_scalars(run).get(name, [])
    return [p[0] for p in points], [p[1] for p in points]


def plot(runs: list[Path], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 5, figsize=(21, 6.5))
    for ax, (name, title) in zip(axes.flat, PANELS):
        for i, run in enumerate(runs):  # one colour per run in every panel, logged or not
            x, y = _series(run, name)
            if x:
                ax.plot(x, y, color=f"C{i}", label=f"{run.parents[1].name}/{run.name}", lw=1)  # <label>/<env>/seed<S>
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("env steps")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("diagnostics.png"))
    args = parser.parse_args()
    print(plot(args.runs, args.out))
