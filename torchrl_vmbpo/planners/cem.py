"""The cross-entropy method over action sequences, as PETS runs it (Chua et al. 2018, Appendix A).

Shape legend: ``*B`` independent planning problems, ``N`` population, ``H`` horizon, ``A`` action
size, ``I`` iterations.

Per iteration: sample ``N`` sequences from a Gaussian truncated at two standard deviations, whose
variance is first shrunk so that the two-sigma box stays inside the action bounds (PETS's
"constrained variance"; samples never need clipping); score them; refit mean and variance to the
``elites`` best, mixed with the previous ones by ``momentum`` (PETS's ``alpha``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


def initial_std(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """PETS's initial standard deviation: a quarter of the action range (variance ``(u - l)^2 / 16``)."""
    return (upper - lower) / 4.0


@torch.no_grad()
def cem_search(
    score_fn: ScoreFn,
    mean: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    *,
    population: int,
    elites: int,
    iterations: int,
    momentum: float = 0.1,
    std: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Maximise ``score_fn`` over action sequences; returns the final mean ``[*B, H, A]`` and a history.

    Args:
        score_fn: ``[*B, N, H, A] -> [*B, N]`` (higher is better). Non-finite scores rank last.
        mean: initial mean ``[*B, H, A]`` (PETS: the previous plan shifted by one step).
        lower, upper: action bounds ``[A]``.
        population: ``N``, sequences sampled per iteration.
        elites: sequences the distribution is refitted to (``<= population``).
        iterations: ``I``.
        momentum: weight of the previous mean/variance in each refit (PETS: 0.1).
        std: initial standard deviation (broadcast to ``mean``); default :func:`initial_std`.
        generator: optional torch generator.

    Returns:
        ``(mean, history)`` where ``history["population_score"]`` and ``history["elite_score"]`` are
        ``[I, *B]`` mean scores of the sampled population and of its elites at each iteration.

    Example:
        >>> target = torch.tensor([[0.5], [-0.5], [0.0]])  # best sequence, H=3, A=1
        >>> score = lambda seqs: -(seqs - target).pow(2).sum((-2, -1))
        >>> lo, hi = torch.tensor([-1.0]), torch.tensor([1.0])
        >>> plan, history = cem_search(score, torch.zeros(3, 1), lo, hi, population=200, elites=20, iterations=6)
        >>> bool((plan - target).abs().max() < 0.05)
        True
        >>> bool(history["elite_score"][-1] > history["elite_score"][0])
        True
    """
    if not 1 <= elites <= population:
        raise ValueError(f"elites must be in [1, population={population}], got {elites}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    batch = mean.shape[:-2]
    var = (
        initial_std(lower, upper) if std is None else torch.as_tensor(std, dtype=mean.dtype, device=mean.device)
    ).pow(2)
    var = var.expand_as(mean).clone()
    pop_scores, elite_scores = [], []
    for _ in range(iterations):
        # PETS's constrained variance: mean +- 2 sigma stays inside [lower, upper].
        half_room = torch.minimum(mean - lower, upper - mean).clamp_min(0.0) / 2.0
        sigma = torch.minimum(var, half_room.pow(2)).sqrt()
        noise = torch.nn.init.trunc_normal_(
            torch.empty(*batch, population, *mean.shape[-2:], dtype=mean.dtype, device=mean.device),
            a=-2.0,
            b=2.0,
            generator=generator,
        )
        samples = mean.unsqueeze(-3) + sigma.unsqueeze(-3) * noise  # [*B, N, H, A]
        scores = score_fn(samples)
        ranked = torch.where(torch.isfinite(scores), scores, torch.full_like(scores, -torch.inf))
        top, idx = ranked.topk(elites, dim=-1)  # [*B, elites]
        best = samples.gather(-3, idx[..., None, None].expand(*idx.shape, *mean.shape[-2:]))
        mean = momentum * mean + (1.0 - momentum) * best.mean(-3)
        var = momentum * var + (1.0 - momentum) * best.var(-3, unbiased=False)
        pop_scores.append(ranked.mean(-1))
        elite_scores.append(top.mean(-1))
    return mean, {"population_score": torch.stack(pop_scores), "elite_score": torch.stack(elite_scores)}
