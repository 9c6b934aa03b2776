"""Dynamic batching: concurrent translate requests are gathered for a few milliseconds into one batched search.

Every model computation of the server runs on one worker thread (`ModelRunner`), so requests never race
for the CPU cores or for a model. The `TranslateBatcher` of a model takes the first waiting request, keeps
collecting for at most `max_wait_ms` (or until `max_sentences`), and translates each group of requests that
share search options (beam, length penalty, length limit) with one call of `Translator.translate`, i.e. one
batched greedy or beam search over all their sentences; each request gets its own rows back. Requests that
differ only in how many candidates they want (`n_best`) share a search: it keeps the most any of them asks
for, and each request gets its own number. While a batch
runs, new requests queue up and form the next batch, so under load batches fill without any waiting.
With `max_requests=1` every request is decoded alone (the baseline that benchmarks/serve.py compares with).

A batch that raises is retried one request at a time, so a request that crashes the model fails alone.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable, TypeVar

from seqlab.inference.translate import Translation, Translator
from seqlab.serve.metrics import Metrics

T = TypeVar("T")


class ModelRunner:
    """One worker thread for all model computation (torch work is serialised; the event loop stays free)."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seqlab-model")
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def close(self) -> None:
        """Wait for the work in hand and stop the thread (a later `run` starts a new one)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


@dataclass(frozen=True)
class SearchOptions:
    """What must be equal for two requests to share one batched search."""

    beam_size: int = 1
    length_penalty: float = 0.6
    max_len_ratio: float = 1.5
    max_len_offset: int = 5
    patience: float | None = None


@dataclass
class BatchResult:
    translations: list[Translation]
    queue_s: float
    compute_s: float
    batch_requests: int
    batch_sentences: int


@dataclass
class _Pending:
    lines: list[str]
    options: SearchOptions
    future: asyncio.Future[BatchResult]
    n_best: int = 1
    arrived: float = field(default_factory=time.perf_counter)


class TranslateBatcher:
    """Gathers the translate requests of one model into batched searches (see the module docstring)."""

    def __init__(self, translator: Translator, runner: ModelRunner, metrics: Metrics, max_wait_ms: float = 5.0,
                 max_requests: int = 64, max_sentences: int = 64) -> None:
        self.translator, self.runner, self.metrics = translator, runner, metrics
        self.max_wait_s, self.max_requests, self.max_sentences = max_wait_ms / 1000.0, max_requests, max_sentences
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        """Finish every queued request, then stop."""
        await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def translate(self, lines: list[str], options: SearchOptions, n_best: int = 1) -> BatchResult:
        """Translate `lines` (already checked against the limits, n_best ≤ beam) in the next batch with matching
        options; each translation with its `n_best` candidates."""
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(lines, options, future, n_best))
        return await future

    async def _gather(self) -> list[_Pending]:
        batch = [await self._queue.get()]
        sentences = len(batch[0].lines)
        deadline = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_requests and sentences < self.max_sentences:
            if self._queue.empty():
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            else:
                item = self._queue.get_nowait()
            batch.append(item)
            sentences += len(item.lines)
        return batch

    async def _serve(self) -> None:
        while True:
            batch = await self._gather()
            try:
                groups: dict[SearchOptions, list[_Pending]] = {}
                for item in batch:
                    groups.setdefault(item.options, []).append(item)
                for options, group in groups.items():
                    await self._run_group(options, group)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _run_group(self, options: SearchOptions, group: list[_Pending]) -> None:
        lines = [line for item in group for line in item.lines]
        began = time.perf_counter()
        try:
            translations = await self.runner.run(self._translate, lines, options, max(item.n_best for item in group))
        except Exception as error:  # isolate the request that fails
            if len(group) == 1:
                if not group[0].future.done():
                    group[0].future.set_exception(error)
                return
            for item in group:
                await self._run_group(options, [item])
            return
        compute = time.perf_counter() - began
        self.metrics.observe_batch(len(group), len(lines))
        self.metrics.observe_tokens("translation", sum(len(t.tokens) for t in translations))
        start = 0
        for item in group:
            rows = [replace(t, candidates=t.candidates[: item.n_best]) for t in translations[start : start + len(item.lines)]]
            start += len(item.lines)
            if not item.future.done():  # the client may have gone away
                item.future.set_result(BatchResult(rows, began - item.arrived, compute, len(group), len(lines)))

    def _translate(self, lines: list[str], options: SearchOptions, n_best: int) -> list[Translation]:
        return self.translator.translate(
            lines, beam_size=options.beam_size, length_penalty=options.length_penalty,
            batch_size=max(self.max_sentences, 1),
            max_len_ratio=options.max_len_ratio, max_len_offset=options.max_len_offset, n_best=n_best,
            patience=options.patience,
        )
