"""`python -m lmworker.serve`: an OpenAI-compatible server with continuous batching.

See docs/serving.md. The modules, from the bottom up: `scheduler` (which sequences the
next forward pass extends; pure), `sampling`, `engine` (the model thread), `loading`
(a model directory or a training checkpoint), `chat` (chat templates), `text`
(incremental detokenizing and stop strings; pure), `protocol` (request validation;
pure), `wire` (response bodies and SSE; pure), `metrics`, `auth`, `api` (the
/v1 handlers), `app` (the aiohttp application, probes, drain) and `cli` (flags, start,
signals).
"""
