"""`python -m lmworker.serve` as a real process, driven by the official OpenAI client.

One server (a tiny random model exported with export_hf_llama, bearer-token auth) serves
most tests; the drain test and the exit-code test start their own processes.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lmworker.config import EXIT_PERMANENT, TERMINATION_LOG_ENV
from lmworker.serve.cli import main as serve_main
from tests.tiny_models import TINY, export_tiny
from tests.waiting import wait_for, wait_for_async

CONTEXT = 4096  # room for the long generations that keep slots busy
TOKEN = "test-token-123"
SLOTS = 4
QUEUE = 2
MAX_NEW_TOKENS = 4000
MAX_REQUEST_BYTES = 64 * 1024
READ_TIMEOUT = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        return request(self.port, "GET", path, headers=headers)

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited:\n{self.log_tail()}")
            return self.get("/readyz")[0] == 200

        wait_for(
            ready,
            60,
            lambda: f"the server to be ready; log:\n{self.log_tail()}",
            retry_on=(OSError,),
        )

    def metrics(self) -> dict[str, float]:
        """Samples by name plus labels, e.g. 'elasticlm_serve_requests_total{code=200}'."""
        _, body = self.get("/metrics")
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
        return out

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def start_server(tmp: Path, model_dir: Path, *flags: str) -> Server:
    port = free_port()
    log = tmp / f"server-{port}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "lmworker.serve",
                "--model-dir", str(model_dir),
                "--host", "127.0.0.1",
                "--port", str(port),
                "--threads", "1",
                *flags,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )  # fmt: skip
    return Server(process, port, log)


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = dataclasses.replace(TINY, context_length=CONTEXT)
    return export_tiny(tmp_path_factory.mktemp("model") / "tiny", cfg)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("serve")
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    running = start_server(
        tmp,
        model_dir,
        "--auth-token-file", str(token_file),
        "--max-batch-size", str(SLOTS),
        "--max-queue", str(QUEUE),
        "--max-new-tokens", str(MAX_NEW_TOKENS),
        "--max-request-bytes", str(MAX_REQUEST_BYTES),
        "--read-timeout", str(READ_TIMEOUT),
        "--max-batch-delay-ms", "0",
    )  # fmt: skip
    try:
        running.wait_ready()
        yield running
    finally:
        assert running.stop() == 0, running.log_tail()
        assert TOKEN not in running.log.read_text(), "the token must never be logged"


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=TOKEN, max_retries=0, timeout=60)


AUTH = {"Authorization": f"Bearer {TOKEN}"}
LONG = {"ignore_eos": True}  # extra_body: generate exactly max_tokens


# -- the OpenAI client -----------------------------------------------------------------


def test_models(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["tiny"]
    card = client.models.retrieve("tiny")
    assert card.id == "tiny"
    assert card.owned_by == "elasticlm"


def test_completion(client: openai.OpenAI) -> None:
    answer = client.completions.create(
        model="tiny", prompt="Hello", max_tokens=6, temperature=0, extra_body=LONG
    )
    assert answer.id.startswith("cmpl-")
    assert answer.object == "text_completion"
    assert answer.model == "tiny"
    assert len(answer.choices) == 1
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (5, 6)
    again = client.completions.create(
        model="tiny", prompt="Hello", max_tokens=6, temperature=0, extra_body=LONG
    )
    assert again.choices[0].text == answer.choices[0].text


def test_chat_stream_invariants(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "Say something."}]
    whole = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=12, temperature=0, extra_body=LONG
    )
    assert whole.object == "chat.completion"
    assert whole.choices[0].message.role == "assistant"
    assert whole.choices[0].finish_reason == "length"
    stream = client.chat.completions.create(
        model="tiny",
        messages=messages,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=LONG,
    )
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].id.startswith("chatcmpl-")
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choices = [c for c in chunks if c.choices]
    finishes = [c.choices[0].finish_reason for c in with_choices]
    assert finishes[-1] == "length"
    assert all(f is None for f in finishes[:-1])
    assert all(c.usage is None for c in with_choices)
    final = chunks[-1]
    assert final.choices == []
    assert final.usage is not None
    assert whole.usage is not None
    assert final.usage.model_dump() == whole.usage.model_dump()
    assert final.usage.completion_tokens == 12
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert text == whole.choices[0].message.content


def test_completion_stream_matches_the_whole_answer(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {
        "model": "tiny", "prompt": "Once upon", "max_tokens": 20, "temperature": 0,
        "extra_body": LONG,
    }  # fmt: skip
    whole = client.completions.create(**kwargs)
    chunks = list(client.completions.create(**kwargs, stream=True))
    assert len({c.id for c in chunks}) == 1
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks)


def test_stop_strings(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {
        "model": "tiny", "prompt": "Stop", "max_tokens": 30, "temperature": 0,
        "extra_body": LONG,
    }  # fmt: skip
    full = client.completions.create(**kwargs).choices[0].text
    candidates = [
        full[i : i + 2] for i in range(3, len(full) - 2) if "\ufffd" not in full[i : i + 2]
    ]
    assert candidates, f"no usable stop string in {full!r}"
    stop = candidates[0]
    expected = full[: full.find(stop)]
    cut = client.completions.create(**kwargs, stop=[stop, "never-appears"])
    assert cut.choices[0].text == expected
    assert cut.choices[0].finish_reason == "stop"
    streamed = list(client.completions.create(**kwargs, stop=stop, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == expected
    assert streamed[-1].choices[0].finish_reason == "stop"


def test_a_seed_reproduces_a_sample(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        answer = client.completions.create(
            model="tiny", prompt="Roll", max_tokens=10, temperature=1.0, seed=seed, extra_body=LONG
        )
        return answer.choices[0].text

    assert sample(7) == sample(7)


def test_client_errors_carry_openai_error_objects(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.completions.create(model="gpt-4", prompt="x", max_tokens=1)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model="tiny", prompt="x", max_tokens=1, n=2)
    assert isinstance(bad.value.body, dict)
    assert bad.value.body["param"] == "n"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0).models.list()


# -- raw HTTP: bad input never crashes or hangs the server ---------------------------

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
JSON_AUTH = {**AUTH, "Content-Type": "application/json"}


def body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


@dataclass(frozen=True)
class Bad:
    """A request the server must refuse, and how."""

    payload: bytes | None
    status: int
    param: str | None
    words: str  # in the error message
    path: str = COMPLETIONS_PATH
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=lambda: JSON_AUTH)


BAD_REQUESTS = [
    Bad(b'{"prompt": "x",', 400, None, "not valid JSON"),
    Bad(b'{"prompt": "\xff\xfe"}', 400, None, "UTF-8"),
    Bad(b"[]", 400, None, "JSON object"),
    Bad(b"", 400, None, "empty"),
    Bad(body(prompt=""), 400, "prompt", "empty"),
    Bad(body(prompt="x", max_tokens="5"), 400, "max_tokens", "integer"),
    Bad(body(prompt="x", temperature=9), 400, "temperature", "between"),
    Bad(body(prompt="x" * (CONTEXT + 5)), 400, "prompt", "context"),
    Bad(body(prompt="x", max_tokens=MAX_NEW_TOKENS + 1), 400, "max_tokens", "limit"),
    Bad(body(prompt="x" * 200, max_tokens=CONTEXT - 100), 400, "max_tokens", "at most"),
    Bad(body(prompt=[1, 300]), 400, "prompt", "vocabulary"),
    Bad(body(prompt="x", model="nope"), 404, "model", "nope"),
    Bad(body(messages=[{"role": "user"}]), 400, "messages[0].content", "content", CHAT_PATH),
    Bad(body(messages=[]), 400, "messages", "non-empty", CHAT_PATH),
    Bad(b"{" + b" " * MAX_REQUEST_BYTES + b"}", 413, None, "bytes"),
    Bad(None, 405, None, "GET is not allowed", method="GET", headers=AUTH),
    Bad(body(), 404, None, "no such endpoint", "/v1/nope", headers=AUTH),
    Bad(body(prompt="x"), 401, None, "bearer token", headers={}),
    Bad(body(prompt="x"), 401, None, "bearer token", headers={"Authorization": "Bearer no"}),
    Bad(None, 401, None, "bearer token", "/v1/models", "GET", {"Authorization": f"Basic {TOKEN}"}),
]


@pytest.mark.parametrize(
    "bad", BAD_REQUESTS, ids=[f"{i}-{b.status}-{b.param}" for i, b in enumerate(BAD_REQUESTS)]
)
def test_bad_requests(server: Server, bad: Bad) -> None:
    status, raw = request(server.port, bad.method, bad.path, bad.payload, bad.headers)
    assert status == bad.status, raw
    error = json.loads(raw)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == bad.param
    assert bad.words in error["message"]


def test_probes_and_metrics_need_no_token(server: Server) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert server.get(path)[0] == 200
    assert server.get("/v1/models", headers=AUTH)[0] == 200
    status, _ = server.get("/v1/models")
    assert status == 401


def test_raw_stream_framing(server: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        payload = body(prompt="Hi", max_tokens=3, stream=True, ignore_eos=True)
        conn.request("POST", COMPLETIONS_PATH, body=payload, headers=JSON_AUTH)
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type", "").startswith("text/event-stream")
        events = response.read().decode().split("\n\n")
    finally:
        conn.close()
    assert events[-1] == ""
    assert events[-2] == "data: [DONE]"
    assert all(e.startswith("data: {") for e in events[:-2])


def test_slow_clients_time_out_without_holding_up_others(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as slow_body:
        slow_body.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + TOKEN.encode()
            + b'\r\nContent-Length: 100\r\n\r\n{"prompt"'
        )
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as slow_head:
            slow_head.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
            # Others are served while both connections dangle.
            assert server.get("/v1/models", headers=AUTH)[0] == 200
            answer = slow_body.recv(65536).decode()
        assert answer.startswith("HTTP/1.1 408"), answer
        assert "did not arrive" in answer


async def test_overload_gets_429_and_leaving_clients_free_their_slots(server: Server) -> None:
    """SLOTS requests run, QUEUE wait, the next gets 429; when those clients go away,
    every slot and queue place is free again."""
    before = server.metrics()
    # Seconds of generation each: far longer than the checks below, which end them.
    payload = {"prompt": "Busy", "max_tokens": MAX_NEW_TOKENS, "stream": True, "ignore_eos": True}
    async with aiohttp.ClientSession(headers=AUTH) as session:
        url = server.base_url + COMPLETIONS_PATH
        streams = [await session.post(url, json=payload) for _ in range(SLOTS + QUEUE)]
        try:
            assert [s.status for s in streams] == [200] * (SLOTS + QUEUE)

            def occupancy() -> tuple[float, float]:
                m = server.metrics()
                return m["elasticlm_serve_running"], m["elasticlm_serve_waiting"]

            await wait_for_async(
                lambda: occupancy() == (SLOTS, QUEUE), 30, "all slots and queue places taken"
            )
            async with session.post(url, json=payload) as refused:
                assert refused.status == 429
                assert refused.headers["Retry-After"] == "1"
                error = (await refused.json())["error"]
                assert error["type"] == "rate_limit_error"
        finally:
            for stream in streams:
                stream.close()  # the client goes away mid-stream
    await wait_for_async(
        lambda: (
            server.metrics()["elasticlm_serve_kv_slots_in_use"] == 0
            and server.metrics()["elasticlm_serve_waiting"] == 0
        ),
        30,
        "the slots of the departed clients to be free",
    )
    after = server.metrics()

    def count(metrics: dict[str, float], code: int) -> float:
        return metrics.get(f"elasticlm_serve_requests_total{{code={code}}}", 0.0)

    assert count(after, 429) == count(before, 429) + 1
    # Each departed client's handler was cancelled ("client closed request").
    assert count(after, 499) == count(before, 499) + SLOTS + QUEUE
    assert after["elasticlm_serve_kv_slots"] == SLOTS
    assert after["elasticlm_serve_time_to_first_token_seconds_count"] > 0
    assert after["elasticlm_serve_generated_tokens_total"] > 0


# -- lifecycle: SIGTERM drain, start-up failures ---------------------------------------


def test_sigterm_drains_requests_in_flight_then_exits_0(tmp_path: Path, model_dir: Path) -> None:
    """A request whose body is half sent is in flight for as long as the test wants: the
    server cannot exit under the checks. A streamed generation runs meanwhile."""
    drained = start_server(tmp_path, model_dir, "--drain-seconds", "60")
    try:
        drained.wait_ready()
        with socket.create_connection(("127.0.0.1", drained.port), timeout=60) as held:
            rest_of_body = body(prompt="Held", max_tokens=3)
            held.sendall(
                b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: "
                + str(len(rest_of_body) + 1).encode()
                + b"\r\n\r\n "
            )
            wait_for(
                lambda: drained.metrics()["elasticlm_serve_in_flight_requests"] == 1,
                30,
                "the half-sent request to be in flight",
            )
            conn = http.client.HTTPConnection("127.0.0.1", drained.port, timeout=60)
            payload = body(prompt="Long", max_tokens=200, stream=True, ignore_eos=True)
            conn.request("POST", COMPLETIONS_PATH, payload, {"Content-Type": "application/json"})
            response = conn.getresponse()
            first = response.readline()  # the first event: generation is under way
            assert first.startswith(b"data: {"), first

            drained.process.send_signal(signal.SIGTERM)
            wait_for(lambda: drained.get("/readyz")[0] == 503, 30, "/readyz to turn 503")
            status, raw = request(drained.port, "POST", COMPLETIONS_PATH, body(prompt="new"))
            assert status == 503
            assert json.loads(raw)["error"]["code"] == "shutting_down"

            events = (first + response.read()).decode().split("\n\n")
            conn.close()
            assert events[-2] == "data: [DONE]"
            last = json.loads(events[-3].removeprefix("data: "))
            assert last["choices"][0]["finish_reason"] == "length"
            held.sendall(rest_of_body)
            answer = held.recv(65536).decode()
        assert answer.startswith("HTTP/1.1 200"), answer
        assert drained.process.wait(60) == 0
        assert "Drained" in drained.log_tail()
    finally:
        drained.stop()


def test_a_bad_model_directory_exits_3_with_a_termination_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process: the exit code is main()'s return value (`__main__` passes it on)."""
    message = tmp_path / "termination-log"
    monkeypatch.setenv(TERMINATION_LOG_ENV, str(message))
    argv = ["--model-dir", str(tmp_path / "absent"), "--host", "127.0.0.1", "--port", "0"]
    assert serve_main(argv) == EXIT_PERMANENT
    info = json.loads(message.read_text())
    assert info["permanent"] is True
    assert "no such directory" in info["error"]
    token = tmp_path / "empty-token"
    token.write_text("")
    assert serve_main([*argv, "--auth-token-file", str(token)]) == EXIT_PERMANENT
    assert "is empty" in json.loads(message.read_text())["error"]
