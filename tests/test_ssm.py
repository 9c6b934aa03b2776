"""State-space layers and models: ZOH against matrix exponentials (and scipy), FFT convolution against the direct
sum, convolutional == recurrent, chunked scan == sequential, gradients, step-by-step decoding, config errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from seqlab.config import ConfigError, config_from_dict
from seqlab.data.base import TaskInfo
from seqlab.models import build_model
from seqlab.models.ssm import SSMLMSpec, SSMSpec
from seqlab.nn.ssm import S4D, SelectiveSSM, causal_fft_conv, selective_scan_chunked, selective_scan_sequential, zoh
from seqlab.training import Trainer

LM_INFO = TaskInfo(kind="tokens", output_dim=12, vocab_size=12)


def van_loan(delta: float, A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """exp([[ΔA, ΔB], [0, 0]]) = [[Ā, B̄], [0, I]]: ZOH of the full matrix diag(A), column B (Van Loan 1978)."""
    N = A.shape[0]
    M = torch.zeros(N + 1, N + 1, dtype=A.dtype)
    M[:N, :N] = torch.diag(A) * delta
    M[:N, N] = B * delta
    E = torch.linalg.matrix_exp(M)
    return E[:N, :N], E[:N, N]


@pytest.mark.parametrize("complex_A", [True, False])
def test_zoh_equals_the_matrix_exponential(complex_A: bool) -> None:
    g = torch.Generator().manual_seed(0)
    N, delta = 6, 0.37
    A = -torch.rand(N, generator=g, dtype=torch.float64) - 0.1
    B = torch.randn(N, generator=g, dtype=torch.float64)
    if complex_A:
        A = torch.complex(A, torch.randn(N, generator=g, dtype=torch.float64) * 3)
        B = torch.complex(B, torch.randn(N, generator=g, dtype=torch.float64))
    A_bar, B_bar = zoh(torch.tensor(delta, dtype=torch.float64), A, B)
    A_ref, B_ref = van_loan(delta, A, B)
    torch.testing.assert_close(torch.diag(A_bar), A_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(B_bar, B_ref, rtol=1e-12, atol=1e-12)


def test_zoh_equals_scipy_cont2discrete() -> None:
    signal = pytest.importorskip("scipy.signal")
    A, B, delta = torch.tensor([-0.5, -2.0, -7.0], dtype=torch.float64), torch.tensor([1.0, -0.3, 2.0], dtype=torch.float64), 0.05
    A_d, B_d, *_ = signal.cont2discrete((torch.diag(A).numpy(), B[:, None].numpy(), torch.ones(1, 3).numpy(),
                                         torch.zeros(1, 1).numpy()), delta, method="zoh")
    A_bar, B_bar = zoh(torch.tensor(delta, dtype=torch.float64), A, B)
    torch.testing.assert_close(torch.diag(A_bar), torch.from_numpy(A_d), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(B_bar, torch.from_numpy(B_d[:, 0]), rtol=1e-12, atol=1e-12)


def test_kernel_is_c_abar_power_bbar_and_fft_is_the_direct_convolution() -> None:
    torch.manual_seed(0)
    layer = S4D(3, 4).double()
    L = 9
    A_bar, B_bar, C = layer.discretize()
    powers = torch.stack([2 * (C * A_bar**ell * B_bar).sum(-1).real for ell in range(L)], dim=1)
    torch.testing.assert_close(layer.kernel(L), powers, rtol=1e-10, atol=1e-12)
    x = torch.randn(2, L, 3, dtype=torch.float64)
    K = layer.kernel(L)
    direct = torch.stack([sum(K[:, t - s] * x[:, s] for s in range(t + 1)) for t in range(L)], dim=1)
    torch.testing.assert_close(causal_fft_conv(x, K), direct, rtol=1e-10, atol=1e-12)


def test_convolutional_and_recurrent_forms_agree_with_gradients() -> None:
    torch.manual_seed(0)
    layer = S4D(4, 5, dt_min=0.01, dt_max=0.5).double()
    x = torch.randn(2, 30, 4, dtype=torch.float64, requires_grad=True)
    conv = layer(x)
    recurrent, _ = layer.forward_recurrent(x)
    torch.testing.assert_close(conv, recurrent, rtol=1e-9, atol=1e-10)
    weights = torch.randn_like(conv)
    grads_conv = torch.autograd.grad((conv * weights).sum(), [x, *layer.parameters()])
    grads_rec = torch.autograd.grad((recurrent * weights).sum(), [x, *layer.parameters()])
    for a, b in zip(grads_conv, grads_rec):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9)


def test_gradcheck_s4d_and_the_chunked_scan() -> None:
    torch.manual_seed(0)
    layer = S4D(2, 2, dt_min=0.05, dt_max=0.5).double()
    x = torch.randn(1, 5, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
    b, L, d, N = 1, 5, 2, 2
    args = [torch.randn(b, L, d, dtype=torch.float64), torch.rand(b, L, d, dtype=torch.float64) + 0.1,
            -torch.rand(d, N, dtype=torch.float64) - 0.5, torch.randn(b, L, N, dtype=torch.float64),
            torch.randn(b, L, N, dtype=torch.float64), torch.randn(d, dtype=torch.float64)]
    args = [a.requires_grad_() for a in args]
    assert torch.autograd.gradcheck(lambda *a: selective_scan_chunked(*a, chunk=2)[0], args)


@pytest.mark.parametrize("chunk", [None, 1, 4, 7, 64])
def test_chunked_scan_equals_the_sequential_scan(chunk: int | None) -> None:
    g = torch.Generator().manual_seed(1)
    b, L, d, N = 3, 29, 5, 4
    x, B, C = torch.randn(b, L, d, generator=g), torch.randn(b, L, N, generator=g), torch.randn(b, L, N, generator=g)
    delta = torch.rand(b, L, d, generator=g) * 0.5
    A, D, h0 = -torch.rand(d, N, generator=g) * 4, torch.randn(d, generator=g), torch.randn(b, d, N, generator=g)
    y32, _ = selective_scan_chunked(x, delta, A, B, C, D, h0, chunk=chunk)
    torch.testing.assert_close(y32, selective_scan_sequential(x, delta, A, B, C, D, h0)[0], rtol=1e-5, atol=1e-5)
    inputs = [t.double().requires_grad_() for t in (x, delta, A, B, C, D, h0)]
    y_seq, h_seq = selective_scan_sequential(*inputs)
    y_chunk, h_chunk = selective_scan_chunked(*inputs, chunk=chunk)
    torch.testing.assert_close(y_chunk, y_seq, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_chunk, h_seq, rtol=1e-12, atol=1e-12)
    weights = torch.randn_like(y_seq)
    g_seq = torch.autograd.grad((y_seq * weights).sum() + h_seq.sum(), inputs)
    g_chunk = torch.autograd.grad((y_chunk * weights).sum() + h_chunk.sum(), inputs)
    for a, b_ in zip(g_chunk, g_seq):
        torch.testing.assert_close(a, b_, rtol=1e-10, atol=1e-10)


def test_selective_block_steps_equal_its_parallel_forward() -> None:
    torch.manual_seed(0)
    block = SelectiveSSM(8, state_size=4, conv_size=3).double()
    u = torch.randn(2, 11, 8, dtype=torch.float64)
    state, steps = block.init_state(2, u), []
    for t in range(11):
        y_t, state = block.step(u[:, t], state)
        steps.append(y_t)
    torch.testing.assert_close(torch.stack(steps, 1), block(u, "sequential"), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(block(u, "chunked"), block(u, "sequential"), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("selective", [False, True])
def test_ssm_lm_step_by_step_equals_parallel_with_constant_state(selective: bool) -> None:
    torch.manual_seed(0)
    model = build_model(SSMLMSpec(d_model=16, num_layers=2, state_size=4, d_ff=32, selective=selective), LM_INFO).eval()
    tokens = torch.randint(1, 12, (3, 14))
    with torch.no_grad():
        parallel = model({"inputs": tokens})
        memory = model.encode({})
        state = model.init_state(memory, 3)
        sizes, steps = [], []
        for t in range(14):
            logits, state, attention = model.step(memory, state, tokens[:, t])
            assert attention is None
            steps.append(logits)
            sizes.append(sum(x.numel() for layer in state for x in layer.values()))
    torch.testing.assert_close(torch.stack(steps, 1), parallel, rtol=1e-4, atol=1e-5)
    assert len(set(sizes)) == 1


def test_sampling_runs_through_the_decoding_protocol() -> None:
    from seqlab.inference.sampling import sample

    torch.manual_seed(0)
    model = build_model(SSMLMSpec(d_model=16, num_layers=1, state_size=4, selective=True), LM_INFO)
    out = sample(model, num=3, max_len=6, prompt=[1], generator=torch.Generator().manual_seed(0))
    assert len(out) == 3 and all(len(row) <= 6 for row in out)


def test_nan_in_a_parameter_reaches_the_output() -> None:
    model = build_model(SSMLMSpec(d_model=8, num_layers=1, state_size=2), LM_INFO)
    with torch.no_grad():
        model.stack.blocks[0].mixer.ssm.log_delta[0] = math.nan
    assert torch.isnan(model({"inputs": torch.randint(1, 12, (2, 5))})).any()


@pytest.mark.parametrize("bad, key", [({"state_size": 0}, "model.state_size"), ({"dt_min": 0.0}, "model.dt_min"),
                                      ({"dt_min": 0.1, "dt_max": 0.01}, "dt_min (0.1) must be below dt_max (0.01)")])
def test_invalid_ssm_configs_are_refused(bad: dict, key: str) -> None:
    for name in ("ssm_lm", "ssm"):
        with pytest.raises(ConfigError, match=r"(?s)" + key.replace("(", r"\(").replace(")", r"\)")):
            config_from_dict({"task": {"name": "adding", "length": 10}, "model": {"name": name, **bad}})


def test_models_refuse_the_wrong_task_kind() -> None:
    with pytest.raises(ConfigError, match="ssm_lm models token sequences"):
        build_model(SSMLMSpec(), TaskInfo(kind="regress", output_dim=1, input_dim=2))
    with pytest.raises(ConfigError, match="sequence task"):
        build_model(SSMSpec(), TaskInfo(kind="classify", output_dim=2, input_dim=2, sequence=False))


@pytest.mark.parametrize("selective", [False, True])
def test_a_short_training_run_lowers_the_loss(tmp_path: Path, selective: bool) -> None:
    text = tmp_path / "words.txt"
    text.write_text("\n".join(["abcabc", "bcabca", "cabcab", "aabbcc"] * 50) + "\n", encoding="utf-8")
    config = config_from_dict({
        "seed": 0, "task": {"name": "lm", "path": str(text), "format": "lines"},
        "model": {"name": "ssm_lm", "d_model": 16, "num_layers": 1, "state_size": 4, "selective": selective},
        "train": {"steps": 40, "batch_size": 16, "lr": 1e-2, "progress": False, "tensorboard": False},
    })
    result = Trainer(config).fit()
    losses = [record["loss"] for record in result.history]
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


def test_the_ssm_encoder_pools_the_last_valid_position() -> None:
    torch.manual_seed(0)
    model = build_model(SSMSpec(d_model=8, num_layers=1, state_size=2), TaskInfo(kind="classify", output_dim=3, vocab_size=5))
    tokens = torch.randint(1, 5, (2, 6))
    padded = torch.cat([tokens, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    with torch.no_grad():
        full = model({"inputs": tokens})
        with_padding = model({"inputs": padded, "lengths": torch.tensor([6, 6])})
    torch.testing.assert_close(with_padding, full, rtol=1e-5, atol=1e-6)


def test_adding_curriculum_continues_the_short_run_at_the_long_length(tmp_path: Path, monkeypatch) -> None:
    """--full trains at T = ADDING_LONG from the weights saved at T = ADDING_SHORT; quick mode stops after the first."""
    from seqlab.experiments import after_transformer as experiment
    from seqlab.experiments.base import Context

    monkeypatch.setattr(experiment, "ADDING_SHORT", 6)
    monkeypatch.setattr(experiment, "ADDING_LONG", 12)
    monkeypatch.setattr(experiment, "ADDING_MODEL", {**experiment.ADDING_MODEL, "d_model": 8, "d_ff": 8})
    monkeypatch.setattr(experiment, "ADDING_TRAIN", {**experiment.ADDING_TRAIN, "steps": 3})
    seen = []
    real_fit = experiment.fit

    def recording_fit(config, **kwargs):
        seen.append((config.task.length, config.train.init_from, kwargs.get("out_dir")))
        return real_fit(config, **kwargs)

    monkeypatch.setattr(experiment, "fit", recording_fit)
    stages = experiment.adding_curriculum(Context("full", tmp_path))
    assert [length for length, _ in stages] == [6, 12]
    [(_, none, saved_to), (_, continued_from, _)] = seen
    assert none is None and continued_from == str(saved_to) and any(Path(saved_to).rglob("*.safetensors"))
    seen.clear()
    assert [length for length, _ in experiment.adding_curriculum(Context("quick", tmp_path))] == [6]
