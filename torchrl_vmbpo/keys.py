"""Default tensordict keys shared by components (layer 0: imports nothing from the package).

TorchRL's standard keys are used unchanged; keys this library adds are nested under a namespace
so they never collide with a user's own entries.
"""

OBSERVATION = "observation"
ACTION = "action"
NEXT_OBSERVATION = ("next", "observation")
REWARD = ("next", "reward")
DONE = ("next", "done")
TERMINATED = ("next", "terminated")
# Pre-tanh Gaussian parameters written by the tanh-Gaussian actors of models/networks.py.
LOC = "loc"
SCALE = "scale"
SAMPLE_LOG_PROB = "action_log_prob"
# Per-sample weights read by the ensemble NLL loss (VMBPO's twisted dynamics fit, eq. 19).
WEIGHT = ("model", "weight")
# Eq. 19's raw log-weight of each real transition, written once per model fit by
# VMBPODynamicsLoss.with_log_weights (V' and Q' are fixed during a fit) and read at every fit step.
LOG_WEIGHT = ("model", "log_weight")
# True on the rows of an update batch drawn from the real buffer D (VMBPO's agent sets it): eqs. 22-23
# subtract nu = log q_d/p only on model rows (x' ~ q_d), the critic uses nu = 0 on real ones.
IS_REAL = ("model", "is_real")
# nu = log q_d / p at a model row's (x, a, x') (eq. 21), the ratio network's out_key. VMBPO records it on each
# imagined row as the row enters E (VMBPOAgent.label_imagined), by the nu fitted to the q_d that imagined the
# row; the critic's Q target (eqs. 22-23) reads it from there when the batch holds it.
LOG_RATIO = ("model", "log_ratio")
