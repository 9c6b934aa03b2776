"""The end-to-end memory network against a loop-by-loop reference of its equations and finite differences;
weight tying; the generated bAbI task's stories, answers, determinism and memory-size rules; a short run."""

from __future__ import annotations

import pytest
import torch

from seqlab.config import ConfigError, config_from_dict
from seqlab.data.babi import BabiTask
from seqlab.errors import UserError
from seqlab.models import build_model
from seqlab.nn.memory_networks import MemN2N, position_weights
from seqlab.registry import TASKS
from seqlab.training import Trainer


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """torch.allclose with float32 tolerances (torch.testing.assert_close's first call imports DTensor, ~2 s)."""
    assert actual.shape == expected.shape and torch.allclose(actual, expected.to(actual.dtype), rtol=1e-5, atol=1e-6), (actual, expected)


def babi(**task) -> BabiTask:
    config = config_from_dict({"task": {"name": "babi", **task}, "model": {"name": "memn2n"}})
    return TASKS.build(config.task, 0)


def test_position_weights_by_hand() -> None:
    l = position_weights(torch.tensor([4]), max_words=5, d=3)[0]  # (words, d)
    for j in range(1, 5):
        for k in range(1, 4):
            assert float(l[j - 1, k - 1]) == pytest.approx((1 - j / 4) - (k / 3) * (1 - 2 * j / 4))


def reference(net: MemN2N, story: torch.Tensor, question: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's equations one sentence, word and hop at a time, with plain Python sums."""
    def sentence(table: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        J = int((words != 0).sum())
        total = torch.zeros(net.d, dtype=table.dtype)
        for j, word in enumerate(words.tolist(), start=1):
            if word:
                l = torch.tensor([(1 - j / J) - (k / net.d) * (1 - 2 * j / J) for k in range(1, net.d + 1)], dtype=table.dtype)
                total = total + l * table[word]
        return total

    logits, attention = [], []
    for b in range(story.shape[0]):
        u = sentence(net.B.weight, question[b])
        hops = []
        for k in range(1, net.hops + 1):
            (A, T_A), (C, T_C) = net.A(k), net.C(k)
            filled = [i for i in range(story.shape[1]) if bool((story[b, i] != 0).any())]
            m = {i: sentence(A.weight, story[b, i]) + T_A[i] for i in filled}
            c = {i: sentence(C.weight, story[b, i]) + T_C[i] for i in filled}
            scores = torch.stack([u @ m[i] for i in filled])
            p = torch.softmax(scores, 0)
            o = sum(p[n] * c[i] for n, i in enumerate(filled))
            full = torch.zeros(story.shape[1], dtype=p.dtype)
            full[filled] = p
            hops.append(full)
            u = u + o
        logits.append(net.answer_matrix() @ u)
        attention.append(torch.stack(hops))
    return torch.stack(logits), torch.stack(attention)


def test_forward_matches_the_equations_written_out() -> None:
    task = babi(sentences=6, memory_size=8)
    batch = task.train_batch(0, 3)
    torch.manual_seed(0)
    net = MemN2N(len(task.vocab), d=6, hops=3, memory_size=8).double()
    logits, attention = net(batch["story"], batch["question"])
    ref_logits, ref_attention = reference(net, batch["story"], batch["question"])
    assert_close(logits, ref_logits)
    assert_close(attention, ref_attention)
    assert torch.all(attention[:, :, 6:] == 0)  # the two empty slots get no attention
    assert_close(attention.sum(-1), torch.ones(3, 3, dtype=torch.float64))


def test_gradients_match_finite_differences() -> None:
    torch.manual_seed(0)
    task = babi(sentences=4, memory_size=4)
    batch = task.train_batch(0, 2)
    for tying in ("adjacent", "layerwise"):
        net = MemN2N(len(task.vocab), d=4, hops=2, memory_size=4, tying=tying).double()
        params = list(net.parameters())

        def loss(*values: torch.Tensor) -> torch.Tensor:
            state = {name: value for (name, _), value in zip(net.named_parameters(), values)}
            logits, _ = torch.func.functional_call(net, state, (batch["story"], batch["question"]))
            return torch.log_softmax(logits, -1)[torch.arange(2), batch["targets"]].sum()

        assert torch.autograd.gradcheck(loss, tuple(p.detach().requires_grad_() for p in params), fast_mode=True)


def test_adjacent_tying_shares_the_parameters() -> None:
    net = MemN2N(vocab_size=10, d=4, hops=3, memory_size=5, tying="adjacent")
    for k in (1, 2):
        assert net.A(k + 1)[0] is net.C(k)[0] and net.A(k + 1)[1] is net.C(k)[1]  # A^{k+1} = C^k, T_A^{k+1} = T_C^k
    assert net.B is net.A(1)[0]
    assert net.answer_matrix() is net.C(3)[0].weight  # W^T = C^K
    assert len(net.embeddings) == 4 and net.H is None
    assert sum(p.numel() for p in net.parameters()) == 4 * (10 * 4 + 5 * 4)
    layerwise = MemN2N(vocab_size=10, d=4, hops=3, memory_size=5, tying="layerwise")
    assert layerwise.A(1)[0] is layerwise.A(3)[0] and layerwise.C(1)[0] is layerwise.C(2)[0]
    assert layerwise.A(1)[0] is not layerwise.C(1)[0] and layerwise.H is not None


def test_babi_stories_answer_from_their_supporting_facts() -> None:
    task = babi(supporting_facts=2, sentences=8, memory_size=8)
    batch = task.train_batch(0, 200)
    for b in range(200):
        question = task.words(batch["question"][b]).split()
        thing, answer = question[3], task.vocab[int(batch["targets"][b])]
        first, second = (task.words(batch["story"][b, int(slot)]).split() for slot in batch["support"][b])
        # slot order: the later fact first; one says who has (had) the object, the other where that person went
        facts = [first, second]
        about_object = next(f for f in facts if f[-1] == thing)
        move = next(f for f in facts if f is not about_object)
        assert move[0] == about_object[0] and move[-1] == answer and move[1] in ("went", "journeyed")
        assert answer in task.places
    one = babi(supporting_facts=1).train_batch(0, 100)
    for b in range(100):
        person = task.words(one["question"][b]).split()[2]
        fact = task.words(one["story"][b, int(one["support"][b, 0])]).split()
        assert fact[0] == person and task.vocab[int(one["targets"][b])] == fact[-1]
        # the supporting move is the person's latest: no later (smaller) slot moves them
        later = [task.words(s).split() for s in one["story"][b, : int(one["support"][b, 0])]]
        assert all(s[0] != person for s in later)
        assert int(one["support"][b, 1]) == -1


def test_memory_slot_zero_is_the_most_recent_sentence_and_the_flat_story_agrees() -> None:
    task = babi(sentences=5, memory_size=7)
    batch = task.train_batch(0, 4)
    for b in range(4):
        sentences = [task.words(s) for s in batch["story"][b] if bool((s != 0).any())]
        flat = task.words(batch["inputs"][b, : int(batch["lengths"][b])])
        assert flat == " . ".join(reversed(sentences)) + " . " + task.words(batch["question"][b])
        assert torch.all(batch["story"][b, len(sentences) :] == 0)


def test_babi_is_deterministic_by_seed() -> None:
    config = config_from_dict({"task": {"name": "babi"}, "model": {"name": "memn2n"}})
    one, two, other = (TASKS.build(config.task, seed) for seed in (3, 3, 4))
    assert torch.equal(one.train_batch(5, 8)["story"], two.train_batch(5, 8)["story"])
    assert not torch.equal(one.train_batch(5, 8)["story"], one.train_batch(6, 8)["story"])
    assert not torch.equal(one.eval_set("val")["story"], other.eval_set("val")["story"])


def test_a_story_longer_than_the_memory_is_refused_or_truncated() -> None:
    with pytest.raises(ConfigError, match="memory_size is 5.*truncate: true"):
        config_from_dict({"task": {"name": "babi", "sentences": 8, "memory_size": 5}, "model": {"name": "memn2n"}})
    task = babi(sentences=8, min_sentences=8, memory_size=5, truncate=True)
    batch = task.train_batch(0, 50)
    assert batch["story"].shape[1] == 5 and torch.all((batch["story"] != 0).any(-1))
    full = babi(sentences=8, min_sentences=8, memory_size=8).train_batch(0, 50)
    assert_close(batch["story"], full["story"][:, :5])  # the 5 most recent sentences kept
    assert torch.all(batch["lengths"] == (batch["story"] != 0).sum((1, 2)) + 5 + (batch["question"] != 0).sum(1))
    kept = full["support"].clone()
    kept[kept >= 5] = -1
    assert torch.equal(batch["support"], kept)
    model = build_model(config_from_dict({"task": {"name": "babi", "memory_size": 10}, "model": {"name": "memn2n"}}).model,
                        babi(memory_size=10).info)
    too_long = babi(sentences=12, memory_size=12).train_batch(0, 2)
    with pytest.raises(UserError, match="memory holds 10"):
        model(too_long)


def test_memn2n_needs_a_story_task() -> None:
    config = config_from_dict({"task": {"name": "order"}, "model": {"name": "memn2n"}})
    with pytest.raises(ConfigError, match="story task"):
        build_model(config.model, TASKS.build(config.task, 0).info)


def test_a_short_training_run_answers_one_supporting_fact_questions() -> None:
    config = config_from_dict({
        "seed": 0, "task": {"name": "babi", "supporting_facts": 1, "sentences": 4, "memory_size": 4, "eval_size": 200},
        "model": {"name": "memn2n", "embedding_dim": 16, "hops": 1},
        "train": {"steps": 150, "batch_size": 32, "lr": 0.02, "progress": False, "tensorboard": False},
    })
    trainer = Trainer(config)
    before = trainer.evaluate("val")["accuracy"]
    after = trainer.fit().final["val"]["accuracy"]
    assert after >= 0.8 > before + 0.3, (before, after)
