"""Every VMBPO loss traces into one graph: ``torch.compile(loss, fullgraph=True)`` raises on any graph break.

The composite losses run all of VMBPO's five objectives (and VMBPO-MFE's exponential-TD critic, the
ensemble NLL inside the dynamics fit), so they and MPOLoss cover every loss of the library. ``backend="eager"`` runs
Dynamo's tracing (where graph breaks are found) without Inductor's code generation, which costs
minutes on 2 cores, and keeps eager numerics: compiled and eager values agree exactly.
"""

import pytest
import torch
from test_mpo import _batch as mpo_batch
from test_mpo import _loss as mpo_loss
from test_vmbpo_loss import batch, mfe_loss, vmbpo_loss


@pytest.mark.parametrize(
    "make, kwargs, make_batch",
    [
        (vmbpo_loss, dict(min_ess=0.5, normaliser="model", target_entropy=-1.0, bootstrap="action_value"), batch),
        (mfe_loss, {}, batch),
        (mpo_loss, {}, mpo_batch),
    ],
    ids=["vmbpo", "vmbpo-mfe", "mpo"],
)
def test_every_loss_compiles_with_fullgraph(make, kwargs, make_batch):
    torch._dynamo.reset()
    loss = make(**kwargs)
    td = make_batch()
    compiled = torch.compile(loss, fullgraph=True, backend="eager")
    torch.manual_seed(0)
    out = compiled(td)
    torch.manual_seed(0)
    ref = loss(td)
    assert sorted(out.keys()) == sorted(ref.keys())
    for key in ref.keys():
        torch.testing.assert_close(out[key], ref[key], rtol=0, atol=0)
