"""Chat templates render as transformers' apply_chat_template renders them, including
the Jinja features real templates use; a broken template is a clear error."""

from __future__ import annotations

import pytest

from sgedge.errors import InputError
from sgedge.runtime.chat import render_chat

# Written for these tests: the constructs of current templates (Qwen3-style thinking
# split with a namespace and a reversed loop, tojson with options, dict(), generation
# markers of training templates, loop controls, string methods, strftime_now).
REASONING = """{%- if messages[0].role == 'system' %}{{- '<|sys|>' + messages[0].content + '<|end|>\\n' }}{%- endif %}
{%- set ns = namespace(last_user=messages|length - 1) %}
{%- for m in messages[::-1] %}{%- if m.role == 'user' %}{%- set ns.last_user = (messages|length - 1) - loop.index0 %}{% break %}{%- endif %}{%- endfor %}
{%- for m in messages %}
  {%- if m.role == 'user' %}{{- '<|user|>' + m.content.strip() + '<|end|>\\n' }}
  {%- elif m.role == 'assistant' %}
    {%- set content = m.content %}{%- set thought = '' %}
    {%- if '</think>' in content %}{%- set thought = content.split('</think>')[0].split('<think>')[-1].strip('\\n') %}{%- set content = content.split('</think>')[-1].lstrip('\\n') %}{%- endif %}
    {{- '<|assistant|>' }}{% generation %}{%- if loop.index0 > ns.last_user %}{{- '<think>' + thought + '</think>' }}{%- endif %}{{- content + '<|end|>\\n' }}{% endgeneration %}
  {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|assistant|>' }}{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think></think>' }}{%- endif %}{%- endif %}"""

TOOLS_JSON = """{%- set meta = dict(turns=messages|length, first=messages[0].role) %}
{{- bos_token }}{{- meta | tojson(separators=(',', ':'), sort_keys=True) }}
{%- for m in messages %}{%- if loop.index is divisibleby 2 %}{% continue %}{%- endif %}{{- '\\n' + m.role|upper + ': ' + m.content|tojson }}{%- endfor %}
{{- '\\n' + eos_token if not add_generation_prompt else '\\nASSISTANT:' }}"""

# Mistral v0.3's test for tools (it puts the tool list before the last user turn).
TOOLS_NOT_NONE = """{%- set user_messages = messages | selectattr('role', 'equalto', 'user') | list %}
{{- bos_token }}{%- for m in messages %}{%- if m.role == 'user' %}
{%- if tools is not none and (m == user_messages[-1]) %}{{- '[AVAILABLE_TOOLS] ' + tools|tojson + '[/AVAILABLE_TOOLS]' }}{%- endif %}
{{- '[INST] ' + m.content + '[/INST]' }}{%- elif m.role == 'assistant' %}{{- ' ' + m.content + eos_token }}{%- endif %}{%- endfor %}
{%- if documents is not none %}{{- '[DOCS]' }}{%- endif %}"""

CONVERSATIONS = [
    [{"role": "user", "content": "  Hello  "}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "<think>\ngreet\n</think>\n\nHello!"}, {"role": "user", "content": "Ünïcode \"quoted\" <b>"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"},
     {"role": "assistant", "content": "<think>x</think>d"}],
]


def transformers_render(template: str, messages, add_generation_prompt: bool) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(conversations=[messages], chat_template=template,
                                        add_generation_prompt=add_generation_prompt,
                                        bos_token="<s>", eos_token="</s>")
    return rendered[0]


@pytest.mark.parametrize("template", [REASONING, TOOLS_JSON, TOOLS_NOT_NONE],
                         ids=["reasoning", "tojson-dict-loopcontrols", "tools-is-not-none"])
@pytest.mark.parametrize("conversation", range(len(CONVERSATIONS)))
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_renders_as_transformers_does(template, conversation, add_generation_prompt):
    messages = CONVERSATIONS[conversation]
    ours = render_chat(template, messages, bos_token="<s>", eos_token="</s>",
                       add_generation_prompt=add_generation_prompt)
    assert ours == transformers_render(template, messages, add_generation_prompt)
    assert ours  # the templates do render something for every conversation


@pytest.mark.parametrize("template,message", [
    ("{% for m in messages %}{{ m.content }", r"does not parse \(line 1: .*--raw"),
    ("{{ messages[0].content + undefined_thing.field }}", r"failed on these messages \(UndefinedError"),
    ("{{ raise_exception('System role not supported') }}", r"chat template error: System role not supported"),
])
def test_a_broken_template_is_a_clear_error(template, message):
    with pytest.raises(InputError, match=message):
        render_chat(template, [{"role": "user", "content": "hi"}])


def test_templates_stay_sandboxed():
    with pytest.raises(Exception, match="unsafe|not safely callable|access to attribute"):
        render_chat("{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}",
                    [{"role": "user", "content": "hi"}])


def test_template_variables_reach_the_template():
    ours = render_chat(REASONING, CONVERSATIONS[0], template_kwargs={"enable_thinking": False})
    assert ours.endswith("<|assistant|><think></think>")
    from transformers.utils.chat_template_utils import render_jinja_template

    want, _ = render_jinja_template(conversations=[CONVERSATIONS[0]], chat_template=REASONING,
                                    add_generation_prompt=True, enable_thinking=False)
    assert ours == want[0]
    assert not render_chat(REASONING, CONVERSATIONS[0]).endswith("<think></think>")
    with pytest.raises(InputError, match="chat template variables messages are set by sgedge"):
        render_chat(REASONING, CONVERSATIONS[0], template_kwargs={"messages": []})


def test_tools_given_as_template_variables_render_as_in_transformers():
    from transformers.utils.chat_template_utils import render_jinja_template

    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    ours = render_chat(TOOLS_NOT_NONE, CONVERSATIONS[1], bos_token="<s>", eos_token="</s>",
                       template_kwargs={"tools": tools})
    want, _ = render_jinja_template(conversations=[CONVERSATIONS[1]], chat_template=TOOLS_NOT_NONE, tools=tools,
                                    add_generation_prompt=True, bos_token="<s>", eos_token="</s>")
    assert ours == want[0] and "[AVAILABLE_TOOLS]" in ours
    assert "[AVAILABLE_TOOLS]" not in render_chat(TOOLS_NOT_NONE, CONVERSATIONS[1], eos_token="</s>")
