"""What the generating models share: the decoding protocol's memory, empty for a language model.

Every model that generates tokens implements (see `seqlab.inference.decoding`)::

    memory = model.encode(batch)                        # dict of batch-first tensors (or pytrees); {} for an LM
    state  = model.init_state(memory, batch_size)       # a pytree of batch-first tensors
    logits, state, attention = model.step(memory, state, tokens)   # logits unnormalised
"""

from __future__ import annotations

from typing import Any

from torch import nn

from seqlab.data.base import Batch

Memory = dict[str, Any]  # batch-first tensors, or pytrees of them (a list of per-layer key/value caches)


class LanguageModel(nn.Module):
    """A decoder with nothing to encode: p(x_{t+1} | x_≤t) conditions on its own past only."""

    def encode(self, batch: Batch) -> Memory:
        """A language model's memory is empty."""
        return {}
