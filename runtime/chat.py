"""Chat templates: the model's own Jinja template (from its GGUF), rendered like
transformers' `apply_chat_template` (sandboxed, trim_blocks, lstrip_blocks)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from sgedge.errors import InputError


def _raise(message: str) -> None:
    raise InputError(f"chat template error: {message}")


@lru_cache(maxsize=8)
def _compile(template: str) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.filters["tojson"] = lambda x, indent=None, **kw: __import__("json").dumps(x, ensure_ascii=False, indent=indent)
    return env.from_string(template)


def render_chat(
    template: str,
    messages: Sequence[Mapping[str, str]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
) -> str:
    for m in messages:
        if "role" not in m or "content" not in m:
            raise InputError("each chat message needs 'role' and 'content'")
    return _compile(template).render(
        messages=[dict(m) for m in messages],
        bos_token=bos_token,
        eos_token=eos_token,
        add_generation_prompt=add_generation_prompt,
    )
