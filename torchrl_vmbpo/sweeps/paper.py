"""The paper's published numbers (Chow et al., VMBPO; Gym v2 envs), shown beside a suite's own in ``vmbpo report``.

Mean ± std of the final return: Table 1 at each algorithm's best hyper-parameters, Table 2 over all
hyper-parameter configurations and seeds (PETS and STEVE not in Table 2: the paper took their settings
from their own papers). Budgets: Pendulum, Reacher, Reacher7DoF 50k env steps, Hopper 150k, Walker2d
and HalfCheetah 400k. Keys are this package's env ids and algorithm names.
"""

from __future__ import annotations

ENVS = {
    "Pendulum-v1": "Pendulum",
    "Hopper-v5": "Hopper",
    "Walker2d-v5": "Walker2D",
    "HalfCheetah-v5": "HalfCheetah",
    "Reacher-v5": "Reacher",
    "torchrl_vmbpo/Reacher7DoF-v0": "Reacher7DoF",
}
BUDGETS = {
    "Pendulum-v1": 50_000,
    "Hopper-v5": 150_000,
    "Walker2d-v5": 400_000,
    "HalfCheetah-v5": 400_000,
    "Reacher-v5": 50_000,
    "torchrl_vmbpo/Reacher7DoF-v0": 50_000,
}

_T1_ALGOS = ("vmbpo", "mbpo", "steve", "pets", "vmbpo-mfe", "sac", "mpo")
_T1 = {
    "Pendulum-v1": (
        (-125.8, 73.7),
        (-126.0, 78.4),
        (-6385.3, 799.7),
        (-183.5, 1773.9),
        (-125.7, 130.1),
        (-124.7, 199.0),
        (-131.9, 315.9),
    ),
    "Hopper-v5": (
        (2897.4, 630.0),
        (2403.1, 556.0),
        (279.0, 237.1),
        (94.5, 114.2),
        (1368.7, 184.1),
        (2020.8, 954.1),
        (1509.7, 756.0),
    ),
    "Walker2d-v5": (
        (4226.1, 843.0),
        (3883.3, 753.5),
        (336.3, 196.3),
        (93.5, 134.1),
        (3334.5, 122.8),
        (3026.4, 888.9),
        (2889.4, 712.7),
    ),
    "HalfCheetah-v5": (
        (13120.0, 933.1),
        (11877.0, 997.1),
        (482.9, 596.9),
        (13272.6, 4926.4),
        (4647.3, 505.8),
        (9080.3, 1625.1),
        (4969.2, 623.7),
    ),
    "Reacher-v5": ((-11.4, 27.0), (-12.6, 25.9), (-141.8, 355.7), None, (-55.5, 39.0), (-23.9, 23.8), (-75.9, 336.7)),
    "torchrl_vmbpo/Reacher7DoF-v0": (
        (-13.8, 20.5),
        (-15.1, 98.8),
        None,
        (-45.6, 36.1),
        (-33.5, 49.6),
        (-27.4, 112.0),
        (-38.4, 53.8),
    ),
}
_T2_ALGOS = ("vmbpo", "mbpo", "vmbpo-mfe", "sac", "mpo")
_T2 = {
    "Pendulum-v1": ((-147.4, 94.1), (-146.8, 272.6), (-511.9, 384.4), (-146.8, 450.6), (-605.2, 389.6)),
    "Hopper-v5": ((2292.5, 1256.0), (1638.7, 881.5), (485.4, 389.3), (1262.2, 803.3), (780.8, 629.6)),
    "Walker2d-v5": ((3326.6, 1276.1), (2977.8, 997.3), (1447.1, 767.1), (1341.6, 1092.6), (1590.3, 860.7)),
    "HalfCheetah-v5": ((10366.7, 3477.2), (7586.1, 4814.1), (2834.6, 1062.9), (6312.0, 2299.7), (3258.2, 970.1)),
    "Reacher-v5": ((-13.5, 38.7), (-17.5, 44.8), (-122.2, 507.0), (-77.2, 50.6), (-168.2, 477.1)),
    "torchrl_vmbpo/Reacher7DoF-v0": ((-15.2, 66.4), (-17.2, 101.6), (-78.9, 439.1), (-114.2, 196.9), (-93.8, 426.9)),
}
TABLE1 = {(algo, env): cell for env, row in _T1.items() for algo, cell in zip(_T1_ALGOS, row) if cell is not None}
TABLE2 = {(algo, env): cell for env, row in _T2.items() for algo, cell in zip(_T2_ALGOS, row)}
