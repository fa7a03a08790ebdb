"""The strict manifest reader: every loosely-read value the attack review found is one
clear ManifestError (issue 25), and the shipped manifests still read."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from sgedge.manifest import ManifestError, loads_manifest

DEMO = Path(__file__).resolve().parents[1] / "sgedge" / "demo" / "bundle" / "sgedge.json"


@pytest.fixture(scope="module")
def raw() -> dict:
    return json.loads(DEMO.read_bytes())


def _set(d: dict, path: str, value) -> dict:
    d = copy.deepcopy(d)
    *head, last = path.split("/")
    cur = d
    for k in head:
        cur = cur[int(k)] if isinstance(cur, list) else cur[k]
    if isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value
    return d


def test_the_shipped_manifest_reads(raw):
    m = loads_manifest(DEMO.read_bytes())
    assert m.allow_no_adapter is True and set(m.adapters) == set(raw["adapters"])


GGUF = "adapters/standard/formats/gguf"
CASES = [
    ("allow_no_adapter", "false", r"allow_no_adapter must be true or false, not 'false'"),
    ("require_signature", 0, r"require_signature must be true or false"),
    ("adapters/standard/rank", "eight", r"adapter 'standard'.rank must be a whole number from 1 to 65536"),
    ("adapters/standard/rank", 10**30, r"rank must be a whole number"),
    ("adapters/standard/rank", 8.0, r"rank must be a whole number"),
    ("adapters/standard/alpha", 0, r"alpha must be greater than 0"),
    ("adapters/standard/alpha", 1e39, r"alpha must be a number finite in float32"),
    ("adapters", [], r"adapters must be an object, not a list"),
    ("policies/US", {"adapter": "standard"}, r"policy 'US' must be a list"),
    ("policies/US/0/scale", 1e39, r"policy 'US'\[0\].scale must be a number finite in float32"),
    ("policies/US/0/scale", -3.5e38, r"finite in float32"),
    ("policies/US/0/scale", True, r"finite in float32"),
    ("policies/US/0", {"adapter": "standard", "sacle": 0.5}, r"unknown key\(s\) 'sacle'"),
    ("default_policy", 3, r"default_policy must be a non-empty string"),
    ("base/formats/gguf/files/0/size", "5964448", r"size must be a whole number"),
    ("base/formats/gguf/files/0/sha256", "B0" * 32, r"sha256 must be 64 lower-case hex digits"),
    (f"{GGUF}/path", "adapters/strict.gguf", r"loads 'adapters/strict.gguf' but lists 'adapters/standard.gguf'"),
    (f"{GGUF}/files", [], r"lists no files"),
    ("base/formats/onnx/files/0/path", "elsewhere/model.onnx", r"loads 'base_onnx' but lists"),
    ("base/formats/tflite", {"path": "x", "files": []}, r"unknown format\(s\) 'tflite'"),
    ("adapters/standard/name", "strict", r"says its name is 'strict'"),
    ("adapters/standard/targets", "attn_q", r"targets must be a list"),
    ("schema_version", True, r"schema version True"),
]


@pytest.mark.parametrize("path,value,message", CASES, ids=[f"{c[0]}={c[1]!r}"[:60] for c in CASES])
def test_wrong_values_are_one_clear_error(raw, path, value, message):
    with pytest.raises(ManifestError, match=message):
        loads_manifest(json.dumps(_set(raw, path, value)).encode())


def test_a_duplicate_key_is_refused_not_last_wins(raw):
    text = json.dumps(raw)
    # The attacker's copy of allow_no_adapter comes second: json.loads would keep it.
    doubled = text[:-1] + ', "allow_no_adapter": true}'
    assert json.loads(doubled)["allow_no_adapter"] is True
    with pytest.raises(ManifestError, match=r"key 'allow_no_adapter' appears twice"):
        loads_manifest(doubled.encode())


@pytest.mark.parametrize("text,message", [
    ('{"schema_version": 1, "x": ' + "[" * 100_000 + "]" * 100_000 + "}", r"nests its values too deeply"),
    ('{"schema_version": 1, "x": ' + "[" * 50 + "]" * 50 + "}", r"nests its values deeper than 12 levels"),
    ('{"schema_version": NaN}', r"NaN is not a JSON number"),
    ('{"schema_version": Infinity}', r"Infinity is not a JSON number"),
    ('[1, 2]', r"must hold a JSON object, not a list"),
    ('{"schema_version": 1', r"is not valid JSON"),
    ('\udcff', r"is not valid JSON"),
])
def test_malformed_json_is_one_clear_error(text, message):
    with pytest.raises(ManifestError, match=message):
        loads_manifest(text.encode("utf-8", "surrogatepass"))


def test_an_oversized_manifest_is_refused_before_parsing():
    with pytest.raises(ManifestError, match=r"a manifest is at most"):
        loads_manifest(b" " * ((16 << 20) + 1))
