"""Sampling from any model of the decoding protocol (`seqlab.inference.decoding`): a language model
continues a prompt; an encoder–decoder, given a source batch, samples translations of it. Each next
token is drawn from

    p_i ∝ exp(logit_i / T)        (temperature T; T = 0 takes the most probable token)

restricted to the k most probable tokens (top-k; Fan et al. 2018) and/or to the smallest set whose
probability reaches p (top-p, nucleus sampling; Holtzman et al. 2020), renormalised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from seqlab.config import config_from_dict
from seqlab.data.base import Batch, TaskInfo
from seqlab.data.text import tokenize
from seqlab.data.vocab import Vocab
from seqlab.errors import UserError
from seqlab.inference.decoding import Decoder, device_of, evaluating, run_steps, select_rows


def filter_logits(logits: Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """logits (batch, V) → logits / T with every token outside the top-k and the top-p nucleus set to −∞."""
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
        drop_sorted = before >= top_p  # the most probable token always stays (before = 0)
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_token(
    logits: Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw one token per row (batch,); temperature 0 is greedy."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits, temperature, top_k, top_p).softmax(dim=-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(logits.device)


def sample(
    model: nn.Module,
    num: int,
    max_len: int,
    prompt: list[int] | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = Vocab.eos_id,
    generator: torch.Generator | None = None,
    banned: tuple[int, ...] = (Vocab.pad_id, Vocab.bos_id),
    batch: Batch | None = None,
) -> list[list[int]]:
    """`num` continuations of `prompt` (its ids, e.g. starting with <bos>), each at most `max_len` new
    tokens, stopping at `eos_id` (not included), never drawing a `banned` id (symbols that are never a
    next token, such as <pad> and <bos>). The prompt is fed one token at a time through `step`.

    With `batch` (an encoder–decoder's source), `num` samples of every source sentence, sentence by
    sentence: rows [i·num, (i+1)·num) belong to sentence i."""
    rows = num * (batch["src"].shape[0] if batch is not None else 1)
    generated: list[list[int]] = [[] for _ in range(rows)]
    for drawn in sample_steps(model, num, max_len, prompt, temperature, top_k, top_p, eos_id, generator, banned, batch):
        for row, token in enumerate(drawn):
            if token is not None:
                generated[row].append(token)
    return generated


@torch.no_grad()
def sample_steps(
    model: nn.Module,
    num: int,
    max_len: int,
    prompt: list[int] | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = Vocab.eos_id,
    generator: torch.Generator | None = None,
    banned: tuple[int, ...] = (Vocab.pad_id, Vocab.bos_id),
    batch: Batch | None = None,
) -> Iterator[list[int | None]]:
    """The draws of `sample` (same arguments) as they happen: after each step, every row's new token, or
    None for a row that has ended (its `eos_id` is not yielded). `seqlab serve` streams these."""
    if not prompt:
        raise ValueError("sampling needs at least one prompt token (<bos> for line-per-sequence models)")
    with evaluating(model):
        device = device_of(model)
        memory = model.encode(batch if batch is not None else {})
        if batch is not None:
            sources = batch["src"].shape[0]
            memory = select_rows(memory, torch.arange(sources).repeat_interleave(num))
            num *= sources
        state = model.init_state(memory, num)
        tokens = torch.tensor(prompt, dtype=torch.long, device=device).expand(num, -1)
        logits, state, _ = run_steps(model, memory, state, tokens)
        logits = logits[:, -1]
        finished = [False] * num
        for t in range(max_len):
            if banned:
                logits = logits.index_fill(-1, torch.tensor(banned, device=logits.device), float("-inf"))
            tokens = next_token(logits, temperature, top_k, top_p, generator)
            drawn = tokens.tolist()
            finished = [done or (eos_id is not None and token == eos_id) for done, token in zip(finished, drawn)]
            yield [None if done else token for done, token in zip(finished, drawn)]
            if all(finished) or t == max_len - 1:
                return
            logits, state, _ = model.step(memory, state, tokens)


@dataclass
class LanguageModelCheckpoint:
    """A language model rebuilt from a checkpoint, with the vocabulary its task saved."""

    model: nn.Module
    vocab: Vocab
    level: str
    joiner: str
    line_format: bool
    meta: dict[str, Any]


def encode_prompt(lm: LanguageModelCheckpoint, text: str | None, option: str = "--prompt") -> tuple[str, list[int]]:
    """The prompt text (default: a new sequence) and the ids fed before the first draw (<bos> first for a
    line-per-sequence model); a bad prompt is a UserError that tells the user to change `option`."""
    text = text if text is not None else ("" if lm.line_format else "\n")
    tokens = tokenize(text, lm.level)  # type: ignore[arg-type]
    unknown = sorted({t for t in tokens if t not in lm.vocab.stoi})
    if unknown:
        raise UserError(f"the prompt holds tokens this model's vocabulary lacks: {unknown[:10]}; change {option}.")
    ids = ([Vocab.bos_id] if lm.line_format else []) + lm.vocab.encode(tokens)
    if not ids:
        raise UserError(f"this model continues running text: give a non-empty {option}.")
    return text, ids


def load_language_model(path: str | Path) -> LanguageModelCheckpoint:
    """Rebuild the model and vocabulary of an ``lm``-task checkpoint (no data file needed)."""
    from seqlab.models import build_model
    from seqlab.training.checkpoint import load_weights, resolve_checkpoint

    checkpoint = resolve_checkpoint(path)
    meta = checkpoint.meta
    task_state = meta.get("task_state", {})
    if "vocab" not in task_state:
        raise UserError(f"{checkpoint.path} is not a language-model checkpoint (its task saved no vocabulary); "
                        "sample from a run of the lm task.")
    config = config_from_dict(meta["config"])
    vocab = Vocab.from_state(task_state["vocab"])
    info = TaskInfo(kind="tokens", output_dim=len(vocab), vocab_size=len(vocab), pad_id=Vocab.pad_id)
    model = build_model(config.model, info)
    if not isinstance(model, Decoder):
        raise UserError(f"the {config.model.name} model cannot generate step by step.")
    load_weights(checkpoint.path, model)
    task = meta["config"]["task"]
    return LanguageModelCheckpoint(
        model=model.eval(), vocab=vocab, level=task_state.get("level", "char"), joiner=task_state.get("joiner", ""),
        line_format=task.get("format") == "lines", meta=meta,
    )
