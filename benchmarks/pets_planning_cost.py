"""PETS planning cost: seconds per planned action and the planner's matmul FLOP rate vs plain matmul.

Issue 7's setting: population 400, horizon 30, 5 CEM iterations, 20 particles (TS-inf), elites 40,
MBPO's ensemble (7 members, 5 elites, 4x200 SiLU). One planned action is exactly what
:meth:`PETSPlanner.plan` does at every real step: ``iterations`` CEM rounds, each scoring the
population by :func:`particle_returns` (``horizon`` batched ensemble passes over
``5 members x 400 x 4`` = 8000 rows), with the env's known reward and termination functions.

FLOPs counted: the ensemble's matmuls only (2 x rows x in x out per layer and step; the weights of
a planned action are those of an untrained model, which costs the same). The reference rate is
``torch.matmul`` on exactly those shapes (``[K, rows/K, in] @ [K, in, out]``, one per layer), timed
in the same process, interleaved with the planner round by round (medians), so that a shared,
noisy machine affects both alike. Where the rest of the time goes: a ``torch.profiler`` table of
one planned action (self time per op, grouped).

Usage (from the repository root):
    .venv/bin/python benchmarks/pets_planning_cost.py                 # CPU, one thread
    python benchmarks/pets_planning_cost.py --device cuda --tag h200   # on a GPU machine
    python benchmarks/pets_planning_cost.py --device cuda --cuda-graph --tag h100_graph  # one replay per action
writes benchmarks/results/pets_planning_cost_<tag>.json and .md (tag defaults to the device).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time
from pathlib import Path

import torch

from torchrl_vmbpo.algorithms.pets import KNOWN_REWARD_FNS
from torchrl_vmbpo.envs.real import env_dims, make_env
from torchrl_vmbpo.envs.termination import termination_fn_for
from torchrl_vmbpo.envs.world_model import WorldModelEnv
from torchrl_vmbpo.models.dynamics import DynamicsModel
from torchrl_vmbpo.planners.pets import PETSPlanner
from torchrl_vmbpo.training.results import git_commit, machine_info

RESULTS = Path(__file__).resolve().parent / "results"


def model_matmul_shapes(dynamics: DynamicsModel, rows_per_member: int) -> list[tuple[int, int, int, int]]:
    """``(K, R, in, out)`` of every layer of one ensemble pass over ``K`` elites x ``R`` rows each."""
    ens, k = dynamics.ensemble, dynamics.num_elites
    layers = [*ens.hidden_layers, ens.output_layer]
    return [(k, rows_per_member, layer.weight.shape[1], layer.weight.shape[2]) for layer in layers]


def flops(shapes) -> int:
    return sum(2 * k * r * i * o for k, r, i, o in shapes)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_matmuls(shapes, device: torch.device, repeats: int) -> float:
    """Seconds for one pass of ``torch.matmul`` over ``shapes`` (median of ``repeats`` passes)."""
    operands = [(torch.randn(k, r, i, device=device), torch.randn(k, i, o, device=device)) for k, r, i, o in shapes]
    for a, b in operands:  # warm-up
        torch.matmul(a, b)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        for a, b in operands:
            torch.matmul(a, b)
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class Planning:
    """One planned action at the benchmark's settings, from a fixed observation: the library's own
    :meth:`PETSPlanner.plan` (with ``--cuda-graph``, its captured replay) over an untrained model."""

    def __init__(self, env_id: str, args, device: torch.device):
        env = make_env(env_id)
        obs_dim, act_dim = env_dims(env)
        world = WorldModelEnv(
            DynamicsModel(obs_dim, act_dim).eval(),
            env,
            termination_fn=termination_fn_for(env_id),
            reward_fn=KNOWN_REWARD_FNS.get(env_id),
        )
        self.planner = PETSPlanner(
            world,
            planning_horizon=args.horizon,
            population=args.population,
            elites=args.elites,
            iterations=args.iterations,
            particles=args.particles,
            propagation="ts_inf",
            device=device,
            cuda_graph=args.cuda_graph,
        )
        self.dynamics = self.planner.dynamics  # the planner's copy on ``device``
        self.obs = torch.randn(obs_dim, device=device)
        self.mean0 = torch.zeros(args.horizon, act_dim, device=device)
        self.device = device
        k = self.dynamics.num_elites
        self.rows_per_member = args.population * -(-args.particles // k)
        self.steps = args.iterations * args.horizon  # ensemble passes per planned action

    @torch.no_grad()
    def __call__(self) -> float:
        sync(self.device)
        start = time.perf_counter()
        mean, _ = self.planner.plan(self.obs, self.mean0)  # the first call (warm-up) captures a graph
        mean[0].tolist()  # the action reaches the host, as the real env needs it
        return time.perf_counter() - start


def profile_table(planning: Planning, device: torch.device, top: int = 12) -> list[dict]:
    """Self time per op over one planned action, largest first."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        planning()
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr, 0) > 0]
    total = sum(getattr(e, attr) for e in events)
    events.sort(key=lambda e: getattr(e, attr), reverse=True)
    return [
        {"op": e.key, "calls": e.count, "self_ms": getattr(e, attr) / 1e3, "share": getattr(e, attr) / total}
        for e in events[:top]
    ]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Pendulum-v1", help="sets the observation/action sizes and reward")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    parser.add_argument("--population", type=int, default=400)
    parser.add_argument("--horizon", type=int, default=30)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--particles", type=int, default=20)
    parser.add_argument("--elites", type=int, default=40)
    parser.add_argument(
        "--cuda-graph",
        action="store_true",
        help="replay each planned action as one captured CUDA graph (PETSPlanner's GPU default)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="timed planned actions (each followed by a matmul pass)")
    parser.add_argument("--tag", default=None, help="output file suffix (default: the device type)")
    parser.add_argument("--commit", default=None, help="commit to record (default: git rev-parse HEAD)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)

    planning = Planning(args.env, args, device)
    shapes = model_matmul_shapes(planning.dynamics, planning.rows_per_member)
    flops_per_action = flops(shapes) * planning.steps
    planning()  # warm-up (allocator, kernels)
    plan_times, matmul_times = [], []
    for _ in range(args.rounds):  # interleaved: the same machine state for both
        plan_times.append(planning())
        matmul_times.append(time_matmuls(shapes, device, repeats=5) * planning.steps)
    plan_s, matmul_s = statistics.median(plan_times), statistics.median(matmul_times)
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": args.commit or git_commit("benchmarks/pets_planning_cost.py"),
        "machine": machine_info(device=device),
        "device": str(device),
        "env": args.env,
        "settings": {
            **{k: getattr(args, k) for k in ("population", "horizon", "iterations", "particles", "elites")},
            # what the timed plans used: False where a requested capture failed (the planner warned)
            "cuda_graph": planning.planner.cuda_graph and device.type == "cuda",
        },
        "ensemble_passes_per_action": planning.steps,
        "matmul_shapes_per_pass": shapes,
        "gflop_per_action": flops_per_action / 1e9,
        "seconds_per_action": plan_s,
        "seconds_per_action_all": plan_times,
        "planner_gflops": flops_per_action / plan_s / 1e9,
        "matmul_seconds_same_flops": matmul_s,
        "matmul_gflops": flops_per_action / matmul_s / 1e9,
        "fraction_of_matmul_rate": matmul_s / plan_s,
        "profile": profile_table(planning, device),
    }
    tag = args.tag or device.type
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"pets_planning_cost_{tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"pets_planning_cost_{tag}.md").write_text(render(result))
    print(render(result))
    return result


def render(r: dict) -> str:
    s = r["settings"]
    lines = [
        f"# PETS planning cost ({r['device']}{', CUDA graph' if s.get('cuda_graph') else ''}, {r['env']})",
        "",
        f"Generated by `benchmarks/pets_planning_cost.py` on {r['date']}, commit {r['commit']}.",
        f"Machine: {json.dumps(r['machine'])}.",
        "",
        f"Settings: population {s['population']}, horizon {s['horizon']}, {s['iterations']} CEM iterations, "
        f"{s['particles']} particles (TS-inf), {s['elites']} elites; MBPO's ensemble (5 elites of 7, 4x200 SiLU): "
        f"{r['ensemble_passes_per_action']} ensemble passes of {r['matmul_shapes_per_pass'][0][0]} x "
        f"{r['matmul_shapes_per_pass'][0][1]} rows per planned action.",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| seconds per planned action (median of {len(r['seconds_per_action_all'])}) | {r['seconds_per_action']:.4f} |",
        f"| model matmul GFLOP per action | {r['gflop_per_action']:.1f} |",
        f"| planner rate (matmul FLOPs / planning wall time) | {r['planner_gflops']:.1f} GFLOP/s |",
        f"| plain torch.matmul at the same shapes | {r['matmul_gflops']:.1f} GFLOP/s |",
        f"| planner / matmul rate | {100 * r['fraction_of_matmul_rate']:.0f}% |",
        "",
        "Where one planned action's time goes (profiler self time, top ops):",
        "",
        "| op | calls | self ms | share |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{p['op']}` | {p['calls']} | {p['self_ms']:.1f} | {100 * p['share']:.1f}% |" for p in r["profile"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
