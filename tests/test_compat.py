"""The tensordict workaround of torchrl_vmbpo.compat: cached, same answers, modules still work."""

import importlib.util

import tensordict.base
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn

import torchrl_vmbpo  # noqa: F401  (applies the workaround)
from torchrl_vmbpo.compat import cache_tensordict_find_spec


def test_tensordict_base_find_spec_is_cached_and_answers_as_importlib():
    patched = tensordict.base.importlib.util.find_spec
    assert hasattr(patched, "cache_info")
    for name in ("pandas", "torch", "surely_not_a_module_xyz"):
        assert (patched(name) is None) == (importlib.util.find_spec(name) is None)
    hits = patched.cache_info().hits
    patched("surely_not_a_module_xyz")
    assert patched.cache_info().hits == hits + 1
    cache_tensordict_find_spec()  # idempotent: the cache is kept, not wrapped twice
    assert tensordict.base.importlib.util.find_spec is patched
    assert importlib.util.find_spec is not patched  # the rest of the process is untouched


def test_tensordict_modules_still_write_their_outputs():
    module = TensorDictModule(nn.Linear(3, 2), in_keys=["x"], out_keys=["y"])
    out = module(TensorDict({"x": torch.ones(4, 3)}, [4]))
    assert out["y"].shape == (4, 2)
