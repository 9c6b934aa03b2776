"""Recurrent encoder–decoders (seed 002, "Seq2Seq" and "Attention"), each an `IncrementalDecoder`.

- ``seq2seq``         Sutskever, Vinyals & Le 2014: a multi-layer LSTM reads the (optionally reversed)
                      source; its final state is the decoder's initial state and the only context.
- ``seq2seq_context`` Cho et al. 2014 (EMNLP): c = tanh(V h_N) summarises the source; the decoder starts
                      from s_0 = tanh(V' c) and sees c at every step and in its output layer.
- ``bahdanau``        Bahdanau, Cho & Bengio 2014 (RNNsearch): a bidirectional encoder's annotations
                      h_j = [→h_j; ←h_j]; attention from the previous decoder state s_{i−1} gives c_i;
                      s_i = f(s_{i−1}, y_{i−1}, c_i).
- ``luong``           Luong, Pham & Manning 2015: attention from the current top state h_t; the
                      attentional state h̃_t = tanh(W_c [c_t; h_t]) predicts y_t and, with input feeding,
                      enters the next step's input.

Training is teacher-forced (the gold previous token), or with probability 1 − `teacher_forcing` per
sentence and step the model's own previous prediction (scheduled sampling, Bengio et al. 2015). The
source mask keeps attention off padding. Models whose decoder does not depend on its own outputs
(seq2seq, seq2seq_context, luong without input feeding) run the decoder over the whole target with the
fused recurrent kernel; the others step; both give the same result (tested).

Decoder state is batch-first for beam search: {"h": (batch, layers, hidden)} (+ "c" for the LSTM).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from seqlab.data.base import Batch, TaskInfo
from seqlab.nn.attention import Local, Score, build_attention
from seqlab.nn.init import InitScheme
from seqlab.nn.recurrent import (
    CellState, RecurrentStack, State, batch_first_state, reverse_valid, stack_state, valid_mask,
)
from seqlab.registry import MODELS, Spec

Cell = Literal["lstm", "gru", "elman"]
Memory = dict[str, Tensor]


def step_layers(stack: RecurrentStack, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    """One time step through a unidirectional stack's own cells (dropout between layers, as the stack does)."""
    keys = ("h", "c") if "c" in state else ("h",)
    layer_input, new_states = x_t, []
    for layer, cell in enumerate(stack.cells):
        cell_state: CellState = cell(layer_input, tuple(state[key][:, layer] for key in keys))
        new_states.append(cell_state)
        layer_input = cell.output(cell_state)
        if layer < stack.num_layers - 1:
            layer_input = F.dropout(layer_input, stack.dropout, stack.training)
    updated = dict(state)
    for index, key in enumerate(keys):
        updated[key] = torch.stack([s[index] for s in new_states], dim=1)
    return layer_input, updated


def top_layer(final: State, directions: int, direction: int = 0) -> Tensor:
    """The top layer's final hidden state h (batch, hidden) of one direction."""
    h = final[0] if isinstance(final, tuple) else final
    return h[h.shape[0] - directions + direction]


def maxout(t_tilde: Tensor) -> Tensor:
    """Goodfellow et al. 2013, as in Cho et al. 2014 and Bahdanau et al. 2014 (A.2.2): t_j = max(t̃_{2j−1}, t̃_{2j})."""
    return t_tilde.unflatten(-1, (-1, 2)).amax(-1)


Features = tuple[Tensor, ...]  # what a decoder step hands its output layer: s_i, y_{i−1}, c_i, ...


class EncoderDecoder(nn.Module):
    """Shared by the recurrent encoder–decoders: teacher-forced training and the decoding protocol's `step`."""

    def __init__(self, teacher_forcing: float) -> None:
        super().__init__()
        self.teacher_forcing = teacher_forcing

    def encode(self, batch: Batch) -> Memory:
        raise NotImplementedError

    def init_state(self, memory: Memory, batch_size: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def advance(self, memory: Memory, state: dict[str, Tensor], tokens: Tensor) -> tuple[Features, dict[str, Tensor], Tensor | None]:
        """One decoder step up to the output layer: (the output layer's inputs, new state, attention or None)."""
        raise NotImplementedError

    def readout(self, *features: Tensor) -> Tensor:
        """The output layer: its inputs (..., width) each → logits (..., target vocabulary)."""
        raise NotImplementedError

    def decode_parallel(self, memory: Memory, tgt_in: Tensor) -> tuple[Features, Tensor | None] | None:
        """Features (and attention) for a whole teacher-forced target at once, or None if the decoder must step."""
        return None

    def step(self, memory: Memory, state: dict[str, Tensor], tokens: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
        features, state, attention = self.advance(memory, state, tokens)
        return self.readout(*features), state, attention

    def teacher_forced(self, batch: Batch) -> tuple[Tensor, Tensor | None]:
        """Logits (batch, tgt, vocab) and attention (batch, tgt, src) or None, given the gold previous tokens."""
        memory = self.encode(batch)
        tgt_in = batch["tgt_in"]
        sampling = self.training and self.teacher_forcing < 1.0
        if not sampling:
            parallel = self.decode_parallel(memory, tgt_in)
            if parallel is not None:
                features, attention = parallel
                return self.readout(*features), attention
        state = self.init_state(memory, tgt_in.shape[0])
        tokens = tgt_in[:, 0]
        features: list[Features] = []
        logits, attentions = [], []
        for t in range(tgt_in.shape[1]):
            step_features, state, attention = self.advance(memory, state, tokens)
            if attention is not None:
                attentions.append(attention)
            if sampling:
                step_logits = self.readout(*step_features)
                logits.append(step_logits)
                if t + 1 < tgt_in.shape[1]:
                    gold = torch.rand(tokens.shape[0], device=tokens.device) < self.teacher_forcing
                    tokens = torch.where(gold, tgt_in[:, t + 1], step_logits.argmax(-1))
            else:
                features.append(step_features)
                if t + 1 < tgt_in.shape[1]:
                    tokens = tgt_in[:, t + 1]
        output = torch.stack(logits, 1) if sampling else self.readout(*(torch.stack(parts, 1) for parts in zip(*features)))
        return output, torch.stack(attentions, 1) if attentions else None

    def forward(self, batch: Batch) -> Tensor:
        return self.teacher_forced(batch)[0]


def source_mask(batch: Batch) -> Tensor:
    """(batch, src) True at real source tokens."""
    mask = valid_mask(batch["src_lengths"], batch["src"].shape[1], batch["src"].device)
    assert mask is not None
    return mask


class RecurrentSpec(Spec):
    """Fields shared by the recurrent encoder–decoders."""

    embed_size: int = Field(256, ge=1)
    hidden_size: int = Field(512, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    teacher_forcing: float = Field(1.0, ge=0, le=1, description="probability of feeding the gold previous token")
    init: InitScheme = "default"


class Seq2SeqSpec(RecurrentSpec):
    name: Literal["seq2seq"] = "seq2seq"
    cell: Cell = "lstm"
    num_layers: int = Field(2, ge=1)
    reverse_source: bool = True


@MODELS.register("seq2seq", Seq2SeqSpec)
class Sutskever(EncoderDecoder):
    """Sutskever et al. 2014: p(y_1..y_T' | x_1..x_T) = Π_t p(y_t | v, y_1..y_{t−1}), v = the encoder's final state."""

    def __init__(self, spec: Seq2SeqSpec, info: TaskInfo) -> None:
        super().__init__(spec.teacher_forcing)
        assert info.vocab_size is not None
        E, H = spec.embed_size, spec.hidden_size
        self.reverse_source = spec.reverse_source
        self.src_embed = nn.Embedding(info.vocab_size, E, padding_idx=info.pad_id)
        self.tgt_embed = nn.Embedding(info.output_dim, E, padding_idx=info.pad_id)
        self.encoder = RecurrentStack(spec.cell, E, H, spec.num_layers, dropout=spec.dropout, init=spec.init)
        self.decoder = RecurrentStack(spec.cell, E, H, spec.num_layers, dropout=spec.dropout, init=spec.init)
        self.out = nn.Linear(H, info.output_dim)
        self.drop = nn.Dropout(spec.dropout)

    def encode(self, batch: Batch) -> Memory:
        x = self.drop(self.src_embed(batch["src"]))
        if self.reverse_source:
            x = reverse_valid(x, batch["src_lengths"])  # "reversing the order of the words of the source" (§3.3)
        _, v = self.encoder(x, batch["src_lengths"])
        return batch_first_state(v)

    def init_state(self, memory: Memory, batch_size: int) -> dict[str, Tensor]:
        return dict(memory)

    def advance(self, memory: Memory, state: dict[str, Tensor], tokens: Tensor) -> tuple[Features, dict[str, Tensor], None]:
        h_t, state = step_layers(self.decoder, self.drop(self.tgt_embed(tokens)), state)
        return (h_t,), state, None

    def readout(self, h: Tensor) -> Tensor:
        return self.out(self.drop(h))

    def decode_parallel(self, memory: Memory, tgt_in: Tensor) -> tuple[Features, None]:
        h, _ = self.decoder(self.drop(self.tgt_embed(tgt_in)), None, stack_state(memory))
        return (h,), None


class ContextSeq2SeqSpec(RecurrentSpec):
    name: Literal["seq2seq_context"] = "seq2seq_context"
    cell: Cell = "gru"
    num_layers: int = Field(1, ge=1)
    maxout_size: int = Field(256, ge=1, description="maxout units in the output layer")


@MODELS.register("seq2seq_context", ContextSeq2SeqSpec)
class Cho(EncoderDecoder):
    """Cho et al. 2014, eqs. in §2.2: h⟨t⟩ = f(h⟨t−1⟩, y_{t−1}, c); P(y_t | y_{t−1}, …, y_1, c) = g(h⟨t⟩, y_{t−1}, c)."""

    def __init__(self, spec: ContextSeq2SeqSpec, info: TaskInfo) -> None:
        super().__init__(spec.teacher_forcing)
        assert info.vocab_size is not None
        E, H, L, M = spec.embed_size, spec.hidden_size, spec.num_layers, spec.maxout_size
        self.layers, self.hidden_size, self.lstm = L, H, spec.cell == "lstm"
        self.src_embed = nn.Embedding(info.vocab_size, E, padding_idx=info.pad_id)
        self.tgt_embed = nn.Embedding(info.output_dim, E, padding_idx=info.pad_id)
        self.encoder = RecurrentStack(spec.cell, E, H, L, dropout=spec.dropout, init=spec.init)
        self.V = nn.Linear(H, H)  # c = tanh(V h⟨N⟩)
        self.V_prime = nn.Linear(H, L * H)  # h'⟨0⟩ = tanh(V' c), one block per decoder layer
        self.decoder = RecurrentStack(spec.cell, E + H, H, L, dropout=spec.dropout, init=spec.init)
        self.O_h = nn.Linear(H, 2 * M)
        self.O_y = nn.Linear(E, 2 * M, bias=False)
        self.O_c = nn.Linear(H, 2 * M, bias=False)
        self.G = nn.Linear(M, info.output_dim)
        self.drop = nn.Dropout(spec.dropout)

    def encode(self, batch: Batch) -> Memory:
        _, final = self.encoder(self.drop(self.src_embed(batch["src"])), batch["src_lengths"])
        return {"c": torch.tanh(self.V(top_layer(final, 1)))}

    def init_state(self, memory: Memory, batch_size: int) -> dict[str, Tensor]:
        c = memory["c"]
        h0 = torch.tanh(self.V_prime(c)).view(c.shape[0], self.layers, self.hidden_size)
        return {"h": h0, "c": torch.zeros_like(h0)} if self.lstm else {"h": h0}

    def advance(self, memory: Memory, state: dict[str, Tensor], tokens: Tensor) -> tuple[Features, dict[str, Tensor], None]:
        c = memory["c"]
        y_prev = self.drop(self.tgt_embed(tokens))
        h_t, state = step_layers(self.decoder, torch.cat([y_prev, c], -1), state)
        return (h_t, y_prev, c), state, None

    def readout(self, h_t: Tensor, y_prev: Tensor, c: Tensor) -> Tensor:
        s = maxout(self.O_h(h_t) + self.O_y(y_prev) + self.O_c(c))
        return self.G(self.drop(s))

    def decode_parallel(self, memory: Memory, tgt_in: Tensor) -> tuple[Features, None]:
        c = memory["c"][:, None, :].expand(-1, tgt_in.shape[1], -1)
        y_prev = self.drop(self.tgt_embed(tgt_in))
        h, _ = self.decoder(torch.cat([y_prev, c], -1), None, stack_state(self.init_state(memory, tgt_in.shape[0])))
        return (h, y_prev, c), None


class BahdanauSpec(RecurrentSpec):
    name: Literal["bahdanau"] = "bahdanau"
    cell: Cell = "gru"
    encoder_layers: int = Field(1, ge=1)
    attention_size: int | None = Field(None, ge=1, description="size of W_a s + U_a h; default hidden_size")
    score: Score = "additive"
    maxout_size: int = Field(256, ge=1)


@MODELS.register("bahdanau", BahdanauSpec)
class Bahdanau(EncoderDecoder):
    """Bahdanau et al. 2014, eqs. 4–6: c_i = Σ_j α_ij h_j with α from s_{i−1}; s_i = f(s_{i−1}, y_{i−1}, c_i);
    p(y_i | …) = g(y_{i−1}, s_i, c_i)."""

    def __init__(self, spec: BahdanauSpec, info: TaskInfo) -> None:
        super().__init__(spec.teacher_forcing)
        assert info.vocab_size is not None
        E, H, M = spec.embed_size, spec.hidden_size, spec.maxout_size
        self.lstm = spec.cell == "lstm"
        self.src_embed = nn.Embedding(info.vocab_size, E, padding_idx=info.pad_id)
        self.tgt_embed = nn.Embedding(info.output_dim, E, padding_idx=info.pad_id)
        self.encoder = RecurrentStack(
            spec.cell, E, H, spec.encoder_layers, bidirectional=True, dropout=spec.dropout, init=spec.init
        )
        self.W_s = nn.Linear(H, H)  # s_0 = tanh(W_s ←h_1)
        self.attention = build_attention(spec.score, H, 2 * H, spec.attention_size or H)
        self.decoder = RecurrentStack(spec.cell, E + 2 * H, H, 1, init=spec.init)
        self.U_o = nn.Linear(H, 2 * M)
        self.V_o = nn.Linear(E, 2 * M, bias=False)
        self.C_o = nn.Linear(2 * H, 2 * M, bias=False)
        self.W_o = nn.Linear(M, info.output_dim)
        self.drop = nn.Dropout(spec.dropout)

    def encode(self, batch: Batch) -> Memory:
        annotations, final = self.encoder(self.drop(self.src_embed(batch["src"])), batch["src_lengths"])
        backward_first = top_layer(final, directions=2, direction=1)  # ←h_1: the backward RNN ends at step 1
        return {
            "annotations": annotations,  # (batch, src, 2H)
            "keys": self.attention.project_keys(annotations),  # U_a h_j, once per sentence
            "mask": source_mask(batch),
            "s0": torch.tanh(self.W_s(backward_first)),
        }

    def init_state(self, memory: Memory, batch_size: int) -> dict[str, Tensor]:
        s0 = memory["s0"][:, None, :]
        return {"h": s0, "c": torch.zeros_like(s0)} if self.lstm else {"h": s0}

    def advance(self, memory: Memory, state: dict[str, Tensor], tokens: Tensor) -> tuple[Features, dict[str, Tensor], Tensor]:
        s_prev = state["h"][:, -1]
        c_i, alpha_i = self.attention(s_prev, memory["keys"], memory["annotations"], memory["mask"])
        y_prev = self.drop(self.tgt_embed(tokens))
        s_i, state = step_layers(self.decoder, torch.cat([y_prev, c_i], -1), state)
        return (s_i, y_prev, c_i), state, alpha_i

    def readout(self, s_i: Tensor, y_prev: Tensor, c_i: Tensor) -> Tensor:
        t_i = maxout(self.U_o(s_i) + self.V_o(y_prev) + self.C_o(c_i))
        return self.W_o(self.drop(t_i))


class LuongSpec(RecurrentSpec):
    name: Literal["luong"] = "luong"
    cell: Cell = "lstm"
    num_layers: int = Field(2, ge=1)
    score: Score = "general"
    local: Local = Field("none", description="local attention: monotonic (local-m) or predictive (local-p)")
    window: int = Field(10, ge=1, description="local attention window half-width D")
    attention_size: int | None = Field(None, ge=1, description="for concat/additive scores; default hidden_size")
    input_feeding: bool = True


@MODELS.register("luong", LuongSpec)
class Luong(EncoderDecoder):
    """Luong et al. 2015, eqs. 5–7: h_t → c_t = Σ_s a_t(s) h̄_s; h̃_t = tanh(W_c [c_t; h_t]); p(y_t) = softmax(W_s h̃_t)."""

    def __init__(self, spec: LuongSpec, info: TaskInfo) -> None:
        super().__init__(spec.teacher_forcing)
        assert info.vocab_size is not None
        E, H, L = spec.embed_size, spec.hidden_size, spec.num_layers
        self.input_feeding = spec.input_feeding
        self.src_embed = nn.Embedding(info.vocab_size, E, padding_idx=info.pad_id)
        self.tgt_embed = nn.Embedding(info.output_dim, E, padding_idx=info.pad_id)
        self.encoder = RecurrentStack(spec.cell, E, H, L, dropout=spec.dropout, init=spec.init)
        self.decoder = RecurrentStack(spec.cell, E + (H if spec.input_feeding else 0), H, L, dropout=spec.dropout, init=spec.init)
        self.attention = build_attention(spec.score, H, H, spec.attention_size or H, spec.local, spec.window)
        self.W_c = nn.Linear(2 * H, H, bias=False)
        self.W_s = nn.Linear(H, info.output_dim)
        self.drop = nn.Dropout(spec.dropout)

    def encode(self, batch: Batch) -> Memory:
        h_bar, final = self.encoder(self.drop(self.src_embed(batch["src"])), batch["src_lengths"])
        initial = batch_first_state(final)
        memory = {
            "annotations": h_bar,  # (batch, src, H)
            "keys": self.attention.project_keys(h_bar),
            "mask": source_mask(batch),
            "h0": initial["h"],
        }
        if "c" in initial:
            memory["c0"] = initial["c"]
        return memory

    def init_state(self, memory: Memory, batch_size: int) -> dict[str, Tensor]:
        h0 = memory["h0"]
        batch_size = h0.shape[0]
        state = {
            "h": h0,
            "feed": h0.new_zeros(batch_size, h0.shape[2]),  # h̃_0 = 0
            "t": torch.zeros(batch_size, dtype=torch.long, device=h0.device),  # target position, for local-m
        }
        if "c0" in memory:
            state["c"] = memory["c0"]
        return state

    def _attend(self, memory: Memory, h_t: Tensor, step: int) -> tuple[Tensor, Tensor]:
        c_t, a_t = self.attention(h_t, memory["keys"], memory["annotations"], memory["mask"], step=step)
        h_tilde = torch.tanh(self.W_c(torch.cat([c_t, h_t], -1)))
        return h_tilde, a_t

    def advance(self, memory: Memory, state: dict[str, Tensor], tokens: Tensor) -> tuple[Features, dict[str, Tensor], Tensor]:
        y_prev = self.drop(self.tgt_embed(tokens))
        x_t = torch.cat([y_prev, state["feed"]], -1) if self.input_feeding else y_prev  # input feeding (§3.3)
        cells = {key: state[key] for key in ("h", "c") if key in state}
        h_t, cells = step_layers(self.decoder, x_t, cells)
        h_tilde, a_t = self._attend(memory, h_t, int(state["t"][0]))
        return (h_tilde,), {**cells, "feed": h_tilde, "t": state["t"] + 1}, a_t

    def readout(self, h_tilde: Tensor) -> Tensor:
        return self.W_s(self.drop(h_tilde))

    def decode_parallel(self, memory: Memory, tgt_in: Tensor) -> tuple[Features, Tensor] | None:
        if self.input_feeding:
            return None
        initial = {key: memory[key + "0"] for key in ("h", "c") if key + "0" in memory}
        h, _ = self.decoder(self.drop(self.tgt_embed(tgt_in)), None, stack_state(initial))
        h_tilde, a_t = self._attend(memory, h, 0)
        return (h_tilde,), a_t
