"""Request validation: every bad request is a 4xx naming the field and the problem."""

from __future__ import annotations

from typing import Any

import pytest

from lmworker.serve.protocol import (
    ApiError,
    ChatMessage,
    check_model,
    check_token_ids,
    parse_json,
    parse_request,
    plan_max_tokens,
)

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {"model": "m", "prompt": "hi"}


def error_of(endpoint: str, body: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_request(endpoint, body)  # type: ignore[arg-type]
    return caught.value


def test_a_full_completion_request() -> None:
    req = parse_request(
        "completions",
        {
            **COMPLETION,
            "max_tokens": 7,
            "temperature": 0,
            "top_p": 0.5,
            "top_k": 3,
            "seed": -1,
            "stop": "\n",
            "stream": True,
            "stream_options": {"include_usage": True},
            "n": 1,
            "user": "ignored",
            "presence_penalty": 0.0,
        },
    )
    assert (req.prompt, req.max_tokens, req.temperature, req.top_p, req.top_k) == (
        "hi",
        7,
        0.0,
        0.5,
        3,
    )
    assert req.stop == ("\n",)
    assert req.stream
    assert req.include_usage
    assert req.seed == (-1) % 2**63


def test_defaults() -> None:
    req = parse_request("chat", {"messages": CHAT["messages"]})
    assert req.model is None
    assert req.max_tokens is None
    assert req.temperature == 1.0
    assert req.top_p == 1.0
    assert req.top_k == 0
    assert req.stop == ()
    assert not req.stream
    assert req.messages == (ChatMessage("user", "hi"),)


def test_prompt_forms() -> None:
    assert parse_request("completions", {"prompt": ["one"]}).prompt == "one"
    assert parse_request("completions", {"prompt": [1, 2, 3]}).prompt == (1, 2, 3)
    assert parse_request("completions", {"prompt": [[4, 5]]}).prompt == (4, 5)


def test_chat_content_parts_and_max_completion_tokens() -> None:
    req = parse_request(
        "chat",
        {
            "messages": [
                {
                    "role": "system",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                },
                {"role": "assistant", "content": None},
            ],
            "max_tokens": 3,
            "max_completion_tokens": 5,
        },
    )
    assert req.messages == (ChatMessage("system", "ab"), ChatMessage("assistant", ""))
    assert req.max_tokens == 5


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("completions", {}, "prompt"),
    ("completions", {"prompt": ""}, "prompt"),
    ("completions", {"prompt": []}, "prompt"),
    ("completions", {"prompt": 5}, "prompt"),
    ("completions", {"prompt": ["a", "b"]}, "prompt"),
    ("completions", {"prompt": [1, "a"]}, "prompt"),
    ("completions", {**COMPLETION, "max_tokens": 0}, "max_tokens"),
    ("completions", {**COMPLETION, "max_tokens": "5"}, "max_tokens"),
    ("completions", {**COMPLETION, "max_tokens": 2.5}, "max_tokens"),
    ("completions", {**COMPLETION, "max_tokens": True}, "max_tokens"),
    ("completions", {**COMPLETION, "temperature": 3}, "temperature"),
    ("completions", {**COMPLETION, "temperature": "hot"}, "temperature"),
    ("completions", {**COMPLETION, "temperature": False}, "temperature"),
    ("completions", {**COMPLETION, "top_p": 0}, "top_p"),
    ("completions", {**COMPLETION, "top_p": 1.5}, "top_p"),
    ("completions", {**COMPLETION, "top_k": -2}, "top_k"),
    ("completions", {**COMPLETION, "seed": 1.5}, "seed"),
    ("completions", {**COMPLETION, "n": 2}, "n"),
    ("completions", {**COMPLETION, "stop": ""}, "stop"),
    ("completions", {**COMPLETION, "stop": [1]}, "stop"),
    ("completions", {**COMPLETION, "stop": ["x"] * 17}, "stop"),
    ("completions", {**COMPLETION, "stream": "yes"}, "stream"),
    ("completions", {**COMPLETION, "stream_options": {"include_usage": True}}, "stream_options"),
    ("completions", {**COMPLETION, "stream": True, "stream_options": []}, "stream_options"),
    (
        "completions",
        {**COMPLETION, "stream": True, "stream_options": {"include_usage": 1}},
        "stream_options.include_usage",
    ),
    ("completions", {**COMPLETION, "model": 3}, "model"),
    ("completions", {**COMPLETION, "logprobs": 2}, "logprobs"),
    ("completions", {**COMPLETION, "echo": True}, "echo"),
    ("completions", {**COMPLETION, "echo": 0}, "echo"),
    ("completions", {**COMPLETION, "best_of": 3}, "best_of"),
    ("completions", {**COMPLETION, "suffix": "x"}, "suffix"),
    ("completions", {**COMPLETION, "ignore_eos": "no"}, "ignore_eos"),
    ("chat", {**CHAT, "frequency_penalty": 0.5}, "frequency_penalty"),
    ("chat", {**CHAT, "logit_bias": {"1": 5}}, "logit_bias"),
    ("chat", {**CHAT, "tools": [{"type": "function"}]}, "tools"),
    ("chat", {**CHAT, "response_format": {"type": "json_object"}}, "response_format"),
    ("chat", {"messages": []}, "messages"),
    ("chat", {"messages": "hi"}, "messages"),
    ("chat", {"messages": ["hi"]}, "messages[0]"),
    ("chat", {"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ("chat", {"messages": [{"role": "user"}]}, "messages[0].content"),
    ("chat", {"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    (
        "chat",
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        "messages[0].content[0]",
    ),
    (
        "chat",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
        "messages[0].content[0].text",
    ),
    ("chat", {**CHAT, "max_completion_tokens": -1}, "max_completion_tokens"),
]


@pytest.mark.parametrize(("endpoint", "body", "param"), BAD)
def test_bad_requests_name_the_field(endpoint: str, body: dict[str, Any], param: str) -> None:
    err = error_of(endpoint, body)
    assert err.status == 400
    assert err.param == param
    assert err.body()["error"]["type"] == "invalid_request_error"
    # The message names the field (the field's last part, for nested ones).
    assert param.split(".")[-1].split("[")[0] in err.message


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"", "empty"),
        (b"   ", "empty"),
        (b"\xff\xfe{}", "UTF-8"),
        (b'{"prompt": "a"', "not valid JSON"),
        (b"[1, 2]", "JSON object, not a list"),
        (b'"text"', "JSON object, not a string"),
        (b'{"temperature": NaN}', "NaN"),
        (b'{"a": Infinity}', "Infinity"),
        (b"[" * 100_000 + b"]" * 100_000, "nests too deeply"),
    ],
)
def test_bodies_that_are_not_a_json_object(raw: bytes, words: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_json(raw)
    assert caught.value.status == 400
    assert words in caught.value.message
    assert caught.value.code == "invalid_json"


def test_a_json_object_body() -> None:
    assert parse_json('{"prompt": "é"}'.encode()) == {"prompt": "é"}


def test_an_unknown_model_is_404() -> None:
    check_model(None, "tiny")
    check_model("tiny", "tiny")
    with pytest.raises(ApiError) as caught:
        check_model("gpt-4", "tiny")
    err = caught.value
    assert (err.status, err.param, err.code) == (404, "model", "model_not_found")
    assert "'gpt-4'" in err.message
    assert "'tiny'" in err.message


def test_token_ids_must_be_in_the_vocabulary() -> None:
    check_token_ids((0, 256), 257)
    with pytest.raises(ApiError, match="257"):
        check_token_ids((1, 257), 257)


def test_max_tokens_within_the_limit_and_the_context() -> None:
    assert plan_max_tokens(10, None, 100, 50, "prompt") == 50
    assert plan_max_tokens(80, None, 100, 50, "prompt") == 20
    assert plan_max_tokens(10, 30, 100, 50, "prompt") == 30
    assert plan_max_tokens(99, 1, 100, 50, "prompt") == 1


@pytest.mark.parametrize(
    ("prompt", "requested", "param", "code", "words"),
    [
        (0, None, "messages", None, "no tokens"),
        (100, None, "messages", "context_length_exceeded", "shorten the messages"),
        (150, 5, "messages", "context_length_exceeded", "150 tokens"),
        (10, 51, "max_tokens", None, "limit of 50"),
        (60, 45, "max_tokens", "context_length_exceeded", "at most 40"),
    ],
)
def test_max_tokens_errors(
    prompt: int, requested: int | None, param: str, code: str | None, words: str
) -> None:
    with pytest.raises(ApiError) as caught:
        plan_max_tokens(prompt, requested, 100, 50, "messages")
    err = caught.value
    assert (err.status, err.param, err.code) == (400, param, code)
    assert words in err.message


def test_error_types_follow_openai() -> None:
    assert ApiError(401, "x").type == "authentication_error"
    assert ApiError(429, "x").type == "rate_limit_error"
    assert ApiError(503, "x").type == "service_unavailable_error"
    assert ApiError(500, "x").type == "server_error"
    assert ApiError(413, "x", code="c").body() == {
        "error": {"message": "x", "type": "invalid_request_error", "param": None, "code": "c"}
    }
