"""Layer 1: replay-buffer factory and the real/model mixing sampler."""

from torchrl_vmbpo.data.buffers import TRANSITION_KEYS, make_buffer, sample_mixed

__all__ = ["TRANSITION_KEYS", "make_buffer", "sample_mixed"]
