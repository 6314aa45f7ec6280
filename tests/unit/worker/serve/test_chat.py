"""Chat templates render here exactly as transformers renders them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transformers import PreTrainedTokenizerFast

from lmworker.serve.chat import ChatTemplate, ChatTemplateError
from lmworker.tokenizer import ByteTokenizer

# SmolLM2-Instruct's template (ChatML with a default system prompt).
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by "
    "Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Whitespace control, trim_blocks/lstrip_blocks, loop controls, tojson with non-ASCII
# text, special tokens and raise_exception: what real templates lean on.
FANCY = """{{ bos_token }}
{%- for message in messages %}
    {%- if message['role'] == 'tool' %}
        {{- raise_exception('tools are not supported') }}
    {%- endif %}
    {%- if message['content'] == 'skip' %}{% continue %}{% endif %}
    <{{ message['role'] }}>{{ message['content'] | tojson }}
{% endfor %}
{%- if add_generation_prompt %}<assistant>{% endif %}"""

MESSAGES = [
    {"role": "user", "content": "Héllo"},
    {"role": "assistant", "content": "skip"},
    {"role": "user", "content": "line\nbreak"},
]


def transformers_render(tmp_path: Path, template: str, messages: list[dict[str, Any]]) -> str:
    ByteTokenizer().save(tmp_path)
    tok = PreTrainedTokenizerFast.from_pretrained(tmp_path)
    tok.chat_template = template
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert isinstance(rendered, str)
    return rendered


@pytest.mark.parametrize("template", [CHATML, FANCY], ids=["chatml", "fancy"])
def test_same_text_as_transformers(tmp_path: Path, template: str) -> None:
    ours = ChatTemplate(template, {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"})
    assert ours.render(MESSAGES) == transformers_render(tmp_path, template, MESSAGES)


def test_the_default_template() -> None:
    template = ChatTemplate(None)
    assert template.is_default
    messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}]
    assert template.render(messages) == "system: Be terse.\nuser: Hi\nassistant:"
    assert template.render(messages, add_generation_prompt=False) == (
        "system: Be terse.\nuser: Hi\n"
    )


def test_a_template_that_refuses_the_conversation() -> None:
    template = ChatTemplate(FANCY, {"bos_token": ""})
    with pytest.raises(ChatTemplateError, match="tools are not supported"):
        template.render([{"role": "tool", "content": "x"}])


def test_broken_templates() -> None:
    with pytest.raises(ChatTemplateError, match="does not compile"):
        ChatTemplate("{% for %}")
    with pytest.raises(ChatTemplateError, match="failed on these messages"):
        ChatTemplate("{{ messages[5]['content'] }}").render([{"role": "user", "content": "x"}])


def test_the_sandbox_refuses_unsafe_attributes() -> None:
    template = ChatTemplate("{{ messages.__class__.__mro__ }}")
    with pytest.raises(ChatTemplateError):
        template.render([])
