"""The checkpoints a server holds: each loaded once at start-up, by the paths on the command line only.

A translation checkpoint (its task saved source/target vocabularies) becomes a `Translator`; a
language-model checkpoint (its task saved one vocabulary) becomes a `LanguageModelCheckpoint`. Requests
name models by these names; a request never names a path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqlab.errors import UserError
from seqlab.inference.sampling import LanguageModelCheckpoint, encode_prompt, load_language_model
from seqlab.inference.translate import Translator
from seqlab.serve.schemas import ModelInfo
from seqlab.training.checkpoint import resolve_checkpoint


@dataclass
class ServedModel:
    """One named checkpoint: a translator or a language model, and what GET /v1/models says about it."""

    name: str
    info: ModelInfo
    translator: Translator | None = None
    lm: LanguageModelCheckpoint | None = None

    def encode_prompt(self, text: str | None) -> tuple[str, list[int]]:
        """The prompt text (default: a new sequence) and its ids, as `seqlab sample` feeds them."""
        assert self.lm is not None
        return encode_prompt(self.lm, text, "`prompt`")


def default_name(path: Path) -> str:
    """`runs/multi30k/transformer` → `transformer`; a checkpoint directory inside a run takes the run's name."""
    path = path.resolve()
    if path.parent.name == "checkpoints":
        return path.parent.parent.name
    return path.name


def _run_metrics(checkpoint_dir: Path, meta: dict[str, Any]) -> dict[str, dict[str, float]]:
    """final_metrics.json of the run (val/test), else the checkpoint's own validation metrics."""
    final = checkpoint_dir.parent.parent / "final_metrics.json"
    if checkpoint_dir.parent.name == "checkpoints" and final.is_file():
        data = json.loads(final.read_text(encoding="utf-8"))
        return {split: {k: float(v) for k, v in values.items() if isinstance(v, (int, float))}
                for split, values in data.items() if isinstance(values, dict)}
    metrics = meta.get("metrics") or {}
    return {"val": {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}}


def load_served_model(spec: str) -> ServedModel:
    """`PATH` or `NAME=PATH` (a run directory or a checkpoint directory) → a loaded model."""
    name, _, raw = spec.partition("=") if "=" in spec else ("", "", spec)
    path = Path(raw)
    checkpoint = resolve_checkpoint(path)
    name = name or default_name(path)
    meta = checkpoint.meta
    task_state = meta.get("task_state", {})
    model_config = meta["config"]["model"]
    common = dict(name=name, architecture=str(model_config.get("name")), step=int(meta.get("step", 0)),
                  metrics=_run_metrics(checkpoint.path, meta))
    if isinstance(task_state, dict) and "source" in task_state and "target" in task_state:
        translator = Translator.from_checkpoint(checkpoint.path)
        codecs = translator.codecs
        info = ModelInfo(kind="translation", parameters=sum(p.numel() for p in translator.model.parameters()),
                         vocab={"source": len(codecs.source.vocab), "target": len(codecs.target.vocab)},
                         max_src_len=codecs.max_len, **common)
        return ServedModel(name, info, translator=translator)
    if isinstance(task_state, dict) and "vocab" in task_state:
        lm = load_language_model(checkpoint.path)
        learned = model_config.get("positional") == "learned" and isinstance(model_config.get("max_len"), int)
        info = ModelInfo(kind="language_model", parameters=sum(p.numel() for p in lm.model.parameters()),
                         vocab={"tokens": len(lm.vocab)}, max_context=model_config["max_len"] if learned else None,
                         **common)
        return ServedModel(name, info, lm=lm)
    raise UserError(f"{checkpoint.path} is neither a translation nor a language-model checkpoint; "
                    "serve runs of the translation, synthetic_translation or lm tasks.")


def load_served_models(specs: list[str]) -> dict[str, ServedModel]:
    """Load every `PATH` / `NAME=PATH`; names must be unique."""
    if not specs:
        raise UserError("give at least one run or checkpoint directory to serve.")
    models: dict[str, ServedModel] = {}
    for spec in specs:
        served = load_served_model(spec)
        if served.name in models:
            raise UserError(f"two models are named {served.name!r}; name them with NAME=PATH.")
        models[served.name] = served
    return models
