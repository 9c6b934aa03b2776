"""Static word vectors (seed 004, "Word Representations Before Transformers"): one vector per word type.

- `SkipGram`: Mikolov et al. 2013b, eq. 4: each (input w_I, output w_O) pair of a window maximises
  log σ(v'_{w_O}ᵀ v_{w_I}) + Σ_{i=1}^k E_{w_i∼P_n(w)} [log σ(−v'_{w_i}ᵀ v_{w_I})], P_n ∝ U(w)^{3/4};
- `CBOW`: Mikolov et al. 2013a §3.1: the average of the context words' input vectors predicts the centre
  word, with the same negative-sampling objective;
- `GloVe`: Pennington et al. 2014, eq. 8: J = Σ_ij f(X_ij)(w_iᵀ w̃_j + b_i + b̃_j − log X_ij)², with
  f(x) = (x / x_max)^α below x_max and 1 above (eq. 9); the word vectors are W + W̃ (§4.2);
- `FastText`: Bojanowski et al. 2017 §3.2: s(w, c) = Σ_{g∈G_w} z_gᵀ v_c, G_w the word itself and the
  character n-grams (n = 3..6) of "<w>", hashed with FNV-1a into K buckets, so an unseen word still
  gets the vector Σ_g z_g of its n-grams.

Every model's forward returns the per-example loss (batch,), the trainer's task kind "loss"; `vectors()`
gives the (vocabulary, dim) matrix that is saved and searched, `vector_of(word)` one word's vector.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.data.base import Batch

FNV_OFFSET, FNV_PRIME = 2166136261, 16777619


def fnv1a(text: str) -> int:
    """32-bit FNV-1a of the UTF-8 bytes (Fowler, Noll & Vo), the hash Bojanowski et al. use for n-grams."""
    h = FNV_OFFSET
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * FNV_PRIME) & 0xFFFFFFFF
    return h


def char_ngrams(word: str, min_n: int = 3, max_n: int = 6) -> list[str]:
    """The character n-grams of "<word>" with min_n ≤ n ≤ max_n (the whole "<word>" among them if short enough)."""
    marked = f"<{word}>"
    return [marked[i : i + n] for n in range(min_n, max_n + 1) for i in range(len(marked) - n + 1)]


def negative_sampling_loss(scores: Tensor) -> Tensor:
    """−log σ(v'_{w_O}ᵀ v_{w_I}) − Σ_{i=1}^k log σ(−v'_{w_i}ᵀ v_{w_I}) (Mikolov et al. 2013b, eq. 4, negated).

    scores (..., 1 + k): the output word's score v'_{w_O}ᵀ v_{w_I} first, then the k noise words' → loss (...)."""
    return -F.logsigmoid(scores[..., 0]) - F.logsigmoid(-scores[..., 1:]).sum(-1)


def output_scores(v_prime: nn.Embedding, v_I: Tensor, outputs: Tensor) -> Tensor:
    """v'_oᵀ v_I for every output word o: v_I (B, D), outputs (B, ...) ids → scores (B, ...), one bmm per batch."""
    U = v_prime(outputs.flatten(1))  # (B, n, D)
    return torch.bmm(U, v_I[:, :, None]).reshape(outputs.shape)


def glove_weight(X: Tensor, x_max: float, alpha: float) -> Tensor:
    """f(x) = (x / x_max)^α if x < x_max else 1 (Pennington et al. 2014, eq. 9)."""
    return (X / x_max).pow(alpha).clamp(max=1.0)


def glove_loss(w_i: Tensor, w_tilde_j: Tensor, b_i: Tensor, b_tilde_j: Tensor, X_ij: Tensor, x_max: float,
               alpha: float) -> Tensor:
    """f(X_ij) (w_iᵀ w̃_j + b_i + b̃_j − log X_ij)² per entry (Pennington et al. 2014, eq. 8)."""
    residual = (w_i * w_tilde_j).sum(-1) + b_i + b_tilde_j - X_ij.log()
    return glove_weight(X_ij, x_max, alpha) * residual.square()


class WordVectors(nn.Module):
    """What every static word-vector model offers: its vocabulary, the vector matrix, one word's vector."""

    def __init__(self, words: list[str]) -> None:
        super().__init__()
        self.words = list(words)
        self.index = {word: i for i, word in enumerate(self.words)}

    def vectors(self) -> Tensor:
        """(vocabulary, dim): the vectors a user gets."""
        raise NotImplementedError

    def vector_of(self, word: str) -> Tensor | None:
        """The vector of `word`, or None when it has none (out of the vocabulary)."""
        i = self.index.get(word)
        return None if i is None else self.vectors()[i]


def _uniform(embedding: nn.Embedding, dim: int) -> None:
    """word2vec's and GloVe's initialisation: uniform in ±0.5 / dim."""
    nn.init.uniform_(embedding.weight, -0.5 / dim, 0.5 / dim)


class SkipGramObjective(WordVectors):
    """The skip-gram negative-sampling objective over a window, for any input-vector function v_{w_I}."""

    def __init__(self, words: list[str], dim: int) -> None:
        super().__init__(words)
        self.v_prime = nn.Embedding(len(words), dim)
        nn.init.zeros_(self.v_prime.weight)

    def input_vectors(self, w_I: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, batch: Batch) -> Tensor:
        """centre (B,), context (B, C), context_mask (B, C), negatives (B, C, k) → Σ over the window (B,)."""
        outputs = torch.cat([batch["context"][..., None], batch["negatives"]], dim=-1)  # (B, C, 1 + k)
        loss = negative_sampling_loss(output_scores(self.v_prime, self.input_vectors(batch["center"]), outputs))
        return (loss * batch["context_mask"]).sum(1)


class SkipGram(SkipGramObjective):
    """Skip-gram with negative sampling: input vectors v, output vectors v' (Mikolov et al. 2013b)."""

    def __init__(self, words: list[str], dim: int) -> None:
        super().__init__(words, dim)
        self.v = nn.Embedding(len(words), dim)
        _uniform(self.v, dim)

    def input_vectors(self, w_I: Tensor) -> Tensor:
        return self.v(w_I)

    def vectors(self) -> Tensor:
        return self.v.weight


class CBOW(WordVectors):
    """Continuous bag of words: h = mean of the context's input vectors predicts the centre (Mikolov et al. 2013a)."""

    def __init__(self, words: list[str], dim: int) -> None:
        super().__init__(words)
        self.v = nn.Embedding(len(words), dim)
        self.v_prime = nn.Embedding(len(words), dim)
        _uniform(self.v, dim)
        nn.init.zeros_(self.v_prime.weight)

    def forward(self, batch: Batch) -> Tensor:
        """The first k negatives of each centre serve it; a centre with an empty window adds nothing."""
        mask = batch["context_mask"].to(self.v.weight.dtype)  # (B, C)
        n = mask.sum(1, keepdim=True)
        h = (self.v(batch["context"]) * mask[..., None]).sum(1) / n.clamp(min=1.0)  # (B, D)
        outputs = torch.cat([batch["center"][:, None], batch["negatives"][:, 0]], dim=-1)  # (B, 1 + k)
        loss = negative_sampling_loss(output_scores(self.v_prime, h, outputs))
        return loss * (n[:, 0] > 0)

    def vectors(self) -> Tensor:
        return self.v.weight


class GloVe(WordVectors):
    """Weighted least squares on log co-occurrence counts; batches of entries i (B,), j (B,), x = X_ij (B,)."""

    def __init__(self, words: list[str], dim: int, x_max: float, alpha: float, sum_vectors: bool = True) -> None:
        super().__init__(words)
        V = len(words)
        self.W, self.W_tilde = nn.Embedding(V, dim), nn.Embedding(V, dim)
        self.b, self.b_tilde = nn.Embedding(V, 1), nn.Embedding(V, 1)
        for table in (self.W, self.W_tilde, self.b, self.b_tilde):
            _uniform(table, dim)
        self.x_max, self.alpha, self.sum_vectors = x_max, alpha, sum_vectors

    def forward(self, batch: Batch) -> Tensor:
        i, j = batch["i"], batch["j"]
        return glove_loss(self.W(i), self.W_tilde(j), self.b(i)[:, 0], self.b_tilde(j)[:, 0], batch["x"],
                          self.x_max, self.alpha)

    def vectors(self) -> Tensor:
        """W + W̃ (§4.2), or W alone (GloVe's own code offers both)."""
        return self.W.weight + self.W_tilde.weight if self.sum_vectors else self.W.weight


class FastText(SkipGramObjective):
    """Skip-gram whose input vector is Σ_{g∈G_w} z_g over the word and its hashed n-grams (Bojanowski et al. 2017).

    Rows of z: the V words first, then the K n-gram buckets, then one zero row that pads the n-gram lists."""

    def __init__(self, words: list[str], dim: int, buckets: int, min_n: int, max_n: int) -> None:
        super().__init__(words, dim)
        V = len(words)
        self.buckets, self.min_n, self.max_n = buckets, min_n, max_n
        self.pad = V + buckets
        self.z = nn.Embedding(V + buckets + 1, dim, padding_idx=self.pad)
        _uniform(self.z, dim)
        with torch.no_grad():
            self.z.weight[self.pad].zero_()
        grams = [[i, *self.ngram_ids(word)] for i, word in enumerate(words)]
        width = max(len(g) for g in grams)
        table = torch.full((V, width), self.pad, dtype=torch.long)
        for i, ids in enumerate(grams):
            table[i, : len(ids)] = torch.tensor(ids)
        self.register_buffer("G", table, persistent=False)  # G_w: (V, most n-grams + 1)

    def ngram_ids(self, word: str) -> list[int]:
        """Rows of z for the n-grams of `word`: V + FNV-1a(g) mod K."""
        return [len(self.words) + fnv1a(g) % self.buckets for g in char_ngrams(word, self.min_n, self.max_n)]

    def input_vectors(self, w_I: Tensor) -> Tensor:
        return self.z(self.G[w_I]).sum(-2)

    def vectors(self) -> Tensor:
        return self.input_vectors(torch.arange(len(self.words), device=self.G.device))

    def vector_of(self, word: str) -> Tensor | None:
        """In the vocabulary: Σ_{g∈G_w} z_g; unseen: the sum over its n-grams alone (None if it has none)."""
        if word in self.index:
            return super().vector_of(word)
        ids = self.ngram_ids(word)
        if not ids:
            return None
        return self.z(torch.tensor(ids, device=self.G.device)).sum(0)
