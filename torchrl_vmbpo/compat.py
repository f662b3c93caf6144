"""Workarounds for defects of the pinned tensordict / TorchRL versions, kept in this one place.

Applied once by the package root on import (idempotent); each says what it fixes and what it
measured, so it can be dropped when the pinned version fixes the defect.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import types

import tensordict.base as _tensordict_base


def cache_tensordict_find_spec() -> None:
    """Give ``tensordict.base`` a cached ``importlib.util.find_spec``.

    tensordict 0.14.3's ``TensorDict.from_any`` runs ``importlib.util.find_spec("pandas")`` for every
    plain tensor it wraps, and ``TensorDictModule`` calls it for every output it writes: without
    pandas installed each call searches ``sys.path`` on disk (stat calls). Measured on this
    project's 2-core machine (Pendulum sizes, batch 256, one thread): a VMBPO update 33.3 ms ->
    27.3 ms; SAC's vmapped losses were unaffected (19.1 / 19.4 ms). Only ``tensordict.base`` sees
    the cache; the answer can only go stale if a package is installed while the process runs.
    """
    if getattr(_tensordict_base.importlib, "_find_spec_cached", False):
        return
    util = types.SimpleNamespace(**vars(importlib.util))
    util.find_spec = functools.lru_cache(maxsize=None)(importlib.util.find_spec)
    proxy = types.SimpleNamespace(**vars(importlib))
    proxy.util, proxy._find_spec_cached = util, True
    _tensordict_base.importlib = proxy
