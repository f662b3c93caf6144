"""Workarounds for defects of the pinned tensordict / TorchRL versions, kept in this one place.

Each is scoped to where it is needed (nothing is patched on import) and says what it fixes, what
it measured and when it can go.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import types
from contextlib import contextmanager

import tensordict.base as _tensordict_base


@contextmanager
def tensordict_find_spec_cached():
    """Within the block, give ``tensordict.base`` a cached ``importlib.util.find_spec``; restored after.

    tensordict 0.14.3's ``TensorDict.from_any`` runs ``importlib.util.find_spec("pandas")`` for every
    plain tensor it wraps, and ``TensorDictModule`` calls it for every output it writes: without
    pandas installed each call searches ``sys.path`` on disk (stat calls). Measured on this
    project's 2-core machine (Pendulum sizes, batch 256, one thread): a VMBPO update 33.3 ms ->
    27.3 ms; SAC's vmapped losses were unaffected (19.1 / 19.4 ms). Only ``tensordict.base`` sees
    the cache, and only while the block runs (the training loop wraps a run in it); the answer can
    only go stale if a package is installed meanwhile. Nested blocks share one cache.

    When it can go: once the pinned tensordict looks the module up once (not per tensor), or caches
    ``find_spec`` itself; re-measure a VMBPO update with and without the block then.
    """
    global _depth, _original
    if _depth == 0:
        _original = _tensordict_base.importlib
        util = types.SimpleNamespace(**vars(importlib.util))
        util.find_spec = functools.lru_cache(maxsize=None)(importlib.util.find_spec)
        proxy = types.SimpleNamespace(**vars(importlib))
        proxy.util = util
        _tensordict_base.importlib = proxy
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            _tensordict_base.importlib = _original


_depth, _original = 0, None  # blocks open now, and tensordict.base's own importlib while they are
