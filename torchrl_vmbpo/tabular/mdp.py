"""Finite MDPs as float64 tensors, batched, with the two exact ways to discount (Section 4).

A :class:`TabularMDP` holds the inference problem of Section 3: the MDP (p, r, terminal states,
initial distribution) together with the temperature eta (p(O=1 | x, a) = exp(eta r)) and the
discount gamma read in one of two forms (``../shared/docs/vmbpo-spec.md``, "Exact facts"):

* ``"termination"`` (form i, the paper's footnote 1): every action ends the episode with
  probability 1 - gamma and the surviving transitions are gamma p. We make the extra "killed" state
  explicit: the next-state space has X + 1 entries, the last one (index X) being that absorbing
  state with value 0, so every variational dynamics q_d(. | x, a) is a proper distribution over
  X + 1 outcomes and may change the probability of being killed. In this form the ELBO is tight:
  max_q J(q; pi) = log p_pi(O = 1).
* ``"discounted_elbo"`` (form ii): J = E_q[sum_t gamma^t (eta r_t - log q_c/pi - log q_d/p)]; the
  next-state space is X and gamma multiplies the next value, V(x') -> gamma V(x'), in every target.

Everything downstream uses two views of this choice, so that no operator branches on the form:
:meth:`TabularMDP.log_next_kernel` (log p~ over the next-state space) and
:meth:`TabularMDP.next_values` (the value seen at each next state). Terminal states (the paper's
X^0) have V = 0 and yield no reward; their rows of p are never used.

Shapes: ``*B`` batch (any number of leading dims, possibly none), ``X`` states, ``A`` actions,
``X'`` next states (X + 1 in form i, X in form ii).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

TERMINATION = "termination"
DISCOUNTED_ELBO = "discounted_elbo"
DISCOUNT_FORMS = (TERMINATION, DISCOUNTED_ELBO)

_DTYPE = torch.float64
_SUM_ATOL = 1e-9


def _as_f64(value, name: str) -> torch.Tensor:
    try:
        return torch.as_tensor(value, dtype=_DTYPE)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be convertible to a float64 tensor, got {type(value).__name__}") from err


def check_distribution(probs: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` unless the last dim of ``probs`` is a distribution.

    Example:
        >>> check_distribution(torch.tensor([[0.25, 0.75]], dtype=torch.float64), "pi")
        >>> check_distribution(torch.tensor([0.5, 0.6]), "pi")
        Traceback (most recent call last):
        ...
        ValueError: pi must sum to 1 over its last dim (max error 1.000e-01)
    """
    if not torch.isfinite(probs).all() or (probs < 0).any():
        raise ValueError(f"{name} must be finite and non-negative")
    err = (probs.sum(-1) - 1).abs().max().item() if probs.numel() else 0.0
    if err > _SUM_ATOL:
        raise ValueError(f"{name} must sum to 1 over its last dim (max error {err:.3e})")


@dataclass(frozen=True)
class TabularMDP:
    """A batch of finite MDPs with temperature and discount (the E-step's problem data).

    Args:
        transition: p(x' | x, a), shape ``[*B, X, A, X]``; each row sums to 1 (rows of terminal
            states too, though they are never used).
        reward: r(x, a), shape ``[*B, X, A]``, finite. Form i needs the series
            sum_t gamma^t exp(eta r) ... to converge for log p_pi(O=1) to be finite; r <= 0 (so that
            exp(eta r) is a probability, as in Section 3) always suffices.
        terminal: bool mask of terminal states, shape ``[*B, X]`` (or ``[X]``, broadcast).
        initial: p_0(x), shape ``[*B, X]`` (or ``[X]``).
        gamma: discount in (0, 1]; a float or a tensor of shape ``*B``.
        eta: temperature > 0; a float or a tensor of shape ``*B``.
        discount: ``"termination"`` (form i) or ``"discounted_elbo"`` (form ii).

    Inputs are converted to float64. Use :meth:`create` rather than the constructor when passing
    floats, lists or tensors of another dtype.

    Example:
        >>> p = torch.tensor([[[0.0, 1.0]], [[0.0, 1.0]]])          # [X=2, A=1, X'=2]
        >>> mdp = TabularMDP.create(p, torch.tensor([[-1.0], [0.0]]), torch.tensor([False, True]),
        ...                         torch.tensor([1.0, 0.0]), gamma=0.9, eta=1.0, discount="termination")
        >>> mdp.batch_shape, mdp.num_states, mdp.num_actions, mdp.num_next_states
        (torch.Size([]), 2, 1, 3)
    """

    transition: torch.Tensor
    reward: torch.Tensor
    terminal: torch.Tensor
    initial: torch.Tensor
    gamma: torch.Tensor
    eta: torch.Tensor
    discount: str

    @classmethod
    def create(cls, transition, reward, terminal, initial, *, gamma, eta, discount: str) -> TabularMDP:
        """Convert the inputs to float64 / bool tensors, broadcast them, and validate."""
        transition = _as_f64(transition, "transition")
        if transition.ndim < 3:
            raise ValueError(f"transition must have shape [*B, X, A, X], got {tuple(transition.shape)}")
        batch_shape = transition.shape[:-3]
        num_states = transition.shape[-3]
        reward = _as_f64(reward, "reward")
        terminal = torch.as_tensor(terminal, dtype=torch.bool)
        initial = _as_f64(initial, "initial")
        try:
            terminal = terminal.expand(*batch_shape, num_states)
            initial = initial.expand(*batch_shape, num_states)
            gamma = _as_f64(gamma, "gamma").expand(batch_shape)
            eta = _as_f64(eta, "eta").expand(batch_shape)
        except RuntimeError as err:
            raise ValueError(
                f"terminal, initial, gamma and eta must broadcast to batch {tuple(batch_shape)}"
                f" with {num_states} states: {err}"
            ) from err
        return cls(transition, reward, terminal, initial, gamma, eta, discount)

    def __post_init__(self):
        p, r = self.transition, self.reward
        for name in ("transition", "reward", "initial", "gamma", "eta"):
            if getattr(self, name).dtype != _DTYPE:
                raise TypeError(f"{name} must be float64 (use TabularMDP.create to convert)")
        if p.ndim < 3 or p.shape[-1] != p.shape[-3]:
            raise ValueError(f"transition must have shape [*B, X, A, X], got {tuple(p.shape)}")
        batch, num_states = p.shape[:-3], p.shape[-3]
        expected = {
            "reward": (*p.shape[:-1],),
            "terminal": (*batch, num_states),
            "initial": (*batch, num_states),
            "gamma": tuple(batch),
            "eta": tuple(batch),
        }
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {tuple(getattr(self, name).shape)}")
        if self.terminal.dtype != torch.bool:
            raise TypeError("terminal must be a bool tensor")
        check_distribution(p, "transition")
        check_distribution(self.initial, "initial")
        if not torch.isfinite(r).all():
            raise ValueError("reward must be finite")
        if not ((self.gamma > 0) & (self.gamma <= 1)).all():
            raise ValueError("gamma must lie in (0, 1]")
        if not (self.eta > 0).all() or not torch.isfinite(self.eta).all():
            raise ValueError("eta must be finite and > 0")
        if self.discount not in DISCOUNT_FORMS:
            raise ValueError(f"discount must be one of {DISCOUNT_FORMS}, got {self.discount!r}")

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def batch_shape(self) -> torch.Size:
        return self.transition.shape[:-3]

    @property
    def num_states(self) -> int:
        return self.transition.shape[-3]

    @property
    def num_actions(self) -> int:
        return self.transition.shape[-2]

    @property
    def num_next_states(self) -> int:
        """X + 1 in form i (the extra state is 'killed by the discount'), X in form ii."""
        return self.num_states + (self.discount == TERMINATION)

    def per_batch(self, param: torch.Tensor, trailing_dims: int) -> torch.Tensor:
        """``param`` of shape ``*B`` viewed with ``trailing_dims`` singleton dims to broadcast."""
        return param.reshape(*param.shape, *([1] * trailing_dims))

    # ---- the two views of the discount form -----------------------------------------------------
    def log_next_kernel(self) -> torch.Tensor:
        """log p~(x' | x, a) over the next-state space, shape ``[*B, X, A, X']``.

        Form i: [log gamma + log p, log(1 - gamma)] (the last column is the discount's kill).
        Form ii: log p.
        """
        log_p = self.transition.log()
        if self.discount == DISCOUNTED_ELBO:
            return log_p
        gamma = self.per_batch(self.gamma, 3)
        kill = torch.log1p(-gamma).expand(*log_p.shape[:-1], 1)
        return torch.cat([gamma.log() + log_p, kill], dim=-1)

    def next_values(self, value: torch.Tensor) -> torch.Tensor:
        """The value seen at each next state, shape ``[*B, X']``, from V of shape ``[*B, X]``.

        V is first set to 0 on terminal states. Form i appends the killed state's value 0; form ii
        multiplies by gamma (eq. 9 with V -> gamma V).
        """
        value = self.mask_terminal(value)
        if self.discount == DISCOUNTED_ELBO:
            return self.per_batch(self.gamma, 1) * value
        return torch.cat([value, value.new_zeros(*value.shape[:-1], 1)], dim=-1)

    def continuation(self, q_d: torch.Tensor) -> torch.Tensor:
        """The discounted state-to-state part of a next-state kernel, ``[*B, X, A, X]``.

        Occupancies solve d = p_0 + P^T d with P built from this: form i drops the killed column
        (its mass is the discount), form ii multiplies by gamma.
        """
        if self.discount == DISCOUNTED_ELBO:
            return self.per_batch(self.gamma, 3) * q_d
        return q_d[..., : self.num_states]

    def mask_terminal(self, per_state: torch.Tensor) -> torch.Tensor:
        """Zero a ``[*B, X]`` or ``[*B, X, ...]`` tensor on terminal states (V = 0, no reward)."""
        mask = self.terminal.reshape(*self.terminal.shape, *([1] * (per_state.ndim - self.terminal.ndim)))
        return torch.where(mask, torch.zeros((), dtype=per_state.dtype), per_state)

    def check_policy(self, policy: torch.Tensor, name: str = "policy") -> torch.Tensor:
        """Validate a tabular policy ``[*B, X, A]`` against this MDP and return it as float64."""
        policy = _as_f64(policy, name)
        shape = (*self.batch_shape, self.num_states, self.num_actions)
        if tuple(policy.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(policy.shape)}")
        check_distribution(policy, name)
        return policy


# ---- generators -------------------------------------------------------------------------------
def _random_simplex(shape: Sequence[int], generator: torch.Generator | None, zero_prob: float = 0.0):
    # Dirichlet(1) via normalised exponentials; torch.distributions cannot take a generator.
    weights = -torch.rand(*shape, dtype=_DTYPE, generator=generator).clamp_min(1e-300).log()
    if zero_prob > 0:
        keep = torch.rand(*shape, dtype=_DTYPE, generator=generator) >= zero_prob
        # keep at least one outcome per row (the row's largest weight)
        keep |= weights == weights.amax(-1, keepdim=True)
        weights = weights * keep
    return weights / weights.sum(-1, keepdim=True)


def random_policy(mdp: TabularMDP, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random full-support policy ``[*B, X, A]`` (Dirichlet(1) rows).

    Example:
        >>> mdp = random_mdp(3, 2, generator=torch.Generator().manual_seed(0))
        >>> pi = random_policy(mdp, generator=torch.Generator().manual_seed(1))
        >>> pi.shape, torch.allclose(pi.sum(-1), torch.ones(3, dtype=torch.float64)), bool((pi > 0).all())
        (torch.Size([3, 2]), True, True)
    """
    return _random_simplex((*mdp.batch_shape, mdp.num_states, mdp.num_actions), generator)


def random_mdp(
    num_states: int,
    num_actions: int,
    batch_shape: Sequence[int] = (),
    *,
    gamma: float | torch.Tensor = 0.9,
    eta: float | torch.Tensor = 1.0,
    discount: str = DISCOUNTED_ELBO,
    num_terminal: int = 0,
    reward_range: tuple[float, float] = (-1.0, 0.0),
    zero_prob: float = 0.3,
    generator: torch.Generator | None = None,
) -> TabularMDP:
    """A batch of random MDPs: Dirichlet(1) transitions with some entries zeroed, uniform rewards.

    Args:
        num_states: X >= 1.
        num_actions: A >= 1.
        batch_shape: leading batch shape ``*B``.
        gamma, eta, discount: as in :class:`TabularMDP`.
        num_terminal: the last ``num_terminal`` states are terminal (self-loops, never used).
        reward_range: (low, high) of the uniform rewards; keep high <= 0 in form i (see
            :class:`TabularMDP`).
        zero_prob: probability of zeroing a transition entry (each row keeps at least one), so the
            code is exercised on kernels without full support.
        generator: a seeded ``torch.Generator`` for reproducibility.

    Example:
        >>> mdp = random_mdp(4, 3, (2,), num_terminal=1, generator=torch.Generator().manual_seed(0))
        >>> mdp.transition.shape, mdp.terminal[0].tolist()
        (torch.Size([2, 4, 3, 4]), [False, False, False, True])
    """
    if num_states < 1 or num_actions < 1:
        raise ValueError(f"num_states and num_actions must be >= 1, got {num_states}, {num_actions}")
    if not 0 <= num_terminal < num_states:
        raise ValueError(f"num_terminal must lie in [0, num_states), got {num_terminal}")
    if not 0 <= zero_prob < 1:
        raise ValueError(f"zero_prob must lie in [0, 1), got {zero_prob}")
    low, high = reward_range
    if not low <= high:
        raise ValueError(f"reward_range must be (low, high) with low <= high, got {reward_range}")
    batch_shape = tuple(batch_shape)
    p = _random_simplex((*batch_shape, num_states, num_actions, num_states), generator, zero_prob)
    terminal = torch.zeros(num_states, dtype=torch.bool)
    if num_terminal:
        terminal[-num_terminal:] = True
        p[..., terminal, :, :] = torch.eye(num_states, dtype=_DTYPE)[terminal][:, None, :]
    reward = low + (high - low) * torch.rand(*batch_shape, num_states, num_actions, dtype=_DTYPE, generator=generator)
    initial = _random_simplex((*batch_shape, num_states), generator) * ~terminal
    initial = initial / initial.sum(-1, keepdim=True)
    return TabularMDP.create(p, reward, terminal, initial, gamma=gamma, eta=eta, discount=discount)


# Gridworld actions: up, right, down, left as (row, col) moves.
_MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))


def gridworld(
    layout: Sequence[str] = ("S..#", ".#.L", "...G"),
    *,
    slip: float = 0.1,
    step_reward: float = -0.1,
    lava_reward: float = -2.0,
    gamma: float = 0.95,
    eta: float = 1.0,
    discount: str = TERMINATION,
) -> TabularMDP:
    """A slippery gridworld: 4 moves, walls, lava, one start and terminal goals.

    Layout characters: ``S`` start, ``.`` floor, ``#`` wall (kept as an unreachable self-looping
    state so that state indices are row * width + col), ``L`` lava (non-terminal, costs ``lava_reward``
    per step spent there), ``G`` goal (terminal). The intended move happens with probability
    1 - slip, otherwise one of the other three moves uniformly; moves into walls or off the grid
    stay put. Every step on a non-lava state costs ``step_reward``. All rewards are <= 0, so
    exp(eta r) is a probability and form i is well defined.

    Example:
        >>> mdp = gridworld(("SG",))
        >>> mdp.num_states, mdp.num_actions, mdp.terminal.tolist()
        (2, 4, [False, True])
    """
    if not 0 <= slip <= 1:
        raise ValueError(f"slip must lie in [0, 1], got {slip}")
    if step_reward > 0 or lava_reward > 0:
        raise ValueError("step_reward and lava_reward must be <= 0 (exp(eta r) is a probability)")
    height, width = len(layout), len(layout[0])
    if any(len(row) != width for row in layout) or not set("".join(layout)) <= set("S.#LG"):
        raise ValueError("layout must be equal-length strings over the characters 'S.#LG'")
    if "".join(layout).count("S") != 1:
        raise ValueError("layout must contain exactly one start 'S'")
    cell = lambda i, j: i * width + j  # noqa: E731
    num_states = height * width
    p = torch.zeros(num_states, 4, num_states, dtype=_DTYPE)
    reward = torch.full((num_states, 4), step_reward, dtype=_DTYPE)
    terminal = torch.zeros(num_states, dtype=torch.bool)
    initial = torch.zeros(num_states, dtype=_DTYPE)
    for i in range(height):
        for j in range(width):
            s, kind = cell(i, j), layout[i][j]
            terminal[s] = kind == "G"
            initial[s] = float(kind == "S")
            if kind == "L":
                reward[s] = lava_reward
            for a in range(4):
                if kind in "G#":  # terminal or unreachable: self-loop, never used
                    p[s, a, s] = 1.0
                    continue
                for b, (di, dj) in enumerate(_MOVES):
                    prob = 1 - slip if a == b else slip / 3
                    ni, nj = i + di, j + dj
                    blocked = not (0 <= ni < height and 0 <= nj < width) or layout[ni][nj] == "#"
                    p[s, a, s if blocked else cell(ni, nj)] += prob
    return TabularMDP.create(p, reward, terminal, initial, gamma=gamma, eta=eta, discount=discount)


def uniform_policy(mdp: TabularMDP) -> torch.Tensor:
    """The uniform policy ``[*B, X, A]``."""
    return torch.full((*mdp.batch_shape, mdp.num_states, mdp.num_actions), 1.0 / mdp.num_actions, dtype=_DTYPE)


__all__ = [
    "DISCOUNT_FORMS",
    "DISCOUNTED_ELBO",
    "TERMINATION",
    "TabularMDP",
    "check_distribution",
    "gridworld",
    "random_mdp",
    "random_policy",
    "uniform_policy",
]
