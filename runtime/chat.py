"""Chat templates: the model's own Jinja template (from its GGUF), rendered like
transformers' `apply_chat_template`: sandboxed, trim_blocks, lstrip_blocks, the same
globals and filters (raise_exception, strftime_now, dict, tojson with its options), and
the `{% generation %}` tag that training templates mark assistant turns with."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from sgedge.errors import InputError


def _raise(message: str) -> None:
    raise InputError(f"chat template error: {message}")


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    # transformers' override: no HTML escaping, and the options of json.dumps.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _dict(*args: Any, **kwargs: Any) -> dict:
    return dict(*args, **kwargs)


@lru_cache(maxsize=8)
def _compile(template: str) -> Any:
    import jinja2
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """`{% generation %}...{% endgeneration %}`: renders its body unchanged (transformers
        uses it to find the assistant's tokens when training)."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return caller()

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, "jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["dict"] = _dict
    env.filters["tojson"] = _tojson
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise InputError(f"the model's chat template does not parse (line {e.lineno}: {e.message}); "
                         "run with --raw for plain completion, or fix tokenizer_config.json's chat_template "
                         "and export again") from None


def render_chat(
    template: str,
    messages: Sequence[Mapping[str, str]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    template_kwargs: Mapping[str, Any] | None = None,
) -> str:
    """`template_kwargs`: more variables for the template, as transformers'
    apply_chat_template takes them (e.g. {"enable_thinking": False} for Qwen3, or
    {"tools": [...]} with JSON schemas)."""
    import jinja2

    for m in messages:
        if "role" not in m or "content" not in m:
            raise InputError("each chat message needs 'role' and 'content'")
    extra = dict(template_kwargs or {})
    clash = sorted(set(extra) & {"messages", "bos_token", "eos_token", "add_generation_prompt"})
    if clash:
        raise InputError(f"chat template variables {', '.join(clash)} are set by sgedge; leave them out")
    # transformers always passes tools and documents, None unless given: templates test
    # `tools is not none` (Mistral v0.3), which an undefined variable would pass.
    extra = {"tools": None, "documents": None, **extra}
    try:
        return _compile(template).render(
            messages=[dict(m) for m in messages],
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
            **extra,
        )
    except jinja2.TemplateError as e:  # e.g. an undefined variable the template needs
        raise InputError(f"the model's chat template failed on these messages ({type(e).__name__}: {e})") from None
