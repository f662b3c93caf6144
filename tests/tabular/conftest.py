"""Shared random-MDP cases for the tabular tests: both discount forms, several sizes, gamma and eta.

Each case is ONE batched MDP of shape [2 gammas, 2 etas, 3 seeds] so every test checks 12 MDPs at
once. Form i uses rewards in [-1, 0] (exp(eta r) is a probability, log p_pi(O=1) is finite); form ii
uses rewards in [-1, 1].
"""

from functools import cache

import pytest
import torch

from torchrl_vmbpo.tabular import model_free_value_iteration, random_mdp, random_policy

GAMMAS = (0.5, 0.9)
ETAS = (0.5, 2.0)
NUM_SEEDS = 3
# (num_states, num_actions, num_terminal)
SIZES = ((3, 2, 0), (5, 3, 1), (8, 4, 2))
FORMS = ("termination", "discounted_elbo")
CASES = [(form, *size) for form in FORMS for size in SIZES]


def case_id(case):
    form, x, a, t = case
    return f"{form}-X{x}-A{a}-T{t}"


@cache
def build_case(form, num_states, num_actions, num_terminal):
    """(mdp, pi, exact E-step solution by model-free VI), deterministic per case."""
    g = torch.Generator().manual_seed(1000 * num_states + 10 * num_actions + (form == "termination"))
    gamma = torch.tensor(GAMMAS, dtype=torch.float64)[:, None, None].expand(len(GAMMAS), len(ETAS), NUM_SEEDS)
    eta = torch.tensor(ETAS, dtype=torch.float64)[None, :, None].expand(len(GAMMAS), len(ETAS), NUM_SEEDS)
    mdp = random_mdp(
        num_states,
        num_actions,
        (len(GAMMAS), len(ETAS), NUM_SEEDS),
        gamma=gamma,
        eta=eta,
        discount=form,
        num_terminal=num_terminal,
        reward_range=(-1.0, 0.0) if form == "termination" else (-1.0, 1.0),
        generator=g,
    )
    pi = random_policy(mdp, generator=g)
    return mdp, pi, model_free_value_iteration(mdp, pi, tol=1e-12)


@pytest.fixture(params=CASES, ids=case_id)
def case(request):
    return build_case(*request.param)


@pytest.fixture(params=[c for c in CASES if c[0] == "termination"], ids=case_id)
def termination_case(request):
    """Form i only: where the ELBO is a bound on log p_pi(O = 1)."""
    return build_case(*request.param)


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(12345)
