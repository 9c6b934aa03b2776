"""The one decoding protocol: every model that generates tokens, language model or encoder–decoder.

    memory = model.encode(batch)                        # dict of batch-first tensors; {} for a language model
    state  = model.init_state(memory, batch_size)       # a pytree (dict/list/tuple/dataclass) of batch-first tensors
    logits, state, attention = model.step(memory, state, tokens)
        # tokens (batch,) long → logits (batch, vocab) UNNORMALISED, attention (batch, src_len) or None

A language model is a decoder with empty memory. Greedy search, beam search (`seqlab.inference.search`)
and sampling (`seqlab.inference.sampling`) drive every model through these three methods only; because
every tensor is batch-first, `select_rows` reorders beams and drops finished rows whatever the model keeps.

What search decodes from: a batch holding the source (``src``, ``src_lengths``) of an encoder–decoder,
and/or a ``prompt`` (batch, P) of tokens fed before the first choice (default: one <bos> per row).
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from typing import Any, Iterator, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from seqlab.data.base import Batch
from seqlab.data.vocab import Vocab
from seqlab.nn.state import map_state, state_tensors

Memory = dict[str, Any]  # batch-first tensors, or pytrees of them
BOS, EOS = Vocab.bos_id, Vocab.eos_id

__all__ = ["BOS", "EOS", "Decoder", "Memory", "begin", "device_of", "evaluating", "map_state", "prompt_of",
           "run_steps", "select_rows", "source_lengths", "state_tensors"]


@runtime_checkable
class Decoder(Protocol):
    """A model that generates one token at a time; every tensor batch-first."""

    def encode(self, batch: Batch) -> Memory:
        """What the decoder conditions on (encoder states, precomputed keys, masks); {} for a language model."""
        ...

    def init_state(self, memory: Memory, batch_size: int) -> Any:
        """The decoder state before the first token (a KV cache, fast weights, RNN states, buffers)."""
        ...

    def step(self, memory: Memory, state: Any, tokens: Tensor) -> tuple[Tensor, Any, Tensor | None]:
        """Feed tokens (batch,) → next-token logits (batch, vocab), the new state, attention (batch, src_len) or None."""
        ...


def select_rows(tree: Any, rows: Tensor) -> Any:
    """Every tensor of a memory / state pytree indexed along dim 0 by `rows` (reorder, repeat, or drop rows)."""
    return map_state(tree, lambda tensor: tensor.index_select(0, rows.to(tensor.device)))


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode (no dropout) for the block; its training flag restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def device_of(model: nn.Module) -> torch.device:
    """Where the model's parameters (or, lacking any, its buffers) live; the CPU for neither."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def prompt_of(batch: Batch, device: torch.device) -> Tensor:
    """The batch's ``prompt`` (batch, P), or one <bos> per source sentence."""
    if "prompt" in batch:
        return batch["prompt"].to(device)
    return torch.full((batch["src"].shape[0], 1), BOS, dtype=torch.long, device=device)


def source_lengths(batch: Batch, size: int) -> Tensor:
    """Source lengths (batch,) on the CPU; zeros for a language model (no source)."""
    if "src_lengths" in batch:
        return batch["src_lengths"].cpu()
    return torch.zeros(size, dtype=torch.long)


def run_steps(model: Decoder, memory: Memory, state: Any, tokens: Tensor) -> tuple[Tensor, Any, Tensor | None]:
    """Feed tokens (batch, T) one step each → logits (batch, T, vocab), the final state, attention
    (batch, T, src_len) or None. T ≥ 1."""
    logits, attentions = [], []
    for t in range(tokens.shape[1]):
        step_logits, state, attention = model.step(memory, state, tokens[:, t])
        logits.append(step_logits)
        if attention is not None:
            attentions.append(attention)
    return torch.stack(logits, 1), state, torch.stack(attentions, 1) if attentions else None


def begin(model: Decoder, batch: Batch) -> tuple[Memory, Any, Tensor]:
    """Encode, start the state, feed all but the last prompt token: (memory, state, the tokens to step next)."""
    prompt = prompt_of(batch, device_of(model))  # type: ignore[arg-type]
    memory = model.encode(batch)
    state = model.init_state(memory, prompt.shape[0])
    if prompt.shape[1] > 1:
        _, state, _ = run_steps(model, memory, state, prompt[:, :-1])
    return memory, state, prompt[:, -1]
