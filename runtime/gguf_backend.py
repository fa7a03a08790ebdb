"""llama.cpp backend: one base loaded once (mmap), any number of resident LoRA adapters,
a subset with a scale each activated per generation (`llama_set_adapters_lora`).

This class owns the native handles (model, context, adapters, sampler) and frees them
in `close()`. It checks that every adapter belongs to the base before loading it.
"""

from __future__ import annotations

import codecs
import ctypes
import json
import time
from collections.abc import Callable, Generator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sgedge import binding
from sgedge.errors import AdapterMismatchError, BackendError, InputError
from sgedge.formats.gguf_meta import GGUFInfo, read_gguf_info
from sgedge.runtime.gguf_preflight import preflight_cached, preflight_gguf
from sgedge.runtime.llama_lib import lib, native_stderr_silenced, physical_cores, recent_errors
from sgedge.runtime.threads import MIN_INTERVAL_S, AutoThreads
from sgedge.runtime.types import Sampling, Timings, shared_prefix

DEVICES = ("auto", "cpu", "gpu")


@dataclass
class LoadedAdapter:
    name: str
    path: Path
    handle: Any
    info: GGUFInfo


def check_adapter_fits(base: GGUFInfo, adapter: GGUFInfo, *, allow_unbound: bool = False,
                       base_sha256: Callable[[], str] | None = None) -> None:
    """Raise AdapterMismatchError listing every reason `adapter` does not belong to `base`.

    A base without sgedge metadata (a GGUF file the user had, imported with `sgedge
    import`) is bound by its bytes: the adapter records the sha256 of the file its base
    was imported from, and `base_sha256()` (hashed only then) must equal it."""
    where = adapter.path
    if not adapter.is_adapter or adapter.get("adapter.type") != "lora":
        raise AdapterMismatchError(f"{where} is not a LoRA adapter GGUF (general.type={adapter.get('general.type')!r})")
    problems = []
    if adapter.arch != base.arch:
        problems.append(f"it is for architecture {adapter.arch!r}, the base is {base.arch!r}")
    a_fp, b_fp = adapter.get(binding.KEY_BASE_FINGERPRINT), base.get(binding.KEY_BASE_FINGERPRINT)
    a_src = adapter.get(binding.KEY_BASE_SOURCE_SHA256)
    mismatch = False
    if b_fp is None and a_fp is not None and isinstance(a_src, str) and base_sha256 is not None:
        b_sha = base_sha256()
        if b_sha != a_src:
            mismatch = True
            problems.append(f"it was exported for base {a_fp[:19]}... (imported from the GGUF file with sha256 "
                            f"{a_src[:12]}...), the loaded base is another file (sha256 {b_sha[:12]}...)")
    elif a_fp is None or b_fp is None:
        if not allow_unbound:
            which = "adapter" if a_fp is None else "base"
            problems.append(
                f"the {which} carries no sgedge base fingerprint, so the binding cannot be checked "
                "(export both with sgedge, import the base with `sgedge import` and export the adapter against "
                "that, or allow unbound adapters explicitly)"
            )
    elif a_fp != b_fp:
        mismatch = True
        problems.append(f"it was exported for base {a_fp[:19]}..., the loaded base is {b_fp[:19]}...")
    for name, shape in adapter.shapes.items():
        if name.endswith(".lora_a"):
            target = name[: -len(".lora_a")]
            b_shape = adapter.shapes.get(target + ".lora_b")
            base_shape = base.shapes.get(target)
            if base_shape is None:
                problems.append(f"the base has no tensor {target}")
            elif b_shape is None:
                problems.append(f"{target} has lora_a but no lora_b")
            elif shape[1] != base_shape[1] or b_shape[0] != base_shape[0] or shape[0] != b_shape[1]:
                problems.append(
                    f"{target}: LoRA {shape[1]}->{b_shape[0]} (rank {shape[0]}) does not fit the base's "
                    f"{base_shape[1]}->{base_shape[0]}"
                )
    if problems:
        raise AdapterMismatchError(
            f"adapter {where} does not belong to base {base.path}: " + "; ".join(problems[:6])
            + (binding.TRANSFER_HINT if len(problems) == 1 and mismatch else "")
        )


def file_sha256(path: Path, verify: str = "cached") -> str:
    """sha256 of a base file, cached by file identity (path, size, mtime, inode) unless
    verify="full", as a bundle's base hash is."""
    from sgedge.bundle_verify import HashCache, sha256_file

    if verify == "full":
        return sha256_file(path)
    cache = HashCache()
    digest = cache.sha256(path)
    cache.save()
    return digest


def _stop_tokens(info: GGUFInfo, n_vocab: int) -> frozenset[int]:
    """The extra end-of-generation ids sgedge's exporter recorded (unreadable: none)."""
    try:
        ids = json.loads(info.get(binding.KEY_STOP_TOKENS) or "[]")
    except json.JSONDecodeError:
        return frozenset()
    if not isinstance(ids, list):
        return frozenset()
    return frozenset(i for i in ids if isinstance(i, int) and 0 <= i < n_vocab)


class GgufBackend:
    name = "gguf"  # llama.cpp, through llama-cpp-python

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 4096,
        threads: int | None = None,
        device: str = "auto",
        gpu_layers: int | None = None,
        exact: bool = False,
        prompt_cache: bool = False,
        verify: str = "cached",
    ) -> None:
        self._stack = ExitStack()
        self._verify = verify
        self._sha256: str | None = None
        self._llama = llama = lib()
        self.path = Path(model_path)
        self.info = read_gguf_info(self.path)
        if self.info.is_adapter:
            raise InputError(f"{self.path} is a LoRA adapter; pass it with --adapter and give the base as --model")
        preflight_cached(self.path)
        if device not in DEVICES:
            raise InputError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
        gpu_ok = bool(llama.llama_supports_gpu_offload())
        if device == "gpu" and not gpu_ok:
            raise BackendError(
                "a GPU was asked for (--device gpu or cuda), but this llama-cpp-python was built without a GPU backend "
                "(rebuild it with CMAKE_ARGS=-DGGML_CUDA=on, or use --device cpu)"
            )
        n_gpu = 0 if device == "cpu" or not gpu_ok else (999 if gpu_layers is None else gpu_layers)
        self.device = "gpu" if n_gpu > 0 else "cpu"
        self._adapters: dict[str, LoadedAdapter] = {}
        self._active: tuple[tuple[str, float], ...] = ()
        # Prompt cache: the tokens whose keys/values the context holds (positions 0..n-1)
        # and the adapter set they were computed under. A prompt that starts with them,
        # under the same adapters, decodes only the rest (a chat's next turn).
        self.prompt_cache = prompt_cache
        self._kv_tokens: list[int] = []
        self._kv_adapters: tuple[tuple[str, float], ...] | None = None
        try:
            mparams = llama.llama_model_default_params()
            mparams.n_gpu_layers = n_gpu
            mparams.load_mode = llama.LLAMA_LOAD_MODE_MMAP
            with native_stderr_silenced():
                self._model = llama.llama_model_load_from_file(str(self.path).encode(), mparams)
            if not self._model:
                raise BackendError(f"llama.cpp could not load {self.path} ({recent_errors() or 'unknown error'})")
            self._stack.callback(llama.llama_model_free, self._model)
            self._vocab = llama.llama_model_get_vocab(self._model)
            # No explicit count: one thread per core other processes leave free, measured
            # again while decoding (runtime/threads.py).
            auto = None if threads else AutoThreads(physical_cores())
            self._auto = auto
            self._next_look = time.monotonic() + MIN_INTERVAL_S
            n_threads = threads or (auto.current if auto is not None else 1)
            cparams = llama.llama_context_default_params()
            cparams.n_ctx = min(n_ctx, llama.llama_model_n_ctx_train(self._model)) if n_ctx else 0
            cparams.n_batch = min(512, cparams.n_ctx or 512)
            cparams.n_threads = n_threads
            cparams.n_threads_batch = n_threads
            cparams.no_perf = True
            # The model's own YaRN correction range: this llama.cpp keeps its defaults
            # (32 / 1) unless the context says otherwise, whatever the GGUF records.
            for key in ("yarn_beta_fast", "yarn_beta_slow"):
                value = self.info.get(f"{self.info.arch}.rope.scaling.{key}")
                if isinstance(value, float | int):
                    setattr(cparams, key, float(value))
            if exact:
                # llama.cpp's defaults (f16 KV cache, flash attention) move logits by
                # ~5e-3; f32 cache without flash attention matches transformers to ~1e-5.
                cparams.type_k = cparams.type_v = llama.GGML_TYPE_F32
                cparams.flash_attn_type = llama.LLAMA_FLASH_ATTN_TYPE_DISABLED
            with native_stderr_silenced():
                self._ctx = llama.llama_init_from_model(self._model, cparams)
            if not self._ctx:
                raise BackendError(f"llama.cpp could not create a context ({recent_errors() or 'unknown error'})")
            self._stack.callback(llama.llama_free, self._ctx)
            self.n_ctx = int(llama.llama_n_ctx(self._ctx))
            self.n_batch = int(cparams.n_batch)
            self._mem = llama.llama_get_memory(self._ctx)
        except BaseException:
            self._stack.close()
            raise
        self._piece_buf = ctypes.create_string_buffer(256)
        self.n_vocab = int(llama.llama_vocab_n_tokens(self._vocab))
        self.spm = self.info.get("tokenizer.ggml.model") == "llama"
        self._stop = _stop_tokens(self.info, self.n_vocab)

    @property
    def threads(self) -> int:
        """The thread count decoding uses now."""
        return int(self._llama.llama_n_threads(self._ctx))

    def _retune(self) -> None:
        """Automatic thread count: follow the cores other processes leave free."""
        self._next_look = time.monotonic() + MIN_INTERVAL_S
        n = self._auto.update() if self._auto is not None else None
        if n is not None:
            self._llama.llama_set_n_threads(self._ctx, n, n)

    # -- adapters ---------------------------------------------------------------
    def file_sha256(self) -> str:
        """sha256 of the base file, hashed once: what binds adapters to a GGUF without
        sgedge metadata."""
        if self._sha256 is None:
            self._sha256 = file_sha256(self.path, self._verify)
        return self._sha256

    @property
    def adapters(self) -> dict[str, LoadedAdapter]:
        return dict(self._adapters)

    def load_adapter(self, path: str | Path, name: str | None = None, *, allow_unbound: bool = False) -> str:
        """Check `path` belongs to the base, then keep it resident. Returns its name."""
        path = Path(path)
        info = read_gguf_info(path)
        check_adapter_fits(self.info, info, allow_unbound=allow_unbound, base_sha256=self.file_sha256)
        preflight_gguf(path, base=False)
        name = name or path.stem
        if name in self._adapters:
            raise InputError(f"an adapter named {name!r} is already loaded")
        llama = self._llama
        with native_stderr_silenced():
            handle = llama.llama_adapter_lora_init(self._model, str(path).encode())
        if not handle:
            raise BackendError(f"llama.cpp could not load adapter {path} ({recent_errors() or 'unknown error'})")
        self._adapters[name] = LoadedAdapter(name, path, handle, info)
        return name

    def unload_adapter(self, name: str) -> None:
        """Free a resident adapter (switching it off first if it is active)."""
        if name not in self._adapters:
            raise InputError(f"no adapter named {name!r} is loaded")
        if any(n == name for n, _ in self._active):
            self.set_active(())
        self._clear()  # keys/values computed under it must not be reused
        self._llama.llama_adapter_lora_free(self._adapters.pop(name).handle)

    def set_active(self, active: Sequence[tuple[str, float]]) -> None:
        """Activate `active` [(name, scale)], replacing the previous set (empty: bare base)."""
        key = tuple((n, float(s)) for n, s in active)
        if key == self._active:
            return
        unknown = [n for n, _ in key if n not in self._adapters]
        if unknown:
            raise InputError(f"adapter(s) not loaded: {', '.join(unknown)} (loaded: {', '.join(self._adapters) or 'none'})")
        llama = self._llama
        n = len(key)
        arr = (llama.llama_adapter_lora_p_ctypes * max(n, 1))(*[self._adapters[k].handle for k, _ in key])
        scales = (ctypes.c_float * max(n, 1))(*[s for _, s in key])
        rc = llama.llama_set_adapters_lora(self._ctx, arr if n else None, n, scales if n else None)
        if rc != 0:
            raise BackendError(f"llama.cpp refused the adapter set ({recent_errors() or f'code {rc}'})")
        self._active = key

    # -- text -------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool, parse_special: bool = True) -> list[int]:
        llama = self._llama
        data = text.encode("utf-8")
        cap = len(data) + 16
        buf = (llama.llama_token * cap)()
        n = llama.llama_tokenize(self._vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:
            cap = -n
            buf = (llama.llama_token * cap)()
            n = llama.llama_tokenize(self._vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:
            raise BackendError("llama.cpp could not tokenize the prompt")
        return list(buf[:n])

    def piece(self, token: int, *, lstrip: int = 0) -> bytes:
        n = self._llama.llama_token_to_piece(self._vocab, token, self._piece_buf, 256, lstrip, False)
        if n < 0:
            big = ctypes.create_string_buffer(-n)
            n = self._llama.llama_token_to_piece(self._vocab, token, big, -n, lstrip, False)
            return big.raw[:n]
        return self._piece_buf.raw[:n]

    def text_stream(self) -> Callable[[int | None], str]:
        """A reply's text, token by token (None ends it, giving what is left of a split
        character): llama.cpp's pieces without special tokens, as transformers' decode."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        first = [True]

        def step(token: int | None) -> str:
            if token is None:
                return decoder.decode(b"", final=True)
            # SentencePiece pieces start with a space; like HF decode, drop it once.
            lstrip = 1 if first[0] and self.spm else 0
            first[0] = False
            return decoder.decode(self.piece(token, lstrip=lstrip))

        return step

    def token_text(self, token: int) -> str:
        return (self._llama.llama_vocab_get_text(self._vocab, token) or b"").decode("utf-8", "replace")

    def bos_text(self) -> str:
        bos = self._llama.llama_vocab_bos(self._vocab)
        return self.token_text(bos) if bos >= 0 else ""

    def eos_text(self) -> str:
        eos = self._llama.llama_vocab_eos(self._vocab)
        return self.token_text(eos) if eos >= 0 else ""

    @property
    def add_bos(self) -> bool:
        return bool(self._llama.llama_vocab_get_add_bos(self._vocab))

    def chat_template(self) -> str | None:
        raw = self._llama.llama_model_chat_template(self._model, None)
        return raw.decode("utf-8") if raw else None

    # -- evaluation ---------------------------------------------------------------
    def _clear(self) -> None:
        self._llama.llama_memory_clear(self._mem, True)
        self._kv_tokens, self._kv_adapters = [], None

    def _reuse(self, prompt: Sequence[int]) -> int:
        """Keep the context's keys/values for the longest prefix of `prompt` computed
        under the active adapters (never across an adapter change) and return its
        length; 0 clears the context. One prompt token is always left to decode: its
        logits pick the first reply token."""
        keep = 0
        if self.prompt_cache and self._kv_adapters == self._active:
            keep = shared_prefix(self._kv_tokens, prompt, len(prompt) - 1)
        if keep == 0 or not self._llama.llama_memory_seq_rm(self._mem, 0, keep, -1):
            self._clear()
            keep = 0
        self._kv_tokens, self._kv_adapters = list(prompt[:keep]), self._active
        return keep

    def _decode(self, tokens: Sequence[int]) -> None:
        llama = self._llama
        for i in range(0, len(tokens), self.n_batch):
            chunk = tokens[i : i + self.n_batch]
            arr = (llama.llama_token * len(chunk))(*chunk)
            rc = llama.llama_decode(self._ctx, llama.llama_batch_get_one(arr, len(chunk)))
            if rc != 0:
                raise BackendError(f"llama.cpp decode failed (code {rc}; {recent_errors()})")

    def _check_room(self, n: int) -> None:
        if n > self.n_ctx:
            raise InputError(f"{n} tokens do not fit the context of {self.n_ctx} tokens; shorten the prompt or max_tokens")

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """Teacher-forced logits (len(tokens), n_vocab) under the active adapters."""
        llama = self._llama
        self._check_room(len(tokens))
        self._clear()
        out = np.empty((len(tokens), self.n_vocab), dtype=np.float32)
        batch = llama.llama_batch_init(self.n_batch, 0, 1)
        try:
            for start in range(0, len(tokens), self.n_batch):
                chunk = tokens[start : start + self.n_batch]
                batch.n_tokens = len(chunk)
                for j, tok in enumerate(chunk):
                    batch.token[j] = tok
                    batch.pos[j] = start + j
                    batch.n_seq_id[j] = 1
                    batch.seq_id[j][0] = 0
                    batch.logits[j] = True
                if llama.llama_decode(self._ctx, batch) != 0:
                    raise BackendError(f"llama.cpp decode failed ({recent_errors()})")
                for j in range(len(chunk)):
                    ptr = llama.llama_get_logits_ith(self._ctx, j)
                    out[start + j] = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
        finally:
            llama.llama_batch_free(batch)
        return out

    def _sampler(self, s: Sampling, prompt: Sequence[int]) -> Any:
        llama = self._llama
        chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
        if s.repeat_penalty != 1.0:
            # Over the whole sequence, as ONNX Runtime GenAI and Hugging Face apply it: a window
            # as long as prompt and reply, primed with the prompt (accepted here, before the
            # chain owns it, so that a grammar sampler never sees the prompt's tokens).
            pen = llama.llama_sampler_init_penalties(self.n_vocab, len(prompt) + s.max_tokens, s.repeat_penalty, 0.0, 0.0)
            for tok in prompt:
                llama.llama_sampler_accept(pen, tok)
            llama.llama_sampler_chain_add(chain, pen)
        if s.response_format is not None:
            from sgedge.runtime.structured import gbnf

            grammar = llama.llama_sampler_init_grammar(self._vocab, gbnf(*s.response_format).encode(), b"root")
            if not grammar:
                llama.llama_sampler_free(chain)
                raise InputError(f"llama.cpp could not build a grammar for this response_format "
                                 f"({recent_errors() or 'unknown error'})")
            llama.llama_sampler_chain_add(chain, grammar)
        if s.temperature <= 0:
            llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_greedy())
            return chain
        if s.top_k > 0:
            llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_top_k(s.top_k))
        if s.top_p < 1.0:
            llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_top_p(s.top_p, 1))
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_temp(s.temperature))
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_dist(s.seed & 0xFFFFFFFF))
        return chain

    def generate(self, prompt: Sequence[int], sampling: Sampling,
                 timings: Timings) -> Generator[tuple[int, str], None, None]:
        """Yield (token, text piece) until end-of-generation or max_tokens.

        The sampler runs inside llama.cpp: no logits are copied to Python.
        """
        llama = self._llama
        if not prompt:
            raise InputError("the prompt is empty")
        self._check_room(len(prompt) + sampling.max_tokens)
        t0 = time.perf_counter()
        if self._auto is not None:
            self._retune()
        cached = self._reuse(prompt)
        chain = self._sampler(sampling, prompt)
        text = self.text_stream()
        n, t1 = 0, 0.0
        try:
            self._decode(prompt[cached:])
            self._kv_tokens.extend(prompt[cached:])
            t1 = time.perf_counter()
            timings.prefill_s, timings.prompt_tokens, timings.cached_tokens = t1 - t0, len(prompt), cached
            one = (llama.llama_token * 1)()
            while n < sampling.max_tokens:
                tok = llama.llama_sampler_sample(chain, self._ctx, -1)
                if not sampling.ignore_eos and (tok in self._stop or llama.llama_vocab_is_eog(self._vocab, tok)):
                    break
                n += 1
                yield tok, text(tok)
                if n == sampling.max_tokens:
                    break
                one[0] = tok
                if self._auto is not None and time.monotonic() >= self._next_look:
                    self._retune()
                if llama.llama_decode(self._ctx, llama.llama_batch_get_one(one, 1)) != 0:
                    raise BackendError(f"llama.cpp decode failed ({recent_errors()})")
                self._kv_tokens.append(tok)
            tail = text(None)
            if tail:
                yield -1, tail
        except GeneratorExit:  # the caller stopped early: what was decoded is still valid
            raise
        except BaseException:
            self._clear()  # a failed decode leaves the context unknown: start over next time
            raise
        finally:  # also when the caller stops early (a stop string, a client gone)
            if t1:
                timings.decode_s, timings.generated_tokens = time.perf_counter() - t1, n
            llama.llama_sampler_free(chain)

    def close(self) -> None:
        try:
            for a in self._adapters.values():  # before the model they belong to
                self._llama.llama_adapter_lora_free(a.handle)
        finally:
            self._adapters.clear()
            self._stack.close()

    def __enter__(self) -> GgufBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
