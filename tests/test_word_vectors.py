"""Static word vectors: the losses by hand, the corpus tasks, training through `seqlab train`, the CLI, and gensim."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from seqlab.cli import main
from seqlab.config import config_from_dict
from seqlab.data.text import DataFileError
from seqlab.data.translation_synthetic import ADJECTIVES, CONJUNCTIONS, INTRANSITIVE, NOUNS, TRANSITIVE, sentence_pair
from seqlab.data.word_contexts import CooccurrenceSpec, CooccurrenceTask, WordContextsSpec, WordContextsTask
from seqlab.inference.vectors import VectorSet, load_vectors
from seqlab.nn.word_vectors import (
    CBOW, FastText, SkipGram, char_ngrams, fnv1a, glove_loss, glove_weight, negative_sampling_loss,
)
from seqlab.training import Trainer

from conftest import DATA, write_yaml

POS = {**{w: "A" for w in ADJECTIVES}, **{w: "N" for w in NOUNS}, **{w: "Vt" for w in TRANSITIVE},
       **{w: "Vi" for w in INTRANSITIVE}, **{w: "C" for w in CONJUNCTIONS}}


@pytest.fixture(scope="module")
def pos_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3000 sentences of the synthetic translation task's source language: a word's neighbours should share its part of speech."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "pos.txt"
    path.write_text("\n".join(" ".join(sentence_pair(rng, rng.randint(3, 12))[0]) for _ in range(3000)) + "\n")
    return path


def pos_purity(vectors: dict[str, torch.Tensor], k: int = 5) -> float:
    """Mean fraction of each word's k nearest neighbours (cosine) that share its part of speech."""
    words = [w for w in vectors if w in POS]
    matrix = F.normalize(torch.stack([vectors[w] for w in words]), dim=1)
    cosines = matrix @ matrix.T
    cosines.fill_diagonal_(-2.0)
    top = cosines.topk(k, dim=1).indices
    return sum(POS[words[j]] == POS[w] for i, w in enumerate(words) for j in top[i].tolist()) / (k * len(words))


# -- the losses, by hand -------------------------------------------------------------------------------

def test_negative_sampling_loss_and_gradient_by_hand() -> None:
    v_I = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    v_O = torch.tensor([1.0, 0.0, 0.5], requires_grad=True)
    v_n = torch.tensor([[0.2, 0.3, -0.1], [-1.0, 0.5, 0.0]], requires_grad=True)
    scores = torch.cat([(v_O @ v_I)[None], v_n @ v_I])
    loss = negative_sampling_loss(scores)
    # s_O = 0.5 + 1 = 1.5; s_1 = 0.1 - 0.3 - 0.2 = -0.4; s_2 = -0.5 - 0.5 = -1.0
    sig = lambda x: 1 / (1 + torch.exp(-torch.tensor(x)))  # noqa: E731
    expected = -torch.log(sig(1.5)) - torch.log(sig(0.4)) - torch.log(sig(1.0))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    # ∂/∂v_I = −(1 − σ(s_O)) v'_O + Σ_k σ(s_k) v'_k;  ∂/∂v'_O = −(1 − σ(s_O)) v_I;  ∂/∂v'_k = σ(s_k) v_I
    g_O, g_k = -(1 - sig(1.5)), torch.stack([sig(-0.4), sig(-1.0)])
    with torch.no_grad():
        assert torch.allclose(v_I.grad, g_O * v_O + (g_k[:, None] * v_n).sum(0), atol=1e-6)
        assert torch.allclose(v_O.grad, g_O * v_I, atol=1e-6)
        assert torch.allclose(v_n.grad, g_k[:, None] * v_I, atol=1e-6)


def test_glove_loss_and_gradient_by_hand() -> None:
    w = torch.tensor([[1.0, 2.0], [0.5, -0.5]], requires_grad=True)
    w_t = torch.tensor([[0.5, 0.25], [1.0, 1.0]], requires_grad=True)
    b = torch.tensor([0.1, -0.2], requires_grad=True)
    b_t = torch.tensor([0.3, 0.0], requires_grad=True)
    X = torch.tensor([10.0, 200.0])  # below and above x_max = 100
    J = glove_loss(w, w_t, b, b_t, X, x_max=100.0, alpha=0.75)
    f = torch.tensor([0.1**0.75, 1.0])
    r = torch.tensor([1.0 + 0.1 + 0.3 - torch.log(torch.tensor(10.0)), 0.0 - 0.2 - torch.log(torch.tensor(200.0))])
    assert torch.allclose(J, f * r**2, atol=1e-6)
    assert torch.allclose(glove_weight(torch.tensor([50.0, 100.0, 1e4]), 100.0, 0.5), torch.tensor([0.5**0.5, 1.0, 1.0]))
    J.sum().backward()
    with torch.no_grad():  # ∂J/∂w_i = 2 f r w̃_j, ∂J/∂b_i = 2 f r
        assert torch.allclose(w.grad, 2 * (f * r)[:, None] * w_t, atol=1e-5)
        assert torch.allclose(w_t.grad, 2 * (f * r)[:, None] * w, atol=1e-5)
        assert torch.allclose(b.grad, 2 * f * r, atol=1e-5)


def test_skipgram_and_cbow_forward_equal_their_loops() -> None:
    torch.manual_seed(0)
    words = [f"w{i}" for i in range(12)]
    batch = {"center": torch.tensor([0, 5]), "context": torch.tensor([[1, 2, 3], [4, 6, 7]]),
             "context_mask": torch.tensor([[True, False, True], [True, True, True]]),
             "negatives": torch.randint(0, 12, (2, 3, 4))}
    sg, cbow = SkipGram(words, 6), CBOW(words, 6)
    for model in (sg, cbow):
        torch.nn.init.normal_(model.v_prime.weight)
    loss = sg(batch).detach()
    for b in range(2):
        v_I = sg.v.weight[batch["center"][b]]
        expected = sum(
            negative_sampling_loss(torch.cat([sg.v_prime.weight[[int(batch["context"][b, j])]] @ v_I,
                                              sg.v_prime.weight[batch["negatives"][b, j]] @ v_I]))
            for j in range(3) if batch["context_mask"][b, j])
        assert loss[b].item() == pytest.approx(float(expected.detach()), rel=1e-5)
    h = cbow.v.weight[[1, 3]].mean(0)  # first row: contexts 1 and 3 (2 is masked)
    outputs = torch.cat([batch["center"][:1], batch["negatives"][0, 0]])
    assert cbow(batch)[0].detach().item() == pytest.approx(negative_sampling_loss(cbow.v_prime.weight[outputs] @ h).item(), rel=1e-5)


def test_fasttext_vectors_are_sums_of_ngrams() -> None:
    assert fnv1a("") == 0x811C9DC5 and fnv1a("a") == 0xE40C292C and fnv1a("foobar") == 0xBF9CF968
    assert char_ngrams("where", 3, 3) == ["<wh", "whe", "her", "ere", "re>"]
    assert "<her>" in char_ngrams("her") and "her" in char_ngrams("where")
    model = FastText(["where", "here", "there"], dim=4, buckets=50, min_n=3, max_n=6)
    z = model.z.weight
    rows = [3 + fnv1a(g) % 50 for g in char_ngrams("where")]
    assert torch.allclose(model.vector_of("where"), z[0] + z[rows].sum(0))
    unseen = model.vector_of("nowhere")  # out of the vocabulary: its n-grams only
    assert torch.allclose(unseen, z[[3 + fnv1a(g) % 50 for g in char_ngrams("nowhere")]].sum(0))
    assert torch.allclose(model.vectors()[2], model.vector_of("there"))


# -- the corpus tasks ---------------------------------------------------------------------------------

def test_tiny_or_empty_corpus_is_refused(tmp_path: Path) -> None:
    empty, tiny = tmp_path / "empty.txt", tmp_path / "tiny.txt"
    empty.write_text("\n\n")
    tiny.write_text("to be or not to be\nthat is the question\n")
    with pytest.raises(DataFileError, match="empty"):
        WordContextsTask(WordContextsSpec(path=str(empty)), 0)
    with pytest.raises(DataFileError, match="too small for word vectors.*lower task.min_count"):
        WordContextsTask(WordContextsSpec(path=str(tiny), min_count=1), 0)
    with pytest.raises(DataFileError, match="too small"):
        CooccurrenceTask(CooccurrenceSpec(path=str(tiny), min_count=1), 0)


def test_noise_distribution_subsampling_and_windows(pos_corpus: Path) -> None:
    task = WordContextsTask(WordContextsSpec(path=str(pos_corpus), min_count=1, window=3, negatives=20,
                                             subsample=1e-3), seed=0)
    counts = task.corpus.counts
    batch = task.train_batch(0, 2000)
    drawn = torch.bincount(batch["negatives"].flatten(), minlength=len(counts)).double()
    expected = counts**0.75 / (counts**0.75).sum()
    assert (drawn / drawn.sum() - expected).abs().max() < 0.01  # P_n ∝ U^{3/4}
    f = counts / counts.sum()
    assert torch.allclose(task.keep, (1e-3 / f).sqrt().clamp(max=1))
    assert task.keep.min() < 0.5  # the conjunctions are frequent enough to be subsampled
    ids, line_of = task.corpus.splits["train"]
    centres = torch.searchsorted(task.center_cdf, torch.tensor([0.5, 1000.5]))
    windows = task.windows("train", centres, torch.Generator().manual_seed(0))
    assert torch.equal(windows["center"], ids[centres])
    for row, centre in enumerate(centres.tolist()):  # a kept context word lies in the centre's line, ≤ 3 away
        for j, offset in enumerate(task.offsets.tolist()):
            if windows["context_mask"][row, j]:
                assert line_of[centre + offset] == line_of[centre] and windows["context"][row, j] == ids[centre + offset]
    assert torch.equal(task.train_batch(7, 16)["negatives"], task.train_batch(7, 16)["negatives"])


def test_cooccurrence_counts_by_hand(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_text("a b a c\nd e f\n" * 30 + "a b\nb c\n")  # the last line (b c) is the validation split
    task = CooccurrenceTask(CooccurrenceSpec(path=str(path), min_count=1, window=2, val_fraction=0.02), 0)
    pairs, X = task.entries["train"]
    a, b, c = (task.corpus.index[w] for w in "abc")
    table = {(int(i), int(j)): float(x) for (i, j), x in zip(pairs, X)}
    # per line "a b a c": (a,b) at d=1 twice → 2, (a,a) at d=2 → 1/2 each way, (a,c) d=1 → 1, (b,c) d=2 → 1/2;
    # the line "a b" adds (a,b) once more
    assert table[(a, b)] == pytest.approx(2 * 30 + 1) and table[(b, a)] == pytest.approx(2 * 30 + 1)
    assert table[(a, a)] == pytest.approx(30 * 2 * 0.5) and table[(a, c)] == pytest.approx(30.0)
    assert table[(b, c)] == pytest.approx(30 * 0.5) and (c, c) not in table


# -- training, the command line, gensim ----------------------------------------------------------------

def vector_config(path: Path, model: dict, task: str = "word_contexts", steps: int = 300, **train) -> dict:
    return {"seed": 0, "task": {"name": task, "path": str(path), "min_count": 1, "window": 2},
            "model": model, "train": {"steps": steps, "batch_size": 256, "optimizer": "adam", "lr": 0.01,
                                      "progress": False, "tensorboard": False, "threads": 1, **train}}


def test_cbow_and_glove_learn_parts_of_speech(pos_corpus: Path) -> None:
    """Through the one trainer, to the purity gensim's skip-gram reaches here (skip-gram: the gensim test)."""
    cbow = Trainer(config_from_dict(vector_config(pos_corpus, {"name": "cbow", "dim": 16}, steps=150, lr=0.03))).fit()
    assert cbow.history[-1]["loss"] < 0.7 * cbow.history[0]["loss"]
    # W alone: on this corpus an adjective's context vector w̃ points at the nouns, so W + W̃ mixes the classes
    glove = Trainer(config_from_dict(vector_config(pos_corpus, {"name": "glove", "dim": 12, "x_max": 10.0, "vectors": "word"},
                                                   task="cooccurrence", steps=200, lr=0.05, batch_size=512))).fit()
    assert glove.history[-1]["loss"] < 0.2 * glove.history[0]["loss"]
    for result in (cbow, glove):
        vectors = VectorSet.from_model(result.model)
        assert pos_purity(dict(zip(vectors.words, vectors.vectors))) > 0.85


def test_train_neighbours_export_through_the_cli(tmp_path: Path, pos_corpus: Path, capsys: pytest.CaptureFixture) -> None:
    gensim = pytest.importorskip("gensim")
    config = write_yaml(tmp_path / "ft.yaml", {**vector_config(pos_corpus, {"name": "fasttext", "dim": 16, "buckets": 2000},
                                                               steps=60), "out_dir": str(tmp_path / "run")})
    assert main(["train", str(config)]) == 0
    capsys.readouterr()
    assert main(["neighbours", str(tmp_path / "run"), "king", "--k", "3"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert main(["neighbours", str(tmp_path / "run"), "kingdoms"]) == 0  # unseen: answered from its n-grams
    assert "not in the vocabulary: its vector is the sum of its character n-grams" in capsys.readouterr().out
    out = tmp_path / "vectors.txt"
    assert main(["export-vectors", str(tmp_path / "run"), "--out", str(out)]) == 0
    keyed = gensim.models.KeyedVectors.load_word2vec_format(str(out), binary=False)
    ours = load_vectors(tmp_path / "run")
    assert keyed.index_to_key == ours.words
    assert torch.allclose(torch.from_numpy(keyed["king"].copy()), ours.vector("king"), atol=1e-5)


def test_a_word_without_a_vector_gets_a_clear_message(tmp_path: Path, pos_corpus: Path, capsys: pytest.CaptureFixture) -> None:
    config = write_yaml(tmp_path / "sg.yaml", {**vector_config(pos_corpus, {"name": "skipgram", "dim": 8}, steps=2),
                                               "out_dir": str(tmp_path / "run")})
    assert main(["train", str(config)]) == 0
    capsys.readouterr()
    assert main(["neighbours", str(tmp_path / "run"), "kingdoms"]) == 2
    message = capsys.readouterr().err
    assert "'kingdoms' is not in the vocabulary" in message and "fasttext" in message and len(message.splitlines()) == 1


def test_similar_neighbour_quality_to_gensim(pos_corpus: Path) -> None:
    """seqlab's skip-gram and gensim's Word2Vec (sg=1, negative=5, window 2, dim 16, subsampling 1e-3) on the same
    corpus and budget (5 passes; each its own learning rate): both order the vocabulary by part of speech, seqlab
    within 0.05 of gensim's purity@5."""
    gensim = pytest.importorskip("gensim")
    sentences = [line.split() for line in pos_corpus.read_text().splitlines()]
    reference = gensim.models.Word2Vec(sentences, vector_size=16, window=2, negative=5, sg=1, min_count=1,
                                       sample=1e-3, epochs=5, workers=1, seed=0, alpha=0.05)
    theirs = pos_purity({w: torch.from_numpy(reference.wv[w].copy()) for w in reference.wv.index_to_key})
    trainer = Trainer(config_from_dict(vector_config(pos_corpus, {"name": "skipgram", "dim": 16}, lr=0.03)))
    trainer.train_cfg.steps = int(5 * trainer.task.center_cdf[-1]) // 256  # 5 passes over the subsampled corpus
    result = trainer.fit()
    vectors = VectorSet.from_model(result.model)
    ours = pos_purity(dict(zip(vectors.words, vectors.vectors)))
    assert theirs > 0.9 and ours > theirs - 0.05, (ours, theirs)


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "tinyshakespeare" / "input.txt").is_file(), reason="tinyshakespeare not present")
def test_shakespeare_neighbours_overlap_with_gensim_like_gensim_with_itself() -> None:
    """Top-10 neighbour sets of 50 words of frequency rank 100–150: seqlab vs gensim (same corpus, 5 passes) overlap
    at least half as much as gensim vs gensim with another seed (the agreement two runs of one method reach)."""
    gensim = pytest.importorskip("gensim")
    from seqlab.data.word_contexts import words_of

    path = DATA / "tinyshakespeare" / "input.txt"
    sentences = [w for w in (words_of(line, True) for line in path.read_text().splitlines()) if w]
    models = [gensim.models.Word2Vec(sentences, vector_size=100, window=5, negative=5, sg=1, min_count=5,
                                     sample=1e-3, epochs=5, workers=1, seed=s) for s in (0, 1)]
    config = vector_config(path, {"name": "skipgram", "dim": 100}, steps=5 * 186_000 // 512, batch_size=512,
                           optimizer="sgd", momentum=0.0, lr=10.0, schedule="cosine")  # configs/vectors/skipgram_shakespeare.yaml
    config["task"].update(min_count=5, window=5)
    ours = VectorSet.from_model(Trainer(config_from_dict(config)).fit().model)
    probe = [w for w in ours.words[100:200] if w in models[0].wv][:50]

    def top(w: str, which) -> set[str]:
        if which is ours:
            return {n.word for n in ours.neighbours(ours.vector(w), 10, exclude=(w,))}
        return {n for n, _ in which.wv.most_similar(w, topn=10)}

    overlap = lambda a, b: sum(len(top(w, a) & top(w, b)) for w in probe) / (10 * len(probe))  # noqa: E731
    gensim_self, ours_gensim = overlap(models[0], models[1]), overlap(ours, models[0])
    assert ours_gensim >= 0.5 * gensim_self, (ours_gensim, gensim_self)
