"""What a run leaves in its folder (run.json, metrics.csv, summary.json, learning_curve.png, logs/), written durably."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO

import torch

from torchrl_vmbpo.errors import RunFolderError

METRIC_COLUMNS = ["env_steps", "eval_return_mean", "eval_return_std", "wall_seconds", "updates", "run_id"]
RUN_MANIFEST = "run.json"
# Everything a run writes in its folder: --overwrite removes exactly these, and only with it.
RUN_FILES = (
    RUN_MANIFEST,
    "metrics.csv",
    "summary.json",
    "checkpoint.pt",
    "checkpoint.pt.tmp",
    "learning_curve.png",
    "logs",
    "scalars.csv",
)


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """``write(f)`` into a temporary file beside ``path``, flush, fsync, then rename over ``path``:
    a crash or kill leaves either the old file or the new one, never a torn one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def prepare_run_folder(out: Path, *, overwrite: bool) -> None:
    """Make ``out`` ready for a new run: refuse a folder that holds a run unless ``overwrite``, which
    removes every file the previous run wrote (``RUN_FILES``; other files stay) before anything new is
    written. Results are never lost silently.

    Raises:
        RunFolderError: the folder holds a run and ``overwrite`` is False, or it cannot be created or
            written (a path under a regular file, no permission, a read-only disk).
    """
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise RunFolderError(
            f"{out} already holds a run ({', '.join(existing)}); choose another --out, --resume it, or pass --overwrite"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in existing:
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise RunFolderError(
            f"cannot use {out} as the run folder: {err.strerror or err} ({type(err).__name__})"
        ) from None


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"


def write_run_manifest(out: Path, run_id: str, config: dict) -> None:
    """``run.json``: the folder's current run; its checkpoint, metrics and logs carry the same id."""
    manifest = {
        "run_id": run_id,
        "algo": config.get("algo"),
        "env": config.get("env"),
        "seed": config.get("seed"),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_text(out / RUN_MANIFEST, json.dumps(manifest, indent=2))


def read_run_id(out: Path) -> str | None:
    """The run id ``run.json`` names, or None for a folder without one (written by an earlier version)."""
    path = out / RUN_MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())["run_id"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise RunFolderError(f"{path} is not a run manifest ({err})") from None


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
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
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
    """Evaluation rows in ``metrics.csv``, rewritten durably at each row (a killed run keeps its curve;
    the file is a few kB, so the rewrite costs nothing beside an evaluation)."""

    def __init__(self, path: Path, rows: list[dict] = (), *, run_id: str = ""):
        """Start the file afresh with ``rows`` (a resumed run's curve up to its checkpoint)."""
        self.path, self.run_id = path, run_id
        self.rows: list[dict] = [{**row, "run_id": run_id} for row in rows]
        self._write()

    def append(self, row: dict) -> None:
        self.rows.append({**row, "run_id": self.run_id})
        self._write()

    def _write(self) -> None:
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer)
        writer.writerow(METRIC_COLUMNS)
        writer.writerows([row[c] for c in METRIC_COLUMNS] for row in self.rows)
        atomic_write_text(self.path, buffer.getvalue())


def read_metrics(path: Path) -> list[dict]:
    """Rows of a metrics.csv as floats (its ``run_id`` column, where present, is left out)."""
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if k != "run_id"} for row in csv.DictReader(f)]


def write_summary(path: Path, summary: dict) -> None:
    atomic_write_text(path, json.dumps(summary, indent=2, default=str))


SCALARS_FILE = "scalars.csv"


def read_scalars(run_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """Every training scalar of a run as ``{name: [(env_step, value), ...]}``, from its packed
    ``scalars.csv`` (``name,step,value``; committed records) or TorchRL's ``logs/scalars/NAME.csv``."""
    series: dict[str, list[tuple[float, float]]] = {}
    packed = run_dir / SCALARS_FILE
    if packed.is_file():
        with open(packed, newline="") as f:
            for row in csv.DictReader(f):
                series.setdefault(row["name"], []).append((float(row["step"]), float(row["value"])))
        return series
    for path in sorted((run_dir / "logs" / "scalars").glob("*.csv")):
        with open(path, newline="") as f:
            series[path.stem] = [(float(r[0]), float(r[1])) for r in csv.reader(f) if r]
    return series


def pack_scalars(run_dir: Path) -> bool:
    """Replace a finished run's ``logs/scalars/*.csv`` (one file per metric) by one ``scalars.csv``
    holding the same text of every row, written durably before the old files go; False if there was
    nothing to pack."""
    paths = sorted((run_dir / "logs" / "scalars").glob("*.csv"))
    if not paths:
        return False
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["name", "step", "value"])
    for path in paths:
        with open(path, newline="") as f:
            writer.writerows([path.stem, *row[:2]] for row in csv.reader(f) if row)
    atomic_write_text(run_dir / SCALARS_FILE, buffer.getvalue())
    shutil.rmtree(run_dir / "logs")
    return True


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
