"""The /v1 handlers: request in, engine, response (whole or streamed) out.

Each generation request is read with a size limit and a deadline, checked
(`protocol`), turned into token ids (the chat template for chat), submitted to the
engine, and answered from the tokens the engine hands back, detokenized and cut at stop
strings (`text`). Whatever way a handler ends (finished, a stop string matched, the
client went away and aiohttp cancelled the handler), `finally` cancels the engine's
sequence, so its KV-cache slot is free for the next pass.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from lmworker.serve.chat import ChatTemplate, ChatTemplateError
from lmworker.serve.engine import (
    Engine,
    EngineStoppedError,
    GenerationHandle,
    QueueFullError,
    SamplingParams,
)
from lmworker.serve.loading import ServedModel
from lmworker.serve.metrics import ServeMetrics
from lmworker.serve.protocol import (
    ApiError,
    Endpoint,
    GenerationRequest,
    check_model,
    check_token_ids,
    parse_json,
    parse_request,
    plan_max_tokens,
)
from lmworker.serve.text import TextStream
from lmworker.serve.wire import SSE_DONE, Reply, model_card, models_list, sse, usage

log = logging.getLogger("lmworker.serve.api")

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx-style proxies would otherwise hold the events back
}
# Set on a request whose client went away while its answer was streaming.
CLIENT_LEFT = "elasticlm_client_left"
# Prompt ids that give the first new token its context when decoded (see text.py).
_DECODE_CONTEXT = 4


@dataclass(frozen=True)
class ApiSettings:
    served_model_name: str
    max_new_tokens: int
    max_request_bytes: int
    read_timeout: float


async def read_body(request: web.Request, limit: int, timeout: float) -> bytes:
    """The whole body, at most `limit` bytes, arriving within `timeout` seconds."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(
            413,
            f"the body has {request.content_length} bytes; this server takes at most {limit}",
            code="request_too_large",
        )
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > limit:
                    raise ApiError(
                        413,
                        f"the body exceeds {limit} bytes, the most this server takes",
                        code="request_too_large",
                        headers={"Connection": "close"},
                    )
                chunks.append(chunk)
    except TimeoutError as exc:
        raise ApiError(
            408,
            f"the request body did not arrive within {timeout:g} s",
            code="request_timeout",
            headers={"Connection": "close"},
        ) from exc
    return b"".join(chunks)


class Api:
    def __init__(
        self,
        engine: Engine,
        served: ServedModel,
        settings: ApiSettings,
        metrics: ServeMetrics | None = None,
    ) -> None:
        self.engine = engine
        self.served = served
        self.settings = settings
        self.metrics = metrics
        self.template = ChatTemplate(served.chat_template, served.special_tokens)
        self.created = int(time.time())

    # -- handlers -----------------------------------------------------------------

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "completions")

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "chat")

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(models_list(self.settings.served_model_name, self.created))

    async def model(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        check_model(name, self.settings.served_model_name)
        return web.json_response(model_card(name, self.created))

    # -- generation ---------------------------------------------------------------

    async def _generate(self, request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
        raw = await read_body(request, self.settings.max_request_bytes, self.settings.read_timeout)
        req = parse_request(endpoint, parse_json(raw))
        check_model(req.model, self.settings.served_model_name)
        prompt_ids, prompt_param = self._prompt_ids(req)
        max_tokens = plan_max_tokens(
            len(prompt_ids),
            req.max_tokens,
            self.engine.max_length,
            self.settings.max_new_tokens,
            prompt_param,
        )
        handle = self._submit(prompt_ids, max_tokens, req)
        try:
            if self.metrics is not None:
                self.metrics.prompt_tokens.inc(len(prompt_ids))
            reply = Reply(endpoint, self.settings.served_model_name)
            text = TextStream(self._decode, req.stop, context=prompt_ids[-_DECODE_CONTEXT:])
            if req.stream:
                return await self._stream(request, req, handle, reply, text)
            return await self._whole(handle, reply, text)
        finally:
            handle.cancel()  # a no-op once finished; frees the slot otherwise

    def _prompt_ids(self, req: GenerationRequest) -> tuple[list[int], str]:
        tokenizer = self.served.tokenizer
        if req.endpoint == "chat":
            messages = [{"role": m.role, "content": m.content} for m in req.messages]
            try:
                prompt = self.template.render(messages, add_generation_prompt=True)
            except ChatTemplateError as exc:
                raise ApiError(400, str(exc), param="messages") from exc
            # The template writes the special tokens (BOS and turn markers) itself.
            return list(tokenizer.encode(prompt, add_special_tokens=False).ids), "messages"
        if isinstance(req.prompt, tuple):
            check_token_ids(req.prompt, self.served.config.vocab_size)
            return list(req.prompt), "prompt"
        assert req.prompt is not None
        return list(tokenizer.encode(req.prompt, add_special_tokens=True).ids), "prompt"

    def _submit(
        self, prompt_ids: list[int], max_tokens: int, req: GenerationRequest
    ) -> GenerationHandle:
        sampling = SamplingParams(req.temperature, req.top_p, req.top_k)
        try:
            return self.engine.submit(
                prompt_ids, max_tokens, sampling, seed=req.seed, ignore_eos=req.ignore_eos
            )
        except QueueFullError as exc:
            raise ApiError(
                429,
                f"the server is at capacity ({exc}); retry shortly",
                code="rate_limit_exceeded",
                headers={"Retry-After": "1"},
            ) from exc
        except EngineStoppedError as exc:
            raise ApiError(503, str(exc), code="shutting_down") from exc

    def _decode(self, ids: list[int]) -> str:
        return str(self.served.tokenizer.decode(ids, skip_special_tokens=True))

    async def _whole(
        self, handle: GenerationHandle, reply: Reply, text: TextStream
    ) -> web.Response:
        parts: list[str] = []
        finish = "length"
        try:
            async for piece, reason in _pieces(handle, text):
                parts.append(piece)
                finish = reason or finish
        except EngineStoppedError as exc:
            raise ApiError(503, str(exc), code="shutting_down") from exc
        except Exception as exc:  # a failed forward pass (logged by the engine)
            raise ApiError(500, f"generation failed: {exc}") from exc
        used = usage(handle.prompt_tokens, handle.completion_tokens)
        return web.json_response(reply.body("".join(parts), finish, used))

    async def _stream(
        self,
        request: web.Request,
        req: GenerationRequest,
        handle: GenerationHandle,
        reply: Reply,
        text: TextStream,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers=SSE_HEADERS)
        await resp.prepare(request)
        with_usage = req.include_usage
        chat = reply.endpoint == "chat"
        try:
            if chat:  # the first delta carries the role
                await resp.write(sse(reply.chunk("", role=True, include_usage=with_usage)))
            async for piece, reason in _pieces(handle, text):
                if reason is not None:
                    closing = piece if piece or not chat else None
                    await resp.write(sse(reply.chunk(closing, reason, include_usage=with_usage)))
                elif piece:
                    await resp.write(sse(reply.chunk(piece, include_usage=with_usage)))
            if with_usage:
                used = usage(handle.prompt_tokens, handle.completion_tokens)
                await resp.write(sse(reply.usage_chunk(used)))
        except ConnectionResetError:
            request[CLIENT_LEFT] = True  # counted as 499, as a cancelled handler is
            return resp  # `finally` in _generate frees the slot
        except Exception as exc:  # EngineStoppedError, or a failed forward pass
            # The status line is sent: the error travels as an event in the stream.
            status = 503 if isinstance(exc, EngineStoppedError) else 500
            body = ApiError(status, str(exc)).body()
            await resp.write(sse(reply.error_event(body)))
        await resp.write(SSE_DONE)
        await resp.write_eof()
        return resp


async def _pieces(
    handle: GenerationHandle, text: TextStream
) -> AsyncIterator[tuple[str, str | None]]:
    """(new text, finish reason or None) as tokens arrive; the last one has a reason.

    Tokens that arrived together are decoded together: one event for several tokens
    when the client reads slower than the model writes.
    """
    async for token in handle:
        batch = [token, *handle.ready_tokens()]
        piece = "".join(text.push(t.token_id) for t in batch if not t.stop_token)
        if text.stopped:
            yield piece, "stop"
            return
        reason = batch[-1].finish_reason
        if reason is not None:
            yield piece + text.finish(), reason
            return
        if piece:
            yield piece, None


def error_response(error: ApiError) -> web.Response:
    return web.json_response(error.body(), status=error.status, headers=error.headers)


def plain_error(status: int, message: str, **fields: Any) -> web.Response:
    """An error answer outside the API's own checks (unknown path, wrong method)."""
    return error_response(ApiError(status, message, **fields))
