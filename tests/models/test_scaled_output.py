"""ScaledOutput: value networks whose weights learn at the same pace whatever the values' scale."""

import pytest
import torch
from tensordict import TensorDict

from torchrl_vmbpo.models.networks import ScaledOutput, make_q_value, make_state_value


def test_output_is_scale_times_the_mlp_and_the_default_is_a_plain_mlp():
    q = make_q_value(3, 1, hidden=(8,), output_scale=4.0)
    td = TensorDict({"observation": torch.randn(5, 3), "action": torch.randn(5, 1)}, [5])
    mlp_out = q.module.net(torch.cat([td["observation"], td["action"]], -1))
    torch.testing.assert_close(q(td)["state_action_value"], 4.0 * mlp_out)
    assert not isinstance(make_state_value(3, hidden=(8,)).module, ScaledOutput)
    with pytest.raises(ValueError, match="scale"):
        make_state_value(3, hidden=(8,), output_scale=0.0)


def test_adam_takes_the_same_steps_on_targets_scale_times_larger():
    # The reason for the scale: with eta-times larger targets, a net scaled by eta follows exactly the
    # trajectory of the unscaled net on the original targets (Adam ignores the loss's scale).
    torch.manual_seed(0)
    eta = 10.0
    plain = make_state_value(3, hidden=(16,))
    scaled = make_state_value(3, hidden=(16,), output_scale=eta)
    scaled.module.net.load_state_dict(plain.module.state_dict())
    x, y = TensorDict({"observation": torch.randn(64, 3)}, [64]), torch.randn(64, 1) - 3.0
    opts = [torch.optim.Adam(m.parameters(), lr=1e-2, eps=1e-12) for m in (plain, scaled)]
    for _ in range(20):
        for module, opt, target in ((plain, opts[0], y), (scaled, opts[1], eta * y)):
            loss = (module(x.clone())["state_value"] - target).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    for a, b in zip(plain.module.parameters(), scaled.module.net.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
