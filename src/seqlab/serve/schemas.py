"""The typed request and response bodies of the HTTP API (pydantic); FastAPI turns them into the OpenAPI docs.

Type checks (a string where a number belongs, an unknown field) happen here; the limits that depend on the
server's settings or on the checkpoint (texts per request, beam, source length, max_tokens) are checked by
the app, which names the limit in its 4xx answer.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TranslateRequest(_Request):
    """Translate one text or a list of texts with an encoder–decoder."""

    model: str | None = Field(None, description="a name from GET /v1/models; default: the first translation model")
    text: str | None = Field(None, description="one source sentence (give `text` or `texts`)")
    texts: list[str] | None = Field(None, description="several source sentences, translated together")
    beam: int = Field(1, ge=1, description="beam size; 1 = greedy search")
    length_penalty: float = Field(0.6, ge=0.0, le=5.0, description="α of Wu et al. 2016, eq. 14 (beam search)")
    patience: float | None = Field(None, gt=0.0, le=10.0, description="stop each text's beam once round(patience · "
                                   "beam) hypotheses have finished; default: once none still live can win")
    max_len: int | None = Field(None, ge=1, description="most target tokens (with <eos>); default ⌊1.5 · source length⌋ + 5")
    return_attention: bool = Field(False, description="also return the attention rows (one per target token)")
    n_best: int = Field(1, ge=1, description="beam candidates to return per text, best first (at most `beam`)")

    @model_validator(mode="after")
    def _one_of_text_or_texts(self) -> "TranslateRequest":
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of `text` (a string) or `texts` (a list of strings)")
        return self

    @property
    def lines(self) -> list[str]:
        return [self.text] if self.text is not None else list(self.texts or [])


class Candidate(BaseModel):
    """One finished hypothesis of the beam."""

    text: str
    score: float = Field(description="log P(candidate | source), including <eos>")


class Translation(BaseModel):
    """One translated sentence."""

    source: str
    source_tokens: list[str] = Field(description="the source as the model saw it, ending with <eos>")
    text: str
    tokens: list[str] = Field(description="target tokens, ending with <eos> (empty for an empty source)")
    score: float = Field(description="log P(target | source), including <eos>")
    attention: list[list[float]] | None = Field(
        None, description="(len(tokens), len(source_tokens)): row i is the attention while producing tokens[i]")
    candidates: list[Candidate] = Field(description="the `n_best` best hypotheses of the beam, ranked by "
                                        "log P / lp(Y) (Wu et al. 2016, eq. 14); the first is `text`")


class TranslateTimings(BaseModel):
    queue_ms: float = Field(description="waiting to join a batch")
    compute_ms: float = Field(description="the batched search that decoded this request")
    total_ms: float
    batch_requests: int = Field(description="requests decoded in the same batch as this one")
    batch_sentences: int = Field(description="sentences decoded in the same batch")


class TranslateResponse(BaseModel):
    model: str
    translations: list[Translation]
    timings: TranslateTimings


class GenerateRequest(_Request):
    """Continue a prompt with a language model (the same draws as `seqlab sample --num 1` with this seed)."""

    model: str | None = Field(None, description="a name from GET /v1/models; default: the first language model")
    prompt: str | None = Field(None, description="text to continue; default: a new line (names) / a newline (running text)")
    max_tokens: int = Field(100, ge=1, description="most new tokens")
    temperature: float = Field(1.0, ge=0.0, description="softmax temperature; 0 = greedy")
    top_k: int | None = Field(None, ge=1, description="sample among the k most probable tokens")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="sample within the nucleus of probability p")
    seed: int = Field(0, ge=0, description="seed of the sampling generator")
    stream: bool = Field(False, description="send tokens as server-sent events as they are produced")


class GenerateTimings(BaseModel):
    total_ms: float
    tokens_per_s: float


class GenerateResponse(BaseModel):
    model: str
    prompt: str
    completion: str = Field(description="the new text only")
    text: str = Field(description="prompt + completion, as `seqlab sample` prints it")
    tokens: list[str] = Field(description="the new tokens")
    finish_reason: Literal["eos", "max_tokens"]
    timings: GenerateTimings


class TokenEvent(BaseModel):
    """The `data` of one `event: token` server-sent event."""

    index: int
    token: str
    text: str = Field(description="the text this token adds (with the joiner before it): the pieces add up to the completion")


class ModelInfo(BaseModel):
    name: str
    kind: Literal["translation", "language_model"]
    architecture: str = Field(description="the model name in the run's config")
    parameters: int
    vocab: dict[str, int] = Field(description="vocabulary sizes: source/target, or tokens")
    max_src_len: int | None = Field(None, description="longest source the model was trained on (translation)")
    max_context: int | None = Field(None, description="most positions the model can attend to (language models)")
    step: int = Field(description="training step of the checkpoint")
    metrics: dict[str, dict[str, float]] = Field(description="the run's training metrics by split")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class ErrorBody(BaseModel):
    code: str = Field(description="machine-readable: body_too_large, too_many_texts, unknown_model, …")
    message: str
    limit: str | None = Field(None, description="the limit that was exceeded, as named in ServeLimits")


class ErrorResponse(BaseModel):
    error: ErrorBody
