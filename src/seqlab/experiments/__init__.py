"""Experiments, one module per era; importing this package registers them all in `EXPERIMENTS`."""

from seqlab.experiments import feedforward  # noqa: F401  (registers experiments)
from seqlab.experiments import recurrent  # noqa: F401  (registers the recurrent era's experiments)
from seqlab.experiments import attention  # noqa: F401  (registers experiments)
from seqlab.experiments import transformer  # noqa: F401  (registers the Transformer era's experiments)
from seqlab.experiments import practice  # noqa: F401  (registers seed 004's hands-on experiments)
from seqlab.experiments.base import EXPERIMENTS, Context, Experiment, Outcome, experiment

__all__ = ["EXPERIMENTS", "Context", "Experiment", "Outcome", "experiment"]
