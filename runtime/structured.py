"""Structured output: OpenAI's `response_format` in the engines' terms.

`{"type": "json_object"}` and `{"type": "json_schema", "json_schema": {"schema": ...}}`
become a grammar every generated token must follow: on the GGUF backend a llama.cpp GBNF
grammar (llama-cpp-python's JSON-schema converter, the one its own server uses), on the
ONNX backend onnxruntime-genai's guidance. The reply is then JSON (of the schema) unless
max_tokens cuts it short (finish_reason "length").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sgedge.errors import InputError

MAX_SCHEMA = 64 << 10  # characters of schema JSON


def parse_response_format(fmt: Any) -> tuple[str, str] | None:
    """None for plain text, else ("json_object", "") or ("json_schema", schema JSON)."""
    if fmt is None or fmt == {}:
        return None
    if not isinstance(fmt, Mapping):
        raise InputError("response_format must be an object such as {\"type\": \"json_object\"}")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return "json_object", ""
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if not isinstance(schema, Mapping):
            raise InputError("response_format json_schema needs {\"json_schema\": {\"name\": ..., \"schema\": {...}}}")
        text = json.dumps(schema)
        if len(text) > MAX_SCHEMA:
            raise InputError(f"the response_format schema is {len(text)} characters; at most {MAX_SCHEMA}")
        return "json_schema", text
    raise InputError(f"response_format type {kind!r} is not supported (text, json_object, json_schema)")


def gbnf(kind: str, schema: str) -> str:
    """The llama.cpp grammar of a response format."""
    from llama_cpp import llama_grammar

    if kind == "json_object":
        return llama_grammar.JSON_GBNF
    try:
        grammar = llama_grammar.json_schema_to_gbnf(schema)
    except Exception as e:  # the converter raises plain exceptions for schemas it cannot express
        raise InputError(f"the response_format schema cannot be turned into a grammar ({str(e)[:200]})") from None
    # llama-cpp-python's converter lets string characters be control characters, which
    # JSON forbids unescaped (a reply would not parse); llama.cpp's own converter excludes them.
    return grammar.replace('char ::= [^"\\\\]', 'char ::= [^"\\\\\\x7F\\x00-\\x1F]')
