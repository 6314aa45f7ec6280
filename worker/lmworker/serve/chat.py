"""Chat messages to prompt text: the model's own template, rendered as transformers does.

A model's `chat_template` (tokenizer_config.json or chat_template.jinja) is Jinja run in
a sandbox with `trim_blocks` and `lstrip_blocks`, the loop-controls extension, the
`raise_exception` and `strftime_now` globals and a `tojson` filter that keeps
non-ASCII text: the environment of transformers' `apply_chat_template`, so a template
renders here exactly as it does there. Templates receive `messages`,
`add_generation_prompt` and the tokenizer's special tokens (`bos_token`, `eos_token`, ...).

A model without a template (our own small trained models) gets `DEFAULT_CHAT_TEMPLATE`,
one line per message, `role: content`, then `assistant:` for the model to continue:

    system: You are terse.
    user: Hello
    assistant:
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, NoReturn

import jinja2
import jinja2.ext
import jinja2.sandbox

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


class ChatTemplateError(ValueError):
    """The template refused the conversation (raise_exception) or failed to render."""


def _raise_exception(message: str) -> NoReturn:
    raise ChatTemplateError(message)


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None
) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class ChatTemplate:
    """A compiled template; `render` gives the prompt for a list of messages."""

    def __init__(self, source: str | None, special_tokens: dict[str, str] | None = None) -> None:
        self.is_default = source is None
        self.source = DEFAULT_CHAT_TEMPLATE if source is None else source
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            self._template = env.from_string(self.source)
        except jinja2.TemplateError as exc:
            raise ChatTemplateError(f"the chat template does not compile: {exc}") from exc
        self._special_tokens = dict(special_tokens or {})

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        try:
            return self._template.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                **self._special_tokens,
            )
        except ChatTemplateError:
            raise
        except (jinja2.TemplateError, TypeError, ValueError, KeyError, IndexError) as exc:
            raise ChatTemplateError(f"the chat template failed on these messages: {exc}") from exc
