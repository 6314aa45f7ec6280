"""Response bodies and server-sent events in OpenAI's wire format. Pure.

Streams follow what OpenAI's clients rely on (and llama.cpp's server tests check): one
`id` for every chunk of a stream; in chat, the first delta carries the role; the last
content chunk carries the `finish_reason` ("stop" or "length"); with
`stream_options.include_usage` every chunk has `"usage": null` and one more chunk with
no choices carries the usage; `data: [DONE]` ends the stream.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from lmworker.serve.protocol import Endpoint

SSE_DONE = b"data: [DONE]\n\n"
OWNER = "elasticlm"


def sse(data: dict[str, Any]) -> bytes:
    """One server-sent event carrying a JSON object."""
    return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def new_id(endpoint: Endpoint) -> str:
    return ("chatcmpl-" if endpoint == "chat" else "cmpl-") + secrets.token_hex(12)


@dataclass(frozen=True)
class Reply:
    """What every body and chunk of one response shares."""

    endpoint: Endpoint
    model: str
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", new_id(self.endpoint))

    def _head(self, chunk: bool) -> dict[str, Any]:
        if self.endpoint == "chat":
            kind = "chat.completion.chunk" if chunk else "chat.completion"
        else:
            kind = "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def body(self, text: str, finish_reason: str, used: dict[str, int]) -> dict[str, Any]:
        """The whole answer of a request that did not stream."""
        choice: dict[str, Any] = {"index": 0}
        if self.endpoint == "chat":
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choice["logprobs"] = None
        choice["finish_reason"] = finish_reason
        return {**self._head(chunk=False), "choices": [choice], "usage": used}

    def chunk(
        self,
        text: str | None,
        finish_reason: str | None = None,
        *,
        role: bool = False,
        include_usage: bool = False,
    ) -> dict[str, Any]:
        """One streamed piece: new text (None: none, e.g. the closing chunk of a chat)."""
        choice: dict[str, Any] = {"index": 0}
        if self.endpoint == "chat":
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            choice["delta"] = delta
        else:
            choice["text"] = text or ""
        choice["logprobs"] = None
        choice["finish_reason"] = finish_reason
        out = {**self._head(chunk=True), "choices": [choice]}
        if include_usage:
            out["usage"] = None
        return out

    def usage_chunk(self, used: dict[str, int]) -> dict[str, Any]:
        return {**self._head(chunk=True), "choices": [], "usage": used}

    def error_event(self, error: dict[str, Any]) -> dict[str, Any]:
        """An error after the stream began (the status line is long gone)."""
        return {**self._head(chunk=True), **error}


def models_list(name: str, created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_card(name, created)]}


def model_card(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": OWNER}
