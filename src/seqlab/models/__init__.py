"""Whole models built from `seqlab.nn` blocks; `build_model(spec, info)` is the one way to make one.

Every model's `forward` takes a batch dict (see `seqlab.data.base`) and returns the output the task's
objective expects. Importing this package registers every model family with `seqlab.registry.MODELS`.
"""

from __future__ import annotations

from torch import nn

from seqlab.config import Spec
from seqlab.data.base import TaskInfo
from seqlab.models import feedforward  # noqa: F401  (registers models)
from seqlab.models import recurrent  # noqa: F401  (registers models)
from seqlab.models import transformer  # noqa: F401  (registers models)
from seqlab.models import language  # noqa: F401  (registers models)
from seqlab.models import convs2s  # noqa: F401  (registers models)
from seqlab.models import seq2seq  # noqa: F401  (registers models)
from seqlab.registry import MODELS


def build_model(spec: Spec, info: TaskInfo) -> nn.Module:
    """Build the model a validated spec names, sized for the task described by `info`."""
    return MODELS.build(spec, info)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
