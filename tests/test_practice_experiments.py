"""Seed 004's hands-on experiments (rnn_training, embeddings, generation): the senses corpus, the
measurement helpers, and one experiment end to end."""

from __future__ import annotations

import torch

from seqlab.data.senses import AFTER, BEFORE, MODIFIERS, SENSES, STATES, WORD, SensesSpec, SensesTask
from seqlab.experiments import EXPERIMENTS, Context
from seqlab.experiments.base import StopAt, fit, quiet_config
from seqlab.experiments.embeddings import centroid_accuracy, sense_similarity
from seqlab.experiments.generation import decoding_models, generate_stepwise, generate_uncached
from seqlab.experiments.rnn_training import memory_task


def cue_words(sense: str) -> set[str]:
    return {word for table in (BEFORE, AFTER, MODIFIERS, STATES) for word in table[sense]}


def test_senses_corpus_is_deterministic_and_only_the_context_tells_the_sense() -> None:
    task = SensesTask(SensesSpec(), seed=3)
    first, second = task.train_batch(7, 64), task.train_batch(7, 64)
    assert all(torch.equal(first[key], second[key]) for key in first)
    probe = task.probe(200, seed=1)
    words = [task.vocab.decode(row) for row in probe["inputs"]]
    for sentence, position, sense in zip(words, probe["position"], probe["sense"]):
        assert sentence.count(WORD) == 1 and sentence[int(position)] == WORD
        other = SENSES[1 - int(sense)]
        assert not cue_words(other) & set(sentence), sentence  # no cue of the other sense
        assert cue_words(SENSES[int(sense)]) & set(sentence), sentence  # at least one cue of its own
    assert set(probe["cue"].tolist()) == {0, 1, 2}
    batch = task.train_batch(0, 64)
    assert batch["targets"].shape == (64,) and set(batch["targets"].tolist()) <= {0, 1}


def test_similarity_helpers_on_known_vectors() -> None:
    senses = torch.tensor([0] * 10 + [1] * 10)
    same = torch.ones(20, 4)
    within, across = sense_similarity(same, senses)
    assert abs(within - 1) < 1e-9 and abs(across - 1) < 1e-9
    generator = torch.Generator().manual_seed(0)
    clusters = torch.where(senses[:, None] == 0, torch.tensor([5.0, 0, 0, 0]), torch.tensor([0, 5.0, 0, 0]))
    noisy = clusters + 0.3 * torch.randn(20, 4, generator=generator)
    within, across = sense_similarity(noisy, senses)
    assert within > 0.9 and across < 0.2
    assert centroid_accuracy(noisy, senses) == 1.0
    swapped = senses.clone()
    swapped[0], swapped[10] = 1, 0  # two vectors labelled with the wrong sense: leave-one-out gets exactly them wrong
    assert abs(centroid_accuracy(noisy, swapped) - 18 / 20) < 1e-9


def test_uncached_generation_equals_the_key_value_cache() -> None:
    torch.manual_seed(0)
    rnn, transformer = decoding_models()
    batch = {"src": torch.randint(4, 1000, (2, 7)), "src_lengths": torch.tensor([7, 5])}
    cached = generate_stepwise(transformer, batch, 12)
    assert torch.equal(cached, generate_uncached(transformer, batch, 12))
    assert generate_stepwise(rnn, batch, 5).shape == (2, 5)


def test_stop_at_accuracy_ends_training_early() -> None:
    config = quiet_config(memory_task(2), {"name": "rnn", "hidden_size": 16, "cell": "lstm"},
                          {"steps": 400, "batch_size": 64, "lr": 1e-2}, seed=0)
    result = fit(config, callbacks=(StopAt("accuracy", 0.99, every=10),))
    assert result.steps < 400 and result.final["val"]["accuracy"] >= 0.99


def test_contextual_embeddings_experiment_end_to_end(tmp_path) -> None:
    outcome = EXPERIMENTS["contextual-embeddings"].run(Context(mode="quick", out_dir=tmp_path, name="contextual-embeddings"))
    assert outcome.passed, outcome.figures
    assert outcome.figures["static_distinct_vectors"] == 1
    assert outcome.figures["bilstm_untrained_centroid_accuracy"] < outcome.figures["bilstm_centroid_accuracy"]
    assert all(path.exists() and path.stat().st_size > 0 for path in outcome.images)
    assert "BiLSTM" in outcome.setup
