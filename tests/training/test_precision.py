"""``TrainConfig.precision``: bfloat16 hidden matmuls in the gradient steps, float32 everywhere a number
is read (output layers, losses, weights, optimizer states), and fp32 runs exactly as before."""

import json

import pytest
import torch
from tensordict import TensorDict
from test_compiled_updates import EXTRA, _filled_real_buffer
from tiny_configs import SMALL_RUN, TINY_STEPS, train_argv
from torch import nn
from torchrl.data import Bounded
from torchrl.modules import MLP

from torchrl_vmbpo.algorithms import PRESETS, build_agent, default_config
from torchrl_vmbpo.cli import main
from torchrl_vmbpo.errors import ConfigError
from torchrl_vmbpo.models import GaussianEnsemble, make_log_ratio_network, make_q_value, make_tanh_gaussian_actor
from torchrl_vmbpo.models.log_ratio import log_ratio_of
from torchrl_vmbpo.models.networks import OutputLinear, fp32_output
from torchrl_vmbpo.training.config import TrainConfig
from torchrl_vmbpo.training.phases import fit_model
from torchrl_vmbpo.training.precision import in_precision


def _bf16_autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_precision_accepts_fp32_and_bf16_and_names_them_otherwise():
    assert TrainConfig().precision == "fp32"
    assert TrainConfig(precision="bf16").precision == "bf16"
    with pytest.raises(ConfigError, match="precision must be one of 'fp32', 'bf16', got 'fp16'"):
        TrainConfig(precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, got 'half'"):
        in_precision(lambda: None, "half", "cpu")


def test_fp32_output_keeps_the_layer_its_parameters_and_the_random_stream():
    torch.manual_seed(0)
    plain = MLP(in_features=3, out_features=2, num_cells=[8])
    after_plain = torch.rand(())
    torch.manual_seed(0)
    marked = fp32_output(MLP(in_features=3, out_features=2, num_cells=[8]))
    # the same object re-classed: no new draw, the same state-dict keys and values
    assert torch.rand(()) == after_plain and type(marked[-1]) is OutputLinear
    assert plain.state_dict().keys() == marked.state_dict().keys()
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(marked.state_dict()[key], value)
    x = torch.randn(4, 3)
    torch.testing.assert_close(marked(x), plain(x))  # outside autocast: nn.Linear
    with pytest.raises(TypeError, match="ending in nn.Linear"):
        fp32_output(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))


def test_under_bf16_autocast_hidden_layers_run_in_bf16_and_every_output_in_fp32():
    spec = Bounded(-1.0, 1.0, shape=(2,))
    actor, q = make_tanh_gaussian_actor(3, spec, hidden=(16, 16)), make_q_value(3, 2, hidden=(16, 16))
    nu = make_log_ratio_network(3, 2, hidden=(16,))
    ensemble = GaussianEnsemble(5, 4, num_members=3, hidden=(16, 16))
    hidden_dtypes = []
    first_hidden = q.module[0][0] if isinstance(q.module[0], nn.Sequential) else q.module[0]
    first_hidden.register_forward_hook(lambda m, i, o: hidden_dtypes.append(o.dtype))
    obs, action = torch.randn(6, 3), torch.rand(6, 2)
    with _bf16_autocast():
        td = actor(TensorDict({"observation": obs}, [6]))
        value = q(TensorDict({"observation": obs, "action": action}, [6]))["state_action_value"]
        ratio = log_ratio_of(nu, obs, action, obs + 0.1)
        mean, logvar = ensemble(torch.randn(6, 3, 5))
    assert hidden_dtypes == [torch.bfloat16]
    for name, out in dict(loc=td["loc"], scale=td["scale"], q=value, nu=ratio, mean=mean, logvar=logvar).items():
        assert out.dtype == torch.float32, name
    # the float32 output layer on bf16 features: close to, but not exactly, the float32 network
    fp32_value = q(TensorDict({"observation": obs, "action": action}, [6]))["state_action_value"]
    torch.testing.assert_close(value, fp32_value, rtol=0.05, atol=0.05)


def test_in_precision_wraps_once_and_fp32_returns_the_function_itself():
    def fn(a, b):
        return a @ b

    once = in_precision(fn, "bf16", "cpu")
    twice = in_precision(once, "bf16", "cpu")
    assert twice.__wrapped_for_precision__ is fn and in_precision(twice, "fp32", "cpu") is fn
    assert twice(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16


@pytest.mark.parametrize("algo", [a for a in PRESETS if a != "pets"])
def test_a_bf16_update_is_close_to_the_fp32_update_and_keeps_weights_and_states_fp32(algo):
    cfg = default_config(algo, "Pendulum-v1", overrides=[*TINY_STEPS, "compile=off", *EXTRA.get(algo, [])])
    env, real = _filled_real_buffer(cfg)
    agents = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        agents[precision] = build_agent(cfg.replace(precision=precision), env)
    assert agents["bf16"].precision == "bf16"
    torch.manual_seed(1)
    batch = agents["fp32"].sample_batch(real, real, cfg.batch_size, 1.0)
    metrics = {}
    for precision, agent in agents.items():
        torch.manual_seed(2)
        metrics[precision] = agent.update(batch.clone())
    for key, value in metrics["bf16"].items():
        assert value.dtype in (torch.float32, torch.int64, torch.bool), key
        assert torch.isfinite(value).all(), key
    losses = [k for k in metrics["fp32"] if k.startswith("loss") or k.endswith("loss_qvalue")]
    assert losses
    for key in losses:  # same draws, same weights: only the hidden matmuls' rounding differs
        torch.testing.assert_close(metrics["bf16"][key], metrics["fp32"][key], rtol=0.1, atol=0.05, msg=key)
    assert any(not torch.equal(metrics["bf16"][k], metrics["fp32"][k]) for k in losses)  # and it does differ
    bf16 = agents["bf16"]
    assert all(p.dtype == torch.float32 for p in bf16.parameters())
    for optimizer in bf16.optimizers().values():
        for state in optimizer.state.values():
            assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("algo", ["mbpo", "vmbpo"])
def test_a_bf16_run_trains_fits_and_records_its_precision(tmp_path, algo):
    out = tmp_path / algo
    assert main(train_argv(algo, out, steps=250, seed=3, sets=[*SMALL_RUN, "precision=bf16", "compile=off"])) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["precision"] == "bf16"
    assert summary["phase_seconds"]["model_fit"] > 0 and summary["updates"] > 0
    assert torch.isfinite(torch.tensor(summary["final_return"]))


def test_the_model_fit_steps_in_bf16_and_scores_its_holdout_in_fp32():
    cfg = default_config("mbpo", "Pendulum-v1", overrides=[*TINY_STEPS, "compile=off", "precision=bf16"])
    env, real = _filled_real_buffer(cfg)
    agent = build_agent(cfg, env)
    seen = []

    class RecordingSiLU(nn.Module):  # the ensemble's activation, seeing each hidden layer's output
        def forward(self, x):
            seen.append((torch.is_grad_enabled(), x.dtype))
            return nn.functional.silu(x)

    agent.dynamics.ensemble.activation = RecordingSiLU()
    fit_model(cfg.replace(model_max_epochs=1), agent, real)
    assert {dtype for grad, dtype in seen if grad} == {torch.bfloat16}  # the fit's steps
    assert {dtype for grad, dtype in seen if not grad} == {torch.float32}  # holdout scores, elites
