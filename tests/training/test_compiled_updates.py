"""Compiled updates: every preset's update and model-fit step trace into whole graphs (``fullgraph=True``
raises on a graph break), and ``TrainConfig.compile`` decides where compiling pays off.

Dynamo's "eager" backend traces exactly as Inductor's would (graph breaks included) without
generating code, so the whole preset list checks in seconds; test_sac_agent.py runs Inductor itself.
"""

import pytest
import torch
from tensordict import TensorDict
from tensordict.utils import is_tensorclass
from tiny_configs import TINY_STEPS
from torch._dynamo.utils import counters

from torchrl_vmbpo.algorithms import PRESETS, build_agent, default_config
from torchrl_vmbpo.data.buffers import make_buffer
from torchrl_vmbpo.envs.real import make_env
from torchrl_vmbpo.training.compile import (
    COMPILE_AUTO_MIN_RATIO_FITS,
    COMPILE_AUTO_MIN_UPDATES,
    compile_enabled,
    compile_fn,
)
from torchrl_vmbpo.training.config import TrainConfig
from torchrl_vmbpo.training.loop_state import LoopState
from torchrl_vmbpo.training.phases import ModelBuffer, fit_model, imagine_rollouts, run_updates

TINY = [*TINY_STEPS, "compile=off"]
# Settings under which each preset runs every compiled function in a few updates: VMBPO's twisted
# fit from the first update (weighted_fit_after=0) and MPO's/PETS's smallest sample sizes.
EXTRA = {
    "vmbpo": ["extra.weighted_fit_after=0"],
    "vmbpo-mfe": ["extra.weighted_fit_after=0"],
    "vmbpo-paper": ["extra.weighted_fit_after=0"],
    "vmbpo-twist-off": ["extra.weighted_fit_after=0"],
    "pets": ["extra.population=8", "extra.elites=2", "extra.planning_horizon=2", "extra.particles=2"],
    "mpo": ["extra.num_samples=4"],
}


def _filled_real_buffer(cfg, n=64):
    env = make_env(cfg.env, seed=0)
    buffer = make_buffer(1000)
    rows = env.rollout(n, break_when_any_done=False).reshape(-1)
    buffer.extend(
        rows.select("observation", "action", *[("next", k) for k in ("observation", "reward", "done", "terminated")])
    )
    return env, buffer


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("algo", PRESETS)
def test_every_presets_update_and_model_fit_compile_without_graph_breaks(algo, precision):
    cfg = default_config(algo, "Pendulum-v1", overrides=TINY + EXTRA.get(algo, []) + ["model_max_epochs=1"])
    env, real = _filled_real_buffer(cfg)
    # bf16: the autocast regions (and the output layers' float32 islands) trace into the same one graph
    agent = build_agent(cfg, env).setup_compute(
        "cpu",
        compile_updates=True,
        compile_model_fit=True,
        compile_ratio_fit=True,
        backend="eager",
        precision=precision,
    )
    torch._dynamo.reset()
    counters.clear()
    state = LoopState.fresh(cfg)
    model = ModelBuffer(cfg)
    if agent.capabilities.model_fit:
        fit_model(cfg, agent, real)  # the fit's step: compiled
    if agent.capabilities.imagination:
        imagine_rollouts(cfg.replace(rollouts_per_step=1, model_retrain_every=8), agent, env, real, model, 0)
    if agent.capabilities.updates:
        metrics = run_updates(cfg.replace(utd=2.0), agent, real, model.buffer, state, new_steps=1)
        assert metrics and all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    graphs = counters["stats"]["unique_graphs"]
    # VMBPO-MFE's weighted-MAP M-step reads another batch than its E-step: two update graphs.
    # VMBPO computes both steps in one (em_update), or copies pi <- q_c with no M-step loss.
    update_graphs = 2 if algo == "vmbpo-mfe" else 1
    # VMBPO's ratio fit (eq. 21, nu against the fitted q_d) steps with the model fit: its own graph.
    fit_graphs = int(agent.capabilities.model_fit) + int(hasattr(agent, "ratio_loss"))
    expected = fit_graphs + (update_graphs if agent.capabilities.updates else 0)
    # Each compiled function traced into exactly one graph (a break would have raised, a recompile
    # shows here).
    assert graphs == expected, (algo, dict(counters["stats"]))
    # A class tensordict has not seen yet (as an evaluation or a checkpoint meets them) recompiles nothing.
    is_tensorclass(type(f"Unseen_{algo}_{precision}", (), {}))
    with torch.compiler.set_stance("fail_on_recompile"):
        if agent.capabilities.model_fit:
            fit_model(cfg, agent, real)
        if agent.capabilities.updates:
            run_updates(cfg.replace(utd=2.0), agent, real, model.buffer, state, new_steps=1)


def test_compile_auto_compiles_runs_long_enough_to_pay_for_it():
    short = TrainConfig(steps=3000, init_random_steps=1000, utd=1.0)  # 2,000 updates, 9 fits
    assert not compile_enabled(short, what="updates") and compile_enabled(short, what="model_fit")
    long = short.replace(utd=COMPILE_AUTO_MIN_UPDATES / 2000)
    assert compile_enabled(long, what="updates")
    few_fits = TrainConfig(steps=1500, init_random_steps=1000, model_retrain_every=250)  # fits at 1000, 1250, 1500
    assert not compile_enabled(few_fits, what="model_fit")
    # VMBPO's ratio-fit step pays off only over many fits (COMPILE_AUTO_MIN_RATIO_FITS)
    assert not compile_enabled(short, what="ratio_fit")
    many_fits = short.replace(steps=1000 + 250 * (COMPILE_AUTO_MIN_RATIO_FITS - 1), model_retrain_every=250)
    assert compile_enabled(many_fits, what="ratio_fit")
    assert not compile_enabled(many_fits.replace(steps=many_fits.steps - 250), what="ratio_fit")
    assert compile_enabled(short.replace(compile="on"), what="updates")
    assert not compile_enabled(long.replace(compile="off"), what="updates")
    for cfg in (short, short.replace(compile="on")):
        with pytest.raises(ValueError, match="what must be"):
            compile_enabled(cfg, what="imagination")


@pytest.mark.compile_auto
def test_build_agent_compiles_as_compile_auto_decides_for_the_run():
    env = make_env("Pendulum-v1")
    long = default_config("vmbpo", "Pendulum-v1", overrides=["hidden=[8]", "model_hidden=[8]"])  # 95,000 updates
    agent = build_agent(long, env)  # compiling is lazy: nothing is traced before the first update
    assert compile_enabled(long) and agent.compiled_update and agent.compile_model_fit
    assert not agent.compile_ratio_fit  # 39 fits: too few for the ratio fit's compile time
    short = long.replace(steps=600, model_retrain_every=250)  # 1,000 updates, 1 fit
    agent = build_agent(short, env)
    assert not agent.compiled_update and not agent.compile_model_fit
    paper = long.replace(steps=50_000)  # the paper's Pendulum budget: 199 fits
    assert build_agent(paper, env).compile_ratio_fit


def test_a_graph_break_in_a_compiled_update_is_an_error():
    def update(x):
        torch._dynamo.graph_break()
        return x + 1

    with pytest.raises(Exception, match="graph_break|Graph break|graph break"):
        compile_fn(update, backend="eager")(torch.ones(2))


@pytest.mark.parametrize("backend", ["eager", None])  # None: Inductor
def test_a_class_first_seen_after_compiling_recompiles_nothing(backend):
    # tensordict memoises is_tensorclass per class in a global dict that traced TensorDict code reads:
    # compile_fn drops Dynamo's guards on that dict, whose contents cannot change what was traced.
    step = compile_fn(lambda td: td.apply(lambda x: 2 * x)["a"].sum(), backend=backend)
    td = TensorDict({"a": torch.ones(3)}, [3])
    assert float(step(td)) == 6.0
    is_tensorclass(type(f"Unseen_{backend}", (), {}))
    with torch.compiler.set_stance("fail_on_recompile"):
        assert float(step(td)) == 6.0
    with pytest.raises(RuntimeError, match="recompile"), torch.compiler.set_stance("fail_on_recompile"):
        step(TensorDict({"a": torch.ones(4)}, [4]))  # every other guard stays: a new shape still recompiles


def test_compiling_changes_no_state_dict_key_and_build_agent_compiles_as_configured():
    cfg = default_config("vmbpo", "Pendulum-v1", overrides=TINY)
    eager = build_agent(cfg, make_env("Pendulum-v1"))
    assert not eager.compiled_update and not eager.compile_model_fit and not eager.compile_ratio_fit
    on = build_agent(cfg.replace(compile="on"), make_env("Pendulum-v1"))
    assert on.compiled_update and on.compile_model_fit and on.compile_ratio_fit
    assert on.state_dict().keys() == eager.state_dict().keys()  # checkpoints interchange
    pets = build_agent(
        default_config("pets", "Pendulum-v1", overrides=TINY[:2] + ["compile=on"]), make_env("Pendulum-v1")
    )
    assert not pets.compiled_update and pets.compile_model_fit  # PETS has no update to compile
