"""Whole models built from `seqlab.nn` blocks; `build_model(spec, info)` is the one way to make one.

Every model's `forward` takes a batch dict (see `seqlab.data.base`) and returns the output the task's
objective expects. Importing this package registers every model family with `seqlab.registry.MODELS`.
"""

from __future__ import annotations

from torch import nn

from seqlab.data.base import TaskInfo
from seqlab.errors import ConfigError, UserError
from seqlab.registry import Spec
from seqlab.models import feedforward  # noqa: F401  (registers models)
from seqlab.models import recurrent  # noqa: F401  (registers models)
from seqlab.models import transformer  # noqa: F401  (registers models)
from seqlab.models import language  # noqa: F401  (registers models)
from seqlab.models import convs2s  # noqa: F401  (registers models)
from seqlab.models import seq2seq  # noqa: F401  (registers models)
from seqlab.models import ssm  # noqa: F401  (registers ssm_lm and ssm)
from seqlab.models import word_vectors  # noqa: F401  (registers the static word-vector models)
from seqlab.models import bytenet  # noqa: F401  (registers bytenet)
from seqlab.models import memory  # noqa: F401  (registers memn2n and ntm)
from seqlab.registry import MODELS


def build_model(spec: Spec, info: TaskInfo) -> nn.Module:
    """Build the model a validated spec names, sized for the task described by `info`.

    Models raise plain ValueErrors for settings that do not fit the task; this is the config edge, where
    they become a ConfigError naming the model."""
    try:
        return MODELS.build(spec, info)
    except UserError:
        raise
    except ValueError as err:
        raise ConfigError(f"model {spec.name!r}: {err}") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
