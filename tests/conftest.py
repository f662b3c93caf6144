import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread_and_seed():
    # Small networks on a 2-core machine: one thread is ~60x faster when the other core is busy.
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
