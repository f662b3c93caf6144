"""sample_mixed: real rows first, then model rows; entries only model rows carry (VMBPO's recorded nu)."""

import pytest
import torch
from tensordict import TensorDict

from torchrl_vmbpo import keys
from torchrl_vmbpo.data.buffers import make_buffer, sample_mixed


def _rows(n, value, *, log_ratio=None):
    td = TensorDict(
        {
            "observation": torch.full((n, 2), value),
            "action": torch.zeros(n, 1),
            ("next", "observation"): torch.zeros(n, 2),
            ("next", "reward"): torch.zeros(n, 1),
            ("next", "done"): torch.zeros(n, 1, dtype=torch.bool),
            ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool),
        },
        [n],
    )
    if log_ratio is not None:
        td.set(keys.LOG_RATIO, torch.full((n, 1), log_ratio))
    return td


def test_model_only_entries_come_from_the_model_rows_and_are_zero_on_the_real_ones():
    real, model = make_buffer(100), make_buffer(100)
    real.extend(_rows(10, 1.0))
    model.extend(_rows(10, 2.0, log_ratio=0.3))
    batch = sample_mixed(real, model, 20, real_ratio=0.25, model_keys=(keys.LOG_RATIO,))
    is_model = batch["observation"][:, 0] == 2.0
    assert is_model.tolist() == [False] * 5 + [True] * 15
    nu = batch[keys.LOG_RATIO]
    assert nu.shape == (20, 1) and nu.dtype == torch.float32
    assert torch.equal(nu[is_model], torch.full((15, 1), 0.3)) and torch.equal(nu[~is_model], torch.zeros(5, 1))
    # every row from E: no zero padding; no model row (E empty or absent): the entry is absent
    assert torch.equal(
        sample_mixed(real, model, 8, 0.0, model_keys=(keys.LOG_RATIO,))[keys.LOG_RATIO], torch.full((8, 1), 0.3)
    )
    for empty in (None, make_buffer(10)):
        batch = sample_mixed(real, empty, 8, 0.25, model_keys=(keys.LOG_RATIO,))
        assert keys.LOG_RATIO not in batch.keys(True) and (batch["observation"] == 1.0).all()
    # without model_keys only the transition entries are kept
    assert keys.LOG_RATIO not in sample_mixed(real, model, 8, 0.25).keys(True)


def test_model_rows_without_a_requested_entry_are_refused_by_name():
    real, model = make_buffer(100), make_buffer(100)
    real.extend(_rows(10, 1.0))
    model.extend(_rows(10, 2.0))
    with pytest.raises(KeyError, match=r"lack \[\('model', 'log_ratio'\)\]"):
        sample_mixed(real, model, 8, 0.25, model_keys=(keys.LOG_RATIO,))
