"""End-to-end memory network (Sukhbaatar, Szlam, Weston & Fergus 2015, "End-To-End Memory Networks").

One hop k reads a memory of sentences x_i = (x_i1, …, x_iJ) for the controller state u^k:

    m_i = Σ_j l_j ⊙ A^k x_ij + T_A^k(i)      input memory (position encoding §4.1, temporal encoding §4.1)
    c_i = Σ_j l_j ⊙ C^k x_ij + T_C^k(i)      output memory
    p_i = softmax(u^kᵀ m_i)                  (eq. 1)
    o^k = Σ_i p_i c_i                        (eq. 2)
    u^{k+1} = u^k + o^k                      (§2.2; layer-wise tying: u^{k+1} = H u^k + o^k)
    â = softmax(W (o^K + u^K))               (eq. 3, the last hop)

with u^1 = Σ_j l_j ⊙ B q_j the embedded question and position weights
l_kj = (1 − j/J) − (k/d)(1 − 2j/J), j = 1..J words of the sentence, k = 1..d embedding dimensions.

Weight tying (§2.2): ``adjacent`` — A^{k+1} = C^k, W^T = C^K, B = A^1 (and T_A^{k+1} = T_C^k), so K hops
hold K + 1 embedding matrices; ``layerwise`` — A^1 = … = A^K, C^1 = … = C^K, B and W their own, and H.
Memory slot i is the i-th most recent sentence; empty slots (all padding) get no attention.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

Tying = Literal["adjacent", "layerwise"]


def position_weights(lengths: Tensor, max_words: int, d: int) -> Tensor:
    """l_kj = (1 − j/J) − (k/d)(1 − 2j/J) for sentences of J = `lengths` words: (*lengths.shape, max_words, d)."""
    j = torch.arange(1, max_words + 1, dtype=torch.float32, device=lengths.device)[:, None]  # (words, 1)
    k = torch.arange(1, d + 1, dtype=torch.float32, device=lengths.device)  # (d,)
    J = lengths.clamp(min=1).to(torch.float32)[..., None, None]
    return (1 - j / J) - (k / d) * (1 - 2 * j / J)


class MemN2N(nn.Module):
    """K hops of attention over a memory of sentences; forward(story, question) → (answer logits, p per hop)."""

    def __init__(self, vocab_size: int, d: int, hops: int, memory_size: int, tying: Tying = "adjacent",
                 position_encoding: bool = True, temporal_encoding: bool = True, pad_id: int = 0,
                 init_std: float = 0.1) -> None:
        super().__init__()
        self.d, self.hops, self.memory_size, self.tying = d, hops, memory_size, tying
        self.position_encoding, self.temporal_encoding, self.pad_id = position_encoding, temporal_encoding, pad_id
        tables = hops + 1 if tying == "adjacent" else 3  # adjacent: E^0..E^K; layer-wise: B, A, C
        self.embeddings = nn.ModuleList(nn.Embedding(vocab_size, d, padding_idx=pad_id) for _ in range(tables))
        self.temporal = nn.ParameterList(nn.Parameter(torch.empty(memory_size, d)) for _ in range(tables))
        self.H = nn.Linear(d, d, bias=False) if tying == "layerwise" else None
        self.W = nn.Linear(d, vocab_size, bias=False) if tying == "layerwise" else None
        for parameter in self.parameters():
            nn.init.normal_(parameter, std=init_std)
        with torch.no_grad():
            for table in self.embeddings:
                table.weight[pad_id].zero_()

    def _index(self, role: Literal["A", "C"], k: int) -> int:
        """Which embedding table (and temporal matrix) is A^k or C^k, k = 1..K."""
        if self.tying == "adjacent":
            return k - 1 if role == "A" else k
        return 1 if role == "A" else 2

    def A(self, k: int) -> tuple[nn.Embedding, Tensor]:
        i = self._index("A", k)
        return self.embeddings[i], self.temporal[i]

    def C(self, k: int) -> tuple[nn.Embedding, Tensor]:
        i = self._index("C", k)
        return self.embeddings[i], self.temporal[i]

    @property
    def B(self) -> nn.Embedding:
        return self.embeddings[0]

    def answer_matrix(self) -> Tensor:
        """W (vocab, d): C^K's embedding under adjacent tying."""
        return self.embeddings[self.hops].weight if self.W is None else self.W.weight

    def embed(self, table: nn.Embedding, words: Tensor) -> Tensor:
        """Σ_j l_j ⊙ E w_j over the last axis of word ids: (..., J) → (..., d); a bag of words without PE."""
        e = table(words) * (words != self.pad_id).unsqueeze(-1)  # (..., J, d), padding contributes nothing
        if self.position_encoding:
            e = e * position_weights((words != self.pad_id).sum(-1), words.shape[-1], self.d)
        return e.sum(-2)

    def forward(self, story: Tensor, question: Tensor) -> tuple[Tensor, Tensor]:
        """story (batch, memory, J) and question (batch, J_q) word ids → logits (batch, vocab), p (batch, K, memory)."""
        x, q = story, question
        slots = x.shape[1]
        filled = (x != self.pad_id).any(-1)  # (batch, memory)
        u = self.embed(self.B, q)  # u^1 (batch, d)
        attention = []
        for k in range(1, self.hops + 1):
            A, T_A = self.A(k)
            C, T_C = self.C(k)
            m = self.embed(A, x)  # (batch, memory, d)
            c = self.embed(C, x)
            if self.temporal_encoding:
                m, c = m + T_A[:slots], c + T_C[:slots]
            p = torch.softmax(torch.einsum("bid,bd->bi", m, u).masked_fill(~filled, float("-inf")), dim=-1)
            o = torch.einsum("bi,bid->bd", p, c)
            u = (u if self.H is None else self.H(u)) + o  # u^{k+1}
            attention.append(p)
        logits = u @ self.answer_matrix().T  # W (o^K + u^K)
        return logits, torch.stack(attention, dim=1)
