"""Exact E-step and EM on a small slippery gridworld (Section 4 of the paper).

Prints, for the four E-step algorithms of Section 4.2, the optimal Bellman residual
||T[V_k] - V_k||_inf and E_{p_0}[V_k] at each iteration until convergence, checks that they agree
(Lemma 4) and that in form i the ELBO at q* equals log p_pi(O = 1) from the start state; then the
EM curve J(q*_k; pi_k) against the optimum V* (eq. 26 unconstrained, and eq. 27 with a KL term).

    python examples/tabular_gridworld.py                       # form i (termination), gamma 0.95
    python examples/tabular_gridworld.py --discount discounted_elbo --gamma 0.9 --eta 2
"""

from __future__ import annotations

import argparse

import torch

from torchrl_vmbpo.tabular import (
    DISCOUNT_FORMS,
    E_STEP_SOLVERS,
    elbo,
    expectation_maximization,
    gridworld,
    log_likelihood,
    optimal_value,
    uniform_policy,
)

LAYOUT = (
    "S..#.",
    ".#.L.",
    "...LG",
)


def _print_trace(name, solution, every):
    sweeps = solution.evaluation_sweeps
    print(f"\n{name}: {solution.iterations} iterations, converged={solution.converged}")
    for k in range(solution.iterations):
        if k % every and k != solution.iterations - 1:
            continue
        extra = f"  evaluation sweeps {int(sweeps[k])}" if sweeps is not None else ""
        residual, start_value = solution.residuals[k].item(), solution.start_values[k].item()
        print(f"  k={k:4d}  residual {residual:.3e}  E_p0[V_k] {start_value:+.6f}{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--discount", choices=DISCOUNT_FORMS, default="termination")
    parser.add_argument("--gamma", type=float, default=0.95)
    parser.add_argument("--eta", type=float, default=1.0)
    parser.add_argument("--slip", type=float, default=0.1)
    parser.add_argument("--em-iterations", type=int, default=30)
    parser.add_argument("--kl-weight", type=float, default=1.0, help="lambda of eq. 27 for the second EM run")
    parser.add_argument("--tol", type=float, default=1e-10)
    args = parser.parse_args()
    torch.set_num_threads(1)

    mdp = gridworld(LAYOUT, slip=args.slip, gamma=args.gamma, eta=args.eta, discount=args.discount)
    pi = uniform_policy(mdp)
    print(f"gridworld {len(LAYOUT)}x{len(LAYOUT[0])}, {args.discount}, gamma={args.gamma}, eta={args.eta}, pi uniform")
    print("\n".join("  " + row for row in LAYOUT))

    solutions = {}
    for name, solver in E_STEP_SOLVERS.items():
        solutions[name] = solver(mdp, pi, tol=args.tol)
        _print_trace(name, solutions[name], every=1 if name.endswith("pi") else 25)

    reference = solutions["model_free_vi"]
    print("\nLemma 4: max differences to model-free VI")
    for name, sol in solutions.items():
        print(
            f"  {name:15s} V {(sol.value - reference.value).abs().max().item():.1e}  "
            f"q_c {(sol.q_c - reference.q_c).abs().max().item():.1e}  "
            f"q_d {(sol.q_d - reference.q_d).abs().max().item():.1e}"
        )
    bound = elbo(mdp, pi, reference.q_c, reference.q_d).item()
    print(f"\nJ(q*; pi) = {bound:+.8f}")
    if args.discount == "termination":  # one start state: the bound is tight (form i)
        print(f"log p_pi(O=1) = {log_likelihood(mdp, pi).item():+.8f}  (linear solve on z = exp V)")

    optimum = (mdp.initial * optimal_value(mdp)).sum(-1).item()
    print(f"\nEM, optimum max_pi max_q J = {optimum:+.6f}")
    runs = {
        "eq. 26 (pi <- q_c)": expectation_maximization(mdp, pi, num_iterations=args.em_iterations),
        f"eq. 27 (lambda={args.kl_weight})": expectation_maximization(
            mdp, pi, num_iterations=args.em_iterations, kl_weight=args.kl_weight
        ),
    }
    names = list(runs)
    print(f"  {'k':>4s}  " + "  ".join(f"{n:>24s}" for n in names) + "   (gap to the optimum)")
    for k in range(args.em_iterations + 1):
        cells = [f"{runs[n].objective[k].item():+.6f} ({optimum - runs[n].objective[k].item():.1e})" for n in names]
        print(f"  {k:4d}  " + "  ".join(f"{c:>24s}" for c in cells))


if __name__ == "__main__":
    main()
