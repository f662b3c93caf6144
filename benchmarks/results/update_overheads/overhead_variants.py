"""Compiled updates at Hopper sizes: the library's, with Dynamo's guards skipped, with Inductor's C++
wrapper, and both, against torch.matmul at the update's shapes (README.md beside this file).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/results/update_overheads/overhead_variants.py ALGO [--cpp]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from torchrl_vmbpo.algorithms.presets import default_config
from torchrl_vmbpo.envs.real import make_env

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/ is a script folder, not a package
from phase_timing import matmul_replay, timed, update_phase  # noqa: E402

ENV = "Hopper-v5"
CPU = torch.device("cpu")


def compiled_update(algo, cfg, env, cpp_wrapper: bool):
    """``phase_timing.update_phase``'s compiled update step (compiled and warmed up there), with or without the C++ wrapper."""
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch._inductor.config.patch(cpp_wrapper=cpp_wrapper):
        step, _, _ = update_phase(algo, cfg, env, CPU, compiled=True)
    print(f"compiled (cpp_wrapper={cpp_wrapper}) in {time.perf_counter() - start:.1f} s", flush=True)
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("algo", choices=["sac", "mbpo", "vmbpo"])
    parser.add_argument("--cpp", action="store_true", help="also time an agent compiled with the C++ wrapper")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--updates", type=int, default=20, help="updates per timed round")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = default_config(args.algo, ENV, device="cpu")
    env = make_env(ENV)
    steps = {"library": compiled_update(args.algo, cfg, env, cpp_wrapper=False)}
    if args.cpp:
        steps["cpp_wrapper"] = compiled_update(args.algo, cfg, env, cpp_wrapper=True)
    _, shapes, _ = update_phase(args.algo, cfg, env, CPU, compiled=False)  # records one eager update's matmuls
    reference = matmul_replay(shapes, CPU)
    times: dict[str, list[float]] = {"matmul": []}
    for _ in range(args.rounds):  # interleaved: every variant once per round
        times["matmul"].append(timed(reference, CPU, args.updates))
        for name, step in steps.items():
            times.setdefault(name, []).append(timed(step, CPU, args.updates))
            with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
                times.setdefault(f"{name}+skip_guards", []).append(timed(step, CPU, args.updates))
    matmul = statistics.median(times["matmul"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{args.algo} {name}: {median * 1e3:.2f} ms, matmul fraction {matmul / median:.3f}")


if __name__ == "__main__":
    main()
