"""Mixture of experts (Shazeer et al. 2017; Fedus et al. 2021): top-k routing, sparse computation, the
load-balancing loss, a dense reference, and the trainer adding the loss to the objective."""

from __future__ import annotations

import pytest
import torch

from seqlab.nn.moe import MoEFeedForward
from seqlab.training.objectives import auxiliary_loss, auxiliary_loss_modules


def _layer(top_k: int, experts: int = 4, capacity: float | None = None, seed: int = 0) -> MoEFeedForward:
    torch.manual_seed(seed)
    return MoEFeedForward(8, 16, experts, top_k=top_k, capacity_factor=capacity).double()


def _dense_reference(layer: MoEFeedForward, x: torch.Tensor) -> torch.Tensor:
    """Every expert on every token, weighted by a gate that is zero outside the token's top-k (independent
    of the layer's gather/scatter)."""
    tokens = x.reshape(-1, x.shape[-1])
    p = torch.softmax(tokens @ layer.W_r.weight.T, dim=-1)
    kept = torch.zeros_like(p).scatter(1, p.topk(layer.top_k, dim=-1).indices, 1.0)
    gate = p * kept
    if layer.top_k > 1:
        gate = gate / gate.sum(-1, keepdim=True)
    outputs = torch.stack([expert(tokens) for expert in layer.experts], dim=1)  # (N, E, d_model)
    return (gate[..., None] * outputs).sum(1).reshape(x.shape)


@pytest.mark.parametrize("top_k", [1, 2])
def test_output_equals_dense_masked_reference(top_k: int) -> None:
    layer = _layer(top_k)
    x = torch.randn(3, 7, 8, dtype=torch.double)
    torch.testing.assert_close(layer(x), _dense_reference(layer, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_each_token_reaches_exactly_top_k_experts(top_k: int) -> None:
    layer = _layer(top_k)
    calls: list[int] = []
    for expert in layer.experts:
        expert.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    x = torch.randn(5, 6, 8, dtype=torch.double)
    _, experts, gates = layer.route(x.reshape(-1, 8))
    assert experts.shape == (30, top_k) and all(len(set(row.tolist())) == top_k for row in experts)
    assert sum(calls) == 0
    layer(x)
    assert sum(calls) == 30 * top_k  # the experts computed N·k rows in all, not N·E
    if top_k > 1:  # Softmax(KeepTopK): the kept gates are renormalised
        torch.testing.assert_close(gates.sum(-1), torch.ones(30, dtype=torch.double))


def test_unrouted_experts_get_no_gradient() -> None:
    layer = _layer(1, experts=6)
    x = torch.randn(1, 3, 8, dtype=torch.double)  # three tokens cannot reach six experts
    _, experts, _ = layer.route(x.reshape(-1, 8))
    used = set(experts.flatten().tolist())
    layer(x).sum().backward()
    for index, expert in enumerate(layer.experts):
        grads = [p.grad for p in expert.parameters()]
        if index in used:
            assert all(g is not None and g.abs().sum() > 0 for g in grads)
        else:
            assert all(g is None for g in grads)
    assert layer.W_r.weight.grad is not None and layer.W_r.weight.grad.abs().sum() > 0  # the gate p_i carries it


def test_balance_loss_equals_the_formula_on_a_hand_case() -> None:
    """4 tokens, 2 experts, top-1: tokens 0–2 go to expert 0, token 3 to expert 1, so f = (3/4, 1/4);
    P = mean router probability; aux = α·E·Σ f_i P_i."""
    layer = MoEFeedForward(2, 4, experts=2, top_k=1, balance_weight=0.5)
    p = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    experts = torch.tensor([[0], [0], [0], [1]])
    P = torch.tensor([(0.9 + 0.8 + 0.6 + 0.3) / 4, (0.1 + 0.2 + 0.4 + 0.7) / 4])
    expected = 0.5 * 2 * (0.75 * P[0] + 0.25 * P[1])
    torch.testing.assert_close(layer.balance_loss(p, experts), expected)
    uniform = layer.balance_loss(torch.full((4, 2), 0.5), torch.tensor([[0], [1], [0], [1]]))
    torch.testing.assert_close(uniform, torch.tensor(0.5))  # = α at a perfectly balanced load


def test_capacity_drops_the_overflow_first_come_first_served() -> None:
    layer = _layer(1, experts=2, capacity=0.5)  # ⌈0.5 · 10 / 2⌉ = 3 tokens per expert at most
    x = torch.randn(1, 10, 8, dtype=torch.double)
    _, experts, gates = layer.route(x[0])
    y = layer(x)[0]
    for e in range(2):
        mine = (experts[:, 0] == e).nonzero().flatten()
        kept, dropped = mine[:3], mine[3:]
        torch.testing.assert_close(y[kept], gates[kept] * layer.experts[e](x[0, kept]))
        assert (y[dropped] == 0).all()


def test_auxiliary_loss_collects_every_module_aux_loss() -> None:
    model = torch.nn.Sequential(_layer(1), torch.nn.ReLU(), _layer(2, seed=1))
    assert auxiliary_loss(auxiliary_loss_modules(torch.nn.Linear(2, 2))) is None
    model(torch.randn(4, 8, dtype=torch.double))
    torch.testing.assert_close(auxiliary_loss(auxiliary_loss_modules(model)), (model[0].aux_loss + model[2].aux_loss).float())


def _lm_config(balance_weight: float) -> dict:
    return {
        "seed": 0,
        "task": {"name": "delayed_recall", "distance": 3, "episodes": 1, "eval_size": 16},
        "model": {"name": "transformer_lm", "d_model": 16, "num_heads": 2, "d_ff": 16, "num_layers": 1,
                  "dropout": 0.0, "ffn": "moe", "experts": 4, "top_k": 1, "balance_weight": balance_weight},
        "train": {"steps": 1, "batch_size": 8, "lr": 0.01, "progress": False, "tensorboard": False},
    }


def test_trainer_adds_the_balance_loss_to_the_objective() -> None:
    """One update with α = 0 and with α = 10 from the same start: only the loss term α·E·Σ f_i P_i differs,
    so the routers' updates differ, and a plain dense model is trained as before."""
    from seqlab.config import config_from_dict
    from seqlab.training import Trainer

    routers = []
    for alpha in (0.0, 10.0):
        trainer = Trainer(config_from_dict(_lm_config(alpha)))
        trainer.fit()
        routers.append(trainer.model.layers.layers[0].ffn.W_r.weight.detach().clone())
    assert not torch.allclose(routers[0], routers[1])


def test_moe_lm_config_errors() -> None:
    from seqlab.config import ConfigError, config_from_dict

    bad = _lm_config(0.01)
    bad["model"].update(top_k=5)
    with pytest.raises(ConfigError, match="top_k"):
        config_from_dict(bad)
    bad["model"].update(top_k=1, ffn="moee")
    with pytest.raises(ConfigError, match="Did you mean 'moe'"):
        config_from_dict(bad)
