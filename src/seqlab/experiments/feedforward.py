"""The feedforward era (seed 000): single units cannot compute XOR; a 2-layer MLP with backpropagation can."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from seqlab.data.logic import gate_dataset
from seqlab.experiments.base import Context, Outcome, StopAt, conclude, experiment, fit, quiet_config
from seqlab.nn.neurons import McCullochPittsNeuron, Perceptron, search_single_unit
from seqlab.report.plots import new_figure

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


MLP = {"name": "mlp", "hidden_sizes": [4], "activation": "tanh"}


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
    seeds, steps = ctx.pick(20, 50), ctx.pick(300, 1000)
    unit, unit_accuracy, exact_units = _best_single_unit(x, y)
    perceptron = Perceptron(2, lr=1.0, seed=ctx.seed)
    perceptron_best = max(perceptron_curve := perceptron.fit(x, y, epochs=ctx.pick(50, 200)))
    train = {"steps": steps, "lr": 0.05, "batch_size": 32}
    runs = [fit(quiet_config({"name": "logic", "gate": "xor"}, MLP, train, ctx.seed + s),
                callbacks=(StopAt("accuracy", 0.999, every=25),)) for s in range(seeds)]
    accuracies = [run.final["val"]["accuracy"] for run in runs]
    solved = sum(a == 1.0 for a in accuracies) / seeds

    checks = {"no McCulloch–Pitts unit computes XOR, the best ≤ 75%": exact_units == 0 and unit_accuracy <= 0.75,
              "the perceptron ≤ 75%": perceptron_best <= 0.75,
              "the MLP solves XOR on ≥ 95% of seeds": solved >= 0.95}
    figures = {
        "mcculloch_pitts_units_computing_xor": exact_units,
        "mcculloch_pitts_units_searched": len(WEIGHT_RANGE) ** 3,
        "mcculloch_pitts_best_accuracy": unit_accuracy,
        "perceptron_best_accuracy": perceptron_best,
        "mlp_seeds": seeds,
        "mlp_fraction_solved": solved,
        "mlp_mean_accuracy": float(np.mean(accuracies)),
        "mlp_mean_steps": float(np.mean([run.steps for run in runs])),
    }
    setup = (f"McCulloch–Pitts: every unit with integer weights and threshold in "
             f"[{WEIGHT_RANGE.start}, {WEIGHT_RANGE.stop - 1}]; perceptron rule, η = 1; MLP 2-4-2 tanh, AdamW lr 0.05, "
             f"batch 32, ≤ {steps} steps (stopping once the truth table is right, checked every 25), "
             f"seeds {ctx.seed}..{ctx.seed + seeds - 1}")
    panels = [
        (f"McCulloch–Pitts w={unit.weights}, θ={unit.theta}: {unit_accuracy:.0%}", unit),
        (f"Perceptron (rule, {len(perceptron_curve)} epochs): {perceptron_best:.0%}", perceptron),
        (f"MLP 2-4-2 (backprop): {solved:.0%} of {seeds} seeds solve it", runs[int(np.argmax(accuracies))].model.eval()),
    ]
    return conclude(ctx, checks, figures, setup, {"decision-regions": plot_regions(panels, x, y)})


def plot_regions(panels: list[tuple[str, Any]], x: np.ndarray, y: np.ndarray) -> Figure:
    """Each classifier's decision regions over the unit square, with the four XOR points."""
    grid = np.linspace(-0.5, 1.5, 121)
    gx, gy = np.meshgrid(grid, grid)
    points = np.stack([gx.ravel(), gy.ravel()], axis=1)
    fig, axes = new_figure(columns=len(panels))
    for ax, (title, classifier) in zip(axes, panels):
        if isinstance(classifier, McCullochPittsNeuron):
            regions = points @ np.array(classifier.weights) - classifier.theta >= 0
        elif isinstance(classifier, nn.Module):
            with torch.no_grad():
                regions = classifier({"inputs": torch.tensor(points, dtype=torch.float32)}).argmax(-1).numpy()
        else:
            regions = classifier.predict(points)
        surface = np.asarray(regions, dtype=float).reshape(gx.shape)
        ax.contourf(gx, gy, surface, levels=[-0.5, 0.5, 1.5], colors=["#dde6f5", "#f7d9c4"])
        ax.scatter(x[:, 0], x[:, 1], c=["#1f4e9c" if t == 0 else "#c2541b" for t in y], s=120, edgecolors="black")
        ax.set(title=title, xlabel="A", ylabel="B")
        ax.title.set_fontsize(9)
    return fig
