"""`seqlab serve` against tiny checkpoints trained here: the API equals `seqlab translate` / `sample`, every limit
answers its 4xx, the API key, crash isolation, dynamic batching, a load test and graceful shutdown on
127.0.0.1, and the web page in headless Chromium."""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from conftest import REPO, headless_chromium, seqlab_command, subprocess_env
from seqlab.cli import main
from seqlab.config import load_config
from seqlab.data.translation_synthetic import sentence_pair
from seqlab.inference.translate import Translator
from seqlab.serve import ServeSettings, create_app, load_served_models
from seqlab.training import train

SENTENCES = ["old king sees red bird", "child sleeps and dog runs", "king runs", "red dog sees old child and bird sleeps"]
NAMES = ["anna", "emma", "ella", "ava", "mia", "noa", "lena", "nora", "eva", "lea"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A Bahdanau model on the synthetic translation task and a Transformer names LM, a few seconds each."""
    root = tmp_path_factory.mktemp("serve")
    quiet = ["train.progress=false", "train.tensorboard=false", "train.threads=1", "train.eval_every=0"]
    mt = load_config(REPO / "configs" / "tasks" / "synthetic_translation_bahdanau.yaml", [
        "task.max_len=8", "task.eval_size=32", "model.embed_size=16", "model.hidden_size=24", "model.attention_size=16",
        "model.maxout_size=8", "train.steps=40", "train.lr=0.01", "train.batch_size=32", *quiet])
    train(mt, out_dir=root / "mt")
    names = root / "names.txt"
    names.write_text("\n".join(NAMES * 20), encoding="utf-8")
    lm = load_config(REPO / "configs" / "lm" / "names_transformer.yaml", [
        f"task.path={names}", "model.d_model=16", "model.num_heads=2", "model.num_layers=1", "model.d_ff=32",
        "model.max_len=24", "train.steps=40", "train.batch_size=16", "train.warmup_steps=5", "train.time_budget_s=null",
        *quiet])
    train(lm, out_dir=root / "lm")
    return {"mt": root / "mt", "lm": root / "lm"}


@pytest.fixture(scope="module")
def served(runs: dict[str, Path]) -> dict[str, Any]:
    return load_served_models([f"mt={runs['mt']}", f"lm={runs['lm']}"])


@pytest.fixture(scope="module")
def client(served: dict[str, Any]) -> Iterator[TestClient]:
    with TestClient(create_app(served)) as test_client:
        yield test_client


def cli_output(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, stdin: str = "") -> str:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert main(args) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(("beam", "patience"), [(1, None), (3, None), (3, 1.0)])
def test_translate_equals_seqlab_translate(client: TestClient, runs: dict[str, Path], beam: int, patience: float | None,
                                           capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    stop = [] if patience is None else ["--patience", str(patience)]
    expected = cli_output(["translate", str(runs["mt"]), "--beam", str(beam), *stop], capsys, monkeypatch,
                          "\n".join(SENTENCES) + "\n").split("\n")[:-1]
    options = {"beam": beam} if patience is None else {"beam": beam, "patience": patience}
    response = client.post("/v1/translate", json={"model": "mt", "texts": SENTENCES, **options})
    assert response.status_code == 200
    assert [t["text"] for t in response.json()["translations"]] == expected
    alone = [client.post("/v1/translate", json={"text": s, **options}).json()["translations"][0]["text"] for s in SENTENCES]
    assert alone == expected


def test_beam_candidates_come_back_best_first(client: TestClient, served: dict[str, Any]) -> None:
    response = client.post("/v1/translate", json={"texts": ["", *SENTENCES], "beam": 4, "n_best": 3})
    assert response.status_code == 200, response.text
    items = response.json()["translations"]
    direct = served["mt"].translator.translate(["", *SENTENCES], beam_size=4, n_best=3)
    assert [[(c["text"], pytest.approx(c["score"], abs=1e-4)) for c in item["candidates"]] for item in items] == \
        [t.candidates for t in direct]
    assert items[0]["candidates"] == [{"text": "", "score": 0.0}]
    for item in items[1:]:
        assert 1 < len(item["candidates"]) <= 3 and len({c["text"] for c in item["candidates"]}) == len(item["candidates"])
        assert item["candidates"][0] == {"text": item["text"], "score": item["score"]}
    one = client.post("/v1/translate", json={"text": SENTENCES[0], "beam": 4}).json()["translations"][0]
    assert one["candidates"] == [{"text": one["text"], "score": one["score"]}]
    refused = client.post("/v1/translate", json={"text": SENTENCES[0], "beam": 2, "n_best": 3})
    assert refused.status_code == 422 and refused.json()["error"]["limit"] == "beam"
    assert "n_best ≤ beam" in refused.json()["error"]["message"]


def test_requests_wanting_different_numbers_of_candidates_share_a_search(served: dict[str, Any]) -> None:
    wanted = [1, 3, 2, 3, 1, 2]
    texts = SENTENCES + SENTENCES[:2]
    with TestClient(create_app(served, ServeSettings(batch_wait_ms=300.0))) as batched, ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda job: batched.post("/v1/translate", json={
            "text": job[0], "beam": 3, "n_best": job[1]}).json(), zip(texts, wanted)))
    alone = served["mt"].translator.translate(texts, beam_size=3, n_best=3)
    for answer, n, expected in zip(answers, wanted, alone):
        got = [c["text"] for c in answer["translations"][0]["candidates"]]
        assert got == [text for text, _ in expected.candidates[:n]]
    assert max(a["timings"]["batch_requests"] for a in answers) > 1


def test_attention_has_one_row_per_target_token(client: TestClient) -> None:
    item = client.post("/v1/translate", json={"text": SENTENCES[0], "return_attention": True}).json()["translations"][0]
    assert len(item["attention"]) == len(item["tokens"]) and item["tokens"][-1] == "<eos>"
    assert all(len(row) == len(item["source_tokens"]) and abs(sum(row) - 1) < 1e-3 for row in item["attention"])
    assert client.post("/v1/translate", json={"text": SENTENCES[0]}).json()["translations"][0]["attention"] is None
    empty = client.post("/v1/translate", json={"texts": ["", SENTENCES[1]]}).json()["translations"]
    assert empty[0]["text"] == "" and empty[0]["tokens"] == [] and empty[1]["text"]


@pytest.mark.parametrize("options", [
    {"seed": 3, "temperature": 1.0},
    {"seed": 7, "temperature": 0.8, "top_k": 4, "prompt": "e"},
    {"seed": 1, "temperature": 1.2, "top_p": 0.9, "prompt": "l", "max_tokens": 3},
])
def test_generate_equals_seqlab_sample_and_streams_the_same_tokens(
    client: TestClient, runs: dict[str, Path], options: dict[str, Any],
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = ["sample", str(runs["lm"]), "--num", "1", "--seed", str(options["seed"]), "--temperature", str(options["temperature"]),
            "--max-len", str(options.get("max_tokens", 20))]
    for key in ("top_k", "top_p", "prompt"):
        if key in options:
            args += [f"--{key.replace('_', '-')}", str(options[key])]
    expected = cli_output(args, capsys, monkeypatch).rstrip("\n")
    body = {"model": "lm", "max_tokens": 20, **options}
    result = client.post("/v1/generate", json=body).json()
    assert result["text"] == expected and result["text"] == result["prompt"] + result["completion"]
    stream = client.post("/v1/generate", json={**body, "stream": True})
    assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
    events = [(block.split("\n")[0][len("event: "):], json.loads(block.split("\n")[1][len("data: "):]))
              for block in stream.text.strip().split("\n\n")]
    assert [name for name, _ in events] == ["token"] * len(result["tokens"]) + ["done"]
    assert [data["token"] for _, data in events[:-1]] == result["tokens"]
    assert "".join(data["text"] for _, data in events[:-1]) == result["completion"]
    assert events[-1][1]["text"] == expected


def test_models_healthz_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "models": ["lm", "mt"]}
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert models["mt"]["kind"] == "translation" and models["mt"]["architecture"] == "bahdanau"
    assert models["mt"]["max_src_len"] == 8 and models["mt"]["vocab"]["source"] > 10 and models["mt"]["parameters"] > 1000
    assert models["lm"]["kind"] == "language_model" and models["lm"]["vocab"] == {"tokens": 4 + len(set("".join(NAMES)))}
    assert models["lm"]["max_context"] == 24 and "loss" in models["lm"]["metrics"]["val"]
    before = client.get("/metrics").text
    client.post("/v1/translate", json={"text": SENTENCES[0]})
    client.post("/v1/translate", json={"text": "x" * 3, "beam": 99})
    text = client.get("/metrics").text

    def value(metrics: str, line_start: str) -> float:
        found = [line.split()[-1] for line in metrics.splitlines() if line.startswith(line_start)]
        return float(found[0]) if found else 0.0

    ok, refused = 'seqlab_requests_total{route="/v1/translate",status="200"}', 'seqlab_requests_total{route="/v1/translate",status="422"}'
    assert value(text, ok) == value(before, ok) + 1 and value(text, refused) == value(before, refused) + 1
    assert 'seqlab_request_latency_seconds{route="/v1/translate",quantile="0.95"}' in text
    assert value(text, 'seqlab_generated_tokens_total{kind="translation"}') > 0
    assert "# TYPE seqlab_request_latency_seconds summary" in text and "seqlab_tokens_per_second" in text


def test_page_and_openapi_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and 'id="heatmap"' in page.text
    assert 'src="http' not in page.text and 'href="http' not in page.text  # nothing fetched from elsewhere: works offline
    schema = client.get("/openapi.json").json()
    assert {"/v1/translate", "/v1/generate", "/v1/models"} <= set(schema["paths"])
    assert "TranslateRequest" in schema["components"]["schemas"]


LIMITS = [
    ("/v1/translate", {"texts": ["king"] * 33}, 422, "max_texts"),
    ("/v1/translate", {"text": " ".join(["king"] * 9)}, 422, "max_src_len"),
    ("/v1/translate", {"text": "king", "beam": 9}, 422, "max_beam"),
    ("/v1/translate", {"text": "king", "max_len": 257}, 422, "max_target_len"),
    ("/v1/generate", {"max_tokens": 513}, 422, "max_tokens"),
    ("/v1/generate", {"max_tokens": 30}, 422, "max_context"),
]


@pytest.mark.parametrize("path,body,status,limit", LIMITS)
def test_each_limit_answers_a_4xx_naming_it(client: TestClient, path: str, body: dict, status: int, limit: str) -> None:
    response = client.post(path, json=body)
    assert response.status_code == status and response.json()["error"]["limit"] == limit
    assert limit in response.json()["error"]["message"]


@pytest.mark.parametrize("path,content,status,code", [
    ("/v1/translate", b"x" * 70_000, 413, "body_too_large"),
    ("/v1/translate", b'{"text": "king", ', 400, "malformed_json"),
    ("/v1/translate", b'{"text": "k\xe9nig"}', 400, "not_utf8"),
    ("/v1/translate", b'{"text": 42}', 422, "invalid_request"),
    ("/v1/translate", b'{"text": "king", "beam": "3"}', 422, "invalid_request"),
    ("/v1/translate", b'{"text": "king", "texts": ["king"]}', 422, "invalid_request"),
    ("/v1/translate", b'{"text": "king", "model": "nope"}', 404, "unknown_model"),
    ("/v1/generate", b'{"model": "mt"}', 422, "wrong_model_kind"),
    ("/v1/generate", b'{"prompt": "xyz"}', 422, "invalid_prompt"),
    ("/v1/generate", b'{"top_p": 1.5}', 422, "invalid_request"),
])
def test_bad_input_answers_a_clear_json_error(client: TestClient, path: str, content: bytes, status: int, code: str) -> None:
    response = client.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]


def test_a_request_never_loads_a_path(client: TestClient, runs: dict[str, Path]) -> None:
    for name in (str(runs["mt"]), str(runs["mt"] / "checkpoints" / "best"), "../mt"):
        response = client.post("/v1/translate", json={"text": "king", "model": name})
        assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_model"


def test_serve_command_errors_are_one_line(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", str(tmp_path / "nowhere")]) == 2
    assert "no checkpoint found" in capsys.readouterr().err
    assert main(["serve", str(runs["mt"]), f"mt={runs['lm']}"]) == 2
    assert "two models are named 'mt'" in capsys.readouterr().err
    assert main(["serve", str(runs["mt"]), "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err


def test_api_key_is_required_except_on_healthz(served: dict[str, Any]) -> None:
    with TestClient(create_app(served, ServeSettings(api_key="s3cret"))) as keyed:
        assert keyed.get("/healthz").status_code == 200
        for path in ("/", "/v1/models", "/metrics"):
            assert keyed.get(path).json()["error"]["code"] == "missing_api_key"
        assert keyed.post("/v1/translate", json={"text": "king"}).status_code == 401
        assert keyed.get("/v1/models", headers={"X-API-Key": "wrong"}).json()["error"]["code"] == "invalid_api_key"
        assert keyed.get("/v1/models", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert keyed.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert keyed.get("/?key=s3cret").status_code == 200
        assert keyed.post("/v1/translate", json={"text": "king"}, headers={"X-API-Key": "s3cret"}).status_code == 200


def test_concurrent_requests_share_a_batch_and_each_gets_its_own_rows(served: dict[str, Any]) -> None:
    settings = ServeSettings(batch_wait_ms=300.0)
    rng = random.Random(0)
    texts = [" ".join(sentence_pair(rng, rng.randint(3, 8))[0]) for _ in range(12)]
    alone = [t.text for t in served["mt"].translator.translate(texts)]
    with TestClient(create_app(served, settings)) as batched, ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda text: batched.post("/v1/translate", json={"text": text}).json(), texts))
    assert [a["translations"][0]["source"] for a in answers] == texts
    assert [a["translations"][0]["text"] for a in answers] == alone
    assert max(a["timings"]["batch_requests"] for a in answers) > 1


def test_a_crash_in_one_request_leaves_the_others_and_the_server_running(
    served: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
) -> None:
    translator = served["mt"].translator
    original = Translator.translate

    def fragile(self: Translator, lines: list[str], **options: Any) -> Any:
        if any("red bird" in line for line in lines):
            raise RuntimeError("a bug in the model")
        return original(self, lines, **options)

    monkeypatch.setattr(translator, "translate", fragile.__get__(translator))
    with TestClient(create_app(served, ServeSettings(batch_wait_ms=300.0)), raise_server_exceptions=False) as app:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda text: app.post("/v1/translate", json={"text": text}), SENTENCES))
        assert [a.status_code for a in answers] == [500, 200, 200, 200]
        assert answers[0].json()["error"]["code"] == "internal_error"
        assert app.get("/healthz").status_code == 200
        assert app.post("/v1/translate", json={"text": "king runs"}).status_code == 200


# --- a real server on 127.0.0.1 ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def resident_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@contextmanager
def server_process(runs: dict[str, Path], *extra: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """`seqlab serve` of both runs in a child process on a free port of 127.0.0.1; its output in server.log."""
    port = free_port()
    log = runs["mt"].parent / "server.log"
    with open(log, "w", encoding="utf-8") as output:
        process = subprocess.Popen(seqlab_command("serve", f"mt={runs['mt']}", f"lm={runs['lm']}", "--port", str(port),
                                                  "--log-level", "warning", *extra),
                                   env=subprocess_env(), stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log.read_text(encoding="utf-8")
            assert time.monotonic() < deadline, "the server did not start within 60 s"
            time.sleep(0.1)
        yield process, url
    except BaseException:
        print(f"--- the server's output ({log}):\n{log.read_text(encoding='utf-8')[-4000:]}")
        raise
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


async def _load(url: str, texts: list[str], clients: int, until: float) -> list[tuple[str, int, str]]:
    """`texts` sent by `clients` concurrent clients, none sent after the monotonic time `until`;
    (sent text, status, "source<TAB>translation" of the answer) each."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for text in texts:
        queue.put_nowait(text)
    answers: list[tuple[str, int, str]] = []

    async def worker(http: httpx.AsyncClient) -> None:
        while not queue.empty() and time.monotonic() < until:
            text = queue.get_nowait()
            response = await http.post("/v1/translate", json={"text": text})
            item = response.json()["translations"][0] if response.status_code == 200 else {"source": "", "text": ""}
            answers.append((text, response.status_code, item["source"] + "\t" + item["text"]))

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        await asyncio.gather(*(worker(http) for _ in range(clients)))
    return answers


def _finishes_in_flight_request_on_sigterm(process: subprocess.Popen, url: str) -> None:
    """Send a request's headers and half its body, SIGTERM the server, send the rest: it must still answer."""
    body = json.dumps({"text": SENTENCES[0]}).encode()
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        raw.sendall(b"POST /v1/translate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:5])
        time.sleep(0.3)  # the request is in flight: headers read, body still coming
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert process.poll() is None, "the server stopped with a request in flight"
        raw.sendall(body[5:])
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = raw.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["translations"][0]["source"] == SENTENCES[0]
    assert process.wait(30) == 0


def _load_test(runs: dict[str, Path], served: dict[str, Any], requests: int, seconds: float) -> None:
    """Up to `requests` translate requests in at most `seconds` from 32 concurrent clients on 127.0.0.1, then
    SIGTERM with one in flight."""
    rng = random.Random(1)
    pool = sorted({" ".join(sentence_pair(rng, rng.randint(3, 8))[0]) for _ in range(64)})
    expected = {text: t.text for text, t in zip(pool, served["mt"].translator.translate(pool))}
    texts = [pool[i % len(pool)] for i in range(requests)]
    with server_process(runs) as (process, url):
        began = time.monotonic()
        first = asyncio.run(_load(url, texts[: requests // 2], 32, began + seconds / 2))
        middle = resident_kib(process.pid)
        second = asyncio.run(_load(url, texts[requests // 2 :], 32, began + seconds))
        after = resident_kib(process.pid)
        _finishes_in_flight_request_on_sigterm(process, url)
    answers = first + second
    assert len(answers) >= min(requests, 256), f"only {len(answers)} requests answered in {seconds} s"
    assert all(status == 200 for _, status, _ in answers)
    assert all(got == f"{text}\t{expected[text]}" for text, _, got in answers)  # nobody got another's answer
    assert after - middle < 30 * 1024, f"resident memory grew {after - middle} KiB over the second half"


def test_load_on_loopback_then_sigterm_finishes_the_request_in_flight(runs: dict[str, Path], served: dict[str, Any]) -> None:
    _load_test(runs, served, requests=128, seconds=60)


@pytest.mark.slow
def test_load_2000_requests_from_32_clients(runs: dict[str, Path], served: dict[str, Any]) -> None:
    _load_test(runs, served, requests=2000, seconds=60)


@contextmanager
def server_thread(app: Any) -> Iterator[str]:
    """uvicorn serving `app` on 127.0.0.1 in a thread of this process."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def slow_steps(model: Any, monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Make every decoding step of `model` take at least `seconds` (to watch tokens arrive one by one)."""
    step = model.step

    def slow(*args: Any) -> Any:
        time.sleep(seconds)
        return step(*args)

    monkeypatch.setattr(model, "step", slow)


def test_streamed_tokens_arrive_as_they_are_produced(served: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    slow_steps(served["lm"].lm.model, monkeypatch, 0.05)
    body = {"model": "lm", "prompt": "e", "max_tokens": 6, "temperature": 0, "stream": True}
    with server_thread(create_app(served)) as url:
        arrivals = []
        began = time.monotonic()
        with httpx.stream("POST", f"{url}/v1/generate", json=body, timeout=30) as response:
            for line in response.iter_lines():
                if line.startswith("event: "):
                    arrivals.append((line[len("event: "):], time.monotonic() - began))
    tokens = [t for name, t in arrivals if name == "token"]
    assert arrivals[-1][0] == "done" and len(tokens) >= 2
    assert tokens[-1] - tokens[0] >= 0.04 * (len(tokens) - 1), arrivals  # spread out: one event per step


# --- the page in headless Chromium --------------------------------------------------------------------


def candidate_rows(driver: Any) -> list[list[str]]:
    """The page's table of beam candidates, cell by cell."""
    return [[td.text for td in row.find_elements("tag name", "td")]
            for row in driver.find_elements("css selector", "#candidates tr.candidate")]


def table_of(translation: dict[str, Any]) -> list[list[str]]:
    """The rows that table should show for an API translation: rank, text, log-probability."""
    return [[str(rank), c["text"], f"{c['score']:.3f}"] for rank, c in enumerate(translation["candidates"], start=1)]


@pytest.mark.browser
def test_page_translates_draws_the_heatmap_and_streams(served: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver = headless_chromium()
    slow_steps(served["lm"].lm.model, monkeypatch, 0.05)
    try:
        with server_thread(create_app(served)) as url:
            expected = httpx.post(f"{url}/v1/translate", json={"text": SENTENCES[0], "beam": 4, "n_best": 4}
                                  ).json()["translations"][0]
            driver.get(url + "/")
            wait = WebDriverWait(driver, 20)
            wait.until(lambda d: len(Select(d.find_element("id", "model")).options) == 2)
            Select(driver.find_element("id", "model")).select_by_value("mt")
            driver.find_element("id", "source").send_keys(SENTENCES[0])
            driver.find_element("id", "translate").click()
            wait.until(lambda d: d.find_element("id", "translation").text)
            assert driver.find_element("id", "translation").text == expected["text"]
            rows = driver.find_elements("css selector", "#heatmap g.heat-row")
            assert [r.get_attribute("data-token") for r in rows] == expected["tokens"]
            cells = driver.find_elements("css selector", "#heatmap g.heat-row:first-of-type rect")
            assert len(cells) == len(expected["source_tokens"])
            assert candidate_rows(driver) == table_of(expected) and len(expected["candidates"]) > 1

            patient = httpx.post(f"{url}/v1/translate", json={"text": SENTENCES[0], "beam": 4, "n_best": 4,
                                                               "patience": 1}).json()["translations"][0]
            driver.execute_script("""
                window.sent = []; const send = window.fetch;
                window.fetch = (path, options) => { if (options && options.body) window.sent.push(JSON.parse(options.body));
                                                    return send(path, options); };""")
            driver.find_element("id", "patience").send_keys("1")
            driver.find_element("id", "translate").click()
            wait.until(lambda d: d.execute_script("return window.sent.length") == 1)
            assert driver.execute_script("return window.sent[0]")["patience"] == 1
            rerendered = WebDriverWait(driver, 20, ignored_exceptions=[StaleElementReferenceException])  # table redrawn
            rerendered.until(lambda d: candidate_rows(d) == table_of(patient))
            folder = Path(os.environ.get("SEQLAB_TEST_ARTIFACTS", tmp_path))
            folder.mkdir(parents=True, exist_ok=True)
            assert driver.save_screenshot(str(folder / "serve_translate.png"))

            Select(driver.find_element("id", "model")).select_by_value("lm")
            driver.execute_script("""
                window.tokenTimes = [];
                new MutationObserver(() => window.tokenTimes.push(
                    [performance.now(), document.querySelectorAll('#generation .token').length]
                )).observe(document.getElementById('generation'), {childList: true});""")
            driver.find_element("id", "prompt").send_keys("e")
            driver.find_element("id", "temperature").clear()
            driver.find_element("id", "temperature").send_keys("0")
            driver.find_element("id", "max-tokens").clear()
            driver.find_element("id", "max-tokens").send_keys("6")
            driver.find_element("id", "generate").click()
            wait.until(lambda d: "tokens/s" in d.find_element("id", "generate-status").text)
            times = [t for t, count in driver.execute_script("return window.tokenTimes") if count > 0]
            spans = driver.find_elements("css selector", "#generation .token")
            assert len(spans) >= 2 and times[-1] - times[0] >= 40 * (len(spans) - 1)  # ms: one token per step
            errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            assert errors == []
            assert driver.save_screenshot(str(folder / "serve_generate.png"))
    finally:
        driver.quit()
