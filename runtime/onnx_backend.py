"""ONNX Runtime GenAI backend: base loaded once, `.onnx_adapter` files resident in
`og.Adapters`, one active adapter per generation.

ONNX Runtime can neither scale an adapter nor activate two at once, so sgedge composes
what was asked for into one adapter: each scale folded into B, several adapters stacked
along the rank axis (concatenate A's columns and B's rows, so x A B = sum_i s_i x A_i B_i).
A composed adapter is made once per (adapters, scales) and kept loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sgedge._fs import sweep_temp
from sgedge.binding import TRANSFER_HINT
from sgedge.errors import AdapterMismatchError, BackendError, InputError
from sgedge.formats import ONNX_BASE_META as BASE_META
from sgedge.formats.onnx_adapter_io import fingerprint_tag, read_adapter_shapes
from sgedge.runtime.types import Sampling, Timings, shared_prefix

DEVICES = ("auto", "cpu", "gpu", "cuda", "dml")
# A base exported for a GPU provider (--ep cuda) runs only there (tests turn this off
# to check such graphs on the CPU provider, which runs most of them).
REQUIRE_BUILT_PROVIDER = True
_SLOT_SUFFIXES = (".lora_A.MatMul.weight", ".lora_B.MatMul.weight")
_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>$")  # SentencePiece byte-fallback tokens


def _og() -> Any:
    try:
        import onnxruntime_genai as og
    except ImportError as e:  # pragma: no cover
        raise BackendError("the ONNX backend needs onnxruntime-genai: pip install 'sgedge[runtime]'") from e
    return og


@dataclass
class LoadedOnnxAdapter:
    name: str
    path: Path


def read_base_meta(base: Path) -> dict:
    """An ONNX base's sgedge metadata ({} for a folder sgedge did not export)."""
    meta_file = Path(base) / BASE_META
    return json.loads(meta_file.read_text()) if meta_file.is_file() else {}


def check_onnx_adapter(base: Path, meta: dict, path: Path, *, allow_unbound: bool = False) -> None:
    """Refuse an .onnx_adapter that does not belong to the base (binding tag, slot names
    and shapes); reads the adapter's header and the base's metadata, loads no engine."""
    version, shapes = read_adapter_shapes(path)
    problems = []
    base_fp = meta.get("fingerprint")
    if base_fp is None and not allow_unbound:
        problems.append("the base carries no sgedge fingerprint (export it with sgedge, or allow unbound adapters)")
    elif base_fp is not None and version != fingerprint_tag(base_fp) and not allow_unbound:
        problems.append(f"it was exported for another base (tag {version:#x}, this base is "
                        f"{fingerprint_tag(base_fp):#x}, {base_fp[:19]}...)")
    slots = meta.get("slots", {})
    for name, shape in shapes.items():
        slot = next((name[: -len(s)] for s in _SLOT_SUFFIXES if name.endswith(s)), None)
        if slot is None or (slots and slot not in slots):
            problems.append(f"the base has no LoRA input {name}")
            continue
        if slots:
            a_side = name.endswith("lora_A.MatMul.weight")
            want = slots[slot]["in"] if a_side else slots[slot]["out"]
            if len(shape) != 2 or shape[0 if a_side else 1] != want:
                problems.append(f"{name} has shape {list(shape)}, the base slot needs {want} there")
    if not problems:
        _check_finite(path)
    if problems:
        only_fingerprint = len(problems) == 1 and problems[0].startswith("it was exported for another base")
        raise AdapterMismatchError(f"adapter {path} does not belong to base {base}: " + "; ".join(problems[:6])
                                   + (TRANSFER_HINT if only_fingerprint else ""))


def _check_finite(path: Path) -> None:
    """An adapter's weights are finite (NaN would turn replies into garbage, not fail)."""
    from sgedge.formats.onnx_adapter_io import read_adapter

    _, params = read_adapter(path)
    bad = next((n for n, v in params.items() if not np.isfinite(v).all()), None)
    if bad is not None:
        raise InputError(f"{path}: parameter {bad} holds NaN or infinite values; the adapter is damaged "
                                   "(or its training diverged)")


_CACHE_HEADROOM = 1024  # tokens a kept generator holds beyond its request, for a longer next one


@dataclass
class _Live:
    gen: Any
    adapter: str | None  # the og adapter (possibly composed) it ran with
    tokens: list[int]  # what its keys/values hold
    max_length: int
    repeat_penalty: float = 1.0  # a search option: fixed when the generator is made


class OnnxBackend:
    name = "onnx"  # ONNX Runtime GenAI

    def __init__(self, model_dir: str | Path, *, device: str = "auto", threads: int | None = None,
                 prompt_cache: bool = False) -> None:
        og = self._og = _og()
        self.path = Path(model_dir)
        if not (self.path / "genai_config.json").is_file():
            raise InputError(f"{self.path} is not an ONNX Runtime GenAI model folder (no genai_config.json)")
        self.meta = read_base_meta(self.path)
        if device not in DEVICES:
            raise InputError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
        provider = self._provider(device)
        self.device = provider or "cpu"
        built_for = self.meta.get("ep", "cpu")
        if built_for != self.device and built_for != "cpu" and REQUIRE_BUILT_PROVIDER:
            # The builder's CUDA graph uses operators the CPU provider lacks (Qwen3's
            # q/k norm fused into attention fails at the first token); say so up front.
            why = (f"--device {device} was asked for" if device in ("cpu", "dml") else
                   "this onnxruntime-genai has no CUDA provider")
            raise InputError(f"{self.path} was exported for {built_for} (--ep {built_for}) and {why}; "
                             f"export the base with --ep cpu to run it on the CPU, or install "
                             f"onnxruntime-genai-cuda and use --device cuda")
        try:
            config = og.Config(str(self.path))
            config.clear_providers()
            if provider:
                config.append_provider(provider)
            if threads:
                config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
            self._model = og.Model(config)
            self._adapters_og = og.Adapters(self._model)
        except Exception as e:
            raise BackendError(f"onnxruntime-genai could not load {self.path} ({e})") from e
        from tokenizers import Tokenizer

        # HF's own tokenizer (tokenizers) for prompts and replies: the ids transformers would
        # give, and the text its decode gives (og's stream decoder keeps the leading space
        # of a SentencePiece reply, which HF's decoder strips).
        self._hf_tok = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        cfg = json.loads((self.path / "genai_config.json").read_text())["model"]
        eos = cfg.get("eos_token_id", [])
        self._eos = set(eos if isinstance(eos, list) else [eos])
        self.n_ctx = int(cfg.get("context_length", 4096))
        tok_cfg_file = self.path / "tokenizer_config.json"
        self._tok_cfg = json.loads(tok_cfg_file.read_text()) if tok_cfg_file.is_file() else {}
        self._adapters: dict[str, LoadedOnnxAdapter] = {}
        self._composed: dict[tuple[tuple[str, float], ...], str] = {}
        self._active_name: str | None = None
        # The last greedy generator, kept alive with the tokens whose keys/values it holds:
        # reused from its shared prefix (prompt cache) or from 0 (no cache).
        self.prompt_cache = prompt_cache
        self._live: _Live | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix=f"sgedge-onnx-{os.getpid()}-")
        sweep_temp("onnx")

    def _provider(self, device: str) -> str | None:
        og = self._og
        cuda, dml = og.is_cuda_available(), og.is_dml_available()
        if device == "cpu":
            return None
        if device == "cuda" or (device == "gpu" and cuda):
            if not cuda:
                raise BackendError("--device cuda: this onnxruntime-genai has no CUDA (install onnxruntime-genai-cuda)")
            return "cuda"
        if device == "dml" or device == "gpu":
            if not dml:
                raise BackendError(f"--device {device}: this onnxruntime-genai has no GPU provider "
                                   "(install onnxruntime-genai-cuda or -directml, or use --device cpu)")
            return "dml"
        return "cuda" if cuda else "dml" if dml else None

    # -- adapters ---------------------------------------------------------------------
    @property
    def adapters(self) -> dict[str, LoadedOnnxAdapter]:
        return dict(self._adapters)

    def check_adapter(self, path: Path, *, allow_unbound: bool = False) -> None:
        check_onnx_adapter(self.path, self.meta, path, allow_unbound=allow_unbound)

    def load_adapter(self, path: str | Path, name: str | None = None, *, allow_unbound: bool = False) -> str:
        path = Path(path)
        self.check_adapter(path, allow_unbound=allow_unbound)
        name = name or path.stem
        if name in self._adapters:
            raise InputError(f"an adapter named {name!r} is already loaded")
        try:
            self._adapters_og.load(str(path), name)
        except Exception as e:
            raise BackendError(f"onnxruntime-genai could not load adapter {path} ({e})") from e
        self._adapters[name] = LoadedOnnxAdapter(name, path)
        return name

    def unload_adapter(self, name: str) -> None:
        """Free a resident adapter (and every composition that holds it)."""
        if name not in self._adapters:
            raise InputError(f"no adapter named {name!r} is loaded")
        self._live = None  # its keys/values may have been computed under the adapter
        for key, cname in list(self._composed.items()):
            if any(n == name for n, _ in key):
                self._adapters_og.unload(cname)
                del self._composed[key]
        self._adapters_og.unload(name)
        del self._adapters[name]
        if self._active_name not in {*self._adapters, *self._composed.values()}:
            self._active_name = None

    def _compose(self, key: tuple[tuple[str, float], ...]) -> str:
        from sgedge.formats.onnx_adapter_io import compose, write_adapter

        version, composed = compose([(self._adapters[n].path, s) for n, s in key])
        cname = "compose-" + hashlib.sha256(repr(key).encode()).hexdigest()[:12]
        path = Path(self._tmp.name) / f"{cname}.onnx_adapter"
        write_adapter(path, composed, version)
        self._adapters_og.load(str(path), cname)
        return cname

    def set_active(self, active: Sequence[tuple[str, float]]) -> None:
        key = tuple((n, float(s)) for n, s in active)
        unknown = [n for n, _ in key if n not in self._adapters]
        if unknown:
            raise InputError(f"adapter(s) not loaded: {', '.join(unknown)} (loaded: {', '.join(self._adapters) or 'none'})")
        if not key:
            self._active_name = None
        elif len(key) == 1 and key[0][1] == 1.0:
            self._active_name = key[0][0]
        else:
            if key not in self._composed:
                self._composed[key] = self._compose(key)
            self._active_name = self._composed[key]

    # -- text ---------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool, parse_special: bool = True) -> list[int]:
        return list(self._hf_tok.encode(text, add_special_tokens=add_special).ids)

    def text_stream(self) -> Callable[[int | None], str]:
        """A reply's text, token by token (None ends it): the pieces join to transformers'
        decode of the reply (skip_special_tokens), a character split across tokens coming
        whole.

        Each step decodes a short window (the last piece given out and what follows it) and
        gives out what the new tokens added, so the decoder's rules that look at
        neighbours (SentencePiece's leading space, byte fallback) apply as in a whole
        decode. tokenizers' own DecodeStream does the same but raises when invalid bytes
        change how an earlier piece decodes, which a model can produce."""
        decode, piece, ids = self._hf_tok.decode, self._hf_tok.id_to_token, []
        at = [0, 0]  # start of the window, end of what was given out

        def step(token: int | None) -> str:
            if token is not None:
                ids.append(token)
            before = decode(ids[at[0]:at[1]], skip_special_tokens=True)
            now = decode(ids[at[0]:], skip_special_tokens=True)
            # Hold back a character still being assembled, and byte-fallback tokens (a run of
            # them is decoded as one byte string, valid or all replacement characters), until
            # the next piece or the end.
            held = token is not None and (now.endswith("\ufffd") or _BYTE_PIECE.match(piece(token) or ""))
            if len(now) <= len(before) or held:
                return ""
            at[0], at[1] = at[1], len(ids)
            return now[len(before):]

        return step

    def _special(self, key: str) -> str:
        tok = self._tok_cfg.get(key)
        return (tok.get("content", "") if isinstance(tok, dict) else tok) or ""

    def bos_text(self) -> str:
        return self._special("bos_token")

    def eos_text(self) -> str:
        return self._special("eos_token")

    def chat_template(self) -> str | None:
        jinja = self.path / "chat_template.jinja"
        if jinja.is_file():
            return jinja.read_text("utf-8")
        return self._tok_cfg.get("chat_template")

    # -- evaluation -----------------------------------------------------------------------
    def _generator(self, max_length: int, sampling: Sampling | None = None) -> Any:
        og = self._og
        params = og.GeneratorParams(self._model)
        opts: dict[str, Any] = {"max_length": max_length, "do_sample": False}
        if sampling is not None:
            if sampling.temperature > 0:
                opts.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                            top_k=sampling.top_k or 0, random_seed=sampling.seed)
            if sampling.repeat_penalty != 1.0:
                opts["repetition_penalty"] = sampling.repeat_penalty
            if sampling.ignore_eos:
                opts["min_length"] = max_length
        params.set_search_options(**opts)
        if sampling is not None and sampling.response_format is not None:
            kind, schema = sampling.response_format
            # Compact JSON, as llama.cpp's grammar writes it: free whitespace lets a model
            # spend its whole budget on spaces (llguidance's x-guidance option).
            spec = json.loads(schema) if kind == "json_schema" else {"type": "object"}
            spec.setdefault("x-guidance", {"whitespace_flexible": False})
            try:
                params.set_guidance("json_schema", json.dumps(spec))
            except Exception as e:  # a build without guidance, or a schema it cannot take
                raise InputError(f"structured output on the ONNX backend needs onnxruntime-genai's guidance "
                                 f"support, which refused this request ({str(e)[:200]}); run the GGUF backend "
                                 "(llama.cpp grammars) for it") from None
        gen = og.Generator(self._model, params)
        if self._active_name is not None:
            gen.set_active_adapter(self._adapters_og, self._active_name)
        return gen

    def _engine_error(self, e: Exception) -> BackendError:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = ""
        if "re-use buffer" in msg:
            # Exports made before sgedge recorded each slot's rank axis kept the builder's
            # [batch, seq, 1] shapes, which break adapters whose slots differ in rank.
            hint = (f"; {self.path} was exported by an older sgedge that cannot run adapters whose layers "
                    "differ in rank (layers_to_transform, rank_pattern): export the base again with "
                    "`sgedge export base --format onnx`")
        return BackendError(f"onnxruntime-genai failed while running {self.path} ({msg[:300]}){hint}")

    def _check_room(self, n: int) -> None:
        if n > self.n_ctx:
            raise InputError(f"{n} tokens do not fit the context of {self.n_ctx} tokens; shorten the prompt or max_tokens")

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        self._check_room(len(tokens) + 1)
        gen = self._generator(len(tokens) + 1)
        try:
            gen.append_tokens(list(tokens))
            return np.asarray(gen.get_output("logits"), dtype=np.float32)[0]
        except RuntimeError as e:
            raise self._engine_error(e) from e

    def _reuse(self, prompt: Sequence[int], sampling: Sampling) -> tuple[Any, int, int]:
        """A generator for `prompt` and how many of its first tokens it already holds.

        Greedy generations reuse the last generator when the adapters are the same and the
        reply fits: rewound to the prefix it shares with `prompt` (prompt cache), or to 0,
        which gives a fresh generator's logits bit for bit without the cost of making one
        (its buffers stay allocated between calls). Anything else gets a new generator;
        the old one is dropped first, so there is one KV buffer at a time."""
        need = len(prompt) + sampling.max_tokens
        # Sampling keeps its RNG state, guidance its grammar state: neither generator is reused.
        greedy = sampling.temperature <= 0 and not sampling.ignore_eos and sampling.response_format is None
        live, self._live = self._live, None
        if (greedy and live is not None and live.adapter == self._active_name and need <= live.max_length
                and live.repeat_penalty == sampling.repeat_penalty):
            # One prompt token is always computed: its logits pick the first reply token.
            keep = shared_prefix(live.tokens, prompt, len(prompt) - 1) if self.prompt_cache else 0
            live.gen.rewind_to(keep)
            return live.gen, keep, live.max_length
        del live
        # Room for a longer next request (a chat's next turn), so that it can reuse this one.
        max_length = min(self.n_ctx, need + _CACHE_HEADROOM) if greedy else need
        return self._generator(max_length, sampling), 0, max_length

    def generate(self, prompt: Sequence[int], sampling: Sampling,
                 timings: Timings) -> Generator[tuple[int, str], None, None]:
        if not prompt:
            raise InputError("the prompt is empty")
        self._check_room(len(prompt) + sampling.max_tokens)
        t0 = time.perf_counter()
        try:
            gen, cached, max_length = self._reuse(prompt, sampling)
            gen.append_tokens(list(prompt[cached:]))
        except RuntimeError as e:
            raise self._engine_error(e) from e
        text = self.text_stream()
        t1 = time.perf_counter()
        timings.prefill_s, timings.prompt_tokens, timings.cached_tokens = t1 - t0, len(prompt), cached
        n, steps, reply = 0, 0, []
        ok = False
        try:
            while n < sampling.max_tokens and not gen.is_done():
                try:
                    gen.generate_next_token()
                except RuntimeError as e:
                    raise self._engine_error(e) from e
                steps += 1
                tok = int(gen.get_next_tokens()[0])
                if tok in self._eos and not sampling.ignore_eos:
                    break
                n += 1
                reply.append(tok)
                yield tok, text(tok)
            tail = text(None)  # a character or byte run held back at the end of the reply
            if tail:
                yield -1, tail
            ok = True
        except GeneratorExit:  # the caller stopped early: what was computed is still valid
            ok = True
            raise
        finally:  # also when the caller stops early (a stop string, a client gone)
            timings.decode_s, timings.generated_tokens = time.perf_counter() - t1, n
            if ok and sampling.temperature <= 0 and not sampling.ignore_eos and sampling.response_format is None:
                # Each step computes the token sampled by the step before: the last sampled
                # token (the reply's last, or the end token) has no keys/values yet.
                self._live = _Live(gen, self._active_name, [*prompt, *reply[:max(steps - 1, 0)]], max_length,
                                   sampling.repeat_penalty)

    def close(self) -> None:
        self._live = None  # its generator goes before the model and adapters it runs on
        self._adapters.clear()
        self._composed.clear()
        self._adapters_og = None
        self._model = None
        self._tmp.cleanup()

    def __enter__(self) -> OnnxBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
