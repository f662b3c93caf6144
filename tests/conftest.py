import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread_and_seed():
    # Small networks on a 2-core machine: one thread is ~60x faster when the other core is busy.
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _eager_unless_asked(request, monkeypatch):
    """``compile="auto"`` builds agents eager in tests: the presets' default configs are long runs, so
    "auto" would compile them, 10-40 s of Inductor per function on this CPU, in every unit test that
    updates an agent. Tests of compiling ask for it (``compile="on"``, ``setup_compute(compile_...=True)``)
    or, to test "auto" itself through ``build_agent``, carry ``@pytest.mark.compile_auto``."""
    if request.node.get_closest_marker("compile_auto") is None:
        from torchrl_vmbpo.algorithms import presets

        monkeypatch.setattr(presets, "compile_enabled", lambda cfg, what="updates": cfg.compile == "on")
