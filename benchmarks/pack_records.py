"""Make committed records compact: pack each run folder's scalar logs into one scalars.csv, and write
each tuning sweep's table of variants (benchmarks/tuning/SWEEP/variants.csv) beside its README.

Run it after moving finished runs into benchmarks/results or benchmarks/tuning, before committing:

    .venv/bin/python benchmarks/pack_records.py

A run folder that still holds a checkpoint.pt (a run to be continued) is left as it is.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from torchrl_vmbpo.training.results import atomic_write_text, pack_scalars, read_metrics

BENCHMARKS = Path(__file__).resolve().parent
VARIANT_COLUMNS = ["variant", "finished", "algo", "env", "seed", "env_steps", "final_return", "best_return", "commit"]


def run_folders(root: Path) -> list[Path]:
    """Folders of runs, finished (summary.json) or stopped early (metrics.csv only)."""
    return sorted({p.parent for p in root.rglob("metrics.csv")} | {p.parent for p in root.rglob("summary.json")})


def variants_table(sweep: Path) -> str:
    """One row per run folder of a tuning sweep: where it is, what it ran and how it ended (a probe
    stopped early: its last and best evaluation, from metrics.csv)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(VARIANT_COLUMNS)
    for run in run_folders(sweep):
        name = run.relative_to(sweep).as_posix()
        if (run / "summary.json").exists():
            summary = json.loads((run / "summary.json").read_text())
            writer.writerow(
                [
                    name,
                    True,
                    summary["algo"],
                    summary["env"],
                    summary["seed"],
                    summary["env_steps"],
                    summary["final_return"],
                    summary["best_return"],
                    summary.get("commit"),
                ]
            )
        else:
            rows = read_metrics(run / "metrics.csv")
            returns = [r["eval_return_mean"] for r in rows]
            manifest = json.loads((run / "run.json").read_text()) if (run / "run.json").exists() else {}
            writer.writerow(
                [
                    name,
                    False,
                    manifest.get("algo", ""),
                    manifest.get("env", ""),
                    manifest.get("seed", ""),
                    int(rows[-1]["env_steps"]) if rows else 0,
                    returns[-1] if rows else "",
                    max(returns) if rows else "",
                    "",
                ]
            )
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=BENCHMARKS)
    args = parser.parse_args(argv)
    packed = 0
    for run in run_folders(args.root):
        if not (run / "checkpoint.pt").exists():
            packed += pack_scalars(run)
    tables = 0
    for sweep in sorted(p for p in (args.root / "tuning").glob("*") if p.is_dir()):
        if run_folders(sweep):
            atomic_write_text(sweep / "variants.csv", variants_table(sweep))
            tables += 1
    print(f"packed the scalar logs of {packed} run folders; wrote {tables} sweep tables")


if __name__ == "__main__":
    main()
