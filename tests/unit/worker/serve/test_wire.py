"""Response bodies and SSE chunks in OpenAI's format."""

from __future__ import annotations

import json

from lmworker.serve.wire import SSE_DONE, Reply, model_card, models_list, sse, usage


def test_completion_body() -> None:
    reply = Reply("completions", "tiny", id="cmpl-1", created=5)
    body = reply.body("hi", "length", usage(3, 2))
    assert body == {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 5,
        "model": "tiny",
        "choices": [{"index": 0, "text": "hi", "logprobs": None, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def test_chat_body() -> None:
    body = Reply("chat", "tiny", id="c", created=1).body("yo", "stop", usage(1, 1))
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "yo"}
    assert body["choices"][0]["finish_reason"] == "stop"


def test_chat_chunks() -> None:
    reply = Reply("chat", "tiny")
    first = reply.chunk("", role=True, include_usage=True)
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert first["usage"] is None
    middle = reply.chunk("abc")
    assert middle["choices"][0]["delta"] == {"content": "abc"}
    assert "usage" not in middle
    last = reply.chunk(None, "length")
    assert last["choices"][0]["delta"] == {}
    assert last["choices"][0]["finish_reason"] == "length"
    assert {first["id"], middle["id"], last["id"]} == {reply.id}
    assert reply.id.startswith("chatcmpl-")


def test_completion_chunks_and_usage_chunk() -> None:
    reply = Reply("completions", "tiny")
    assert reply.id.startswith("cmpl-")
    assert reply.chunk(None, "stop")["choices"][0]["text"] == ""
    final = reply.usage_chunk(usage(2, 3))
    assert final["choices"] == []
    assert final["usage"]["total_tokens"] == 5


def test_sse_framing() -> None:
    event = sse({"a": "é"})
    assert event.startswith(b"data: ")
    assert event.endswith(b"\n\n")
    assert json.loads(event[len(b"data: ") :]) == {"a": "é"}
    assert SSE_DONE == b"data: [DONE]\n\n"


def test_models() -> None:
    assert models_list("tiny", 7) == {
        "object": "list",
        "data": [{"id": "tiny", "object": "model", "created": 7, "owned_by": "elasticlm"}],
    }
    assert model_card("tiny", 7)["id"] == "tiny"
