"""What a run leaves in its directory: metrics.csv, summary.json, learning_curve.png (with provenance)."""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

import torch

METRIC_COLUMNS = ["env_steps", "eval_return_mean", "eval_return_std", "wall_seconds", "updates"]
RUN_FILES = ("metrics.csv", "summary.json", "checkpoint.pt")


def check_out_dir(out: Path, *, overwrite: bool) -> None:
    """Refuse to write over a finished or running run unless ``overwrite``: results are never lost silently."""
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{out} already holds a run ({', '.join(existing)}); choose another --out or pass --overwrite"
        )
    out.mkdir(parents=True, exist_ok=True)
    if overwrite:  # the TorchRL CSV logger appends: start its files afresh
        shutil.rmtree(out / "logs", ignore_errors=True)


def git_commit(*paths: str) -> str:
    """The commit of the source (with '+dirty' when the package or ``paths``, relative to the
    repository root, have uncommitted changes), or 'unknown'.

    A copy of the source without usable git metadata (shipped to another machine) records the commit
    named by the environment variable ``TORCHRL_VMBPO_COMMIT`` instead, marked ``(declared)``.
    """
    declared = os.environ.get("TORCHRL_VMBPO_COMMIT")
    if declared:
        return f"{declared} (declared)"
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "torchrl_vmbpo", *paths],
            cwd=root, capture_output=True, text=True, timeout=5,
        )
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info(num_threads: int | None = None, device: torch.device | None = None) -> dict:
    """Platform, CPU model and count, Python, torch and torchrl versions, torch threads (default: the
    current setting) and, for a CUDA ``device``, the GPU's name."""
    import torchrl

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads() if num_threads is None else num_threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchrl": torchrl.__version__,
    }
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        if "Model name" in fields:
            info["cpu_model"] = fields["Model name"].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    if device is not None and torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


class MetricsCSV:
    """Appends evaluation rows to ``metrics.csv`` as they come (a killed run keeps its curve)."""

    def __init__(self, path: Path, rows: list[dict] = ()):
        """Start the file afresh with ``rows`` (a resumed run's curve up to its checkpoint)."""
        self.path = path
        self.rows: list[dict] = list(rows)
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(METRIC_COLUMNS)
            writer.writerows([row[c] for c in METRIC_COLUMNS] for row in self.rows)

    def append(self, row: dict) -> None:
        self.rows.append(row)
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([row[c] for c in METRIC_COLUMNS])


def read_metrics(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def write_summary(path: Path, summary: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    os.replace(tmp, path)


def plot_learning_curve(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["env_steps"] for r in rows]
    mean = torch.tensor([r["eval_return_mean"] for r in rows])
    std = torch.tensor([r["eval_return_std"] for r in rows])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, mean, marker="o", ms=3)
    ax.fill_between(x, mean - std, mean + std, alpha=0.25)
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval return (deterministic)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
