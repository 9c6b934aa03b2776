"""Export a trained seqlab Transformer to CTranslate2, the C++ engine practitioners deploy NMT with.

`export_ctranslate2` rebuilds the checkpoint's `TransformerSeq2Seq` (Vaswani et al. 2017) and fills
CTranslate2's `TransformerSpec` layer by layer through its Python spec API:

- embeddings E (source and target tables), multiplied by √d_model (§3.4), plus the positional table
  PE (seqlab's sinusoids, or the learned table; zeros for `positional: none`) written out explicitly,
  so both engines add the very same PE(pos) at positions 0, 1, ...;
- each sublayer's LayerNorm (pre-norm: inside the residual, with a final LayerNorm per stack;
  post-norm: after the residual sum) with seqlab's epsilon;
- self-attention Q, K, V projections fused into one [W^Q; W^K; W^V] matrix, cross-attention K, V into
  one [W^K; W^V], then W^O; FFN W_1, W_2 with ReLU or GELU (erf);
- the output projection (the tied target embedding when `tie_embeddings`).

The vocabularies keep seqlab's ids (<pad> <unk> <bos> <eos> first); CTranslate2 appends <eos> to the
source and starts the decoder with <bos>, exactly as seqlab's `collate` does. The directory also holds
`seqlab_codecs.json` (tokenisers and vocabularies), so `CTranslate2Translator` turns raw text into the
tokens the model expects and back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from seqlab.config import config_from_dict
from seqlab.data.base import TaskInfo
from seqlab.data.parallel import TranslationCodecs, translation_state
from seqlab.data.vocab import Vocab
from seqlab.errors import UserError
from seqlab.models import build_model
from seqlab.models.transformer import TransformerSeq2Seq, TransformerSpec
from seqlab.nn.transformer import (
    DecoderLayer,
    EncoderLayer,
    MultiHeadAttention,
    sinusoids,
)
from seqlab.training.checkpoint import load_weights, resolve_checkpoint

SUPPORTED = "the encoder–decoder Transformer (model name 'transformer')"
QUANTIZATIONS = ("float32", "int8")
CODECS_FILE = "seqlab_codecs.json"


def _ctranslate2() -> Any:
    try:
        import ctranslate2
    except ImportError:
        raise UserError("exporting to CTranslate2 needs the ctranslate2 package: pip install 'seqlab[deploy]'.") from None
    return ctranslate2


def _array(tensor: Tensor) -> np.ndarray:
    return tensor.detach().cpu().float().numpy().copy()


def _linear(spec: Any, layer: nn.Linear) -> None:
    spec.weight = _array(layer.weight)
    if layer.bias is not None:
        spec.bias = _array(layer.bias)


def _fused(spec: Any, layers: Sequence[nn.Linear]) -> None:
    """One linear map computing several projections at once: the weights (and biases) stacked by rows."""
    spec.weight = np.concatenate([_array(layer.weight) for layer in layers])
    if layers[0].bias is not None:
        spec.bias = np.concatenate([_array(layer.bias) for layer in layers])


def _norm(spec: Any, norm: nn.Module) -> None:
    spec.gamma, spec.beta = _array(norm.weight), _array(norm.bias)


def _self_attention(spec: Any, attention: MultiHeadAttention, norm: nn.LayerNorm) -> None:
    _norm(spec.layer_norm, norm)
    _fused(spec.linear[0], [attention.W_q, attention.W_k, attention.W_v])
    _linear(spec.linear[1], attention.W_o)


def _cross_attention(spec: Any, attention: MultiHeadAttention, norm: nn.LayerNorm) -> None:
    _norm(spec.layer_norm, norm)
    _linear(spec.linear[0], attention.W_q)
    _fused(spec.linear[1], [attention.W_k, attention.W_v])
    _linear(spec.linear[2], attention.W_o)


def _ffn(spec: Any, layer: EncoderLayer | DecoderLayer) -> None:
    _norm(spec.layer_norm, layer.ffn_residual.norm)
    _linear(spec.linear_0, layer.ffn.W_1)
    _linear(spec.linear_1, layer.ffn.W_2)


def _positions(embedding: nn.Module, model_spec: TransformerSpec) -> np.ndarray:
    """PE(pos) for pos = 0 .. max_len − 1, as seqlab adds it after scaling the embeddings."""
    d_model, rows = model_spec.d_model, model_spec.max_len
    if model_spec.positional == "learned":
        return _array(embedding.position.table.weight)
    if model_spec.positional == "sinusoidal":
        return sinusoids(rows, d_model).numpy()
    return np.zeros((rows, d_model), dtype=np.float32)


def ctranslate2_spec(model: TransformerSeq2Seq, model_spec: TransformerSpec, codecs: TranslationCodecs) -> Any:
    """The CTranslate2 `TransformerSpec` of a seqlab Transformer, every weight set, vocabularies registered."""
    ct2 = _ctranslate2()
    specs = ct2.specs
    activation = specs.Activation.GELU if model_spec.activation == "gelu" else specs.Activation.RELU
    spec = specs.TransformerSpec.from_config(
        (model_spec.num_encoder_layers, model_spec.num_decoder_layers), model_spec.num_heads,
        pre_norm=model_spec.norm_first, activation=activation,
    )
    encoder, decoder = spec.encoder, spec.decoder
    for side, embedding in ((encoder, model.src_embed), (decoder, model.tgt_embed)):
        table = side.embeddings[0] if isinstance(side.embeddings, list) else side.embeddings
        table.weight = _array(embedding.table.weight)
        side.scale_embeddings = True  # E[token] · √d_model
        side.position_encodings.encodings = _positions(embedding, model_spec)
    for layer_spec, layer in zip(encoder.layer, model.encoder.layers):
        _self_attention(layer_spec.self_attention, layer.self_attn, layer.attn_residual.norm)
        _ffn(layer_spec.ffn, layer)
    for layer_spec, layer in zip(decoder.layer, model.decoder.layers):
        _self_attention(layer_spec.self_attention, layer.self_attn, layer.self_residual.norm)
        _cross_attention(layer_spec.attention, layer.cross_attn, layer.cross_residual.norm)
        _ffn(layer_spec.ffn, layer)
    if model_spec.norm_first:
        _norm(encoder.layer_norm, model.encoder.final_norm)
        _norm(decoder.layer_norm, model.decoder.final_norm)
    _linear(decoder.projection, model.out)
    epsilon = model.encoder.layers[0].attn_residual.norm.eps
    spec.config.layer_norm_epsilon = float(epsilon)
    specials = Vocab([]).itos
    spec.config.unk_token, spec.config.bos_token, spec.config.eos_token = specials[Vocab.unk_id], specials[Vocab.bos_id], specials[Vocab.eos_id]
    spec.config.decoder_start_token = specials[Vocab.bos_id]
    spec.config.add_source_eos = True  # seqlab's source is ids + <eos>
    spec.register_source_vocabulary(list(codecs.source.vocab.itos))
    spec.register_target_vocabulary(list(codecs.target.vocab.itos))
    return spec


def load_transformer(path: str | Path) -> tuple[TransformerSeq2Seq, TransformerSpec, TranslationCodecs]:
    """The Transformer of a checkpoint or run directory; any other model is a UserError naming what is supported."""
    checkpoint = resolve_checkpoint(path)
    config = config_from_dict(checkpoint.meta["config"])
    if not isinstance(config.model, TransformerSpec):
        raise UserError(
            f"{checkpoint.path} holds a {config.model.name!r} model; export --format ctranslate2 supports only "
            f"{SUPPORTED}. Train a Transformer (e.g. configs/multi30k/transformer_reference.yaml) to deploy it."
        )
    codecs = TranslationCodecs.from_task_state(checkpoint.meta.get("task_state", {}))
    info = TaskInfo(kind="seq2seq", output_dim=len(codecs.target.vocab), vocab_size=len(codecs.source.vocab))
    model = build_model(config.model, info)
    load_weights(checkpoint.path, model)
    return model.eval(), config.model, codecs


def save_ctranslate2(
    model: TransformerSeq2Seq, model_spec: TransformerSpec, codecs: TranslationCodecs, out_dir: str | Path,
    quantization: str = "float32",
) -> Path:
    """Write `model` as a CTranslate2 model directory (model.bin, config.json, vocabularies, seqlab_codecs.json)."""
    if quantization not in QUANTIZATIONS:
        raise UserError(f"--quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}.")
    ct2 = _ctranslate2()

    class SeqlabConverter(ct2.converters.Converter):
        def _load(self) -> Any:
            return ctranslate2_spec(model, model_spec, codecs)

    out = Path(out_dir)
    SeqlabConverter().convert(str(out), quantization=quantization, force=True)
    state = translation_state(codecs.source, codecs.target, codecs.max_len, codecs.bleu_tokenize)
    (out / CODECS_FILE).write_text(json.dumps(state), encoding="utf-8")
    return out


def export_ctranslate2(path: str | Path, out_dir: str | Path, quantization: str = "float32", force: bool = False) -> Path:
    """Convert the Transformer checkpoint (or run directory) at `path` into a CTranslate2 model directory."""
    model, model_spec, codecs = load_transformer(path)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise UserError(f"{out} already exists and is not empty; choose another --out or pass --force.")
    return save_ctranslate2(model, model_spec, codecs, out, quantization)


@dataclass
class CT2Translation:
    text: str
    tokens: list[str]  # target tokens, without <eos>
    score: float  # log P(Y|X) as CTranslate2 reports it


class CTranslate2Translator:
    """An exported model in CTranslate2 with seqlab's tokenisers: raw text in, detokenised text out."""

    def __init__(self, model_dir: str | Path, compute_type: str = "default", threads: int = 1) -> None:
        ct2 = _ctranslate2()
        model_dir = Path(model_dir)
        codecs_file = model_dir / CODECS_FILE
        if not codecs_file.is_file():
            raise UserError(f"{model_dir} has no {CODECS_FILE}: export it with `seqlab export RUN --format ctranslate2`.")
        self.codecs = TranslationCodecs.from_task_state(json.loads(codecs_file.read_text(encoding="utf-8")))
        self.engine = ct2.Translator(str(model_dir), device="cpu", compute_type=compute_type,
                                     inter_threads=1, intra_threads=threads)

    def translate(
        self, lines: Sequence[str], beam_size: int = 1, length_penalty: float = 1.0, batch_size: int = 64,
        max_len_ratio: float = 1.5, max_len_offset: int = 5, patience: float = 1.0,
    ) -> list[CT2Translation]:
        """Translate `lines` in batches of similar length, as seqlab's Translator does; results in input order.

        CTranslate2 ranks beam hypotheses by log P / |Y|^length_penalty (seqlab: Wu et al.'s lp(Y)) and stops a
        sentence once round(patience · beam_size) hypotheses have finished (seqlab's `patience`). Its
        length limit is one per batch: seqlab's limit for the batch's longest sentence, ⌊ratio · source⌋ +
        offset tokens with <eos>; each hypothesis is then cut to its own sentence's limit, which gives
        exactly seqlab's greedy output where seqlab forces <eos> (the score stays CTranslate2's). <eos> may come
        first (min_decoding_length 0), as in seqlab's search.
        """
        sources = [self.codecs.source.tokens(line) for line in lines]
        results = [CT2Translation("", [], 0.0) for _ in lines]
        order = sorted((i for i in range(len(lines)) if sources[i]), key=lambda i: len(sources[i]))
        stoi = self.codecs.target.vocab.stoi
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            longest = max(len(sources[i]) for i in rows) + 1  # + <eos>
            outputs = self.engine.translate_batch(
                [sources[i] for i in rows], beam_size=beam_size, length_penalty=length_penalty, patience=patience,
                max_decoding_length=int(longest * max_len_ratio) + max_len_offset, min_decoding_length=0,
                return_scores=True,
            )
            for i, output in zip(rows, outputs):
                tokens = output.hypotheses[0][: int((len(sources[i]) + 1) * max_len_ratio) + max_len_offset - 1]
                ids = [stoi.get(token, Vocab.unk_id) for token in tokens]
                results[i] = CT2Translation(self.codecs.target.decode(ids), tokens, float(output.scores[0]))
        return results
