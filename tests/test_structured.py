"""Structured output (issue 28): response_format json_object / json_schema constrain every
token; the OpenAI SDK's own structured-output helper parses the reply."""

from __future__ import annotations

import json

import pytest
from test_serve import BREAD, running

from sgedge.errors import InputError
from sgedge.runtime.api import Runtime

SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "age": {"type": "integer"}, "safe": {"type": "boolean"}},
          "required": ["name", "age", "safe"], "additionalProperties": False}


@pytest.fixture(scope="module")
def rt(tiny):
    t = tiny("qwen2")
    with Runtime.open(t.gguf, adapters=[t.a1]) as rt:
        yield rt


def test_json_schema_replies_validate(rt):
    r = rt.generate("Describe a person.", max_tokens=200, response_format={
        "type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}})
    assert r.finish_reason == "stop", r.text
    obj = json.loads(r.text)  # a random model, forced into the schema
    assert set(obj) == {"name", "age", "safe"} and isinstance(obj["age"], int) and isinstance(obj["safe"], bool)
    free = rt.generate("Describe a person.", max_tokens=40)
    with pytest.raises(json.JSONDecodeError):
        json.loads(free.text)  # without the grammar the random model writes no JSON


def test_json_object_replies_parse(rt):
    r = rt.generate("Anything.", max_tokens=300, response_format={"type": "json_object"})
    if r.finish_reason == "stop":
        assert isinstance(json.loads(r.text), dict)
    else:  # cut short by max_tokens: a JSON object's beginning
        assert r.text.lstrip().startswith("{")


@pytest.mark.parametrize("fmt,message", [
    ({"type": "xml"}, "not supported"), ({"type": "json_schema"}, "needs"), ("json", "must be an object"),
    ({"type": "json_schema", "json_schema": {"schema": {"type": "nonsense"}}}, "cannot be turned into a grammar"),
])
def test_bad_response_formats_are_input_errors(rt, fmt, message):
    with pytest.raises(InputError, match=message):
        rt.generate("x", max_tokens=4, response_format=fmt)


def test_the_openai_sdks_parse_helper_gets_a_valid_object(rt):
    openai = pytest.importorskip("openai")
    pydantic = pytest.importorskip("pydantic")

    class Person(pydantic.BaseModel):
        name: str = pydantic.Field(max_length=12)  # a random model would not end an unbounded string
        age: int
        safe: bool

    with running(rt) as srv:
        with openai.OpenAI(base_url=srv.url, api_key="unused") as client:
            parse = getattr(client.chat.completions, "parse", None) or client.beta.chat.completions.parse
            done = parse(model="test", messages=BREAD, response_format=Person, max_tokens=200)
        person = done.choices[0].message.parsed
        assert isinstance(person, Person) and isinstance(person.age, int)


def test_the_onnx_backend_constrains_with_guidance(tiny_onnx):
    o = tiny_onnx("qwen2")
    with Runtime.open(o.base, adapters=[o.a1]) as rt:
        r = rt.generate("Describe a person.", max_tokens=200, response_format={
            "type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}})
        assert r.finish_reason == "stop", r.text  # compact JSON: the schema's bounded fields end it
        obj = json.loads(r.text)
        assert set(obj) == {"name", "age", "safe"} and isinstance(obj["age"], int)
