"""Time each phase of the loop against ``torch.matmul`` at the same shapes, in the same process.

Phases, at Hopper-v5 sizes (observation 11, action 3; batch 256; 256x256 actor/critics; MBPO's
7 x 4 x 200 ensemble):
  * ``update/ALGO``: one gradient update of each algorithm (``agent.update`` on a drawn batch, the
    batch drawing included as the loop does it), eager and compiled;
  * ``model_fit_step``: one gradient step of the ensemble fit (a ``[256, 7]`` bootstrapped batch),
    eager and compiled, and one whole fit epoch over 4,000 training rows (the holdout pass included);
  * ``ratio_fit_step`` (with ``vmbpo`` in ``--algos``): one step of VMBPO's ratio fit (eq. 21: nu on a
    real batch of 256 and on next states drawn from q_d; 250 such steps follow each fit of q_d),
    eager and compiled;
  * ``imagine``: MBPO's per-fit imagination (400 x 250 one-step rollouts) with the policy;
  * ``collect``: one real Hopper step with the policy acting (MuJoCo on the CPU).

The FLOP reference: every matmul (``mm``, ``addmm``, ``bmm``, ``baddbmm``) one eager update or step
performs, forward and backward, is recorded with its shapes (``MatmulRecorder``) and replayed with
``torch.matmul`` on fresh tensors of those shapes; the phase's "matmul fraction" is that replay's
time over the phase's time: the share of the matmul limit the phase reaches (1.0 = nothing but
matmuls at torch's own rate). Rounds are interleaved (each round times every variant once) and
medians reported, since this machine is shared.

An ``--algos`` entry may carry settings after ``+`` (``vmbpo+extra.log_ratio_at=update``, ``--set``
syntax): that preset with them, timed as its own variant in the same rounds. ``--precision fp32 bf16``
times every update and fit step in each ``TrainConfig.precision`` (bf16 phases are named ``...@bf16``);
their matmul reference replays each recorded matmul in the dtype it ran in (bfloat16 hidden layers,
float32 output layers), so a bf16 phase's fraction is of the bfloat16 matmul limit.

Usage (repository root): ``.venv/bin/python benchmarks/phase_timing.py [--device cuda] [--threads 1]``
writes benchmarks/results/phase_timing_<device>_<threads>t.json and .md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from torchrl_vmbpo.algorithms.presets import build_agent, default_config
from torchrl_vmbpo.data.buffers import TRANSITION_KEYS, make_buffer
from torchrl_vmbpo.envs.real import make_env
from torchrl_vmbpo.training.imagine import imagine
from torchrl_vmbpo.training.model_fit import fit_dynamics
from torchrl_vmbpo.training.optim import optimize
from torchrl_vmbpo.training.precision import PRECISIONS
from torchrl_vmbpo.training.results import git_commit, machine_info

RESULTS = Path(__file__).resolve().parent / "results"
ENV = "Hopper-v5"
MATMULS = {"mm", "addmm", "bmm", "baddbmm"}


class MatmulRecorder(TorchDispatchMode):
    """Records ``(batch, m, k, n, dtype)`` of every matmul dispatched inside the ``with`` block (after
    autocast's casts: the dtype it computes in)."""

    def __init__(self):
        super().__init__()
        self.shapes: list[tuple[int, int, int, int, torch.dtype]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in MATMULS:
            a, b = (args[1], args[2]) if name in ("addmm", "baddbmm") else (args[0], args[1])
            batch = a.shape[0] if a.ndim == 3 else 1
            self.shapes.append((batch, a.shape[-2], a.shape[-1], b.shape[-1], a.dtype))
        return func(*args, **(kwargs or {}))


def flops(shapes) -> int:
    return sum(2 * b * m * k * n for b, m, k, n, _ in shapes)


def matmul_replay(shapes, device):
    """A function running ``torch.matmul`` once on every recorded shape, in its recorded dtype (fresh
    tensors, made once)."""
    pairs = []
    for b, m, k, n, dtype in shapes:
        lead = (b,) if b > 1 else ()
        pairs.append(
            (
                torch.randn(*lead, m, k, device=device, dtype=dtype),
                torch.randn(*lead, k, n, device=device, dtype=dtype),
            )
        )

    def run():
        for a, b in pairs:
            torch.matmul(a, b)

    return run


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeat: int) -> float:
    """Seconds per call of ``fn`` over ``repeat`` calls."""
    sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeat


def filled_buffers(agent, env, device, n_real=5000, n_model=20000):
    """D with ``n_real`` random Hopper transitions, E with ``n_model`` copies of them (for the batch mix)."""
    rows = env.rollout(n_real, break_when_any_done=False).reshape(-1).select(*TRANSITION_KEYS)
    real, model = make_buffer(100_000, device), make_buffer(max(n_model, 1), device)
    real.extend(rows.to(device))
    for _ in range(n_model // n_real):
        model.extend(agent.label_imagined(rows.to(device)))  # VMBPO's recorded nu, as imagination writes it
    return real, model


def prepare(step, device, compiled: bool, warmup: int) -> tuple[list, float]:
    """Run ``step`` once under the matmul recorder (eager only), once timed (the compile, when
    compiled) and ``warmup`` more times: ``(recorded matmul shapes, first call's seconds)``."""
    recorder = MatmulRecorder()
    if not compiled:
        with recorder:
            step()
    start = time.perf_counter()
    step()  # compiles when compiled
    sync(device)
    first = time.perf_counter() - start
    for _ in range(warmup):
        step()
    return recorder.shapes, first


def update_phase(algo, cfg, env, device, compiled: bool):
    agent = build_agent(cfg.replace(compile="on" if compiled else "off"), env)
    real, model = filled_buffers(agent, env, device)
    ratio = agent.capabilities.real_ratio

    def step():
        agent.update(agent.sample_batch(real, model, cfg.batch_size, ratio))

    return step, *prepare(step, device, compiled, warmup=5)


def model_step_phase(cfg, env, device, compiled: bool):
    agent = build_agent(cfg.replace(compile="on" if compiled else "off"), env)
    real, _ = filled_buffers(agent, env, device, n_model=0)
    data = real[:]
    agent.dynamics.input_normalizer.fit(agent.dynamics.model_inputs(data["observation"], data["action"]))
    loss = agent.dynamics_step_loss()
    members = agent.dynamics.num_members

    def step():
        idx = torch.randint(len(data), (cfg.model_batch_size, members), device=device)
        optimize(loss(data[idx])["loss_dynamics"], agent.model_optimizer)

    shapes, first = prepare(step, device, compiled, warmup=3)

    def epoch():  # one whole epoch on 4,000 training rows + the holdout pass (max_epochs=1)
        fit_dynamics(agent.dynamics, loss, agent.model_optimizer, data, batch_size=cfg.model_batch_size, max_epochs=1)

    return step, shapes, first, epoch, agent, real


def ratio_step_phase(cfg, env, device, compiled: bool):
    """One step of VMBPO's ratio fit as ``VMBPOAgent.after_model_fit`` takes it (the batch drawing included)."""
    agent = build_agent(cfg.replace(compile="off"), env).setup_compute(
        device, compile_ratio_fit=compiled, precision=cfg.precision
    )
    real, _ = filled_buffers(agent, env, device, n_model=0)
    loss = agent.fit_step_loss(agent.ratio_loss, compiled=agent.compile_ratio_fit)

    def step():
        optimize(loss(real.sample(agent.ratio_batch_size)), agent.ratio_optimizer, max_grad_norm=agent.max_grad_norm)

    return step, *prepare(step, device, compiled, warmup=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--updates", type=int, default=20, help="updates (model steps) per timed round")
    parser.add_argument("--algos", nargs="+", default=["sac", "mbpo", "vmbpo", "vmbpo-mfe", "mpo", "steve"])
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=PRECISIONS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    env = make_env(ENV, seed=0)
    load_before = os.getloadavg()
    variants = {}  # name -> (fn, matmul reference fn or None, flops, compile seconds)
    for precision in args.precision:
        at = "" if precision == "fp32" else f"@{precision}"  # fp32 phases keep their earlier names
        for variant in args.algos:
            algo, *sets = variant.split("+")  # "vmbpo+extra.log_ratio_at=update": the preset with those settings
            cfg = default_config(algo, ENV, device=args.device, overrides=[*sets, f"precision={precision}"])
            shapes = None
            for compiled in (False, True):
                fn, recorded, first = update_phase(algo, cfg, env, device, compiled)
                shapes = recorded or shapes
                variants[f"update/{variant}{at}/{'compiled' if compiled else 'eager'}"] = (fn, first)
            variants[f"matmul/update/{variant}{at}"] = (matmul_replay(shapes, device), flops(shapes))
        cfg = default_config("mbpo", ENV, device=args.device, overrides=[f"precision={precision}"])
        shapes = None
        for compiled in (False, True):
            fn, recorded, first, epoch, agent, real = model_step_phase(cfg, env, device, compiled)
            shapes = recorded or shapes
            tag = "compiled" if compiled else "eager"
            variants[f"model_fit_step{at}/{tag}"] = (fn, first)
            variants[f"model_fit_epoch{at}/{tag}"] = (epoch, None)
        variants[f"matmul/model_fit_step{at}"] = (matmul_replay(shapes, device), flops(shapes))
        if "vmbpo" in args.algos:
            cfg_v = default_config("vmbpo", ENV, device=args.device, overrides=[f"precision={precision}"])
            shapes = None
            for compiled in (False, True):
                fn, recorded, first = ratio_step_phase(cfg_v, env, device, compiled)
                shapes = recorded or shapes
                variants[f"ratio_fit_step{at}/{'compiled' if compiled else 'eager'}"] = (fn, first)
            variants[f"matmul/ratio_fit_step{at}"] = (matmul_replay(shapes, device), flops(shapes))

    def imagine_once():
        model_buffer = make_buffer(400 * 250, device)
        imagine(
            agent.dynamics,
            env,
            real,
            model_buffer,
            agent.rollout_policy,
            num_rollouts=400 * 250,
            horizon=1,
            termination_fn=agent.termination_fn,
        )

    variants["imagine/100k_rollouts"] = (imagine_once, None)
    from torchrl_vmbpo.training.device import on_device

    policy = on_device(agent.policy, device)
    td = env.reset()

    def collect_step():
        nonlocal td
        td = env.step_and_maybe_reset(policy(td))[1]

    variants["collect/step"] = (collect_step, None)
    repeats = {"model_fit_epoch": 1, "imagine": 1, "collect": 200}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (fn, _) in variants.items():
            phase = name.split("/")[0].split("@")[0]  # model_fit_epoch@bf16: a model_fit_epoch
            times[name].append(timed(fn, device, repeats.get(phase, args.updates)))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    rows = []
    for name, (_, extra) in variants.items():
        if name.startswith("matmul/"):
            continue
        row = {"phase": name, "ms": round(1000 * med[name], 3)}
        ref = None
        if name.startswith("update/"):
            ref = "matmul/update/" + name.split("/")[1]
            row["compile_seconds"] = round(extra, 1)
        elif name.startswith(("model_fit_step", "ratio_fit_step")):
            ref = "matmul/" + name.split("/")[0]
            row["compile_seconds"] = round(extra, 1)
        if ref:
            f = variants[ref][1]
            row["matmul_ms"] = round(1000 * med[ref], 3)
            row["gflops"] = round(f / med[name] / 1e9, 1)
            row["matmul_gflops"] = round(f / med[ref] / 1e9, 1)
            row["matmul_fraction"] = round(med[ref] / med[name], 3)
        rows.append(row)
    record = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "device": str(device),
        "threads": args.threads,
        "rounds": args.rounds,
        "updates_per_round": args.updates,
        "env": ENV,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "machine": machine_info(args.threads, device=device),
        "rows": rows,
    }
    tag = f"{device.type}_{args.threads}t"
    out = Path(args.out) if args.out else RESULTS / f"phase_timing_{tag}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    out.with_suffix(".md").write_text(render(record))
    print(render(record))


def render(record: dict) -> str:
    m = record["machine"]
    lines = [
        f"# Phase timing on {record['device']} ({record['threads']} thread(s))",
        "",
        f"Generated by `benchmarks/phase_timing.py`; {record['env']} sizes; {record['rounds']} interleaved rounds, "
        f"medians; {record['updates_per_round']} updates (model steps) per round.",
        "",
        f"- date {record['date']}, commit `{record['commit']}`",
        f"- machine: {m.get('cpu_model', m.get('processor'))}, {m.get('cpu_count')} CPUs"
        + (f", GPU {m['gpu']}" if "gpu" in m else "")
        + f"; torch {m.get('torch')}; load average before {record['load_average']['before']}, "
        f"after {record['load_average']['after']}",
        "",
        "| phase | ms | GFLOP/s | torch.matmul GFLOP/s, same shapes | matmul fraction | first call (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in record["rows"]:
        lines.append(
            f"| {r['phase']} | {r['ms']} | {r.get('gflops', '')} | {r.get('matmul_gflops', '')} | "
            f"{r.get('matmul_fraction', '')} | {r.get('compile_seconds', '')} |"
        )
    lines += [
        "",
        "matmul fraction: time of `torch.matmul` on the phase's recorded matmul shapes / the phase's time.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
