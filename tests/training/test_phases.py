"""Each phase of the loop alone, the loop state's round trip, and what each preset's agent declares."""

import io
import random

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule

from torchrl_vmbpo.algorithms import build_agent, default_config
from torchrl_vmbpo.data.buffers import make_buffer
from torchrl_vmbpo.envs.real import make_env
from torchrl_vmbpo.errors import ConfigError
from torchrl_vmbpo.training.agent import Agent, Capabilities
from torchrl_vmbpo.training.evaluate import evaluate
from torchrl_vmbpo.training.loop_state import LoopState, refuse_finished_run, rng_states, set_rng_states
from torchrl_vmbpo.training.phases import (
    ModelBuffer,
    PhaseTimer,
    collect,
    evaluate_policy,
    fit_model,
    imagine_rollouts,
    model_fit_due,
    run_updates,
)

TINY = [
    "hidden=[16,16]",
    "model_hidden=[16,16]",
    "rollouts_per_step=2",
    "model_max_epochs=2",
    "eval_episodes=1",
    "init_random_steps=50",
    "model_retrain_every=100",
    "batch_size=16",
    "model_batch_size=32",
]


def _transitions(n, value=0.0):
    return TensorDict(
        {
            "observation": torch.randn(n, 3),
            "action": torch.rand(n, 1) * 4 - 2,
            ("next", "observation"): torch.full((n, 3), value),
            ("next", "reward"): -torch.rand(n, 1),
            ("next", "done"): torch.zeros(n, 1, dtype=torch.bool),
            ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool),
        },
        [n],
    )


def _mbpo(**changes):
    cfg = default_config("mbpo", "Pendulum-v1", overrides=TINY, **changes)
    env = make_env("Pendulum-v1", seed=0)
    return cfg, build_agent(cfg, env), env


def test_collect_stores_the_batch_counts_its_steps_and_refuses_nan():
    buffer, state = make_buffer(100), LoopState()
    assert collect(_transitions(3).unsqueeze(0), buffer, state, "Pendulum-v1") == 3
    assert len(buffer) == 3 and state.env_steps == 3
    with pytest.raises(ValueError, match="Pendulum-v1.*NaN"):
        collect(_transitions(2, value=float("nan")), buffer, state, "Pendulum-v1")


def test_model_fit_is_due_at_the_first_learning_step_then_every_retrain_period():
    cfg = default_config("mbpo", "Pendulum-v1", overrides=TINY)
    assert not model_fit_due(cfg, 49, None)
    assert model_fit_due(cfg, 50, None)  # also a resumed run's first step: its model buffer was not saved
    assert not model_fit_due(cfg, 149, 50) and model_fit_due(cfg, 150, 50)


def test_fit_model_fits_q_d_then_runs_the_agents_hook(monkeypatch):
    cfg, agent, _ = _mbpo()
    buffer = make_buffer(1000)
    buffer.extend(_transitions(200))
    calls = []
    monkeypatch.setattr(agent, "after_model_fit", lambda real: calls.append(len(real)) or {"hook": 1.0})
    before = [p.clone() for p in agent.dynamics.parameters()]
    metrics = fit_model(cfg, agent, buffer)
    assert calls == [200] and metrics["hook"] == 1.0
    assert any("holdout" in key for key in metrics)
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.dynamics.parameters()))


def test_a_twisted_fit_scores_eq19_log_weights_once_not_at_every_step(monkeypatch):
    cfg = default_config("vmbpo", "Pendulum-v1", overrides=TINY + ["extra.weighted_fit_after=0"])
    agent = build_agent(cfg, make_env("Pendulum-v1", seed=0))
    objective = agent.dynamics_loss()
    assert objective.mix == 0.0  # the twist is on from the first fit
    calls = []
    scored = objective.log_weight
    monkeypatch.setattr(objective, "log_weight", lambda td: calls.append(td.shape) or scored(td))
    monkeypatch.setattr(agent, "after_model_fit", lambda real: {})  # its diagnostics score a batch of their own
    buffer = make_buffer(1000)
    buffer.extend(_transitions(200))
    metrics = fit_model(cfg, agent, buffer)
    assert metrics["model_epochs"] >= 1  # several steps and holdout scorings, one scoring of D's rows
    assert calls == [torch.Size([200])]


def test_the_model_buffer_is_sized_for_the_rollout_length_and_keeps_its_newest_rows():
    cfg = default_config("mbpo", "Pendulum-v1", overrides=TINY + ["model_retain_epochs=1"])
    model = ModelBuffer(cfg)
    first = model.for_horizon(1)
    assert first._storage.max_size == 2 * 1000 * 1  # rollouts_per_step x 1000 steps x k
    assert model.for_horizon(1) is first  # the same length: the same buffer
    rows = _transitions(10)
    rows["observation"] = torch.arange(10.0).unsqueeze(-1).expand(10, 3)
    first.extend(rows)
    second = model.for_horizon(3)
    assert second is not first and second._storage.max_size == 6000
    assert second[:]["observation"][:, 0].tolist() == list(range(10))


def test_imagine_rollouts_fills_the_model_buffer_at_the_scheduled_length():
    cfg, agent, env = _mbpo()
    real = make_buffer(1000)
    real.extend(_transitions(200))
    fit_model(cfg, agent, real)
    model = ModelBuffer(cfg)
    metrics = imagine_rollouts(cfg, agent, env, real, model, env_steps=200)
    assert metrics["rollout_length"] == cfg.rollout_length(200) == 1
    assert len(model.buffer) == cfg.rollouts_per_step * cfg.model_retrain_every


class _CountingAgent(Agent):
    def __init__(self):
        super().__init__()
        self.batches = []

    def update(self, batch):
        self.batches.append(batch.shape[0])
        return {"loss": torch.tensor(float(len(self.batches)))}


def test_run_updates_carries_fractional_updates_and_returns_the_last_metrics():
    cfg = default_config("sac", "Pendulum-v1", overrides=TINY + ["utd=0.5"])
    agent, real, state = _CountingAgent(), make_buffer(100), LoopState()
    real.extend(_transitions(50))
    assert run_updates(cfg, agent, real, None, state, new_steps=1) is None  # half an update owed
    assert run_updates(cfg, agent, real, None, state, new_steps=1) == {"loss": 1.0}
    assert run_updates(cfg, agent, real, None, state, new_steps=5) == {"loss": 3.0}  # 2.5 owed: 2 now
    assert state.updates == 3 and state.updates_owed == 0.5 and agent.batches == [16, 16, 16]


def test_evaluate_policy_returns_a_finite_mean_and_spread():
    cfg, agent, _ = _mbpo()
    mean, std, length = evaluate_policy(cfg, agent, make_env("Pendulum-v1", seed=1), max_episode_steps=20)
    assert np.isfinite(mean) and std == 0.0  # one episode
    assert length == 20  # Pendulum never terminates: the episode runs to max_episode_steps


def test_evaluation_counts_the_steps_of_episodes_that_terminate():
    # InvertedPendulum-v5 pays 1 per step the pole stays up and 0 on the step it falls: pushed hard one
    # way, the pole falls within a few dozen steps, so each return is its episode's length minus one.
    env = make_env("InvertedPendulum-v5", seed=0)
    push = TensorDictModule(lambda obs: torch.full((*obs.shape[:-1], 1), 3.0), ["observation"], ["action"])
    mean, std, length = evaluate(env, push, episodes=2, max_steps=1000)
    assert 1 < length < 1000 and mean == pytest.approx(length - 1)


def test_phase_timer_adds_up_each_phase():
    timer = PhaseTimer({"update": 1.0})
    with timer("update"):
        pass
    with timer("collect"):
        pass
    assert timer.seconds["update"] >= 1.0 and set(timer.seconds) == {"update", "collect"}


def test_loop_state_round_trips_through_a_weights_only_checkpoint_with_rng_states():
    state = LoopState(
        env_steps=7,
        updates=3,
        updates_owed=0.5,
        best=-12.0,
        train_metrics={"loss": 1.5},
        curve=[{"env_steps": 1, "eval_return_mean": -3.0}],
        commits=["abc"],
        resumed_at=[5],
    )
    _ = torch.rand(3), np.random.rand(), random.random()
    saved = state.to_checkpoint(_transitions(4))
    expected = torch.rand(2), np.random.rand(2), random.random()
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    loaded, real, rng = LoopState.from_checkpoint(torch.load(buffer, weights_only=True))
    assert loaded == state and real.shape == (4,) and real["next", "reward"].shape == (4, 1)
    set_rng_states(rng)
    again = torch.rand(2), np.random.rand(2), random.random()
    torch.testing.assert_close(again[0], expected[0])
    assert np.array_equal(again[1], expected[1]) and again[2] == expected[2]
    assert set(rng_states()) == {"torch", "numpy", "python"}


@pytest.mark.parametrize(
    "algo, expected",
    [
        ("sac", Capabilities()),
        ("mbpo", Capabilities(model_fit=True, imagination=True, real_ratio=0.05)),
        ("vmbpo", Capabilities(model_fit=True, imagination=True, real_ratio=0.05)),
        ("vmbpo-paper", Capabilities(model_fit=True, imagination=True, real_ratio=0.0)),
        ("mpo", Capabilities()),
        ("vmbpo-mfe", Capabilities(model_fit=True, imagination=True, real_ratio=1.0)),
        ("pets", Capabilities(updates=False, model_fit=True, planning=True)),
        ("steve", Capabilities(model_fit=True, real_ratio=1.0)),
    ],
)
def test_each_preset_declares_the_phases_it_uses(algo, expected):
    cfg = default_config(algo, "Pendulum-v1", overrides=TINY)
    assert build_agent(cfg, make_env("Pendulum-v1")).capabilities == expected


def test_a_resume_must_ask_for_more_steps_than_the_run_has():
    refuse_finished_run(200, 201)
    for steps in (200, 100):
        with pytest.raises(ConfigError, match=r"already has 200 env steps; resume with more steps \(--steps > 200\)"):
            refuse_finished_run(200, steps)
