"""The MDP container validates its inputs and the generators produce what they promise."""

import pytest
import torch

from torchrl_vmbpo.tabular import TabularMDP, gridworld, random_mdp, random_policy, uniform_policy


def _tiny(**overrides):
    args = dict(
        transition=[[[0.5, 0.5]], [[0.0, 1.0]]],
        reward=[[-1.0], [0.0]],
        terminal=[False, True],
        initial=[1.0, 0.0],
        gamma=0.9,
        eta=1.0,
        discount="termination",
    )
    args.update(overrides)
    return TabularMDP.create(
        args.pop("transition"), args.pop("reward"), args.pop("terminal"), args.pop("initial"), **args
    )


@pytest.mark.parametrize(
    "override, match",
    [
        ({"transition": [[[0.5, 0.6]], [[0.0, 1.0]]]}, "transition must sum to 1"),
        ({"transition": [[[1.5, -0.5]], [[0.0, 1.0]]]}, "transition must be finite and non-negative"),
        ({"gamma": 0.0}, r"gamma must lie in \(0, 1\]"),
        ({"gamma": 1.5}, r"gamma must lie in \(0, 1\]"),
        ({"eta": -1.0}, "eta must be finite and > 0"),
        ({"discount": "geometric"}, "discount must be one of"),
        ({"reward": [[-1.0, 0.0], [0.0, 0.0]]}, "reward must have shape"),
        ({"initial": [0.5, 0.4]}, "initial must sum to 1"),
        ({"reward": [[float("nan")], [0.0]]}, "reward must be finite"),
        ({"terminal": [False, True, True]}, "terminal, initial, gamma and eta must broadcast"),
    ],
)
def test_invalid_arguments_raise_errors_naming_them(override, match):
    with pytest.raises(ValueError, match=match):
        _tiny(**override)


def test_inputs_are_converted_to_float64_and_broadcast_over_the_batch():
    p = torch.tensor([[[0.5, 0.5]], [[0.0, 1.0]]], dtype=torch.float32).expand(3, 2, 1, 2)
    mdp = TabularMDP.create(
        p, torch.zeros(3, 2, 1), [False, True], [1.0, 0.0], gamma=[0.5, 0.6, 0.7], eta=2.0, discount="discounted_elbo"
    )
    assert mdp.transition.dtype == torch.float64 and mdp.batch_shape == (3,)
    assert mdp.terminal.shape == (3, 2) and mdp.eta.tolist() == [2.0] * 3
    with pytest.raises(TypeError, match="reward must be float64"):
        TabularMDP(mdp.transition, mdp.reward.float(), mdp.terminal, mdp.initial, mdp.gamma, mdp.eta, mdp.discount)


def test_policy_check_names_the_policy_and_its_expected_shape():
    mdp = _tiny()
    with pytest.raises(ValueError, match=r"q_c must have shape \(2, 1\)"):
        mdp.check_policy(torch.ones(2, 2) / 2, "q_c")
    with pytest.raises(ValueError, match="pi must sum to 1"):
        mdp.check_policy(torch.full((2, 1), 0.5), "pi")


@pytest.mark.parametrize("discount, width", [("termination", 3), ("discounted_elbo", 2)])
def test_next_state_kernel_is_a_distribution_with_the_discount_as_kill_in_form_i(discount, width):
    mdp = _tiny(discount=discount)
    kernel = mdp.log_next_kernel().exp()
    assert kernel.shape == (2, 1, width) and mdp.num_next_states == width
    torch.testing.assert_close(kernel.sum(-1), torch.ones(2, 1, dtype=torch.float64))
    if discount == "termination":  # gamma p on real states, 1 - gamma on the kill
        torch.testing.assert_close(kernel[0, 0], torch.tensor([0.45, 0.45, 0.1], dtype=torch.float64))
    value = torch.tensor([3.0, 7.0], dtype=torch.float64)  # V(terminal) is forced to 0
    expected = [3.0, 0.0, 0.0] if discount == "termination" else [2.7, 0.0]
    torch.testing.assert_close(mdp.next_values(value), torch.tensor(expected, dtype=torch.float64))


def test_random_mdp_has_valid_rows_sparse_support_and_self_looping_terminals(generator):
    mdp = random_mdp(6, 3, (4,), num_terminal=2, zero_prob=0.5, generator=generator)
    assert (mdp.transition == 0).any(), "no zero transitions: log p = -inf paths are untested"
    assert mdp.terminal[0].tolist() == [False] * 4 + [True] * 2
    torch.testing.assert_close(mdp.transition[:, 4, :, 4], torch.ones(4, 3, dtype=torch.float64))
    assert (mdp.initial[:, 4:] == 0).all()
    assert ((mdp.reward >= -1) & (mdp.reward <= 0)).all()
    pi = random_policy(mdp, generator=generator)
    assert (pi > 0).all() and pi.shape == (4, 6, 3)


def test_gridworld_moves_slip_and_walls():
    mdp = gridworld(("S.", "#G"), slip=0.3, step_reward=-1.0)
    up, right, down, left = range(4)
    p = mdp.transition
    # from S (0): right reaches 1 w.p. 0.7; the other three moves (blocked: up, left by the border,
    # down by the wall) keep S in place
    assert p[0, right, 1].item() == pytest.approx(0.7) and p[0, right, 0].item() == pytest.approx(0.3)
    assert p[0, down, 0].item() == pytest.approx(0.9)
    assert p[1, down, 3].item() == pytest.approx(0.7)  # into the goal
    assert mdp.terminal.tolist() == [False, False, False, True] and mdp.initial.tolist() == [1, 0, 0, 0]
    assert uniform_policy(mdp).shape == (4, 4)
    with pytest.raises(ValueError, match="step_reward and lava_reward must be <= 0"):
        gridworld(step_reward=1.0)
