"""Layer 2: TorchRL LossModules. VMBPO's five objectives, the ensemble NLL, MPO, the exponential TD.

=========================  ======================================  ==============================
paper                      class                                   steps
=========================  ======================================  ==============================
eq. 19 (dynamics fit)      :class:`VMBPODynamicsLoss`              q_d
eq. 21 (log-ratio nu)      :class:`LogRatioLoss`                   nu
eqs. 22-24 (critic)        :class:`VMBPOCriticLoss`                Q, V (targets Q', V' owned)
eq. 25 (actor)             :class:`VMBPOActorLoss`                 q_c
eq. 27 (M-step) / copy     :class:`MStepLoss`                      pi
MBPO model loss            :class:`GaussianEnsembleNLLLoss`        q_d
eq. 9 exponential TD (MFE) :class:`ExponentialTDLoss`              Q, V
MPO                        :class:`MPOLoss`                        pi, Q, duals
all of VMBPO's five        :class:`VMBPOLoss`                      owns pi, q_c, q_d, nu, V, Q, V', Q'
VMBPO-MFE's                :class:`VMBPOMFELoss`                   owns pi, q_c, V, Q, V', Q' (q_d)
=========================  ======================================  ==============================
"""

from torchrl_vmbpo.objectives.ensemble_nll import GaussianEnsembleNLLLoss
from torchrl_vmbpo.objectives.exponential_td import ExponentialTDLoss
from torchrl_vmbpo.objectives.log_ratio import LogRatioLoss
from torchrl_vmbpo.objectives.m_step import MStepLoss
from torchrl_vmbpo.objectives.mpo import MPOLoss
from torchrl_vmbpo.objectives.vmbpo import VMBPOLoss, VMBPOMFELoss
from torchrl_vmbpo.objectives.vmbpo_actor import VMBPOActorLoss
from torchrl_vmbpo.objectives.vmbpo_critic import VMBPOCriticLoss
from torchrl_vmbpo.objectives.vmbpo_dynamics import VMBPODynamicsLoss

__all__ = [
    "ExponentialTDLoss",
    "GaussianEnsembleNLLLoss",
    "LogRatioLoss",
    "MPOLoss",
    "MStepLoss",
    "VMBPOActorLoss",
    "VMBPOCriticLoss",
    "VMBPODynamicsLoss",
    "VMBPOLoss",
    "VMBPOMFELoss",
]
