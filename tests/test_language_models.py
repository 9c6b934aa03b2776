"""The language-model ladder: bigram counts, Bengio's MLP, WaveNet, the Transformer LMs; causality of
every model, step-by-step generation equal to the full pass, and the shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seqlab.config import load_config
from seqlab.data.base import TaskInfo
from seqlab.models import build_model
from seqlab.models.language import BigramLM, BigramSpec, BowLM, BowLMSpec, MLPLM, MLPLMSpec, WaveNetLMSpec, count_table
from seqlab.models.transformer import TransformerLMSpec
from seqlab.training import Trainer


REPO = Path(__file__).resolve().parents[1]
V = 12
INFO = TaskInfo(kind="tokens", output_dim=V, vocab_size=V)
SPECS = {
    "bigram": lambda: build_model(BigramSpec(), INFO),
    "mlp_lm": lambda: build_model(MLPLMSpec(context=4, embedding_dim=6, hidden_size=16, direct=True), INFO),
    "bow_lm": lambda: build_model(BowLMSpec(embedding_dim=8, hidden_size=8, max_len=16), INFO),
    "wavenet_lm": lambda: build_model(WaveNetLMSpec(channels=8, skip_channels=8, layers=3), INFO),
    "transformer_lm": lambda: build_model(TransformerLMSpec(d_model=16, num_heads=2, d_ff=32, num_layers=2), INFO),
    "linear_transformer_lm": lambda: build_model(TransformerLMSpec(d_model=16, num_heads=2, d_ff=32, num_layers=2, attention="linear"), INFO),
}


@pytest.mark.parametrize("name", sorted(SPECS))
@torch.no_grad()
def test_every_lm_is_causal_and_steps_like_its_full_pass(name: str) -> None:
    torch.manual_seed(0)
    model = SPECS[name]().eval()
    for parameter in model.parameters():
        parameter.normal_(0, 0.5)
    tokens = torch.randint(0, V, (2, 14))
    full = model({"inputs": tokens})
    assert full.shape == (2, 14, V)
    changed = tokens.clone()
    changed[:, 9] = (changed[:, 9] + 1) % V
    assert torch.equal(model({"inputs": changed})[:, :9], full[:, :9])
    state, steps = model.init_state({}, 2), []
    for t in range(14):
        logits, state, _ = model.step({}, state, tokens[:, t])
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-5, atol=1e-5)


def test_mlp_lm_reads_exactly_the_last_n_minus_1_tokens() -> None:
    torch.manual_seed(1)
    model = MLPLM(MLPLMSpec(context=3, embedding_dim=4, hidden_size=8), TaskInfo("tokens", V, vocab_size=V, pad_id=0)).eval()
    tokens = torch.randint(1, V, (1, 10))
    out = model({"inputs": tokens})
    torch.testing.assert_close(out[0, 6], model.predict(tokens[0, 4:7]))
    torch.testing.assert_close(out[0, 0], model.predict(torch.tensor([0, 0, int(tokens[0, 0])])))
    changed = tokens.clone()
    changed[0, 3] = (changed[0, 3] % (V - 1)) + 1
    assert torch.equal(model({"inputs": changed})[0, 6:], out[0, 6:])  # token 3 is out of reach of t ≥ 6


@torch.no_grad()
def test_bag_of_words_is_attention_with_equal_scores() -> None:
    """The prefix mean a_t equals scaled dot-product attention with all-zero queries and keys (causal)."""
    torch.manual_seed(3)
    model = BowLM(BowLMSpec(embedding_dim=6, hidden_size=5, max_len=10), TaskInfo("tokens", V, vocab_size=V)).eval()
    tokens = torch.randint(0, V, (3, 10))
    x = model.C(tokens) + model.P(torch.arange(10))
    zeros = torch.zeros_like(x)
    a = torch.nn.functional.scaled_dot_product_attention(zeros, zeros, x, is_causal=True)
    torch.testing.assert_close(model({"inputs": tokens}), model.head(x, a))
    with pytest.raises(ValueError, match="raise model.max_len"):
        model({"inputs": torch.zeros(1, 11, dtype=torch.long)})


def _bigram_batches(n: int = 20) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(2)
    batches = []
    for _ in range(n):
        seq = torch.multinomial(torch.softmax(torch.arange(V, dtype=torch.float) / 3, 0), 64 * 9, replacement=True, generator=g).view(64, 9)
        batches.append({"inputs": seq[:, :-1], "targets": seq[:, 1:]})
    return batches


def test_count_model_is_the_maximum_likelihood_table() -> None:
    batches = _bigram_batches()
    table = count_table(batches, V, smoothing=0.0)
    inputs, targets = batches[0]["inputs"].flatten(), batches[0]["targets"].flatten()
    a = int(inputs[0])
    all_inputs = torch.cat([b["inputs"].flatten() for b in batches])
    all_targets = torch.cat([b["targets"].flatten() for b in batches])
    count_ab = int(((all_inputs == a) & (all_targets == int(targets[0]))).sum())
    assert table[a, int(targets[0])].exp().item() == pytest.approx(count_ab / int((all_inputs == a).sum()), rel=1e-6)
    model = BigramLM(BigramSpec(), TaskInfo("tokens", V, vocab_size=V))
    model.L.data.copy_(table)
    count_loss = torch.nn.functional.cross_entropy(model(batches[0]).reshape(-1, V), batches[0]["targets"].reshape(-1))
    trained = BigramLM(BigramSpec(), TaskInfo("tokens", V, vocab_size=V))
    optimizer = torch.optim.Adam(trained.parameters(), lr=0.1)
    for step in range(300):
        batch = batches[step % len(batches)]
        loss = torch.nn.functional.cross_entropy(trained(batch).reshape(-1, V), batch["targets"].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        trained_loss = torch.nn.functional.cross_entropy(trained(batches[0]).reshape(-1, V), batches[0]["targets"].reshape(-1))
    assert trained_loss.item() == pytest.approx(count_loss.item(), abs=0.02)


CONFIGS = sorted((REPO / "configs" / "lm").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_lm_configs_validate(path: Path) -> None:
    config = load_config(path)
    assert config.task.name == "lm"


def test_an_lm_trains_on_a_text_file_under_the_trainer(tmp_path: Path) -> None:
    names = tmp_path / "names.txt"
    names.write_text("\n".join(["anna", "emma", "ella", "ava", "mia", "noa", "lena", "nora"] * 20), encoding="utf-8")
    config = load_config(REPO / "configs" / "lm" / "names_transformer.yaml", [
        f"task.path={names}", "train.steps=60", "train.eval_every=0", "train.progress=false",
        "train.tensorboard=false", "train.threads=1", "train.time_budget_s=null",
    ])
    result = Trainer(config).fit()
    assert result.final["val"]["loss"] < 1.6  # uniform over the 12 symbols would be ln 12 ≈ 2.5
