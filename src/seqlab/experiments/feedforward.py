"""The feedforward era (seed 000): single units cannot compute XOR; a 2-layer MLP with backpropagation can."""

from __future__ import annotations

import numpy as np
import torch

from seqlab.config import config_from_dict
from seqlab.data.logic import gate_dataset
from seqlab.experiments.base import Context, Outcome, experiment
from seqlab.nn.neurons import McCullochPittsNeuron, Perceptron, search_single_unit
from seqlab.report.plots import new_figure, save
from seqlab.training import train

WEIGHT_RANGE = range(-3, 4)


def _best_single_unit(x: np.ndarray, y: np.ndarray) -> tuple[McCullochPittsNeuron, float, int]:
    """Search every integer unit in WEIGHT_RANGE; return the most accurate one, its accuracy and the exact count."""
    exact = search_single_unit(y, x, WEIGHT_RANGE)
    best, best_accuracy = None, -1.0
    for w1 in WEIGHT_RANGE:
        for w2 in WEIGHT_RANGE:
            for theta in WEIGHT_RANGE:
                unit = McCullochPittsNeuron((w1, w2), theta)
                accuracy = float(np.mean(unit(x) == y))
                if accuracy > best_accuracy:
                    best, best_accuracy = unit, accuracy
    assert best is not None
    return best, best_accuracy, len(exact)


def _mlp_config(seed: int, steps: int) -> dict:
    return {
        "seed": seed,
        "task": {"name": "logic", "gate": "xor"},
        "model": {"name": "mlp", "hidden_sizes": [4], "activation": "tanh"},
        # a 22-parameter net runs fastest on one thread (more only add synchronisation)
        "train": {"steps": steps, "lr": 0.05, "batch_size": 32, "progress": False, "threads": 1},
    }


@experiment(
    name="xor",
    era="feedforward",
    claim="A simple line can't explain a XOR gate [...] At the time, some people knew that using a "
    "Multi-Layer Perceptron (MLP) could fix the XOR problem [...] We could finally solve the XOR problems.",
    source="seed 000 (McCulloch & Pitts 1943; Rosenblatt 1957; Minsky & Papert 1969; Rumelhart et al. 1986)",
    threshold="best McCulloch–Pitts unit and the trained perceptron ≤ 75% on XOR; a 2-layer MLP trained by "
    "backpropagation reaches 100% on ≥ 95% of seeds",
)
def xor(ctx: Context) -> Outcome:
    x_t, y_t = gate_dataset("xor")
    x, y = x_t.numpy().astype(int), y_t.numpy()
    unit, unit_accuracy, exact_units = _best_single_unit(x, y)

    perceptron = Perceptron(2, lr=1.0, seed=ctx.seed)
    perceptron_curve = perceptron.fit(x, y, epochs=ctx.pick(50, 200))
    perceptron_best = max(perceptron_curve)

    seeds = ctx.pick(20, 50)
    steps = ctx.pick(300, 1000)
    runs = [train(config_from_dict(_mlp_config(ctx.seed + s, steps))) for s in range(seeds)]
    accuracies = [run.final["val"]["accuracy"] for run in runs]
    solved = sum(a == 1.0 for a in accuracies) / seeds

    grid = np.linspace(-0.5, 1.5, 121)
    gx, gy = np.meshgrid(grid, grid)
    points = np.stack([gx.ravel(), gy.ravel()], axis=1)
    mlp = runs[int(np.argmax(accuracies))].model.eval()
    with torch.no_grad():
        mlp_regions = mlp({"inputs": torch.tensor(points, dtype=torch.float32)}).argmax(-1).numpy()
    panels = [
        (f"McCulloch–Pitts w={unit.weights}, θ={unit.theta}: {unit_accuracy:.0%}",
         points @ np.array(unit.weights) - unit.theta >= 0),
        (f"Perceptron (rule, {len(perceptron_curve)} epochs): {perceptron_best:.0%}", perceptron.predict(points)),
        (f"MLP 2-4-2 (backprop): {solved:.0%} of {seeds} seeds solve it", mlp_regions),
    ]
    fig, axes = new_figure(columns=3)
    for ax, (title, regions) in zip(axes, panels):
        surface = np.asarray(regions, dtype=float).reshape(gx.shape)
        ax.contourf(gx, gy, surface, levels=[-0.5, 0.5, 1.5], colors=["#dde6f5", "#f7d9c4"])
        ax.scatter(x[:, 0], x[:, 1], c=["#1f4e9c" if t == 0 else "#c2541b" for t in y], s=120, edgecolors="black")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("A")
        ax.set_ylabel("B")
    image = save(fig, ctx.image_path("decision-regions"))

    figures = {
        "mcculloch_pitts_units_computing_xor": exact_units,
        "mcculloch_pitts_units_searched": len(WEIGHT_RANGE) ** 3,
        "mcculloch_pitts_best_accuracy": unit_accuracy,
        "perceptron_best_accuracy": perceptron_best,
        "mlp_seeds": seeds,
        "mlp_fraction_solved": solved,
        "mlp_mean_accuracy": float(np.mean(accuracies)),
    }
    passed = exact_units == 0 and unit_accuracy <= 0.75 and perceptron_best <= 0.75 and solved >= 0.95
    setup = (
        f"McCulloch–Pitts: every unit with integer weights and threshold in "
        f"[{WEIGHT_RANGE.start}, {WEIGHT_RANGE.stop - 1}]; perceptron rule, η = 1; MLP 2-4-2 tanh, AdamW lr 0.05, "
        f"batch 32, {steps} steps, seeds {ctx.seed}..{ctx.seed + seeds - 1}"
    )
    return Outcome(passed=passed, figures=figures, images=[image], setup=setup)
