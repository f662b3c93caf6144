"""The tensordict workaround of torchrl_vmbpo.compat: scoped to a block, cached, same answers."""

import importlib.util

import tensordict.base
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn

import torchrl_vmbpo  # noqa: F401  (importing the package patches nothing)
from torchrl_vmbpo.compat import tensordict_find_spec_cached


def test_find_spec_is_cached_only_inside_the_block_and_answers_as_importlib():
    before = tensordict.base.importlib
    assert not hasattr(before.util.find_spec, "cache_info")  # nothing patched on import
    with tensordict_find_spec_cached():
        patched = tensordict.base.importlib.util.find_spec
        assert hasattr(patched, "cache_info")
        for name in ("pandas", "torch", "surely_not_a_module_xyz"):
            assert (patched(name) is None) == (importlib.util.find_spec(name) is None)
        hits = patched.cache_info().hits
        patched("surely_not_a_module_xyz")
        assert patched.cache_info().hits == hits + 1
        with tensordict_find_spec_cached():  # nested: the same cache, not wrapped twice
            assert tensordict.base.importlib.util.find_spec is patched
        assert tensordict.base.importlib.util.find_spec is patched
        assert importlib.util.find_spec is not patched  # the rest of the process is untouched
    assert tensordict.base.importlib is before


def test_tensordict_modules_still_write_their_outputs():
    module = TensorDictModule(nn.Linear(3, 2), in_keys=["x"], out_keys=["y"])
    with tensordict_find_spec_cached():
        out = module(TensorDict({"x": torch.ones(4, 3)}, [4]))
    assert out["y"].shape == (4, 2)
