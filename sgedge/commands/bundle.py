"""`sgedge bundle create|add-adapter|set-policy|inspect|verify|sign|fuse`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sgedge.errors import InputError, SgedgeError
from sgedge.notes import note as say_note


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bundle", help="create, update, inspect, verify and sign deployment bundles")
    verb = p.add_subparsers(dest="verb", required=True, metavar="{create,add-adapter,set-policy,inspect,verify,sign,fuse}")
    c = verb.add_parser("create", help="export a base and safety adapters into a bundle with policies")
    c.add_argument("out", help="new bundle folder")
    c.add_argument("--base", required=True, help="Hugging Face base model directory, or a GGUF file that becomes the "
                   "bundle's base as it is (--formats gguf; adapters trained on its `sgedge import`)")
    c.add_argument("--adapter", action="append", default=[], metavar="NAME=PEFT_DIR")
    c.add_argument("--policy", action="append", default=[], metavar="KEY=NAME[:SCALE][+NAME2[:SCALE]]")
    c.add_argument("--default-policy", help="policy used when the region is not in the bundle")
    c.add_argument("--formats", default="gguf", help="gguf, onnx or gguf,onnx")
    c.add_argument("--dtype", help="both formats: f32/fp32, f16/fp16, q8_0 (gguf), q4_k_m / int4")
    c.add_argument("--gguf-dtype")
    c.add_argument("--onnx-dtype")
    c.add_argument("--onnx-ep", choices=["cpu", "cuda"], default="cpu",
                   help="execution provider the ONNX base is built for (cuda: fp16 or int4, for NVIDIA GPUs)")
    c.add_argument("--onnx-lora-targets", default="all", metavar="all|adapters|LIST",
                   help="projections of the ONNX base that get LoRA slots: all (default; any later adapter fits), "
                   "adapters (those these adapters target: faster, later adapters must fit them) or a list")
    c.add_argument("--adapter-dtype", choices=["f32", "f16"], default="f32",
                   help="GGUF adapter tensors (f16 halves the files)")
    c.add_argument("--allow-no-adapter", action="store_true", help="allow running the bare base")
    c.add_argument("--require-signature", action="store_true", help="refuse to run unless a trusted key verifies it")
    c.set_defaults(handler=create)
    a = verb.add_parser("add-adapter", help="add or patch a safety adapter (the base is not re-exported)")
    a.add_argument("bundle")
    a.add_argument("adapter", metavar="NAME=PEFT_DIR")
    a.add_argument("--description")
    a.add_argument("--version", help="adapter version (default: previous + 1)")
    a.set_defaults(handler=add_adapter)
    s = verb.add_parser("set-policy", help="set which adapters a region/context uses")
    s.add_argument("bundle")
    s.add_argument("policy", metavar="KEY=NAME[:SCALE][+NAME2[:SCALE]]")
    s.add_argument("--default", action="store_true", help="also make it the default policy")
    s.set_defaults(handler=set_policy)
    i = verb.add_parser("inspect", help="show a bundle's base, adapters, policies and signature")
    i.add_argument("bundle")
    i.add_argument("--json", action="store_true")
    i.add_argument("--trusted-key", help="publisher's public key: also check the signature against the manifest "
                   "(exit 1 when it does not match)")
    i.set_defaults(handler=inspect)
    v = verb.add_parser("verify", help="check every file's hash (and the signature with --trusted-key)")
    v.add_argument("bundle")
    v.add_argument("--trusted-key")
    v.set_defaults(handler=verify)
    g = verb.add_parser("sign", help="sign the bundle manifest with an Ed25519 private key")
    g.add_argument("bundle")
    g.add_argument("--key", required=True)
    g.set_defaults(handler=sign)
    f = verb.add_parser("fuse", help="build (or check) the fused base of a policy, kept in your private sgedge cache")
    f.add_argument("bundle")
    f.add_argument("--policy", required=True, help="policy key (region)")
    f.add_argument("--trusted-key")
    f.set_defaults(handler=fuse)


def _adapter_args(specs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--adapter {spec!r}: expected NAME=PEFT_DIR")
        if name in out:
            raise InputError(f"--adapter {name!r} given twice")
        out[name] = path
    return out


def create(args: argparse.Namespace) -> int:
    from sgedge.exporters.bundle import create_bundle, dtypes_for
    from sgedge.manifest import parse_policy_arg

    policies = dict(parse_policy_arg(p) for p in args.policy)
    gguf_dtype, onnx_dtype = dtypes_for(args.dtype, args.gguf_dtype, args.onnx_dtype)
    m = create_bundle(args.out, args.base, _adapter_args(args.adapter), policies,
                      default_policy=args.default_policy, formats=[f.strip() for f in args.formats.split(",")],
                      gguf_dtype=gguf_dtype, onnx_dtype=onnx_dtype, onnx_ep=args.onnx_ep, onnx_lora_targets=args.onnx_lora_targets,
                      adapter_dtype=args.adapter_dtype, allow_no_adapter=args.allow_no_adapter,
                      require_signature=args.require_signature,
                      on_note=say_note)
    print(f"created bundle {args.out}: {m.base.family} base ({', '.join(m.base.formats)}), "
          f"{len(m.adapters)} adapter(s), {len(m.policies)} policies")
    return 0


def add_adapter(args: argparse.Namespace) -> int:
    from sgedge.exporters.bundle import add_adapter as add

    ((name, path),) = _adapter_args([args.adapter]).items()
    e = add(args.bundle, name, path, description=args.description or "", version=args.version,
            on_note=say_note)
    print(f"bundle {args.bundle}: adapter {name!r} version {e.version} (rank {e.rank}, {', '.join(e.formats)}); "
          "sign the bundle again if it is signed")
    return 0


def set_policy(args: argparse.Namespace) -> int:
    from sgedge.exporters.bundle import set_policy as setp
    from sgedge.manifest import parse_policy_arg

    key, items = parse_policy_arg(args.policy)
    setp(args.bundle, key, items, default=args.default)
    print(f"bundle {args.bundle}: policy {key} = " + " + ".join(f"{i.adapter}:{i.scale:g}" for i in items))
    return 0


def inspect(args: argparse.Namespace) -> int:
    from sgedge.manifest import read_manifest
    from sgedge.signing import signature_status

    m, data = read_manifest(args.bundle)
    sig = signature_status(args.bundle, data, args.trusted_key)
    bad = 1 if sig["checked"] and not sig["valid"] else 0
    if args.json:
        print(json.dumps({**m.to_json(), "signature": sig}, indent=2, sort_keys=True))
        return bad
    print(f"bundle {args.bundle} (schema {m.schema_version}, {m.producer})")
    if not sig["signed"]:
        print("signature: none (sign it with `sgedge bundle sign`)")
    elif sig["checked"]:
        print(f"signature: by key {sig['key_id']}, " + ("valid with the trusted key" if sig["valid"] else
                                                        f"NOT VALID: {sig['problem']}"))
    else:
        print(f"signature: by key {sig['key_id']}" + (f" ({sig['problem']})" if sig["problem"] else "")
              + "; not checked (give --trusted-key PUB to check it against the manifest)")
    print(f"base: {m.base.family}, fingerprint {m.base.fingerprint}")
    for fmt, art in m.base.formats.items():
        size = sum(f.size for f in art.files)
        print(f"  {fmt:5s} {art.path} ({art.dtype}, {size / 1e6:.1f} MB)")
        if fmt == "onnx":
            from sgedge.runtime.onnx_backend import read_base_meta

            targets = read_base_meta(Path(args.bundle) / art.path).get("lora_targets")
            if targets:  # what a later add-adapter may target on the ONNX base
                print(f"        LoRA slots on {', '.join(targets)}")
    print("adapters:")
    for a in m.adapters.values():
        print(f"  {a.name:12s} v{a.version} rank {a.rank} alpha {a.alpha:g} [{', '.join(a.formats)}] "
              f"{a.description}")
    print("policies:")
    for key, items in sorted(m.policies.items()):
        mark = " (default)" if key == m.default_policy else ""
        print(f"  {key:12s} " + " + ".join(f"{i.adapter}:{i.scale:g}" for i in items) + mark)
    print(f"bare base allowed: {'yes' if m.allow_no_adapter else 'no'}; "
          f"signature required: {'yes' if m.require_signature else 'no'}")
    return bad


def verify(args: argparse.Namespace) -> int:
    from sgedge.bundle_verify import verify_bundle

    v = verify_bundle(args.bundle, trusted_key=args.trusted_key, verify="full")
    try:
        check_bindings(Path(args.bundle), v.manifest, v.pins)
    except SgedgeError as e:
        raise type(e)(v.pins.real_names(str(e))) from None
    finally:
        v.close()
    signed = f", signature by key {v.signed_by} valid" if v.signed_by else " (signature not checked: no --trusted-key)"
    print(f"bundle {args.bundle}: every file matches its sha256, every adapter is bound to the base{signed}")
    return 0


def check_bindings(bundle: Path, m: Any, pins: Any) -> None:
    """What `sgedge run` checks before loading, without an engine: every adapter of each
    format belongs to that format's base (fingerprint, or the imported file's sha256, and
    shapes). A re-hashed adapter of another base verifies by hash but not here."""
    from sgedge.formats.gguf_meta import read_gguf_info
    from sgedge.runtime.gguf_backend import check_adapter_fits
    from sgedge.runtime.onnx_backend import check_onnx_adapter, read_base_meta

    if "gguf" in m.base.formats:
        art = m.base.formats["gguf"]
        base_info = read_gguf_info(pins.engine_path(bundle / art.path))
        for a in m.adapters.values():
            if "gguf" in a.formats:
                check_adapter_fits(base_info, read_gguf_info(pins.engine_path(bundle / a.formats["gguf"].path)),
                                   base_sha256=lambda: art.files[0].sha256)
    if "onnx" in m.base.formats:
        base_dir = bundle / m.base.formats["onnx"].path
        meta = read_base_meta(base_dir)
        for a in m.adapters.values():
            if "onnx" in a.formats:
                check_onnx_adapter(base_dir, meta, pins.engine_path(bundle / a.formats["onnx"].path))


def sign(args: argparse.Namespace) -> int:
    from sgedge.signing import sign_bundle

    kid = sign_bundle(args.bundle, args.key)
    print(f"signed {args.bundle}/sgedge.json with key {kid}")
    return 0


def fuse(args: argparse.Namespace) -> int:
    import time

    from sgedge.manifest import read_manifest
    from sgedge.runtime.api import Runtime

    t0 = time.perf_counter()
    manifest, _ = read_manifest(args.bundle)
    key = manifest.policy_key(args.policy)  # checked first: an unknown key must not fuse the default policy
    if key is None:
        raise InputError(f"bundle has no policy {args.policy!r} (known: {', '.join(sorted(manifest.policies))})")
    with Runtime.open(args.bundle, key, trusted_key=args.trusted_key, mode="fused") as rt:
        path = rt.fused_path
    files = [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else [path]
    size = sum(f.stat().st_size for f in files) / 1e6
    print(f"policy {key}: fused base {path} ({size:.1f} MB) ready in {time.perf_counter() - t0:.1f} s")
    return 0
