"""The public Python API: `Runtime`.

    from sgedge import Runtime
    with Runtime.open("base.gguf", adapters=["safety.gguf"]) as rt:
        print(rt.generate("How do I bake bread?").text)

A runtime loads the base once and keeps its adapters resident; each call may pick a
different subset of them with a scale each (`adapters=[("safety", 1.0)]`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sgedge.errors import InputError, SgedgeError
from sgedge.manifest import adapter_scale
from sgedge.runtime.backend import Backend
from sgedge.runtime.chat import render_chat
from sgedge.runtime.options import BACKENDS, EngineOptions
from sgedge.runtime.stop import StopScanner, check_stops
from sgedge.runtime.types import ActiveAdapter, GenerationResult, Sampling, Timings

AdapterSpec = str | Path | tuple[str | Path, float]


def parse_adapter_arg(spec: str) -> tuple[str, float]:
    """'PATH[:SCALE]' -> (path, scale). The scale is split off only when it is a number
    (a path may hold colons), or when PATH exists and SPEC does not (then it must be one)."""
    head, sep, tail = spec.rpartition(":")
    if sep and head:
        try:
            float(tail)
        except ValueError:
            if Path(head).is_file() and not Path(spec).exists():
                adapter_scale(tail, f"--adapter {spec}")
        else:
            return head, adapter_scale(tail, f"--adapter {spec}")
    return spec, 1.0


ENGINE_MODULES = {"gguf": ("llama_cpp", "llama-cpp-python"), "onnx": ("onnxruntime_genai", "onnxruntime-genai")}


def bundle_backend(formats: Sequence[str], device: str = "auto") -> tuple[str, str | None]:
    """The format a bundle runs in when no backend is asked for, and a note when it is not
    the first choice: GGUF (llama.cpp) first; ONNX for --device dml, or when the GGUF
    engine is not installed and the ONNX one is. With neither installed, the first format
    (whose loader then names the package to install)."""
    import importlib.util

    order = [f for f in BACKENDS if f in formats]
    if not order:
        raise InputError(f"the bundle has no base this sgedge can run (formats: {', '.join(formats) or 'none'})")
    if device == "dml" and "onnx" in order:
        return "onnx", None
    for kind in order:
        if importlib.util.find_spec(ENGINE_MODULES[kind][0]) is not None:
            if kind == order[0]:
                return kind, None
            first, missing = order[0], ENGINE_MODULES[order[0]][1]
            return kind, (f"{missing} is not installed, so the bundle's {kind} base runs instead of its {first} "
                          f"one (pip install 'sgedge[runtime]' for both)")
    return order[0], None


def detect_backend(path: Path) -> str:
    if path.is_file() and path.suffix.lower() == ".gguf":
        return "gguf"
    if path.is_file():
        with open(path, "rb") as f:
            if f.read(4) == b"GGUF":
                return "gguf"
    if path.is_dir() and (path / "genai_config.json").is_file():
        return "onnx"
    if not path.exists():
        raise InputError(f"model {path} does not exist")
    raise InputError(f"cannot tell the backend of {path}: expected a .gguf file or an ONNX model folder")


def pool_candidates(manifest: Any, key: str | None, active: Sequence[tuple[str, float]]) -> list[tuple[str, Any]]:
    """A bundle's policies for the pool: the start-up choice first, then the manifest's order."""
    out = [(key or ("start-up" if active else "bare"), tuple(active))]
    for name, items in manifest.policies.items():
        if name != key:
            out.append((name, tuple((i.adapter, i.scale) for i in items)))
    if manifest.allow_no_adapter and active:
        out.append(("bare", ()))  # GGUF runs it on the dynamic engine at no cost; ONNX gets a slot-free copy
    return out


def _check_adapter_format(adapter: Path, kind: str, model: Path) -> None:
    """Say plainly when an adapter is in the other engine's format (by its magic bytes)."""
    try:
        with open(adapter, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise InputError(f"cannot read adapter {adapter} ({e})") from e
    if kind == "gguf" and head[4:8] == b"TORT":
        raise InputError(f"{adapter} is an ONNX Runtime adapter (.onnx_adapter) and {model} a GGUF model "
                         "(llama.cpp): give the adapter's GGUF export (sgedge export adapter PEFT_DIR --format gguf), "
                         "or run it with the ONNX base it was exported for")
    if kind == "onnx" and head[:4] == b"GGUF":
        raise InputError(f"{adapter} is a GGUF LoRA adapter (llama.cpp) and {model} an ONNX model folder: give the "
                         "adapter's ONNX export (sgedge export adapter PEFT_DIR --format onnx --base ONNX_DIR), or "
                         "run it with the GGUF base it was exported for")


@dataclass
class _Adapter:
    name: str
    path: Path
    scale: float


class _Closed:
    """Stands in for a closed runtime's backend: what it was stays readable (name,
    adapters), every use says the runtime is closed, close stays a no-op."""

    def __init__(self, backend: Any) -> None:
        self.name, self.adapters = backend.name, dict(backend.adapters)

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        raise InputError("this Runtime is closed; open another with Runtime.open(...)")


@dataclass
class _Turn:
    """One call's hold on the engine."""

    thread: int
    pieces: Any = None  # the engine's generator, while a generation runs
    cancelled: bool = False


def _check_text(prompt: Any) -> None:
    """A prompt is Unicode text: a lone surrogate (from a bad decode, or a hostile request)
    cannot be encoded for the tokenizer."""
    if not isinstance(prompt, str) and isinstance(prompt, Sequence):
        for i, m in enumerate(prompt):
            if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(
                    m.get("content"), str):
                raise InputError(f"message {i} must be {{'role': str, 'content': str}} (got {str(m)[:80]})")
    texts = [prompt] if isinstance(prompt, str) else [
        v for m in (prompt if isinstance(prompt, Sequence) else []) if isinstance(m, Mapping) for v in m.values()]
    for t in texts:
        if isinstance(t, str):
            try:
                t.encode("utf-8")
            except UnicodeEncodeError as e:
                raise InputError(f"the prompt is not Unicode text ({e.reason} at position {e.start}); pass str "
                                 "decoded from UTF-8") from None
    if not isinstance(prompt, str) and not (isinstance(prompt, Sequence) and all(
            isinstance(m, Mapping) for m in prompt)):
        raise InputError("a prompt is a string, or a list of {'role': ..., 'content': ...} messages")


class Runtime:
    """A loaded base model with resident adapters. Library code raises, never exits."""

    def __init__(self, backend: Backend, active: Sequence[tuple[str, float]], load_s: float,
                 manifest: Any = None, policy: str | None = None) -> None:
        self._backend: Backend = backend
        self._default = tuple(active)
        self.load_s = load_s
        self._manifest = manifest
        self.policy = policy  # the bundle policy chosen at start-up (None: no bundle, or bare base)
        # One engine context: generations run one at a time. Threads may share a Runtime;
        # each call waits its turn and runs with its own policy, so no cross-talk. `close()`
        # may come from any thread at any moment: the engine is freed once no call is in it.
        self._cv = threading.Condition()
        self._owner: _Turn | None = None  # the generation that holds the engine
        self._shared = 0  # calls in the engine that do not need it alone (tokenizing)
        self._closing = False
        self._freed = False
        self._fused: tuple[tuple[str, float], ...] = ()  # adapters merged into the weights (fused mode)
        self.fused_path: Path | None = None
        self._notes: list[str] = []  # said at start-up (e.g. which of a bundle's formats runs, and why)
        self._pins: Any = None  # a bundle's checked files, held open while the engine uses them
        self._names: dict[str, str] = {}  # a bundle adapter's name -> its name in the engine (after reloads)
        self._reload: Any = None  # what reload() needs of a bundle runtime (runtime/reload.py)
        self.bundle_version: str | None = None  # sha256 of the manifest's bytes, first 12 digits
        self._mode = "dynamic"  # as asked at open (fused runtimes are told by _fused / fused_path)

    @classmethod
    def open(
        cls,
        model: str | Path,
        region: str | None = None,
        *,
        trusted_key: str | Path | None = None,
        verify: str = "cached",
        no_adapter: bool = False,
        adapters: Sequence[AdapterSpec] = (),
        allow_unbound_adapters: bool = False,
        options: EngineOptions | None = None,
        backend: str | None = None,
        device: str = "auto",
        gpu_layers: int | None = None,
        threads: int | None = None,
        n_ctx: int = 4096,
        exact: bool = False,
        mode: str = "dynamic",
        prompt_cache: bool = False,
        pool_memory: int | str | None = None,
    ) -> Runtime:
        """Open a bundle folder (`open_bundle`: `region`, `trusted_key`, `no_adapter`) or a
        model, a .gguf file or ONNX folder (`open_model`: `adapters`, path or (path, scale)).
        How the engine runs is `options` (an EngineOptions), or the same names as keywords
        here (backend, device, gpu_layers, threads, n_ctx, exact, mode, prompt_cache,
        pool_memory, e.g. "2G"). Raises SgedgeError subclasses with clear messages."""
        from sgedge.runtime.pool import parse_size

        given = EngineOptions(backend=backend, device=device, gpu_layers=gpu_layers, threads=threads, n_ctx=n_ctx,
                              exact=exact, mode=mode, prompt_cache=prompt_cache,
                              pool_memory=parse_size(pool_memory))
        if options is not None and given != EngineOptions():
            raise InputError("give the engine's settings either as options=EngineOptions(...) or as keywords, not both")
        opts = options or given
        model = Path(model)
        if (model / "sgedge.json").is_file():
            if adapters:
                raise InputError(f"{model} is a bundle: its adapters come from its policies (region=), not adapters=")
            return cls.open_bundle(model, region, trusted_key=trusted_key, verify=verify, no_adapter=no_adapter,
                                   options=opts)
        if region is not None or trusted_key is not None:
            raise InputError(f"{model} is not a bundle (no sgedge.json): region and trusted_key apply to bundles")
        if no_adapter and adapters:
            raise InputError("no_adapter and adapters contradict each other")
        return cls.open_model(model, adapters, allow_unbound_adapters=allow_unbound_adapters, verify=verify,
                              options=opts)

    @classmethod
    def open_bundle(cls, bundle: str | Path, region: str | None = None, *, trusted_key: str | Path | None = None,
                    verify: str = "cached", no_adapter: bool = False,
                    options: EngineOptions | None = None) -> Runtime:
        """Open a bundle folder. It is verified first (manifest, signature when `trusted_key`
        is given or the manifest requires one, adapter hashes, base hashes cached unless
        verify="full"), every adapter is loaded, and the policy for `region` (else
        $SGEDGE_REGION, else the manifest's default policy) is active; `no_adapter` runs
        the bare base where the manifest allows it. Anything wrong stops here, before a token."""
        t0 = time.perf_counter()
        bundle = Path(bundle)
        if verify not in ("cached", "full"):
            raise InputError(f"verify must be 'cached' or 'full' (got {verify!r})")
        if not (bundle / "sgedge.json").is_file():
            raise InputError(f"{bundle} is not a bundle (no sgedge.json); a .gguf file or ONNX folder is a model "
                             "(Runtime.open_model)")
        return cls._open_bundle(bundle, region, options or EngineOptions(), trusted_key=trusted_key, verify=verify,
                                no_adapter=no_adapter, t0=t0)

    @classmethod
    def open_model(cls, model: str | Path, adapters: Sequence[AdapterSpec] = (), *,
                   allow_unbound_adapters: bool = False, verify: str = "cached",
                   options: EngineOptions | None = None) -> Runtime:
        """Open a model (.gguf file or ONNX folder) with `adapters` (path or (path, scale)),
        all checked against the base before any is used and active by default.
        `options.exact` trades speed for numerics (f32 KV cache, no flash attention), for
        checks against transformers. `options.prompt_cache` keeps the keys/values of the
        last prompt and reply (ONNX: of greedy generations): a prompt that starts with them
        under the same adapters (a chat's next turn) computes only the rest; an adapter
        change never reuses them (docs/serve.md). `options.mode`: "dynamic" (adapters
        applied per token; any set per call), "fused" (merged into a cached copy of the
        base: bare-base speed, no switching) or "pool" (docs/modes.md)."""
        t0 = time.perf_counter()
        model = Path(model)
        opts = options or EngineOptions()
        if verify not in ("cached", "full"):
            raise InputError(f"verify must be 'cached' or 'full' (got {verify!r})")
        kind = opts.backend or detect_backend(model)
        return cls._open_model(model, kind, adapters, opts, allow_unbound=allow_unbound_adapters, t0=t0,
                               verify=verify)

    @staticmethod
    def _make_backend(model: Path, kind: str, opts: EngineOptions, verify: str = "cached") -> Backend:
        if kind not in BACKENDS:
            raise InputError(f"unknown backend {kind!r}; choose one of {', '.join(BACKENDS)}")
        if kind == "gguf":
            from sgedge.runtime.gguf_backend import GgufBackend

            if opts.device == "dml":
                raise InputError("--device dml applies to ONNX models; llama.cpp takes cpu, gpu or auto")
            device = "gpu" if opts.device == "cuda" else opts.device
            be: Backend = GgufBackend(model, n_ctx=opts.n_ctx, threads=opts.threads, device=device,
                                      gpu_layers=opts.gpu_layers, exact=opts.exact, prompt_cache=opts.prompt_cache,
                                      verify=verify)
        else:
            from sgedge.runtime.onnx_backend import OnnxBackend

            if not model.is_dir():
                raise InputError(f"the onnx backend needs an ONNX model folder, {model} is not one")
            be = OnnxBackend(model, device=opts.device, threads=opts.threads, prompt_cache=opts.prompt_cache)
        return be

    @classmethod
    def _open_fused(cls, base: Path, kind: str, loaded: dict[str, Path], active: Sequence[tuple[str, float]],
                    cache_dir: Path, t0: float, opts: EngineOptions, manifest: Any = None,
                    policy: str | None = None) -> Runtime:
        """Adapters were verified against the base by the caller; merge and run the result."""
        from sgedge.runtime.fuse import ensure_fused

        if not active and base.is_file():  # GGUF: the bare base has nothing to remove
            return cls(cls._make_backend(base, kind, opts), (), time.perf_counter() - t0, manifest, policy)
        # ONNX with no adapter: "fusing" nothing removes the empty LoRA slots, whose
        # operators cost a few percent of decode speed even when no adapter is active.
        fused = ensure_fused(base, [(loaded[n], s) for n, s in active], cache_dir)
        rt = cls(cls._make_backend(fused.path, kind, opts), (), time.perf_counter() - t0, manifest, policy)
        rt._fused = tuple((n, float(s)) for n, s in active)
        rt.fused_path = fused.path
        return rt

    @classmethod
    def _open_model(cls, model: Path, kind: str, adapters: Sequence[AdapterSpec], opts: EngineOptions, *,
                    allow_unbound: bool, t0: float, verify: str = "cached") -> Runtime:
        specs = [(Path(a[0]), adapter_scale(a[1], f"adapter {a[0]}")) if isinstance(a, tuple) else (Path(a), 1.0)
                 for a in adapters]
        for p, _ in specs:
            if not p.is_file():
                raise InputError(f"adapter {p} does not exist")
            _check_adapter_format(p, kind, model)
        if opts.mode == "fused":
            from sgedge.runtime.fuse import default_cache_dir

            # Check the binding with the real backend first (fail closed), then fuse.
            with cls._open_model(model, kind, adapters, replace(opts, mode="dynamic"), allow_unbound=allow_unbound,
                                 t0=t0, verify=verify) as probe:
                loaded, active = dict(probe.adapters), list(probe._default)
            return cls._open_fused(model, kind, loaded, active, default_cache_dir(), t0, opts)
        be = cls._make_backend(model, kind, opts, verify)
        try:
            active = []
            for p, scale in specs:
                name = p.stem
                i = 2
                while name in be.adapters:
                    name, i = f"{p.stem}-{i}", i + 1
                be.load_adapter(p, name, allow_unbound=allow_unbound)
                active.append((name, scale))
            if opts.mode == "pool":
                be = cls._pooled(be, [("default", tuple(active))], model, kind, opts)
        except BaseException:
            be.close()
            raise
        rt = cls(be, active, time.perf_counter() - t0)
        rt._mode = opts.mode
        return rt

    @classmethod
    def _pooled(cls, be: Backend, candidates: Sequence[tuple[str, Any]], fuse_base: Path, kind: str,
                opts: EngineOptions, names: Any = None, check: Any = None) -> Backend:
        """Wrap the dynamic engine `be` in a pool and admit `candidates` (runtime/pool.py)."""
        from sgedge.runtime.fuse import default_cache_dir
        from sgedge.runtime.pool import PoolBackend, fill

        member = replace(opts, mode="dynamic", pool_memory=None)  # each copy: one engine, no adapters

        def admit(cands: Sequence[tuple[str, Any]], names: Any, check: Any = None) -> None:
            fill(pool, cands, fuse_base=fuse_base, kind=kind, names=names, budget=opts.pool_memory,
                 make_backend=lambda p: cls._make_backend(p, kind, member), cache_dir=default_cache_dir(),
                 exact=opts.exact, check=check)

        pool = PoolBackend(be)
        try:
            admit(candidates, names or (lambda k: k), check)
        except BaseException:
            pool.close_members()
            raise
        pool.refill = admit  # what reload() calls for a new bundle's policies
        return pool

    @classmethod
    def _open_bundle(cls, bundle: Path, region: str | None, opts: EngineOptions, *, trusted_key: str | Path | None,
                     verify: str, no_adapter: bool, t0: float) -> Runtime:
        import os

        from sgedge.bundle_verify import check_bundle_files, check_signature
        from sgedge.manifest import read_manifest

        # The manifest is read once: its signature is checked on these bytes, and this
        # parse of them is all that is used.
        manifest, data = read_manifest(bundle)
        signed_by = check_signature(bundle, manifest, data, trusted_key)
        note = None
        if opts.backend:
            kind = opts.backend
        else:
            kind, note = bundle_backend(list(manifest.base.formats), opts.device)
        if kind not in manifest.base.formats:
            raise InputError(f"bundle {bundle} has no {kind} base (it has: {', '.join(manifest.base.formats)})")
        key: str | None
        items: tuple[Any, ...]
        if no_adapter:
            if not manifest.allow_no_adapter:
                raise InputError(f"bundle {bundle} forbids running without a safety adapter")
            key, items = None, ()
        else:
            key, items = manifest.resolve(region if region is not None else os.environ.get("SGEDGE_REGION"))
        # Verify everything this backend will read, then load what was verified (the
        # pinned open files): fail closed, before any token.
        verified = check_bundle_files(bundle, manifest, signed_by, verify=verify, formats=[kind])
        pins = verified.pins
        try:
            art = manifest.base.formats[kind]
            members = [f.path[len(art.path) + 1:] for f in art.files] if art.files[0].path != art.path else []
            base_path = pins.engine_path(bundle / art.path, members)
            paths = {n: pins.engine_path(bundle / e.formats[kind].path) for n, e in manifest.adapters.items()}
            rt = cls._load_bundle(base_path, kind, manifest, paths, items, key, opts, verify=verify, t0=t0,
                                  real_base=bundle / art.path, pins=pins)
            pins.check_unchanged()
        except SgedgeError as e:
            pins.close()
            raise type(e)(pins.real_names(str(e))) from None
        except BaseException:
            pins.close()
            raise
        rt._pins = pins
        rt._notes += [note] if note else []
        from sgedge.runtime.reload import BundleSource

        rt._reload = BundleSource(bundle, kind, trusted_key, region, no_adapter)
        rt.bundle_version = BundleSource.version(data)
        return rt

    @classmethod
    def _load_bundle(cls, base_path: Path, kind: str, manifest: Any, paths: dict[str, Path],
                     items: Sequence[Any], key: str | None, opts: EngineOptions, *, verify: str, t0: float,
                     real_base: Path | None = None, pins: Any = None) -> Runtime:
        if opts.mode == "fused":
            from sgedge.runtime.fuse import default_cache_dir

            active = [(it.adapter, it.scale) for it in items]
            # The binding check of every adapter in use, before merging.
            if kind == "gguf":
                from sgedge.formats.gguf_meta import read_gguf_info
                from sgedge.runtime.gguf_backend import check_adapter_fits, file_sha256

                base_info = read_gguf_info(base_path)
                for name, _ in active:
                    check_adapter_fits(base_info, read_gguf_info(paths[name]),
                                       base_sha256=lambda: file_sha256(base_path, verify))
            else:
                from sgedge.runtime.onnx_backend import check_onnx_adapter, read_base_meta

                # Header and metadata only: no engine is loaded to check the adapters.
                meta = read_base_meta(base_path)
                for name, _ in active:
                    check_onnx_adapter(base_path, meta, paths[name])
            # The fused file lives in the user's own cache folder, never in the bundle
            # folder: a file planted beside a signed manifest must not be what runs.
            if kind == "onnx" and real_base is not None:
                # onnx's loader refuses linked external data: the merge reads the folder
                # itself, and the pins then prove it still holds the files checked.
                rt = cls._open_fused(real_base, kind, paths, active, default_cache_dir(), t0, opts, manifest, key)
                if pins is not None:
                    try:
                        pins.check_unchanged(always=True)
                    except BaseException:
                        rt.close()
                        raise
                return rt
            return cls._open_fused(base_path, kind, paths, active, default_cache_dir(), t0, opts, manifest, key)
        be = cls._make_backend(base_path, kind, opts, verify)
        active = [(it.adapter, it.scale) for it in items]
        try:
            for name, path in paths.items():
                be.load_adapter(path, name)
            if opts.mode == "pool":
                be = cls._pooled(be, pool_candidates(manifest, key, active), real_base if kind == "onnx" and
                                 real_base is not None else base_path, kind, opts,
                                 check=None if pins is None else lambda: pins.check_unchanged(always=True))
        except BaseException:
            be.close()
            raise
        rt = cls(be, active, time.perf_counter() - t0, manifest, key)
        rt._mode = opts.mode
        return rt

    # -- introspection ------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self._backend.name

    @property
    def notes(self) -> list[str]:
        """What the runtime advises about this set-up (the CLI prints them on stderr)."""
        be = self._backend
        notes = list(self._notes) + [f"pool: policy {m.label} {m.why}" for m in self.pool if not m.fused]
        if getattr(be, "device", None) == "cuda" and getattr(be, "meta", {}).get("ep", "cpu") == "cpu":
            return notes + [f"{be.path} was exported for the CPU provider and runs on CUDA here; export it with "
                    "--ep cuda for the graph CUDA runs fast (int4 on an H200: 1.5x the decode speed, "
                    "docs/performance.md)"]
        return notes

    @property
    def context_size(self) -> int:
        """Tokens of context: prompt and reply together must fit."""
        return int(self._backend.n_ctx)

    @property
    def adapters(self) -> dict[str, Path]:
        """Resident adapters: name -> file."""
        pins = self._pins
        public = {v: k for k, v in self._names.items()}
        return {public.get(n, n): a.path if pins is None else pins.real_path(a.path)
                for n, a in self._backend.adapters.items() if not self._names or n in public}

    def _engine_names(self, active: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
        return [(self._names.get(n, n), s) for n, s in active]

    def reload(self) -> Any:
        """Take a re-signed bundle without restarting: verify it as at start-up, load new or
        changed adapters beside the resident ones, then switch between generations. Any
        failure leaves the old set serving (runtime/reload.py)."""
        from sgedge.runtime.reload import reload_bundle

        return reload_bundle(self)

    @property
    def active(self) -> list[ActiveAdapter]:
        return [ActiveAdapter(n, s) for n, s in (self._fused or self._default)]

    @property
    def mode(self) -> str:
        if self._mode == "pool":
            return "pool"
        return "fused" if self._fused or self.fused_path is not None else "dynamic"

    @property
    def pool(self) -> list[Any]:
        """Pool mode: each policy's place (runtime/pool.py PoolMember: fused or dynamic,
        why, estimated bytes, build and load seconds); [] in other modes."""
        return list(getattr(self._backend, "members", []) or [])

    @property
    def policies(self) -> dict[str, list[ActiveAdapter]]:
        """Bundle policies: key -> adapters with scales (empty without a bundle)."""
        if self._manifest is None:
            return {}
        return {k: [ActiveAdapter(i.adapter, i.scale) for i in v] for k, v in self._manifest.policies.items()}

    @property
    def allows_no_adapter(self) -> bool:
        """Whether a call may run the bare base (policy=[]): always without a bundle, and
        with one only when its manifest says allow_no_adapter."""
        return self._manifest is None or bool(self._manifest.allow_no_adapter)

    def policy_key(self, key: str) -> str | None:
        """The bundle's policy key that `key` names (exact, else ignoring case: "eu" -> "EU");
        None when the bundle has no such policy or this is not a bundle."""
        return None if self._manifest is None else self._manifest.policy_key(key)

    def load_adapter(self, path: str | Path, name: str | None = None) -> str:
        turn = self._take_turn()
        try:
            return self._backend.load_adapter(Path(path), name)
        finally:
            self._end_turn(turn)

    # -- prompts --------------------------------------------------------------------
    def encode_prompt(self, prompt: str | Sequence[Mapping[str, str]], *, raw: bool = False,
                      template_kwargs: Mapping[str, Any] | None = None) -> list[int]:
        _check_text(prompt)
        if template_kwargs is not None and not isinstance(template_kwargs, Mapping):
            raise InputError("template_kwargs is a mapping of chat template variables")
        with self._shared_use() as be:
            return self._encode(be, prompt, raw, template_kwargs)

    def _encode(self, be: Backend, prompt: str | Sequence[Mapping[str, str]], raw: bool,
                template_kwargs: Mapping[str, Any] | None) -> list[int]:
        if raw:
            if not isinstance(prompt, str):
                raise InputError("raw prompts are plain strings")
            return be.tokenize(prompt, add_special=True)
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        template = be.chat_template()
        if template is None:
            raise InputError("this model has no chat template; run with raw=True (--raw) for plain completion")
        text = render_chat(template, messages, bos_token=be.bos_text(), eos_token=be.eos_text(),
                           template_kwargs=template_kwargs)
        # Templates write their own BOS; tokenize like transformers' apply_chat_template.
        return be.tokenize(text, add_special=False)

    def _resolve(self, adapters: Sequence[tuple[str, float]] | None = None,
                 policy: str | Sequence[Any] | None = None) -> tuple[tuple[str, float], ...]:
        if policy is not None and adapters is not None:
            raise InputError("give either policy= or adapters=, not both")
        if policy is not None:
            if isinstance(policy, str):
                name = None if self._manifest is None else self._manifest.policy_key(policy)
                if name is None:
                    known = ", ".join(sorted(self.policies)) or "none (not a bundle)"
                    raise InputError(f"unknown policy {policy!r} (known: {known})")
                key = tuple((i.adapter, i.scale) for i in self._manifest.policies[name])
            elif isinstance(policy, list | tuple) and len(policy) == 0:
                key = ()
            else:
                raise InputError("policy= takes a policy name, or [] for the bare base")
        else:
            if adapters is not None and (not isinstance(adapters, list | tuple) or not all(
                    isinstance(a, list | tuple) and len(a) == 2 and isinstance(a[0], str) for a in adapters)):
                raise InputError("adapters= takes a list of (name, scale) pairs, e.g. [('strict', 1.0)]")
            key = self._default if adapters is None else tuple((n, adapter_scale(s, f"adapter {n!r}"))
                                                               for n, s in adapters)
        if self._fused:
            if policy is None and adapters is None or key == self._fused:
                return ()  # already merged into the loaded weights
            raise InputError(
                "this runtime runs one fused policy (" + " + ".join(f"{n}:{s:g}" for n, s in self._fused)
                + "); open it with mode='dynamic' (without --fused) to switch adapters per call"
            )
        if not key and not self.allows_no_adapter:
            raise InputError("this bundle forbids running without a safety adapter")
        return key

    # -- generation -------------------------------------------------------------------
    def generate(
        self,
        prompt: str | Sequence[Mapping[str, str]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int = 0,
        raw: bool = False,
        adapters: Sequence[tuple[str, float]] | None = None,
        policy: str | Sequence[Any] | None = None,
        on_text: Callable[[str], None] | None = None,
        ignore_eos: bool = False,
        stop: str | Sequence[str] | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
        repeat_penalty: float = 1.0,
    ) -> GenerationResult:
        """Generate a reply with the runtime's active adapters, or per call: `policy="EU"`
        (a bundle policy), `policy=[]` (bare base, if the bundle allows it), or
        `adapters=[(name, scale), ...]`. `on_text` receives each text piece as produced.
        `stop`: strings that end the reply where it first contains one (left out of it).
        `template_kwargs`: more chat template variables (e.g. {"enable_thinking": False}).
        `response_format`: OpenAI's ({"type": "json_object"}, or "json_schema" with a schema):
        every token is constrained to it (runtime/structured.py).
        `repeat_penalty`: > 1 makes every token already in the prompt or the reply less likely
        (Hugging Face's repetition_penalty, on both backends); 1 = off."""
        from sgedge.runtime.structured import parse_response_format

        sampling = Sampling(max_tokens, temperature, top_p, top_k, seed, ignore_eos,
                            parse_response_format(response_format), repeat_penalty)
        scanner = StopScanner(check_stops(stop))
        self._resolve(adapters, policy)  # a wrong choice fails here; it is resolved again in the engine's turn
        ids = self.encode_prompt(prompt, raw=raw, template_kwargs=template_kwargs)
        timings = Timings(load_s=self.load_s)
        ran: dict[str, Any] = {}
        tokens: list[int] = []
        parts: list[str] = []
        for tok, text in self._pieces(ids, (adapters, policy), sampling, timings, scanner, ran):
            if tok >= 0:
                tokens.append(tok)
            if text:
                parts.append(text)
                if on_text is not None:
                    on_text(text)
        finish = "length" if len(tokens) >= max_tokens and not scanner.stopped else "stop"
        applied = self._fused or ran["active"]
        return GenerationResult("".join(parts), tokens, ids, [ActiveAdapter(n, s) for n, s in applied],
                                self.backend, finish, timings, self.mode, ran.get("bundle"))

    def stream(self, prompt: str | Sequence[Mapping[str, str]], **kwargs: Any) -> Iterator[str]:
        """Yield text pieces as they are generated (same arguments as `generate`)."""
        raw, template_kwargs = kwargs.pop("raw", False), kwargs.pop("template_kwargs", None)
        scanner = StopScanner(check_stops(kwargs.pop("stop", None)))
        from sgedge.runtime.structured import parse_response_format

        select = (kwargs.pop("adapters", None), kwargs.pop("policy", None))
        self._resolve(*select)
        sampling = Sampling(**kwargs, response_format=parse_response_format(kwargs.pop("response_format", None)))
        ids = self.encode_prompt(prompt, raw=raw, template_kwargs=template_kwargs)
        for _, text in self._pieces(ids, select, sampling, Timings(), scanner):
            if text:
                yield text

    def _pieces(self, ids: Sequence[int], select: tuple[Any, Any], sampling: Sampling, timings: Timings,
                scanner: StopScanner, ran: dict[str, Any] | None = None) -> Iterator[tuple[int, str]]:
        """(token, text to show) as the engine produces them, with the adapters `select`
        (adapters=, policy=) names and the stop strings applied; the engine is this
        generation's until it ends or is closed. The choice is resolved in the engine's
        turn: a reload between the call and its turn gives it the new set, whole."""
        turn = self._take_turn()
        try:
            active = self._resolve(*select)
            if ran is not None:
                ran["active"], ran["bundle"] = active, self.bundle_version
            self._backend.set_active(self._engine_names(active))
            turn.pieces = pieces = self._backend.generate(ids, sampling, timings)
            try:
                while True:
                    if turn.cancelled or self._closing:
                        raise InputError("this generation was ended: its Runtime was closed, or a later call on "
                                         "the same thread took the engine before the stream was read to its end")
                    try:
                        tok, text = next(pieces)
                    except StopIteration:
                        break
                    yield tok, scanner.feed(text)
                    if scanner.stopped:
                        return
            finally:
                pieces.close()
        finally:
            self._end_turn(turn)
        yield -1, scanner.flush()

    def chat(self, messages: Sequence[Mapping[str, str]], **kwargs: Any) -> GenerationResult:
        return self.generate(messages, **kwargs)

    def logits(self, tokens: Sequence[int], *, adapters: Sequence[tuple[str, float]] | None = None,
               policy: str | Sequence[Any] | None = None):
        """Teacher-forced logits for `tokens` (numpy array, one row per token)."""
        self._resolve(adapters, policy)
        turn = self._take_turn()
        try:
            self._backend.set_active(self._engine_names(self._resolve(adapters, policy)))
            return self._backend.logits(tokens)
        finally:
            self._end_turn(turn)

    # -- turns: who may use the engine, and closing safely from any thread ---------------
    def _take_turn(self) -> _Turn:
        """Wait for the engine. A stream of this same thread left unfinished (suspended,
        never closed) is ended first: it could not run while this call waits."""
        me = threading.get_ident()
        with self._cv:
            while True:
                if self._closing:
                    raise InputError("this Runtime is closed; open another with Runtime.open(...)")
                if self._owner is None:
                    break
                if self._owner.thread == me:
                    self._end_suspended(self._owner)
                    break
                self._cv.wait()
            self._owner = turn = _Turn(me)
            return turn

    def _end_suspended(self, turn: _Turn) -> None:
        """End a suspended generation of this thread (its next read raises)."""
        turn.cancelled = True
        if turn.pieces is not None:
            turn.pieces.close()  # runs the engine generator's cleanup now, not at garbage collection
        self._owner = None

    def _end_turn(self, turn: _Turn) -> None:
        with self._cv:
            if self._owner is turn:
                self._owner = None
            self._maybe_free()
            self._cv.notify_all()

    @contextlib.contextmanager
    def _shared_use(self) -> Iterator[Any]:
        """The engine for a call that need not have it alone (tokenizing): close() waits
        for it to end before freeing the engine."""
        with self._cv:
            if self._closing:
                raise InputError("this Runtime is closed; open another with Runtime.open(...)")
            self._shared += 1
        try:
            yield self._backend
        finally:
            with self._cv:
                self._shared -= 1
                self._maybe_free()

    def _maybe_free(self) -> None:
        """Free the engine once closing and no call is in it (called holding _cv)."""
        if not self._closing or self._freed or self._owner is not None or self._shared:
            return
        self._freed = True
        backend = self._backend
        self._backend = _Closed(backend)
        try:
            backend.close()
        finally:
            if self._pins is not None:
                self._pins.close()

    def close(self) -> None:
        """Free the engine. Safe from any thread at any moment: a generation running in
        another thread ends with an InputError at its next token and the engine is freed
        then; an unfinished stream of this thread is ended now (reading on raises)."""
        with self._cv:
            self._closing = True
            if self._owner is not None and self._owner.thread == threading.get_ident():
                self._end_suspended(self._owner)
            self._maybe_free()
            self._cv.notify_all()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
