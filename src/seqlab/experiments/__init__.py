"""Experiments, one module per era or theme; importing this package registers them all in `EXPERIMENTS`."""

from seqlab.experiments import feedforward  # noqa: F401  (registers experiments)
from seqlab.experiments import recurrent  # noqa: F401  (registers the recurrent era's experiments)
from seqlab.experiments import attention  # noqa: F401  (registers experiments)
from seqlab.experiments import transformer  # noqa: F401  (registers the Transformer era's experiments)
from seqlab.experiments import rnn_training  # noqa: F401  (registers initialisation and gradient clipping)
from seqlab.experiments import embeddings  # noqa: F401  (registers contextual embeddings)
from seqlab.experiments import generation  # noqa: F401  (registers sequential vs parallel decoding)
from seqlab.experiments import roads_not_taken  # noqa: F401  (registers memory networks, NTM, ByteNet, word vectors)
from seqlab.experiments import after_transformer  # noqa: F401  (registers state-space models and scale)
from seqlab.experiments.base import EXPERIMENTS, Context, Experiment, Outcome, experiment

__all__ = ["EXPERIMENTS", "Context", "Experiment", "Outcome", "experiment"]
