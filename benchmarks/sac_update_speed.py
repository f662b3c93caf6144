"""SAC gradient updates per second: our SACAgent.update against Stable-Baselines3's SAC, same machine.

Hopper-v5 sizes (observation 11, action 3), batch 256, 256x256 actor and critics, one thread. Timed,
interleaved round by round because the machine is shared and noisy (medians reported):

  A. our ``SACAgent.update`` in eager mode (the default);
  B. SB3's ``SAC.train(gradient_steps=N, batch_size=256)`` in a separate process started from a
     scratch venv (``--sb3-python``), so SB3 never enters the project's environment; its buffer is
     filled with random transitions of a dummy Box env with Hopper's spaces. SB3's time includes its
     replay-buffer sampling (ours excludes it), so the sampling time is measured and reported too;
  C. our ``SACAgent.update`` with ``compile=on`` (training/compile.py: compile time reported);
  D. ``torch.matmul`` on exactly the matmul shapes one update performs (see ``update_matmuls``).

The FLOP count (``update_matmuls``): matmuls only (bias adds, activations, Adam are O(B*H), not
O(B*H^2)). ``SACLoss`` (v2, twin Q) evaluates per update, with B the batch:
  * the actor on x (grad) and on x' (no grad);
  * both critics on (x, a~pi) with DETACHED critic parameters (actor loss: gradient to a only),
  * both critics on (x, a) (critic loss), both target critics on (x', a') (no grad).
A linear layer in->out costs 2*B*in*out FLOPs forward; in the backward, 2*B*in*out for the weight
gradient when its weights are trained here, and 2*B*in*out for the input gradient when something
upstream needs it (not for the first layer when its input is data; yes for the critics in the actor
loss, whose input holds a~pi). SB3 performs the same evaluations plus the critics' weight gradients in
its actor backward (its critic parameters are not detached there), about 13% more FLOPs.

Usage (from the repository root):
    python3 -m venv /tmp/sb3venv && /tmp/sb3venv/bin/pip install torch==2.13.0 stable-baselines3
    .venv/bin/python benchmarks/sac_update_speed.py --sb3-python /tmp/sb3venv/bin/python
writes benchmarks/results/sac_update_speed.json and .md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from tensordict import TensorDict
from torchrl.data import Bounded

from torchrl_vmbpo.algorithms.sac import SACAgent
from torchrl_vmbpo.training.config import TrainConfig
from torchrl_vmbpo.training.results import git_commit, machine_info

OBS_DIM, ACT_DIM, BATCH, HIDDEN = 11, 3, 256, (256, 256)
RESULTS = Path(__file__).resolve().parent / "results"

# Runs in the SB3 venv's python: builds SAC, fills its buffer, then answers timing requests on stdin.
SB3_WORKER = r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(int(sys.argv[1]))
import gymnasium as gym, stable_baselines3
from stable_baselines3 import SAC
from stable_baselines3.common.logger import configure
OBS, ACT, B, H = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])

class HopperSpaces(gym.Env):
    observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (ACT,), np.float32)
    def reset(self, *, seed=None, options=None):
        return np.zeros(OBS, np.float32), {}
    def step(self, action):
        return np.zeros(OBS, np.float32), 0.0, False, False, {}

model = SAC("MlpPolicy", HopperSpaces(), batch_size=B, learning_starts=0, buffer_size=100_000,
            policy_kwargs=dict(net_arch=H), device="cpu", seed=0)
model.set_logger(configure(folder=None, format_strings=[]))
rng = np.random.default_rng(0)
for _ in range(10_000):
    model.replay_buffer.add(rng.standard_normal((1, OBS)).astype(np.float32),
                            rng.standard_normal((1, OBS)).astype(np.float32),
                            rng.uniform(-1, 1, (1, ACT)).astype(np.float32),
                            rng.standard_normal(1).astype(np.float32), rng.random(1) < 0.01, [{}])
print(json.dumps({"torch": torch.__version__, "sb3": stable_baselines3.__version__}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    wall, cpu = time.perf_counter(), time.process_time()
    if cmd["op"] == "train":
        model.train(gradient_steps=cmd["n"], batch_size=B)
    elif cmd["op"] == "sample":
        for _ in range(cmd["n"]):
            model.replay_buffer.sample(B)
    else:
        break
    print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}), flush=True)
"""


def update_matmuls(batch: int = BATCH, obs_dim: int = OBS_DIM, act_dim: int = ACT_DIM, hidden=HIDDEN):
    """The (m, k, n) of every matmul [m, k] @ [k, n] one SACLoss-v2 update performs (see module doc)."""
    actor = list(zip([obs_dim, *hidden], [*hidden, 2 * act_dim]))  # writes loc and scale
    critic = list(zip([obs_dim + act_dim, *hidden], [*hidden, 1]))
    shapes = []

    def evaluate(layers, copies, *, weight_grad, input_grad_from):
        """input_grad_from: first layer whose input gradient is needed (None: no backward at all)."""
        for _ in range(copies):
            for i, (n_in, n_out) in enumerate(layers):
                shapes.append((batch, n_in, n_out))  # forward
                if weight_grad:
                    shapes.append((n_out, batch, n_in))  # dW = dY^T X
                if input_grad_from is not None and i >= input_grad_from:
                    shapes.append((batch, n_out, n_in))  # dX = dY W

    evaluate(actor, 1, weight_grad=True, input_grad_from=1)  # actor loss: pi(.|x), reparameterised
    evaluate(actor, 1, weight_grad=False, input_grad_from=None)  # target: a' ~ pi(.|x'), no grad
    evaluate(critic, 2, weight_grad=False, input_grad_from=0)  # actor loss: Q(x, a~pi), detached params
    evaluate(critic, 2, weight_grad=True, input_grad_from=1)  # critic loss: Q(x, a)
    evaluate(critic, 2, weight_grad=False, input_grad_from=None)  # target critics: Q'(x', a')
    return shapes


def flops(shapes) -> int:
    return sum(2 * m * k * n for m, k, n in shapes)


def random_batch(generator: torch.Generator) -> TensorDict:
    def randn(*shape):
        return torch.randn(*shape, generator=generator)

    return TensorDict(
        {
            "observation": randn(BATCH, OBS_DIM),
            "action": torch.rand(BATCH, ACT_DIM, generator=generator) * 2 - 1,
            ("next", "observation"): randn(BATCH, OBS_DIM),
            ("next", "reward"): randn(BATCH, 1),
            ("next", "done"): torch.rand(BATCH, 1, generator=generator) < 0.01,
            ("next", "terminated"): torch.rand(BATCH, 1, generator=generator) < 0.01,
        },
        [BATCH],
    )


def make_agent(compile_loss: bool) -> SACAgent:
    cfg = TrainConfig(algo="sac", env="Hopper-v5", batch_size=BATCH, hidden=HIDDEN, device="cpu")
    agent = SACAgent(cfg, OBS_DIM, Bounded(-1.0, 1.0, shape=(ACT_DIM,)))
    return agent.setup_compute("cpu", compile_updates=compile_loss)


class OurTimer:
    def __init__(self, agent: SACAgent, batches: list[TensorDict]):
        self.agent, self.batches, self.i = agent, batches, 0

    def __call__(self, n: int) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            self.agent.update(self.batches[self.i % len(self.batches)])
            self.i += 1
        return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


class MatmulTimer:
    def __init__(self, shapes):
        self.pairs = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in shapes]

    def __call__(self, n: int) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            for a, b in self.pairs:
                torch.matmul(a, b)
        return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


class SB3Timer:
    def __init__(self, python: str, threads: int):
        args = [
            python,
            "-c",
            SB3_WORKER,
            str(threads),
            str(OBS_DIM),
            str(ACT_DIM),
            str(BATCH),
            json.dumps(list(HIDDEN)),
        ]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the SB3 worker ({python}) exited before it was ready; run it by hand to see why")
        self.versions = json.loads(line)

    def _ask(self, op: str, n: int) -> tuple[float, float]:
        self.proc.stdin.write(json.dumps({"op": op, "n": n}) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        return reply["wall"] / n, reply["cpu"] / n

    def __call__(self, n: int) -> tuple[float, float]:
        return self._ask("train", n)

    def sample(self, n: int) -> tuple[float, float]:
        return self._ask("sample", n)

    def close(self):
        self.proc.stdin.write(json.dumps({"op": "quit", "n": 0}) + "\n")
        self.proc.stdin.flush()
        self.proc.wait(timeout=30)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sb3-python", default=None, help="python of a venv with stable-baselines3 (skipped if absent)"
    )
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (medians over them)")
    parser.add_argument("--updates", type=int, default=30, help="updates per round and variant")
    parser.add_argument("--warmup", type=int, default=30, help="untimed updates per variant first")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-compile", action="store_true", help="skip the compile=on variant")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()
    started = time.perf_counter()

    generator = torch.Generator().manual_seed(0)
    batches = [random_batch(generator) for _ in range(8)]
    shapes = update_matmuls()
    update_flops = flops(shapes)
    variants: dict[str, object] = {"ours_eager": OurTimer(make_agent(False), batches)}
    notes = []
    sb3 = None
    if args.sb3_python and Path(args.sb3_python).exists():
        sb3 = SB3Timer(args.sb3_python, args.threads)
        variants["sb3"] = sb3
    else:
        message = (
            f"SB3 skipped: no python at {args.sb3_python!r} (pass --sb3-python PATH of a venv with stable-baselines3)"
        )
        print(message)
        notes.append(message)
    compile_seconds = None
    if not args.no_compile:
        compiled = OurTimer(make_agent(True), batches)
        wall = time.perf_counter()
        compiled(1)  # compiles
        compile_seconds = time.perf_counter() - wall
        variants["ours_compiled"] = compiled
    variants["matmul_same_shapes"] = MatmulTimer(shapes)
    square = MatmulTimer([(256, 256, 256)])
    variants["matmul_256_cube"] = square

    for timer in variants.values():  # warm-up (our batch pool also gains SACLoss's td_error key here)
        timer(args.warmup)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, timer in variants.items():
            samples[name].append(timer(args.updates if "matmul" not in name else max(args.updates // 2, 1)))
    sb3_sample = None
    if sb3 is not None:
        sb3_sample = statistics.median(sb3.sample(args.updates)[0] for _ in range(args.rounds))
        sb3.close()

    def med(name, k):
        return statistics.median(s[k] for s in samples[name])

    result = {
        "what": "SAC gradient updates per second, Hopper-v5 sizes (obs 11, act 3), batch 256, 256x256 MLPs",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit("benchmarks/sac_update_speed.py"),
        "machine": machine_info(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "sb3_versions": sb3.versions if sb3 is not None else None,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "rounds": args.rounds,
        "updates_per_round": args.updates,
        "update_matmul_flops": update_flops,
        "update_matmul_count": len(shapes),
        "compile_seconds": None if compile_seconds is None else round(compile_seconds, 2),
        "seconds_per_update_wall": {name: med(name, 0) for name in variants},
        "seconds_per_update_cpu": {name: med(name, 1) for name in variants},
        "raw_wall": {name: [s[0] for s in samples[name]] for name in variants},
        "notes": notes,
    }
    wall, cpu = result["seconds_per_update_wall"], result["seconds_per_update_cpu"]
    result["updates_per_second"] = {n: 1.0 / wall[n] for n in variants if "matmul" not in n}
    matmul_rate = update_flops / wall["matmul_same_shapes"]
    result["matmul_gflops_same_shapes"] = matmul_rate / 1e9
    result["matmul_gflops_256_cube"] = 2 * 256**3 / wall["matmul_256_cube"] / 1e9
    for name in ("ours_eager", "ours_compiled"):
        if name in wall:
            result[f"{name}_gflops"] = update_flops / wall[name] / 1e9
            result[f"{name}_fraction_of_matmul_rate"] = wall["matmul_same_shapes"] / wall[name]
            if sb3 is not None:
                result[f"{name}_speedup_vs_sb3_wall"] = wall["sb3"] / wall[name]
                result[f"{name}_speedup_vs_sb3_cpu"] = cpu["sb3"] / cpu[name]
                result[f"{name}_speedup_vs_sb3_without_its_sampling"] = (wall["sb3"] - sb3_sample) / wall[name]
                # the same ratio taken within each round, then the median: cancels slow drifts in load
                result[f"{name}_speedup_vs_sb3_per_round_median"] = statistics.median(
                    b[0] / a[0] for a, b in zip(samples[name], samples["sb3"])
                )
    result["sb3_buffer_sample_seconds"] = sb3_sample
    result["benchmark_seconds"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sac_update_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    table = render(result)
    (args.out / "sac_update_speed.md").write_text(table)
    print(table)
    return result


def render(r: dict) -> str:
    wall, cpu = r["seconds_per_update_wall"], r["seconds_per_update_cpu"]
    lines = [
        "# SAC update speed: ours vs Stable-Baselines3",
        "",
        f"{r['what']}; {r['threads']} thread(s). Generated by `benchmarks/sac_update_speed.py`.",
        "",
        f"- date {r['date']}, commit `{r['commit']}`",
        # "cpus" in results written before machine_info() named it cpu_count
        f"- machine: {r['machine'].get('cpu_model')}, {r['machine'].get('cpu_count', r['machine'].get('cpus'))} CPUs "
        f"(shared: load average "
        f"{r['load_average_before']} before, {r['load_average_after']} after)",
        f"- torch {r['torch']}; SB3 {r['sb3_versions']}",
        f"- {r['rounds']} interleaved rounds of {r['updates_per_round']} updates per variant; medians",
        "",
        "| variant | ms / update (wall) | ms / update (CPU) | updates / s |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name in wall:
        ups = r["updates_per_second"].get(name)
        lines.append(
            f"| {name} | {wall[name] * 1e3:.2f} | {cpu[name] * 1e3:.2f} | {'' if ups is None else f'{ups:.1f}'} |"
        )
    lines += [
        "",
        f"Matmul FLOPs per update: {r['update_matmul_flops'] / 1e6:.1f} M in {r['update_matmul_count']} matmuls "
        f"(count in the script's docstring). `torch.matmul` at those shapes: "
        f"{r['matmul_gflops_same_shapes']:.1f} GFLOP/s; at 256x256x256: {r['matmul_gflops_256_cube']:.1f} GFLOP/s.",
        "",
    ]
    for name in ("ours_eager", "ours_compiled"):
        if f"{name}_gflops" in r:
            line = (
                f"- {name}: {r[f'{name}_gflops']:.1f} GFLOP/s = {100 * r[f'{name}_fraction_of_matmul_rate']:.0f}% "
                f"of the same-shape matmul rate"
            )
            if f"{name}_speedup_vs_sb3_wall" in r:
                line += (
                    f"; vs SB3: **{r[f'{name}_speedup_vs_sb3_wall']:.2f}x** (wall; median of per-round "
                    f"ratios {r[f'{name}_speedup_vs_sb3_per_round_median']:.2f}x), "
                    f"{r[f'{name}_speedup_vs_sb3_cpu']:.2f}x (CPU time), "
                    f"{r[f'{name}_speedup_vs_sb3_without_its_sampling']:.2f}x against SB3 minus its buffer sampling"
                )
            lines.append(line)
    if r["compile_seconds"] is not None:
        lines.append(f"- `compile=on`: first call (compilation) took {r['compile_seconds']:.1f} s")
    if r["sb3_buffer_sample_seconds"] is not None:
        lines.append(
            f"- SB3's `replay_buffer.sample(256)`, included in its train time: "
            f"{r['sb3_buffer_sample_seconds'] * 1e3:.3f} ms"
        )
    lines += [f"- {note}" for note in r["notes"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
