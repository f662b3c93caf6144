"""The return of a uniformly random policy, the floor a trained agent is compared against.

Runs ``--episodes`` full episodes with actions drawn uniformly from the action box (the loop's
``init_random_steps`` policy) on the same TorchRL env the training loop evaluates on, and writes
mean, standard deviation and every episode's return.

Usage (from the repository root):
    .venv/bin/python benchmarks/random_policy.py --env torchrl_vmbpo/Reacher7DoF-v0 --episodes 20
writes benchmarks/results/random_policy_<env>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
from pathlib import Path

import torch

from torchrl_vmbpo.envs.real import make_env
from torchrl_vmbpo.training.results import git_commit, machine_info

RESULTS = Path(__file__).resolve().parent / "results"


def random_returns(env_id: str, episodes: int, seed: int) -> list[float]:
    """Undiscounted returns of ``episodes`` episodes of uniformly random actions."""
    env = make_env(env_id, seed=seed)
    torch.manual_seed(seed)
    returns = []
    for _ in range(episodes):
        td = env.rollout(100_000, policy=None, break_when_any_done=True)  # policy=None: rand_action
        returns.append(float(td["next", "reward"].sum()))
    env.close()
    return returns


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", required=True)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    returns = random_returns(args.env, args.episodes, args.seed)
    result = {
        "env": args.env,
        "policy": "uniform random actions",
        "episodes": args.episodes,
        "seed": args.seed,
        "return_mean": statistics.mean(returns),
        "return_std": statistics.pstdev(returns),
        "returns": returns,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine_info(1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"random_policy_{args.env.split('/')[-1]}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{args.env}: random policy return {result['return_mean']:.1f} +- {result['return_std']:.1f} "
        f"over {args.episodes} episodes -> {path}"
    )
    return result


if __name__ == "__main__":
    main()
