"""The mpo and vmbpo-mfe presets: smoke runs through the shared loop, checkpoints, data routing, settings."""

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from tiny_configs import SMALL_RUN

from torchrl_vmbpo.algorithms import presets
from torchrl_vmbpo.algorithms.mpo import MPOSettings
from torchrl_vmbpo.algorithms.run import run
from torchrl_vmbpo.algorithms.vmbpo_mfe import VMBPOMFESettings
from torchrl_vmbpo.data.buffers import make_buffer
from torchrl_vmbpo.envs.real import make_env
from torchrl_vmbpo.training.checkpoint import load_checkpoint

TINY = SMALL_RUN


@pytest.fixture
def registered():
    """The two presets are records of presets.ALGORITHMS."""
    assert {"mpo", "vmbpo-mfe"} <= set(presets.ALGORITHMS)


def _config(algo, *overrides, **changes):
    return presets.default_config(algo, "Pendulum-v1", overrides=TINY + list(overrides), **changes)


def _rows(n, obs_value=None, next_value=None):
    obs = torch.randn(n, 3) if obs_value is None else torch.full((n, 3), obs_value)
    next_obs = torch.randn(n, 3) if next_value is None else torch.full((n, 3), next_value)
    return TensorDict(
        {
            "observation": obs,
            "action": torch.rand(n, 1) * 4 - 2,
            ("next", "observation"): next_obs,
            ("next", "reward"): -torch.rand(n, 1),
            ("next", "done"): torch.zeros(n, 1, dtype=torch.bool),
            ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool),
        },
        [n],
    )


@pytest.mark.parametrize(
    "algo, overrides, model_based",
    [
        ("mpo", [], False),
        ("vmbpo-mfe", [], True),
        ("vmbpo-mfe", ["extra.m_step_mode=copy", "extra.m_step_period=50"], False),
    ],
    ids=["mpo", "vmbpo-mfe", "vmbpo-mfe-copy"],
)
def test_preset_smoke_run_trains_evaluates_and_checkpoints(tmp_path, registered, algo, overrides, model_based):
    cfg = _config(algo, *overrides, steps=300, seed=3)
    summary = run(cfg, tmp_path / "run", progress=False)
    with open(tmp_path / "run" / "metrics.csv") as f:
        assert [int(r["env_steps"]) for r in csv.DictReader(f)] == [1, 150, 300]
    assert summary["env_steps"] == 300 and summary["updates"] == 201  # utd 1 from step 100 to 300
    assert np.isfinite(summary["final_return"])
    metrics = summary["final_train_metrics"]
    assert all(np.isfinite(v) for v in metrics.values())
    assert ("model_fit" in summary["phase_seconds"]) == model_based
    if algo == "mpo":
        assert {"loss_critic", "loss_policy", "loss_dual", "temperature", "kl_mean"} <= set(metrics)
    else:
        assert {"loss_qvalue", "loss_value", "actor_loss_actor", "exp_td", "exp_td_max", "q_target_std"} <= set(metrics)
        assert ("m_step_loss_policy" in metrics) == model_based  # weighted-MAP M-step on model states
    # Every setting as resolved, defaults included (as config.extra is now; older records held only what was set).
    settings_cls = MPOSettings if algo == "mpo" else VMBPOMFESettings
    assert set(summary["settings"]) == {f.name for f in dataclasses.fields(settings_cls)}
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["settings"] == summary["settings"]

    # The checkpoint restores every network, buffer and optimizer into a fresh agent.
    agent = presets.build_agent(cfg, make_env("Pendulum-v1"))
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt", agent)["env_steps"] == 300
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert agent.state_dict().keys() == saved["agent"].keys()
    for key, value in agent.state_dict().items():
        torch.testing.assert_close(value, saved["agent"][key])
    assert set(agent.optimizers()) == set(saved["optimizers"])
    for name, optimizer in agent.optimizers().items():
        assert len(optimizer.state) == len(saved["optimizers"][name]["state"])
    if algo == "vmbpo-mfe":
        assert int(agent.num_updates) == 201


def test_mfe_e_step_reads_real_rows_only_and_m_step_the_models_next_states(registered):
    def agent_after_one_update(model_batch):
        torch.manual_seed(1)
        agent = presets.build_agent(_config("vmbpo-mfe", "batch_size=8"), make_env("Pendulum-v1"))
        torch.manual_seed(2)
        agent.update(TensorDict({"real": real, "model": model_batch}, []))
        e_step = [p.detach().clone() for p in [*agent.critic.parameters(), *agent.q_c.parameters()]]
        return e_step, [p.detach().clone() for p in agent.pi.parameters()]

    real = _rows(8)
    base_e, base_pi = agent_after_one_update(_rows(8, obs_value=0.0, next_value=0.5))
    same_next_e, same_next_pi = agent_after_one_update(_rows(8, obs_value=3.0, next_value=0.5))
    other_next_e, other_next_pi = agent_after_one_update(_rows(8, obs_value=0.0, next_value=-2.0))
    for e_step in (same_next_e, other_next_e):  # the model batch never reaches Q, V or q_c
        assert all(torch.equal(a, b) for a, b in zip(base_e, e_step))
    assert all(torch.equal(a, b) for a, b in zip(base_pi, same_next_pi))  # x of E is not read
    assert not all(torch.equal(a, b) for a, b in zip(base_pi, other_next_pi))  # x' ~ q_d is


def test_mfe_sample_batch_keeps_real_and_model_rows_apart(registered):
    agent = presets.build_agent(_config("vmbpo-mfe"), make_env("Pendulum-v1"))
    real_buffer, model_buffer = make_buffer(100), make_buffer(100)
    real_buffer.extend(_rows(50, obs_value=1.0))
    model_buffer.extend(_rows(50, obs_value=-1.0))
    batch = agent.sample_batch(real_buffer, model_buffer, 16, real_ratio=0.5)
    assert batch["real"].shape == (16,) and bool((batch["real", "observation"] == 1.0).all())
    assert batch["model"].shape == (16,) and bool((batch["model", "observation"] == -1.0).all())
    copy = presets.build_agent(_config("vmbpo-mfe", "extra.m_step_mode=copy"), make_env("Pendulum-v1"))
    assert not copy.model_based and "model" not in copy.sample_batch(real_buffer, None, 16, 1.0).keys()


def test_mfe_copy_m_step_sets_pi_to_q_c_every_period(registered):
    agent = presets.build_agent(
        _config("vmbpo-mfe", "extra.m_step_mode=copy", "extra.m_step_period=2", "batch_size=8"), make_env("Pendulum-v1")
    )
    assert all(torch.equal(a, b) for a, b in zip(agent.pi.parameters(), agent.q_c.parameters()))  # q_c starts at pi
    agent.update(TensorDict({"real": _rows(8)}, []))
    assert not all(torch.equal(a, b) for a, b in zip(agent.pi.parameters(), agent.q_c.parameters()))
    agent.update(TensorDict({"real": _rows(8)}, []))
    assert all(torch.equal(a, b) for a, b in zip(agent.pi.parameters(), agent.q_c.parameters()))


@pytest.mark.parametrize("period, copies_at", [(1, [1, 2, 3, 4, 5, 6]), (3, [3, 6])])
def test_mpo_targets_are_hard_copies_every_period_and_the_actor_acts(registered, period, copies_at):
    agent = presets.build_agent(
        _config("mpo", f"extra.target_update_period={period}", "extra.num_samples=4"), make_env("Pendulum-v1")
    )
    online, target = agent.loss.actor_network_params, agent.loss.target_actor_network_params
    equal_after = []
    for step in range(1, 7):
        agent.update(_rows(8))
        if all(torch.equal(a, b) for a, b in zip(online.values(True, True), target.values(True, True))):
            equal_after.append(step)
    assert equal_after == copies_at
    # The real-env actor is the trained one (shared storage), not a stale copy.
    for a, b in zip(agent.policy.parameters(), online.values(True, True)):
        assert a.data_ptr() == b.data_ptr()


@pytest.mark.parametrize(
    "algo, extra, match",
    [
        ("mpo", {"epsilonn": 0.1}, "unknown MPO setting.*epsilonn"),
        ("mpo", {"target_update": "sometimes"}, "extra.target_update"),
        ("mpo", {"num_samples": 1}, "extra.num_samples"),
        ("vmbpo-mfe", {"tempreature": 2.0}, "unknown VMBPO-MFE setting.*tempreature"),
        ("vmbpo-mfe", {"temperature": 0}, "extra.temperature"),
        ("vmbpo-mfe", {"m_step_mode": "average"}, "extra.m_step_mode"),
        ("vmbpo-mfe", {"weight_mix": 1.5}, "extra.weight_mix"),
    ],
)
def test_unknown_or_bad_settings_are_named(registered, algo, extra, match):
    with pytest.raises(ValueError, match=match):  # when the config is made, before any agent
        presets.default_config(algo, "Pendulum-v1", extra=extra)


def test_settings_defaults_and_json_numbers():
    assert MPOSettings.from_extra({"epsilon": 1}).epsilon == 1.0 and MPOSettings().dual_lr == 1e-2
    mfe = VMBPOMFESettings.from_extra(json.loads('{"temperature": 2, "max_exponent": null}'))
    assert mfe.temperature == 2.0 and isinstance(mfe.temperature, float) and mfe.max_exponent is None
    assert VMBPOMFESettings().model_based and not VMBPOMFESettings(m_step_mode="copy").model_based


def test_mfe_critic_scale_and_decoupled_m_step_are_settings(registered):
    from torchrl_vmbpo.models.networks import ScaledOutput

    tuned = presets.build_agent(_config("vmbpo-mfe"), make_env("Pendulum-v1"))  # VMBPO's measured defaults
    assert tuned.critic.value_network.module.scale == 3.0 and tuned.critic.qvalue_network.module.scale == 3.0
    assert tuned.m_step.kl_coef_std == 100.0 and tuned.m_step.kl_coef == 0.1
    plain = presets.build_agent(
        _config("vmbpo-mfe", "extra.eta=1", "extra.critic_output_scale=one", "extra.kl_coef_std=null"),
        make_env("Pendulum-v1"),
    )
    assert not isinstance(plain.critic.value_network.module, ScaledOutput) and plain.m_step.kl_coef_std is None
    with pytest.raises(ValueError, match="critic_output_scale"):
        VMBPOMFESettings(critic_output_scale="two")
    with pytest.raises(ValueError, match="kl_coef_std"):
        VMBPOMFESettings(kl_coef_std=-1)
