"""Request counters, latency percentiles and throughput, rendered in the Prometheus text format (0.0.4).

Memory stays bounded whatever the traffic: latencies are kept in a ring of the last `window` requests per
route (percentiles are over that ring), token counts over the last `rate_window_s` seconds, and labels
take route templates and status codes only, never raw paths.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque

QUANTILES = (0.5, 0.95, 0.99)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank q-quantile of `values` (0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1]


class Metrics:
    """Thread-safe counters shared by the app, the batcher and the generation streams."""

    def __init__(self, window: int = 2048, rate_window_s: float = 60.0) -> None:
        self.window, self.rate_window_s = window, rate_window_s
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.latency: dict[str, deque[float]] = {}
        self.latency_sum: Counter[str] = Counter()
        self.latency_count: Counter[str] = Counter()
        self.tokens: Counter[str] = Counter()  # generated target / LM tokens by kind
        self._recent_tokens: deque[tuple[float, int]] = deque()
        self.batches = 0
        self.batch_sentences = 0
        self.batch_requests = 0
        self.in_flight = 0

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, status)] += 1
            self.latency.setdefault(route, deque(maxlen=self.window)).append(seconds)
            self.latency_sum[route] += seconds
            self.latency_count[route] += 1

    def observe_tokens(self, kind: str, count: int) -> None:
        now = time.monotonic()
        with self._lock:
            self.tokens[kind] += count
            self._recent_tokens.append((now, count))
            self._trim(now)

    def observe_batch(self, requests: int, sentences: int) -> None:
        with self._lock:
            self.batches += 1
            self.batch_requests += requests
            self.batch_sentences += sentences

    def _trim(self, now: float) -> None:
        while self._recent_tokens and self._recent_tokens[0][0] < now - self.rate_window_s:
            self._recent_tokens.popleft()

    def tokens_per_second(self) -> float:
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            total = sum(count for _, count in self._recent_tokens)
        span = min(self.rate_window_s, max(now - self.started, 1e-9))
        return total / span

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        rate = self.tokens_per_second()
        with self._lock:
            lines = [
                "# HELP seqlab_requests_total HTTP requests by route and status code.",
                "# TYPE seqlab_requests_total counter",
            ]
            for (route, status), count in sorted(self.requests.items()):
                lines.append(f'seqlab_requests_total{{route="{route}",status="{status}"}} {count}')
            lines += ["# HELP seqlab_request_errors_total Requests answered with a 4xx or 5xx status.",
                      "# TYPE seqlab_request_errors_total counter"]
            errors: Counter[str] = Counter()
            for (route, status), count in self.requests.items():
                if status >= 400:
                    errors[route] += count
            for route, count in sorted(errors.items()):
                lines.append(f'seqlab_request_errors_total{{route="{route}"}} {count}')
            lines += [f"# HELP seqlab_request_latency_seconds Latency; quantiles over the last {self.window} requests.",
                      "# TYPE seqlab_request_latency_seconds summary"]
            for route, ring in sorted(self.latency.items()):
                values = list(ring)
                for q in QUANTILES:
                    lines.append(f'seqlab_request_latency_seconds{{route="{route}",quantile="{q}"}} {percentile(values, q):.6f}')
                lines.append(f'seqlab_request_latency_seconds_sum{{route="{route}"}} {self.latency_sum[route]:.6f}')
                lines.append(f'seqlab_request_latency_seconds_count{{route="{route}"}} {self.latency_count[route]}')
            lines += ["# HELP seqlab_generated_tokens_total Tokens produced (target tokens of translations, LM tokens).",
                      "# TYPE seqlab_generated_tokens_total counter"]
            for kind, count in sorted(self.tokens.items()):
                lines.append(f'seqlab_generated_tokens_total{{kind="{kind}"}} {count}')
            lines += [f"# HELP seqlab_tokens_per_second Tokens produced per second over the last {self.rate_window_s:g} s.",
                      "# TYPE seqlab_tokens_per_second gauge", f"seqlab_tokens_per_second {rate:.3f}",
                      "# HELP seqlab_translate_batches_total Batched searches run by the dynamic batcher.",
                      "# TYPE seqlab_translate_batches_total counter", f"seqlab_translate_batches_total {self.batches}",
                      "# HELP seqlab_translate_batch_requests_total Requests decoded in those batches.",
                      "# TYPE seqlab_translate_batch_requests_total counter",
                      f"seqlab_translate_batch_requests_total {self.batch_requests}",
                      "# HELP seqlab_translate_batch_sentences_total Sentences decoded in those batches.",
                      "# TYPE seqlab_translate_batch_sentences_total counter",
                      f"seqlab_translate_batch_sentences_total {self.batch_sentences}",
                      "# HELP seqlab_requests_in_flight Requests being handled now.",
                      "# TYPE seqlab_requests_in_flight gauge", f"seqlab_requests_in_flight {self.in_flight}",
                      "# HELP seqlab_uptime_seconds Seconds since the server started.",
                      "# TYPE seqlab_uptime_seconds gauge", f"seqlab_uptime_seconds {time.monotonic() - self.started:.1f}"]
        return "\n".join(lines) + "\n"
