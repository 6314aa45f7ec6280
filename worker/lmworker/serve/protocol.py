"""Requests of the OpenAI API, checked: a typed request, or an ApiError naming the field.

Pure (no torch, no I/O), so every rule is a unit test away. Decisions where OpenAI's
API leaves room:

- `model` may be omitted (curl users); when given it must name the served model (404).
- Fields this server does not implement are refused when set to anything but their
  neutral value (`logprobs`, `echo`, `best_of > 1`, penalties, `logit_bias`, tools,
  `response_format` other than text, `suffix`) rather than silently ignored; fields it
  does not know at all (`user`, `metadata`, `store`, ...) are ignored, as vLLM does.
- `n` must be 1; `stop` takes up to 16 non-empty strings; `top_k` and `ignore_eos`
  are vLLM's extensions, accepted from the OpenAI client's `extra_body`.
- Omitted `max_tokens` means "up to --max-new-tokens, within the context".
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

Endpoint = Literal["completions", "chat"]

MAX_STOP_STRINGS = 16
MAX_SEED = 2**64
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool")


class ApiError(Exception):
    """An error answer: HTTP status and OpenAI's error object."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or error_type(status)
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_type(status: int) -> str:
    """OpenAI's error `type` for an HTTP status."""
    if status == 401:
        return "authentication_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error" if status != 503 else "service_unavailable_error"
    return "invalid_request_error"


def error_body(
    message: str, type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class GenerationRequest:
    endpoint: Endpoint
    model: str | None
    prompt: str | tuple[int, ...] | None  # completions: text or token ids
    messages: tuple[ChatMessage, ...]  # chat
    max_tokens: int | None  # None: as many as the server allows
    temperature: float
    top_p: float
    top_k: int  # 0: off
    seed: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    ignore_eos: bool


def parse_json(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid(
            f"the body is not valid UTF-8 (byte {exc.start}): send JSON text", code="invalid_json"
        ) from exc
    if not text.strip():
        raise invalid("the body is empty: send a JSON object", code="invalid_json")
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise invalid(
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            code="invalid_json",
        ) from exc
    except RecursionError as exc:
        raise invalid("the body nests too deeply", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise invalid(
            f"the body must be a JSON object, not {_json_type(data)}", code="invalid_json"
        )
    return data


def parse_request(endpoint: Endpoint, body: dict[str, Any]) -> GenerationRequest:
    """Check a /v1/completions or /v1/chat/completions body."""
    _refuse_unsupported(body, endpoint)
    n = _integer(body, "n", 1, 1, None)
    if n != 1:
        raise invalid(f"n must be 1: this server returns one choice per request, got {n}", "n")
    stream = _boolean(body, "stream", False)
    options = body.get("stream_options")
    if options is not None and not stream:
        raise invalid("stream_options is only allowed when stream is true", "stream_options")
    if options is not None and not isinstance(options, dict):
        raise invalid(
            f"stream_options must be an object, got {_json_type(options)}", "stream_options"
        )
    include_usage = _boolean(options or {}, "include_usage", False, "stream_options.include_usage")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise invalid(f"model must be a string, got {_json_type(model)}", "model")
    if endpoint == "chat":
        prompt, messages = None, _messages(body)
        max_tokens = _integer(body, "max_completion_tokens", None, 1, None)
        if max_tokens is None:
            max_tokens = _integer(body, "max_tokens", None, 1, None)
    else:
        prompt, messages = _prompt(body), ()
        max_tokens = _integer(body, "max_tokens", None, 1, None)
    seed = _integer(body, "seed", None, -(2**63), MAX_SEED - 1)
    return GenerationRequest(
        endpoint=endpoint,
        model=model,
        prompt=prompt,
        messages=messages,
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_top_p(body),
        top_k=max(0, _integer(body, "top_k", 0, -1, None) or 0),
        seed=None if seed is None else seed % 2**63,
        stop=_stop(body),
        stream=stream,
        include_usage=include_usage,
        ignore_eos=_boolean(body, "ignore_eos", False),
    )


def check_model(requested: str | None, served: str) -> None:
    if requested is not None and requested != served:
        raise ApiError(
            404,
            f"the model {requested!r} does not exist here; this server serves {served!r}",
            param="model",
            code="model_not_found",
        )


def check_token_ids(ids: tuple[int, ...], vocab_size: int) -> None:
    bad = next((i for i in ids if not 0 <= i < vocab_size), None)
    if bad is not None:
        raise invalid(
            f"prompt token id {bad} is outside the vocabulary (0..{vocab_size - 1})", "prompt"
        )


def plan_max_tokens(
    prompt_tokens: int,
    requested: int | None,
    max_length: int,
    max_new_tokens: int,
    prompt_param: str,
) -> int:
    """New tokens to generate: the request's, within the server's limit and the context."""
    if prompt_tokens < 1:
        raise invalid(f"{prompt_param} encodes to no tokens: send some text", prompt_param)
    room = max_length - prompt_tokens
    if room < 1:
        raise invalid(
            f"the prompt has {prompt_tokens} tokens, but this model's context holds "
            f"{max_length}, including at least one new token: shorten the {prompt_param}",
            prompt_param,
            code="context_length_exceeded",
        )
    if requested is None:
        return min(max_new_tokens, room)
    param = "max_tokens"
    if requested > max_new_tokens:
        raise invalid(
            f"max_tokens ({requested}) exceeds this server's limit of {max_new_tokens} "
            "new tokens per request",
            param,
        )
    if requested > room:
        raise invalid(
            f"this model's context holds {max_length} tokens; the prompt has "
            f"{prompt_tokens} and max_tokens asks for {requested} more "
            f"({prompt_tokens + requested}): lower max_tokens to at most {room}",
            param,
            code="context_length_exceeded",
        )
    return requested


# -- fields -------------------------------------------------------------------------

# Fields this server does not implement, with the values that mean "not used".
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "echo": (None, False),
    "best_of": (None, 1),
    "suffix": (None, ""),
    "presence_penalty": (None, 0),
    "frequency_penalty": (None, 0),
    "repetition_penalty": (None, 1),
    "logit_bias": (None, {}),
    "tools": (None, []),
    "functions": (None, []),
    "tool_choice": (None, "none", "auto"),
    "function_call": (None, "none", "auto"),
    "response_format": (None, {"type": "text"}),
}


def _refuse_unsupported(body: dict[str, Any], endpoint: Endpoint) -> None:
    for name, neutral in _NEUTRAL.items():
        if name not in body:
            continue
        if not any(_same_json(body[name], n) for n in neutral):
            raise invalid(
                f"{name} is not supported by this server ({endpoint}); leave it unset",
                name,
                code="unsupported_parameter",
            )


def _messages(body: dict[str, Any]) -> tuple[ChatMessage, ...]:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise invalid("messages must be a non-empty list of {role, content} objects", "messages")
    out = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid(f"{where} must be an object, got {_json_type(message)}", where)
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise invalid(
                f"{where}.role must be one of {', '.join(CHAT_ROLES)}, got {_short(role)}",
                f"{where}.role",
            )
        out.append(ChatMessage(role, _content(message.get("content"), role, f"{where}.content")))
    return tuple(out)


def _content(content: Any, role: str, where: str) -> str:
    if isinstance(content, str):
        return content
    if content is None and role == "assistant":
        return ""
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else _json_type(part)
                raise invalid(
                    f"{where}[{j}] must be a text part ({{'type': 'text', 'text': ...}}); "
                    f"this model reads text only, got {_short(kind)}",
                    f"{where}[{j}]",
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise invalid(f"{where}[{j}].text must be a string", f"{where}[{j}].text")
            texts.append(text)
        return "".join(texts)
    raise invalid(
        f"{where} must be a string or a list of text parts, got {_json_type(content)}", where
    )


def _prompt(body: dict[str, Any]) -> str | tuple[int, ...]:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one: ["text"] or [[ids]]
    if isinstance(prompt, str):
        if not prompt:
            raise invalid("prompt must not be empty", "prompt")
        return prompt
    if isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt):
        return tuple(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(p, str | list) for p in prompt):
        raise invalid(
            f"prompt holds {len(prompt)} prompts; this server takes one per request", "prompt"
        )
    if isinstance(prompt, list) and not prompt:
        raise invalid("prompt must not be empty", "prompt")
    raise invalid(
        f"prompt must be a string or a list of token ids, got {_json_type(prompt)}", "prompt"
    )


def _stop(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if (
        not isinstance(stops, list)
        or not all(isinstance(s, str) and s for s in stops)
        or len(stops) > MAX_STOP_STRINGS
    ):
        raise invalid(
            f"stop must be a non-empty string or a list of at most {MAX_STOP_STRINGS} "
            f"non-empty strings, got {_short(stop)}",
            "stop",
        )
    return tuple(stops)


def _top_p(body: dict[str, Any]) -> float:
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p <= 0.0:
        raise invalid("top_p must be greater than 0 and at most 1, got 0", "top_p")
    return top_p


def _integer(
    body: dict[str, Any], name: str, default: int | None, low: int | None, high: int | None
) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if not _is_int(value):
        raise invalid(f"{name} must be an integer, got {_short(value)}", name)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise invalid(f"{name} must be {bounds}, got {value}", name)
    return int(value)


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid(f"{name} must be a number, got {_short(value)}", name)
    if not low <= value <= high:
        raise invalid(f"{name} must be between {low:g} and {high:g}, got {value}", name)
    return float(value)


def _boolean(body: dict[str, Any], name: str, default: bool, param: str | None = None) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(f"{param or name} must be true or false, got {_short(value)}", param or name)
    return value


def _same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values: 0 and 0.0 are, 0 and false are not (as Python has it)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _reject_constant(name: str) -> Any:
    raise invalid(
        f"the body holds {name}, which is not JSON: send finite numbers", code="invalid_json"
    )
