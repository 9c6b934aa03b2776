"""The ASGI app of `seqlab serve`: translation and generation over HTTP, metrics, and the web page.

    POST /v1/translate   text(s) → translations, scores, timings (and attention rows when asked)
    POST /v1/generate    prompt → text; with "stream": true, tokens as server-sent events as they are produced
    GET  /v1/models      the served checkpoints      GET /healthz   liveness (never needs the API key)
    GET  /metrics        Prometheus text format      GET /          the web page     GET /docs   OpenAPI docs

Every limit (`ServeLimits`) answers with a 4xx JSON body `{"error": {"code", "message", "limit"}}` that names
it. The `Gate` middleware runs before FastAPI: it checks the API key, reads the body (at most
`max_body_bytes`) and refuses non-UTF-8 or malformed JSON, counts and times every request, and turns an
exception inside a request into a 500 answer without stopping the server.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, AsyncIterator, Iterator
from urllib.parse import parse_qs

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from seqlab.data.vocab import Vocab
from seqlab.errors import UserError
from seqlab.inference import sampling
from seqlab.inference.translate import Translation as DecodedTranslation
from seqlab.serve.batching import ModelRunner, SearchOptions, TranslateBatcher
from seqlab.serve.metrics import Metrics
from seqlab.serve.models import ServedModel
from seqlab.serve.schemas import (
    Candidate, ErrorResponse, GenerateRequest, GenerateResponse, GenerateTimings, ModelsResponse, TokenEvent,
    TranslateRequest, TranslateResponse, TranslateTimings, Translation,
)

log = logging.getLogger("seqlab.serve")
ROUTES = ("/", "/healthz", "/metrics", "/v1/models", "/v1/translate", "/v1/generate", "/docs", "/redoc", "/openapi.json")
OPEN_ROUTES = ("/healthz",)


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for; each is named in the 4xx answer that enforces it."""

    max_body_bytes: int = 64 * 1024
    max_texts: int = 32
    max_beam: int = 8
    max_target_len: int = 256
    max_tokens: int = 512
    max_prompt_tokens: int = 1024


@dataclass(frozen=True)
class ServeSettings:
    limits: ServeLimits = field(default_factory=ServeLimits)
    api_key: str | None = None
    batching: bool = True
    batch_wait_ms: float = 5.0
    max_batch_sentences: int = 64


class ApiError(Exception):
    """A request the server refuses: HTTP status, a code, a message that says what to change, the limit."""

    def __init__(self, status: int, code: str, message: str, limit: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.limit = status, code, message, limit


def error_response(status: int, code: str, message: str, limit: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "limit": limit}}, status_code=status)


# --- the gate: API key, body checks, metrics, crash isolation ---------------------------------------------


class Gate:
    """Pure ASGI middleware in front of the app (see the module docstring)."""

    def __init__(self, app: ASGIApp, settings: ServeSettings, metrics: Metrics) -> None:
        self.app, self.settings, self.metrics = app, settings, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in ROUTES else "other"
        began = time.perf_counter()
        status = {"code": 500, "started": False}

        async def send_tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
            await send(message)

        self.metrics.in_flight += 1
        try:
            refusal = self._refuse_unauthorised(scope)
            if refusal is None:
                body, refusal = await self._read_body(scope, receive)
            if refusal is not None:
                await refusal(scope, receive, send_tracked)
            else:
                await self.app(scope, _replay(body, receive), send_tracked)
        except Exception:  # one request's crash never stops the server
            log.exception("request %s %s failed", scope.get("method"), scope["path"])
            if not status["started"]:
                await error_response(500, "internal_error", "the server failed on this request; it keeps serving "
                                     "others. The error is in the server log.")(scope, receive, send_tracked)
        finally:
            self.metrics.in_flight -= 1
            self.metrics.observe_request(route, int(status["code"]), time.perf_counter() - began)

    def _refuse_unauthorised(self, scope: Scope) -> JSONResponse | None:
        key = self.settings.api_key
        if key is None or scope["path"] in OPEN_ROUTES:
            return None
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        given = headers.get("x-api-key")
        if given is None and headers.get("authorization", "").startswith("Bearer "):
            given = headers["authorization"][len("Bearer "):]
        if given is None:
            given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("key", [None])[0]
        if given is None:
            return error_response(401, "missing_api_key", "this server needs an API key: send it as the X-API-Key "
                                  "header, as 'Authorization: Bearer KEY', or as ?key=KEY on the page's address.")
        if not hmac.compare_digest(given.encode("utf-8", "replace"), key.encode("utf-8")):
            return error_response(401, "invalid_api_key", "the API key is wrong.")
        return None

    async def _read_body(self, scope: Scope, receive: Receive) -> tuple[bytes, JSONResponse | None]:
        limit = self.settings.limits.max_body_bytes
        too_large = error_response(413, "body_too_large", f"the request body is larger than {limit} bytes; "
                                   "send fewer or shorter texts.", "max_body_bytes")
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return b"", too_large
        chunks, size = [], 0
        if scope["method"] in ("POST", "PUT", "PATCH"):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    break
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    return b"", too_large
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        body = b"".join(chunks)
        if scope["method"] == "POST" and scope["path"].startswith("/v1/"):
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as err:
                return body, error_response(400, "not_utf8", f"the request body is not UTF-8 (byte {err.start}); "
                                            "encode the JSON as UTF-8.")
            try:
                json.loads(text)
            except json.JSONDecodeError as err:
                return body, error_response(400, "malformed_json", f"the request body is not JSON ({err.msg} at "
                                            f"line {err.lineno} column {err.colno}); send a JSON object.")
        return body, None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then passes through (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# --- the app ------------------------------------------------------------------------------------------


def _field_message(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
    return f"{where}: {error.get('msg', 'invalid value')}"


def create_app(models: dict[str, ServedModel], settings: ServeSettings | None = None) -> "Gate":
    """The ASGI app serving `models` (name → loaded checkpoint) under `settings`: the FastAPI app (`.app`)
    behind its `Gate`."""
    settings = settings or ServeSettings()
    limits = settings.limits
    metrics = Metrics()
    runner = ModelRunner()
    batchers: dict[str, TranslateBatcher] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for name, served in models.items():
            if served.translator is not None:
                batcher = TranslateBatcher(
                    served.translator, runner, metrics, max_wait_ms=settings.batch_wait_ms if settings.batching else 0.0,
                    max_requests=64 if settings.batching else 1, max_sentences=settings.max_batch_sentences)
                batcher.start()
                batchers[name] = batcher
        yield
        await asyncio.gather(*(batcher.stop() for batcher in batchers.values()))
        batchers.clear()
        runner.close()

    app = FastAPI(
        title="seqlab serve", lifespan=lifespan,
        description="Translate with seqlab's encoder–decoders and sample from its language models.",
        responses={400: {"model": ErrorResponse}, 401: {"model": ErrorResponse}, 404: {"model": ErrorResponse},
                   413: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
    )

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.code, error.message, error.limit)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(_field_message(e) for e in error.errors()[:5])
        return error_response(422, "invalid_request", f"the request does not match its schema ({problems}); "
                              "see /docs.")

    @app.exception_handler(Exception)
    async def _crash(request: Request, error: Exception) -> JSONResponse:
        return error_response(500, "internal_error", "the server failed on this request; it keeps serving others. "
                              "The error is in the server log.")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return error_response(error.status_code, code, f"{request.method} {request.url.path}: {error.detail}")

    def pick(name: str | None, kind: str) -> ServedModel:
        if name is None:
            for served in models.values():
                if served.info.kind == kind:
                    return served
            raise ApiError(404, "unknown_model", f"this server holds no {kind.replace('_', ' ')} model.")
        if name not in models:
            raise ApiError(404, "unknown_model", f"no model named {name!r}; this server holds "
                           f"{sorted(models)} (GET /v1/models).")
        served = models[name]
        if served.info.kind != kind:
            raise ApiError(422, "wrong_model_kind", f"{name!r} is a {served.info.kind.replace('_', ' ')} model; "
                           f"use {'/v1/translate' if served.info.kind == 'translation' else '/v1/generate'}.")
        return served

    def over(limit: str, what: str, value: int, most: int) -> ApiError:
        return ApiError(422, "limit_exceeded", f"{what} is {value}; this server allows at most {most} ({limit}).", limit)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files("seqlab.serve").joinpath("static/index.html").read_text(encoding="utf-8"))

    @app.get("/healthz", summary="Liveness: the server is up and its models are loaded")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "models": sorted(models)}

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus text format")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", response_model=ModelsResponse, summary="The served checkpoints")
    async def list_models() -> ModelsResponse:
        return ModelsResponse(models=[served.info for served in models.values()])

    @app.post("/v1/translate", response_model=TranslateResponse, summary="Translate text with an encoder–decoder")
    async def translate(request: TranslateRequest) -> TranslateResponse:
        began = time.perf_counter()
        served = pick(request.model, "translation")
        assert served.translator is not None
        lines = request.lines
        if len(lines) > limits.max_texts:
            raise over("max_texts", "the number of texts", len(lines), limits.max_texts)
        if request.beam > limits.max_beam:
            raise over("max_beam", "beam", request.beam, limits.max_beam)
        if request.n_best > request.beam:
            raise ApiError(422, "limit_exceeded", f"n_best is {request.n_best}; a beam of {request.beam} keeps at most "
                           f"{request.beam} candidates (n_best ≤ beam): ask for fewer or widen the beam.", "beam")
        if request.max_len is not None and request.max_len > limits.max_target_len:
            raise over("max_target_len", "max_len", request.max_len, limits.max_target_len)
        codecs = served.translator.codecs
        for index, line in enumerate(lines):
            length = len(codecs.source.encode(line))
            if length > codecs.max_len:
                raise ApiError(422, "limit_exceeded", f"text {index} has {length} source tokens; this model was "
                               f"trained on at most {codecs.max_len} (max_src_len): split it.", "max_src_len")
        options = SearchOptions(request.beam, request.length_penalty, *(
            (0.0, request.max_len) if request.max_len is not None else (1.5, 5)), patience=request.patience)
        if not lines:
            return TranslateResponse(model=served.name, translations=[], timings=TranslateTimings(
                queue_ms=0.0, compute_ms=0.0, total_ms=0.0, batch_requests=0, batch_sentences=0))
        result = await batchers[served.name].translate(lines, options, request.n_best)
        items = [_translation(t, request.return_attention) for t in result.translations]
        return TranslateResponse(model=served.name, translations=items, timings=TranslateTimings(
            queue_ms=1000 * result.queue_s, compute_ms=1000 * result.compute_s,
            total_ms=1000 * (time.perf_counter() - began), batch_requests=result.batch_requests,
            batch_sentences=result.batch_sentences))

    @app.post("/v1/generate", response_model=GenerateResponse, summary="Continue a prompt with a language model",
              responses={200: {"content": {"text/event-stream": {}},
                               "description": "JSON, or with stream=true server-sent events: `token` events "
                                              "(TokenEvent), then one `done` event (GenerateResponse)"}})
    async def generate(request: GenerateRequest) -> Any:
        began = time.perf_counter()
        served = pick(request.model, "language_model")
        assert served.lm is not None
        if request.max_tokens > limits.max_tokens:
            raise over("max_tokens", "max_tokens", request.max_tokens, limits.max_tokens)
        try:
            prompt, ids = served.encode_prompt(request.prompt)
        except UserError as err:
            raise ApiError(422, "invalid_prompt", str(err)) from None
        if len(ids) > limits.max_prompt_tokens:
            raise over("max_prompt_tokens", "the prompt's token count", len(ids), limits.max_prompt_tokens)
        context = served.info.max_context
        if context is not None and len(ids) + request.max_tokens - 1 > context:
            raise ApiError(422, "limit_exceeded", f"prompt ({len(ids)} tokens) + max_tokens ({request.max_tokens}) "
                           f"goes beyond the {context} positions this model knows (max_context); ask for fewer tokens.", "max_context")
        lm = served.lm
        eos = Vocab.eos_id if lm.line_format else None  # running text has no <eos>
        banned = (Vocab.pad_id, Vocab.bos_id) + (() if lm.line_format else (Vocab.eos_id,))
        options = (request.temperature, request.top_k, request.top_p, eos,
                   torch.Generator().manual_seed(request.seed), banned)

        def finish(ids_out: list[int]) -> GenerateResponse:
            seconds = time.perf_counter() - began
            tokens = lm.vocab.decode(ids_out)
            completion = lm.joiner.join(tokens)
            metrics.observe_tokens("generation", len(ids_out))
            reason = "max_tokens" if len(ids_out) >= request.max_tokens else "eos"
            return GenerateResponse(model=served.name, prompt=prompt, completion=completion, text=prompt + completion,
                                    tokens=tokens, finish_reason=reason, timings=GenerateTimings(
                                        total_ms=1000 * seconds, tokens_per_s=len(ids_out) / max(seconds, 1e-9)))

        if not request.stream:
            drawn = await runner.run(lambda: sampling.sample(lm.model, 1, request.max_tokens, ids, *options)[0])
            return finish(drawn)
        tokens = _one_row(sampling.sample_steps(lm.model, 1, request.max_tokens, ids, *options))
        return StreamingResponse(_events(runner, tokens, lm.vocab, lm.joiner, finish), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return Gate(app, settings, metrics)


def _translation(item: DecodedTranslation, with_attention: bool) -> Translation:
    attention = None
    if with_attention and item.attention is not None:
        attention = [[round(float(w), 5) for w in row] for row in item.attention.tolist()]
    return Translation(source=item.source, source_tokens=item.source_tokens, text=item.text, tokens=item.tokens,
                       score=item.score, attention=attention,
                       candidates=[Candidate(text=text, score=score) for text, score in item.candidates])


def _one_row(steps: Iterator[list[int | None]]) -> Iterator[int]:
    """The tokens of a one-row `sample_steps` until the row ends."""
    for (token,) in steps:
        if token is None:
            return
        yield token


def _sse(event: str, data: str) -> bytes:
    return f"event: {event}\ndata: {data}\n\n".encode("utf-8")


async def _events(runner: ModelRunner, tokens: Iterator[int], vocab: Vocab, joiner: str, finish: Any) -> AsyncIterator[bytes]:
    """Server-sent events: one `token` event per token as the model produces it, then `done` (or `error`)."""
    drawn: list[int] = []
    done = object()
    try:
        while True:
            token = await runner.run(next, tokens, done)
            if token is done:
                break
            drawn.append(int(token))  # type: ignore[arg-type]
            word = vocab.itos[drawn[-1]]
            event = TokenEvent(index=len(drawn) - 1, token=word, text=(joiner if len(drawn) > 1 else "") + word)
            yield _sse("token", event.model_dump_json())
        yield _sse("done", finish(drawn).model_dump_json())
    except Exception:  # the headers are sent: report the failure in the stream
        log.exception("generation stream failed")
        yield _sse("error", json.dumps({"code": "internal_error", "message": "generation failed on the server; "
                                                                            "the error is in the server log."}))
