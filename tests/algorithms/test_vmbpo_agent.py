import pytest
import torch
from tensordict import TensorDict

from torchrl_vmbpo.algorithms import build_agent, default_config
from torchrl_vmbpo.algorithms.vmbpo import VMBPOSettings
from torchrl_vmbpo.envs.real import make_env


def _agent(**extra):
    cfg = default_config("vmbpo", "Pendulum-v1", hidden=(16, 16), model_hidden=(16,), batch_size=8, extra=extra)
    return build_agent(cfg, make_env("Pendulum-v1"))


def _model_batch(b=8):
    return TensorDict(
        {
            "observation": torch.randn(b, 3),
            "action": torch.rand(b, 1) * 4 - 2,
            ("next", "observation"): torch.randn(b, 3),
            ("next", "reward"): -torch.rand(b, 1),
            ("next", "done"): torch.zeros(b, 1, dtype=torch.bool),
            ("next", "terminated"): torch.zeros(b, 1, dtype=torch.bool),
        },
        [b],
    )


@pytest.mark.parametrize("value_estimate", ["network", "monte_carlo"])
def test_the_networks_are_attributes_and_in_the_state_dict_once(value_estimate):
    agent = _agent(value_estimate=value_estimate)
    values = ["V", "V_target"] if value_estimate == "network" else []
    for name in ["pi", "q_c", "q_d", "nu", "Q", "Q_target", *values]:
        assert getattr(agent, name) is not None
    if value_estimate == "monte_carlo":  # no V network: V'(x') of eq. 19 is a Monte Carlo estimate
        assert agent.V is None and agent.V_target is None
        assert not any("value_network" in k and "qvalue" not in k for k in agent.state_dict())
    state = agent.state_dict()
    # The agent's VMBPOLoss owns every network: each tensor is saved once, under "loss.".
    pointers = [t.data_ptr() for t in state.values() if t.numel()]
    assert len(pointers) == len(set(pointers))
    saved = set(pointers)
    for name in ["pi", "q_c", "q_d", "nu"]:
        assert all(p.data_ptr() in saved for p in getattr(agent, name).parameters()), name
    for name in ["Q", "Q_target", *values]:
        assert all(t.data_ptr() in saved for t in getattr(agent, name).values(True, True)), name
    assert all(k.startswith("loss.") or k == "num_updates" for k in state)


def test_copy_m_step_sets_pi_to_q_c_every_period_updates():
    agent = _agent(m_step_mode="copy", m_step_period=3)
    pi_before = [p.clone() for p in agent.pi.parameters()]
    for _ in range(2):
        agent.update(_model_batch())
    assert all(torch.equal(a, b) for a, b in zip(pi_before, agent.pi.parameters()))  # not yet
    assert not all(torch.equal(a, b) for a, b in zip(agent.pi.parameters(), agent.q_c.parameters()))
    agent.update(_model_batch())
    assert all(torch.equal(a, b) for a, b in zip(agent.pi.parameters(), agent.q_c.parameters()))


def test_weighted_map_m_step_trains_pi_every_update():
    agent = _agent(m_step_mode="weighted_map", m_step_period=5)
    before = [p.clone() for p in agent.pi.parameters()]
    out = agent.update(_model_batch())
    assert "m_step_loss_policy" in out
    assert not all(torch.equal(a, b) for a, b in zip(before, agent.pi.parameters()))


def test_dynamics_fit_switches_from_mle_to_eq19_after_warmup():
    agent = _agent(weighted_fit_after=2)
    assert agent.dynamics_loss() is agent.plain_model_loss
    agent.update(_model_batch())
    agent.update(_model_batch())
    assert agent.dynamics_loss() is agent.model_loss


def test_acting_policy_is_a_setting():
    agent = _agent(acting_policy="q_c")
    assert agent.policy is agent.q_c and agent.rollout_policy is agent.q_c
    agent = _agent(acting_policy="pi")
    assert agent.policy is agent.pi


def test_unknown_or_bad_settings_are_named():
    with pytest.raises(ValueError, match="unknown VMBPO setting"):
        VMBPOSettings.from_extra({"etta": 1.0})
    with pytest.raises(ValueError, match="eta"):
        VMBPOSettings(eta=0.0)
    with pytest.raises(ValueError, match="m_step_mode"):
        VMBPOSettings(m_step_mode="average")


@pytest.mark.parametrize("weight_mix", [0.0, 1.0])
def test_after_model_fit_reports_diagnostics_for_any_weight_mix(weight_mix):
    # weight_mix=1 (plain MLE) never reads the critic, so its loss carries no log-weight entries.
    from torchrl_vmbpo.data.buffers import make_buffer

    agent = _agent(weight_mix=weight_mix, log_ratio_steps=2)
    buffer = make_buffer(64)
    buffer.extend(_model_batch(32))
    metrics = agent.after_model_fit(buffer)
    assert {"kl_qd_p_estimate", "ratio_fit_nu_at_bound_fraction", "weight_ess", "weight_max", "weighted_fit"} <= set(
        metrics
    )
    assert 0.0 <= metrics["ratio_fit_nu_at_bound_fraction"] <= 1.0
    assert "nu_at_bound_fraction" in agent.update(_model_batch())  # and in the E-step's metrics
    assert ("log_weight_mean" in metrics) == (weight_mix < 1.0)


def test_critic_networks_output_eta_times_their_mlp_by_default():
    from torchrl_vmbpo.models.networks import ScaledOutput

    agent = _agent(eta=5.0, value_estimate="network")
    assert (
        isinstance(agent.critic.value_network.module, ScaledOutput) and agent.critic.value_network.module.scale == 5.0
    )
    assert agent.critic.qvalue_network.module.scale == 5.0
    plain = _agent(eta=5.0, critic_output_scale="one", value_estimate="network")
    assert not isinstance(plain.critic.value_network.module, ScaledOutput)
    with pytest.raises(ValueError, match="critic_output_scale"):
        VMBPOSettings(critic_output_scale="two")


def test_bootstrap_setting_reaches_the_critic_and_trains():
    from torchrl_vmbpo.errors import ConfigError

    agent = _agent(bootstrap="value", value_estimate="network")
    assert agent.critic.bootstrap == "value" and _agent().critic.bootstrap == "action_value"
    metrics = agent.update(_model_batch(16))
    assert all(torch.isfinite(v).all() for v in metrics.values())
    with pytest.raises(ValueError, match="bootstrap"):
        VMBPOSettings(bootstrap="q")
    # eq. 23's V'(x') bootstrap needs the V network; the Monte Carlo V'(x') is for eq. 19 only
    with pytest.raises(ConfigError, match="extra.value_estimate='monte_carlo' needs extra.bootstrap='action_value'"):
        VMBPOSettings(bootstrap="value")


def test_the_default_trains_no_v_and_eq19_reads_a_monte_carlo_value():
    from torchrl_vmbpo.data.buffers import make_buffer

    agent = _agent(weighted_fit_after=0, log_ratio_steps=2)
    assert not agent.critic.has_value_network and agent.critic.value_samples == 8
    metrics = agent.update(_model_batch(16))
    assert "loss_value" not in metrics and "value" not in metrics and "value_target" in metrics
    assert not any(p is None for p in agent.critic.parameters())
    real = make_buffer(64)
    real.extend(_model_batch(32))
    fit = agent.after_model_fit(real)  # the weights read V'(x') by Monte Carlo, finite
    assert 0.0 < fit["weight_ess"] <= 1.0 and fit["weighted_fit"] == 1.0
    with_v = _agent(value_estimate="network")
    assert with_v.critic.has_value_network and "loss_value" in with_v.update(_model_batch(16))


def test_uniform_prior_weight_reaches_the_critic_and_the_actor():
    agent = _agent(uniform_prior_weight=0.3)
    assert agent.critic.uniform_prior_weight == 0.3 and agent.actor_loss.critic is agent.critic
    with pytest.raises(ValueError, match="uniform_prior_weight"):
        _agent(uniform_prior_weight=1.5)


def test_a_checkpoint_of_the_old_layout_is_refused_by_name_and_the_new_one_round_trips(tmp_path):
    from torchrl_vmbpo.errors import CheckpointError
    from torchrl_vmbpo.training.checkpoint import load_checkpoint, read_checkpoint, restore_checkpoint, save_checkpoint

    agent = _agent()
    save_checkpoint(tmp_path / "new.pt", agent, config={"algo": "vmbpo", "env": "Pendulum-v1"}, env_steps=0)
    fresh = _agent()
    load_checkpoint(tmp_path / "new.pt", fresh)
    assert all(torch.equal(a, b) for a, b in zip(agent.state_dict().values(), fresh.state_dict().values()))
    payload = read_checkpoint(tmp_path / "new.pt")
    # Before issue 21 the networks were saved under the agent's own names (pi., critic., ...), some twice.
    payload["agent"] = {k.replace("loss.m_step.baseline_policy.", "pi."): v for k, v in payload["agent"].items()}
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(CheckpointError, match="pi\\.|baseline_policy"):
        restore_checkpoint(payload, fresh)
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())


def test_the_vmbpo_default_fits_q_d_to_eq19s_twisted_dynamics():
    agent = _agent()
    assert agent.settings.weight_mix < 1.0 and agent.model_loss.mix == agent.settings.weight_mix


def test_only_vmbpo_paper_and_mbpo_on_reacher7dof_normalise_the_critics_hidden_layers():
    """vmbpo and its twist-off ablation bound Q by the value ceiling, vmbpo-paper (no ceiling) by LayerNorm."""
    envs = ("Pendulum-v1", "Hopper-v5", "torchrl_vmbpo/Reacher7DoF-v0")
    for env in envs:
        paper = default_config("vmbpo-paper", env)
        assert paper.critic_layer_norm and not paper.extra.value_ceiling, env
        for algo in ("vmbpo", "vmbpo-twist-off"):
            cfg = default_config(algo, env)
            assert not cfg.critic_layer_norm and cfg.extra.value_ceiling, (algo, env)
    assert default_config("mbpo", "torchrl_vmbpo/Reacher7DoF-v0").critic_layer_norm
    assert not any(default_config(a, "Hopper-v5").critic_layer_norm for a in ("mbpo", "sac"))
    for algo, normalised in (("vmbpo-paper", True), ("vmbpo", False)):
        cfg = default_config(algo, "Pendulum-v1", hidden=(16, 16), model_hidden=(16,))
        agent = build_agent(cfg, make_env("Pendulum-v1"))
        modules = agent.critic.qvalue_network.modules()
        assert any(isinstance(m, torch.nn.LayerNorm) for m in modules) == normalised, algo


def test_vmbpo_paper_sets_what_the_papers_text_fixes():
    from dataclasses import fields

    cfg = default_config("vmbpo-paper", "Hopper-v5", hidden=(16, 16), model_hidden=(16,))
    s = cfg.extra
    assert (s.m_step_mode, s.num_qvalue_nets, s.bootstrap, s.entropy_constraint) == ("copy", 1, "value", False)
    assert (s.weight_mix, s.weight_normaliser, s.weight_min_ess, s.max_weight) == (0.0, "critic", None, None)
    assert (s.acting_policy, s.uniform_prior_weight, cfg.real_ratio) == ("pi", 0.0, 0.0)  # no per-env override
    assert not s.value_ceiling  # eq. 23 as written
    agent = build_agent(cfg, make_env("Pendulum-v1"))
    assert agent.critic.num_qvalue_nets == 1 and agent.m_step.mode == "copy" and agent.critic.target_entropy is None
    assert (
        not agent.critic.value_ceiling
        and build_agent(
            default_config("vmbpo", "Pendulum-v1", hidden=(16, 16), model_hidden=(16,)), make_env("Pendulum-v1")
        ).critic.value_ceiling
    )
    assert agent.nu.module.bound == s.log_ratio_bound
    # Every other setting is vmbpo's: the two presets differ only where the paper decides.
    paper_fixed = {
        "m_step_mode",
        "num_qvalue_nets",
        "bootstrap",
        "entropy_constraint",
        "uniform_prior_weight",
        "weight_mix",
        "weight_normaliser",
        "weight_min_ess",
        "max_weight",
        "acting_policy",
        "log_ratio_bound",
        "value_ceiling",
        "value_estimate",
    }
    vmbpo = VMBPOSettings()
    assert {f.name for f in fields(s) if getattr(s, f.name) != getattr(vmbpo, f.name)} <= paper_fixed


def test_vmbpo_twist_off_is_vmbpo_with_plain_mle_and_its_per_env_entries():
    for env in ("Pendulum-v1", "Hopper-v5", "InvertedPendulum-v5"):
        on, off = default_config("vmbpo", env), default_config("vmbpo-twist-off", env)
        assert off.extra.weight_mix == 1.0 and on.extra.weight_mix < 1.0
        assert VMBPOSettings(**{**on.extra.to_json(), "weight_mix": 1.0}).to_json() == off.extra.to_json()
        assert on.replace(algo="vmbpo-twist-off", extra=off.extra) == off
    cfg = default_config("vmbpo-twist-off", "Pendulum-v1", hidden=(16, 16), model_hidden=(16,))
    agent = build_agent(cfg, make_env("Pendulum-v1"))
    assert agent.model_loss.mix == 1.0


def test_sample_batch_flags_the_rows_from_the_real_buffer_and_the_critic_drops_their_nu():
    from torchrl_vmbpo.data.buffers import make_buffer

    agent = _agent()
    real, model = make_buffer(100), make_buffer(100)
    real.extend(_model_batch(20).apply(lambda t: t.abs() if t.is_floating_point() else t))  # real: obs >= 0
    model_rows = _model_batch(20).apply(lambda t: -t.abs() - 1 if t.is_floating_point() else t)  # model: obs < 0
    model.extend(agent.label_imagined(model_rows))  # nu recorded as imagination records it
    batch = agent.sample_batch(real, model, 16, real_ratio=0.25)
    is_real = batch["model", "is_real"]
    assert is_real.sum() == 4 and torch.equal(is_real, batch["observation"][:, 0] >= 0)
    assert agent.sample_batch(real, None, 8, real_ratio=0.0)["model", "is_real"].all()  # no E yet: all real
    assert not agent.sample_batch(real, model, 8, real_ratio=0.0)["model", "is_real"].any()
    _, nu = agent.critic.q_target(batch)
    assert torch.all(nu[is_real] == 0) and torch.all(nu[~is_real] != 0)


def test_each_model_row_keeps_the_nu_of_the_q_d_that_imagined_it():
    """log_ratio_at="imagination": nu is recorded as a row enters E and the Q target reads that value after
    nu is refitted to a later q_d; "update" records nothing and the target reads the latest nu."""
    from torchrl_vmbpo.data.buffers import make_buffer
    from torchrl_vmbpo.models.log_ratio import log_ratio_of

    def latest_nu(agent, td):
        return log_ratio_of(agent.nu, td["observation"], td["action"], td["next", "observation"])

    agent = _agent()
    rows = agent.label_imagined(_model_batch(20))
    recorded = rows["model", "log_ratio"]
    assert recorded.shape == (20, 1)
    torch.testing.assert_close(recorded.squeeze(-1), latest_nu(agent, rows))
    model = make_buffer(100)
    model.extend(rows)
    with torch.no_grad():  # a refit of nu to a later q_d
        for param in agent.nu.parameters():
            param.add_(0.3 * torch.randn_like(param))
    batch = agent.sample_batch(make_buffer(10), model, 16, real_ratio=0.0)
    _, nu = agent.critic.q_target(batch)
    torch.testing.assert_close(nu, batch["model", "log_ratio"].squeeze(-1))
    assert not torch.allclose(nu, latest_nu(agent, batch))

    agent = _agent(log_ratio_at="update")
    rows = agent.label_imagined(_model_batch(20))
    assert ("model", "log_ratio") not in rows.keys(True)
    model = make_buffer(100)
    model.extend(rows)
    batch = agent.sample_batch(make_buffer(10), model, 16, real_ratio=0.0)
    assert ("model", "log_ratio") not in batch.keys(True)
    torch.testing.assert_close(agent.critic.q_target(batch)[1], latest_nu(agent, batch))


def test_imagination_records_the_nu_fitted_to_the_q_d_that_imagines():
    from torchrl_vmbpo.data.buffers import TRANSITION_KEYS, make_buffer
    from torchrl_vmbpo.models.log_ratio import log_ratio_of
    from torchrl_vmbpo.training.phases import ModelBuffer, fit_model, imagine_rollouts

    cfg = default_config(
        "vmbpo",
        "Pendulum-v1",
        hidden=(16, 16),
        model_hidden=(16,),
        batch_size=8,
        rollouts_per_step=2,
        model_retrain_every=10,
        model_max_epochs=2,
    )
    env = make_env("Pendulum-v1")
    agent = build_agent(cfg, env)
    real = make_buffer(1000)
    real.extend(env.rollout(60, break_when_any_done=False).reshape(-1).select(*TRANSITION_KEYS))
    fit_model(cfg, agent, real)  # q_d, then nu (after_model_fit)
    model = ModelBuffer(cfg)
    imagine_rollouts(cfg, agent, env, real, model, env_steps=60)
    rows = model.buffer[:]
    assert len(rows) == 20
    expected = log_ratio_of(agent.nu, rows["observation"], rows["action"], rows["next", "observation"])
    torch.testing.assert_close(rows["model", "log_ratio"].squeeze(-1), expected)


def test_m_step_period_is_the_copy_period_or_the_trust_region_snapshot_period_and_says_so():
    from tensordict import TensorDict as TD

    from torchrl_vmbpo.training.validation import field_docs

    agent = _agent(m_step_mode="weighted_map", m_step_period=3)
    snapshots, moved = [], []
    for i in range(4):
        pi_before = TD.from_module(agent.pi).data.clone()
        old_before = agent.m_step.old_policy_params.data.clone()
        agent.update(_model_batch())
        moved.append(not (TD.from_module(agent.pi).data == pi_before).all())
        snapshots.append(not (agent.m_step.old_policy_params.data == old_before).all())
        if i == 2:  # the snapshot is pi as the update began, taken before pi's step
            assert (agent.m_step.old_policy_params.data == pi_before).all()
    assert moved == [True, True, True, True]  # pi steps at every update ...
    assert snapshots == [False, False, True, False]  # ... pi_old is re-taken every m_step_period updates
    doc = field_docs(VMBPOSettings)["m_step_period"]
    assert "copy" in doc and "snapshot" in doc and "EVERY update" in doc


def test_the_joint_e_and_m_step_losses_route_gradients_like_the_two_apart():
    """em_update's one backward: the E-step's losses reach the critic and q_c only, the M-step's pi only,
    and the M-step's loss is MStepLoss's at the actor's own draw of q_c."""
    from torchrl_vmbpo.objectives import functional_vmbpo as fv
    from torchrl_vmbpo.training.optim import total_loss

    agent = _agent(m_step_mode="weighted_map", m_step_row_stride=1)
    batch = _model_batch()
    torch.manual_seed(3)
    critic, actor, m_out = agent._eager_em_losses(batch)
    pi_params = list(agent.pi.parameters())
    e_params = [p for g in agent.e_step_optimizer.param_groups for p in g["params"]]
    e_loss = total_loss(critic) + actor["loss_actor"]
    for loss, reached, untouched in ((e_loss, e_params, pi_params), (m_out["loss_policy"], pi_params, e_params)):
        grads = torch.autograd.grad(loss, reached + untouched, retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads[: len(reached)])
        assert all(g is None or not g.any() for g in grads[len(reached) :])
    # The same draw of q_c (seed 3 again: the actor draws first), scored by MStepLoss itself.
    torch.manual_seed(3)
    _, _, draw = agent.actor_loss.forward_with_draw(batch)
    alone = agent.m_step.loss_at(
        batch["observation"], agent.pi.get_dist(fv.module_input(agent.pi, batch["observation"])), draw
    )
    for key in alone.keys():
        torch.testing.assert_close(m_out[key], alone[key])


def test_the_m_step_on_every_second_row_is_eq27_on_those_rows_and_leaves_the_e_step_as_it_was():
    from torchrl_vmbpo.objectives import functional_vmbpo as fv

    every, second = _agent(m_step_row_stride=1), _agent(m_step_row_stride=2)
    second.load_state_dict(every.state_dict())
    batch = _model_batch(8)
    torch.manual_seed(0)
    critic_1, actor_1, _ = every._eager_em_losses(batch)
    torch.manual_seed(0)
    critic_2, actor_2, m_step_2 = second._eager_em_losses(batch)
    for one, two in ((critic_1, critic_2), (actor_1, actor_2)):  # the E-step's prior: pi at every row
        assert set(one.keys()) == set(two.keys())
        for key in one.keys():
            torch.testing.assert_close(one[key], two[key])
    # eq. 27 on rows 0, 2, 4, 6 alone, at the actor's draw there
    pi, obs = every.pi, batch["observation"]
    torch.manual_seed(0)
    frozen = pi.build_dist_from_params(pi.get_dist_params(fv.module_input(pi, obs)).detach())
    draw = every.actor_loss.forward_with_draw(batch, frozen)[2]
    rows = draw._replace(preimage=draw.preimage[::2], action=draw.action[::2], loc=draw.loc[::2], scale=draw.scale[::2])
    pi_rows = pi.build_dist_from_params(pi.get_dist_params(fv.module_input(pi, obs[::2])))
    expected = every.m_step.loss_at(obs[::2], pi_rows, rows)
    torch.testing.assert_close(m_step_2["loss_policy"], expected["loss_policy"])
    (g_2,) = torch.autograd.grad(m_step_2["loss_policy"], [next(second.pi.parameters())])
    (g_expected,) = torch.autograd.grad(expected["loss_policy"], [next(every.pi.parameters())])
    torch.testing.assert_close(g_2, g_expected)


def test_the_m_step_row_stride_must_divide_the_batch():
    from torchrl_vmbpo.errors import ConfigError

    with pytest.raises(ConfigError, match=r"batch_size \(8\) must be a multiple of extra.m_step_row_stride \(3\)"):
        _agent(m_step_row_stride=3)
    assert _agent().m_step_row_stride == 2
