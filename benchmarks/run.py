"""Run algorithms x envs x seeds through the ``vmbpo`` command line, then write the results table.

Each run lands in ``RESULTS/<algo>/<env>/seed<S>/`` exactly as ``vmbpo train --out`` writes it
(metrics.csv, summary.json with commit/seed/config/machine, learning_curve.png); the checkpoint
is deleted afterwards unless --keep-checkpoints (they are large and not results). Finished runs
(with a summary.json) are skipped and a killed run with a checkpoint.pt is resumed from it
(``vmbpo train --resume``), so an interrupted sweep goes on where it stopped.

Example:
    python benchmarks/run.py --algos sac mbpo --envs Pendulum-v1:10000 InvertedPendulum-v5:5000 \
        --seeds 0 1 2 --jobs 2
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_RESULTS = HERE / "results"


def run_dir(results: Path, algo: str, env: str, seed: int) -> Path:
    return results / algo / env.replace("/", "_") / f"seed{seed}"


def _one(results: Path, algo: str, env: str, steps: int, seed: int, overrides: list[str], keep: bool) -> str:
    out = run_dir(results, algo, env, seed)
    if (out / "summary.json").exists():
        return f"skip {out} (done)"
    out.parent.mkdir(parents=True, exist_ok=True)
    if (out / "checkpoint.pt").exists():  # a killed run: continue it with the config it started with
        # (the same --set list: restated settings are accepted, and e.g. extra.device=cuda moves a run
        # started on a CPU onto a GPU; a change to what the run computes is refused, see RESUME_SETTINGS)
        cmd = [sys.executable, "-m", "torchrl_vmbpo.cli", "train", "--resume", "--out", str(out),
               "--steps", str(steps), "--no-progress"]
    else:  # --overwrite: a run killed before its first checkpoint starts afresh
        cmd = [sys.executable, "-m", "torchrl_vmbpo.cli", "train", "--algo", algo, "--env", env,
               "--steps", str(steps), "--seed", str(seed), "--out", str(out), "--no-progress", "--overwrite"]
    for item in overrides:
        cmd += ["--set", item]
    t0 = time.time()
    log = out.parent / f"seed{seed}.log"
    with open(log, "w") as f:
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    if code == 0 and not keep:
        (out / "checkpoint.pt").unlink(missing_ok=True)
    if code == 0:
        log.unlink(missing_ok=True)
    return f"{'ok' if code == 0 else f'FAILED ({code}), see ' + str(log)} {out} in {time.time() - t0:.0f}s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", required=True)
    parser.add_argument("--envs", nargs="+", required=True, help="ENV_ID:STEPS entries")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (each uses num_threads=1)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--keep-checkpoints", action="store_true")
    args = parser.parse_args(argv)
    envs = []
    for item in args.envs:
        env, _, steps = item.rpartition(":")
        if not env or not steps.isdigit():
            parser.error(f"--envs entries are ENV_ID:STEPS, got {item!r}")
        envs.append((env, int(steps)))
    jobs = [(a, e, s, seed) for a, (e, s), seed in itertools.product(args.algos, envs, args.seeds)]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(_one, args.results, a, e, s, seed, args.overrides, args.keep_checkpoints)
                   for a, e, s, seed in jobs]
        for fut in futures:
            print(fut.result(), flush=True)
    from report import write_report  # noqa: E402  (benchmarks/ is a script folder, not a package)

    write_report(args.results)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())
