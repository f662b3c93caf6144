"""Run algorithms x envs x seeds as one sweep on Ray Tune (``vmbpo sweep``), then write the results table.

A thin front to :func:`torchrl_vmbpo.sweeps.run_sweep` for the recorded benchmarks' layout: each run lands in
``RESULTS/<algo>/<env>/seed<S>/`` exactly as ``vmbpo train --out`` writes it (their checkpoint.pt deleted at the end unless --keep-checkpoints:
they are large and not results). Finished runs (a
summary.json at the asked steps) are skipped, killed ones resume from their checkpoint.pt. For the
paper's experiments use the suites: ``vmbpo sweep paper-table1`` (README, "Sweeps").

Example:
    python benchmarks/run.py --algos sac mbpo --envs Pendulum-v1:10000 InvertedPendulum-v5:5000 \\
        --seeds 0 1 2 --jobs 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torchrl_vmbpo.sweeps import run_sweep
from torchrl_vmbpo.sweeps.suite import AlgoEntry, Suite

HERE = Path(__file__).resolve().parent
DEFAULT_RESULTS = HERE / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", required=True)
    parser.add_argument("--envs", nargs="+", required=True, help="ENV_ID:STEPS entries")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=None, help="runs at once (default: one per core; one thread each)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep finished runs' checkpoint.pt (large)")
    parser.add_argument("--address", default=None, help="an existing Ray cluster (default: a local Ray)")
    args = parser.parse_args(argv)
    envs = {}
    for item in args.envs:
        env, _, steps = item.rpartition(":")
        if not env or not steps.isdigit():
            parser.error(f"--envs entries are ENV_ID:STEPS, got {item!r}")
        envs[env] = int(steps)
    suite = Suite(
        name="benchmarks",
        path=Path(__file__),
        envs=envs,
        algos={a: AlgoEntry() for a in args.algos},
        seeds=tuple(args.seeds),
        set=tuple(args.overrides),
        folder="{algo}/{env}/seed{seed}",
        gpus_per_trial=1.0 / args.jobs if args.jobs else 0.25,
    )
    result = run_sweep(suite, args.results, address=args.address, max_concurrent=args.jobs)
    for trial in suite.trials(args.results):  # the records keep curves and summaries, not the large checkpoints
        if trial.state() == "finished" and not args.keep_checkpoints:
            (Path(trial.folder) / "checkpoint.pt").unlink(missing_ok=True)
    from report import write_report  # noqa: E402  (benchmarks/ is a script folder, not a package)

    print(write_report(args.results))
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())
