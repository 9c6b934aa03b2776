"""What dynamic batching buys `seqlab serve`: requests/s and p50/p95 latency of /v1/translate at 1, 8 and 32
concurrent clients, batched against one-at-a-time, printed as ratios from one run.

The same checkpoint is served by two real `seqlab serve` processes on 127.0.0.1 (loopback only): one with
dynamic batching (the default: requests gathered for `--batch-wait-ms` into one batched search), one with
`--no-batching` (every request decoded alone). Each request translates one sentence; the clients are
asyncio tasks of this process, each sending its next request as soon as the previous one is answered. Every
level is bounded by `--requests` and `--max-seconds` and runs in `--rounds` rounds alternating between the
two servers, so that on a shared machine both meet the same load. Both must translate every sentence alike.

    python benchmarks/serve.py runs/multi30k/transformer_reference --threads 1
    python benchmarks/serve.py runs/synthetic_bahdanau --requests 128 --clients 1 8 32
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from seqlab.data.translation_synthetic import sentence_pair
from seqlab.errors import UserError, report_user_errors
from seqlab.serve.metrics import percentile
from seqlab.training.checkpoint import resolve_checkpoint

REPO = Path(__file__).resolve().parents[1]
MULTI30K_TEST = REPO.parent / "shared" / "data" / "multi30k" / "tok" / "test_2016_flickr.lc.norm.tok.de"


@dataclass
class Level:
    clients: int
    requests: int
    seconds: float
    latencies: list[float]
    translations: dict[str, str]

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    def p(self, q: float) -> float:
        return 1000 * percentile(self.latencies, q)


def source_sentences(run: str, count: int, path: Path | None) -> list[str]:
    """`--input` lines, else Multi30k test sources for a translation-task run, else synthetic sentences."""
    task = resolve_checkpoint(run).meta["config"]["task"]
    if path is None and task["name"] == "translation" and MULTI30K_TEST.is_file():
        path = MULTI30K_TEST
    if path is not None:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return lines[:count]
    rng = random.Random(0)  # sentences of the lengths the synthetic task trained on
    lengths = (int(task.get("min_len", 3)), int(task.get("max_len", 12)))
    return [" ".join(sentence_pair(rng, rng.randint(*lengths))[0]) for _ in range(count)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(run: str, port: int, threads: int, extra: list[str]) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO / "src"))
    command = [sys.executable, "-m", "seqlab.cli", "serve", f"bench={run}", "--host", "127.0.0.1", "--port", str(port),
               "--threads", str(threads), "--log-level", "warning", *extra]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise UserError(f"seqlab serve stopped: {process.stderr.read() if process.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise UserError("seqlab serve did not start within 120 s")


async def run_level(url: str, sentences: list[str], clients: int, requests: int, max_seconds: float, beam: int) -> Level:
    """`requests` one-sentence requests (cycling through `sentences`) from `clients` concurrent clients."""
    next_index = 0
    latencies: list[float] = []
    translations: dict[str, str] = {}
    began = time.perf_counter()

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < requests and time.perf_counter() - began < max_seconds:
            text = sentences[next_index % len(sentences)]
            next_index += 1
            sent = time.perf_counter()
            response = await http.post("/v1/translate", json={"text": text, "beam": beam})
            latencies.append(time.perf_counter() - sent)
            if response.status_code != 200:
                raise UserError(f"request failed with {response.status_code}: {response.text[:200]}")
            translations[text] = response.json()["translations"][0]["text"]

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return Level(clients, len(latencies), time.perf_counter() - began, latencies, translations)


def serve_both(run: str, args: argparse.Namespace) -> dict[str, tuple[subprocess.Popen, str]]:
    """Two servers of the same checkpoint: dynamic batching, and one request at a time."""
    servers = {}
    for mode, extra in (("batched", ["--batch-wait-ms", str(args.batch_wait_ms)]), ("one-at-a-time", ["--no-batching"])):
        port = free_port()
        servers[mode] = (start_server(run, port, args.threads, extra), f"http://127.0.0.1:{port}")
    return servers


def measure(servers: dict[str, tuple[subprocess.Popen, str]], sentences: list[str], args: argparse.Namespace) -> dict[tuple[str, int], Level]:
    """Every (mode, clients) level in `args.rounds` alternating rounds, so that both modes meet the same
    machine load; each level's requests and seconds are split over its rounds and pooled."""
    for _, url in servers.values():
        asyncio.run(run_level(url, sentences, 1, 4, args.max_seconds, args.beam))  # warm-up
    pooled: dict[tuple[str, int], Level] = {}
    per_round = max(1, args.requests // args.rounds)
    for clients in args.clients:
        for _ in range(args.rounds):
            for mode, (_, url) in servers.items():
                level = asyncio.run(run_level(url, sentences, clients, per_round, args.max_seconds / args.rounds, args.beam))
                if (mode, clients) in pooled:
                    total = pooled[(mode, clients)]
                    level = Level(clients, total.requests + level.requests, total.seconds + level.seconds,
                                  total.latencies + level.latencies, {**total.translations, **level.translations})
                pooled[(mode, clients)] = level
        for mode in servers:
            level = pooled[(mode, clients)]
            print(f"  {mode:>13} {clients:3d} clients: {level.requests:4d} requests in {level.seconds:6.1f} s, "
                  f"{level.per_second:7.1f} req/s, p50 {level.p(0.5):7.1f} ms, p95 {level.p(0.95):7.1f} ms", flush=True)
    return pooled


def stop(servers: dict[str, tuple[subprocess.Popen, str]]) -> None:
    for process, _ in servers.values():
        process.send_signal(signal.SIGTERM)
    for process, _ in servers.values():
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a translation run or checkpoint directory")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32], help="concurrency levels (default 1 8 32)")
    parser.add_argument("--requests", type=int, default=256, help="most requests per level (default 256)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="most seconds per level (default 60)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per level, pooled (default 2)")
    parser.add_argument("--beam", type=int, default=1, help="beam size of every request (default 1: greedy)")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="the batched server's gathering window")
    parser.add_argument("--input", type=Path, help="source sentences, one per line (default: Multi30k test / synthetic)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server (default 1)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if min(args.clients) < 1 or args.requests < 1 or args.rounds < 1:
        raise UserError("--clients, --requests and --rounds must be at least 1.")
    sentences = source_sentences(args.run, max(args.requests, 1), args.input)
    print(f"run {args.run}; {len(sentences)} distinct sentences; beam {args.beam}; server threads {args.threads}; "
          f"at most {args.requests} requests / {args.max_seconds:g} s per level in {args.rounds} alternating rounds",
          flush=True)
    servers = serve_both(args.run, args)
    try:
        levels = measure(servers, sentences, args)
    finally:
        stop(servers)
    print("ratios, batched / one-at-a-time (req/s: higher is better; latency: lower is better):")
    for clients in args.clients:
        b, a = levels[("batched", clients)], levels[("one-at-a-time", clients)]
        shared = b.translations.keys() & a.translations.keys()
        differ = sum(b.translations[t] != a.translations[t] for t in shared)
        print(f"  {clients:3d} clients: req/s ×{b.per_second / a.per_second:5.2f}, p50 ×{b.p(0.5) / a.p(0.5):5.2f}, "
              f"p95 ×{b.p(0.95) / a.p(0.95):5.2f}; {differ} of {len(shared)} sentences translated differently")
    print("reproduce: python " + shlex.join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]))
    return 0


if __name__ == "__main__":
    raise SystemExit(report_user_errors("serve benchmark", main))
