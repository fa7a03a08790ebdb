"""Command line: `sgedge export ...`, `sgedge run ...`.

`main(argv) -> int` is pure: it parses, dispatches to the module that implements the
verb (imported only then, so `sgedge run` never loads torch), and turns SgedgeError into
one clear line on stderr and exit code 1. Usage errors exit with 2 (argparse).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from sgedge import __version__
from sgedge.errors import SgedgeError

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def _export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a Hugging Face base or a PEFT adapter")
    what = p.add_subparsers(dest="what", required=True, metavar="{base,adapter}")
    b = what.add_parser("base", help="export a Hugging Face base model")
    b.add_argument("model_dir", help="Hugging Face model directory (config.json + safetensors + tokenizer)")
    b.add_argument("--format", choices=["gguf", "onnx"], default="gguf", help="gguf (llama.cpp) or onnx (ONNX Runtime GenAI)")
    b.add_argument("-o", "--output", required=True, help="output file (.gguf) or folder (onnx)")
    b.add_argument("--dtype", help="gguf: f32, f16 (default), bf16, q8_0, q4_k_m; onnx: fp32 (default), fp16, int4")
    b.add_argument("--lora-targets", help="onnx: comma-separated linear layers that get LoRA slots "
                   "(default: all the family's projections; q/k/v and gate/up get slots as groups)")
    b.add_argument("--ep", choices=["cpu", "cuda"], help="onnx: the execution provider the graph is built for "
                   "(default cpu; cuda takes fp16 or int4 and is what runs fast on an NVIDIA GPU)")
    b.add_argument("--pre-tokenizer", help="llama.cpp pre-tokenizer name, when sgedge cannot recognise it")
    b.add_argument("--threads", type=int, help="threads for quantization (default: physical cores)")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    b.set_defaults(handler="sgedge.exporters.cli:export_base")
    a = what.add_parser("adapter", help="export a PEFT LoRA safety adapter")
    a.add_argument("peft_dir", help="PEFT adapter directory (adapter_config.json + adapter_model.safetensors)")
    a.add_argument("--format", choices=["gguf", "onnx"], default="gguf", help="the format of the base it runs on")
    a.add_argument("-o", "--output", required=True, help="output file (.gguf or .onnx_adapter)")
    a.add_argument("--base", help="the base it belongs to. gguf: Hugging Face directory or sgedge-exported "
                   ".gguf (default: base_model_name_or_path from adapter_config.json, if local); "
                   "onnx: the ONNX base folder exported by sgedge (required)")
    a.add_argument("--dtype", default="f32", choices=["f32", "f16"], help="gguf adapter tensors")
    a.add_argument("--allow-pickle", action="store_true",
                   help="accept a pickled adapter_model.bin (only for adapters you trust)")
    a.add_argument("-q", "--quiet", action="store_true")
    a.set_defaults(handler="sgedge.exporters.cli:export_adapter")

    i = sub.add_parser("import", help="turn a GGUF file (llama.cpp, LM Studio, Ollama) into a Hugging Face folder "
                       "that train and export take")
    i.add_argument("gguf", help="GGUF base model file (any type gguf-py dequantizes: F32, F16, BF16, Q8_0, Q4_x, K-quants...)")
    i.add_argument("-o", "--output", required=True, help="new Hugging Face model folder")
    i.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="weights in the folder (default: float32)")
    i.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    i.set_defaults(handler="sgedge.exporters.cli:import_gguf")


def _runtime_args(r: argparse.ArgumentParser, what: str) -> None:
    """What `run` and `serve` share: the model or bundle, its policy, and the engine."""
    src = r.add_mutually_exclusive_group()
    src.add_argument("--model", help="base model: .gguf file or ONNX folder")
    src.add_argument("--bundle", help="bundle folder (sgedge.json); the policy comes from --region "
                     "(default, with no --model either: the embedded demo bundle, see `sgedge demo info`)")
    r.add_argument("--region", help=f"bundle policy key{what} (default: $SGEDGE_REGION, then the bundle's default)")
    r.add_argument("--no-adapter", action="store_true", help="run the bare base (only if the bundle allows it)")
    r.add_argument("--trusted-key", help="publisher's public key: the bundle signature must verify with it")
    r.add_argument("--mode", choices=["dynamic", "fused", "pool"],
                   help="dynamic (default): adapters applied per token, any policy per request; fused: the policy "
                   "merged into a cached copy of the base, no LoRA cost per token, one fixed policy; pool: a fused "
                   "copy per policy, each request on its policy's copy (bare-base speed with switching)")
    r.add_argument("--fused", action="store_true", help="same as --mode fused")
    r.add_argument("--pool-memory", metavar="SIZE",
                   help="--mode pool: memory the fused copies may take, e.g. 2G (default: every policy); "
                   "policies beyond it run dynamically")
    r.add_argument("--verify", choices=["cached", "full"], default="cached",
                   help="hashing of a bundle's base (and of a GGUF base without sgedge metadata, which its adapters "
                   "name by sha256): cached by file identity (default) or full every time")
    r.add_argument("--adapter", action="append", default=[], metavar="PATH[:SCALE]",
                   help="LoRA adapter to apply (.gguf or .onnx_adapter; repeatable; scale defaults to 1.0)")
    r.add_argument("--backend", choices=["gguf", "onnx"], help="override the backend picked from the model")
    r.add_argument("--device", choices=["auto", "cpu", "gpu", "cuda", "dml"], default="auto",
                   help="gguf: cpu|gpu|auto; onnx: cpu|cuda|dml|gpu|auto (GPU only when the engine has one)")
    r.add_argument("--gpu-layers", type=int, help="layers to offload (default: all when a GPU is used)")
    r.add_argument("--threads", type=int, help="CPU threads (default: physical cores)")
    r.add_argument("--ctx", type=int, default=4096, help="context size in tokens")
    r.add_argument("--allow-unbound-adapter", action="store_true",
                   help="accept adapters without an sgedge base fingerprint (shapes are still checked)")
    r.add_argument("-v", "--verbose", action="store_true", help="show llama.cpp's own logs")


def _run_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="generate with a base model and safety adapters")
    r.add_argument("prompt", help="the prompt (a user message unless --raw); - reads it from standard input")
    _runtime_args(r, "")
    r.add_argument("--raw", action="store_true", help="plain completion, no chat template")
    r.add_argument("--max-tokens", type=int, default=256, help="reply length limit in tokens")
    r.add_argument("--temperature", type=float, help="0 = greedy (default; 0.2 for the SmolLM2 bundle run "
                   "with no model, as its model card advises)")
    r.add_argument("--top-p", type=float, help="sample from the smallest set of tokens whose probability reaches P "
                   "(default 1 = off; 0.9 for the SmolLM2 bundle run with no model)")
    r.add_argument("--top-k", type=int, help="sample from the K most likely tokens (default 0 = off)")
    r.add_argument("--seed", type=int, default=0, help="sampling seed")
    r.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="end the reply where it first contains TEXT (left out; repeatable)")
    r.add_argument("--chat-template-kwargs", metavar="JSON",
                   help="more chat template variables, as a JSON object (e.g. '{\"enable_thinking\": false}')")
    r.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    r.set_defaults(handler="sgedge.runtime.cli:run")

    c = sub.add_parser("chat", help="talk to a model or bundle in the terminal, switching policies (/help)")
    _runtime_args(c, " to start with")
    c.add_argument("--system", help="system message opening the conversation")
    c.add_argument("--history", action=argparse.BooleanOptionalAction, default=None,
                   help="send the conversation so far with each line (default: yes; no for the embedded demo, "
                   "which learnt single questions)")
    c.add_argument("--max-tokens", type=int, default=256, help="reply length limit per turn")
    c.add_argument("--temperature", type=float, help="0 = greedy (default; 0.2 for the SmolLM2 bundle run "
                   "with no model, as its model card advises)")
    c.add_argument("--top-p", type=float, help="sample from the smallest set of tokens whose probability reaches P "
                   "(default 1 = off; 0.9 for the SmolLM2 bundle run with no model)")
    c.add_argument("--top-k", type=int, help="sample from the K most likely tokens (default 0 = off)")
    c.add_argument("--seed", type=int, default=0, help="sampling seed")
    c.set_defaults(handler="sgedge.runtime.chat_cli:chat")

    s = sub.add_parser("serve", help="serve a model or bundle over a local OpenAI-compatible HTTP API")
    _runtime_args(s, " for requests that name none")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    s.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    s.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on API calls (default: $SGEDGE_API_KEY)")
    s.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="let web pages from ORIGIN call the API (an Electron or Tauri window, e.g. "
                   "http://localhost:5173; repeatable; * allows any page)")
    s.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="accept requests whose Host header names NAME (default: loopback names and the --host "
                   "address only, against DNS rebinding; repeatable; * accepts any)")
    s.add_argument("--model-alias", action="append", default=[], metavar="NAME=POLICY",
                   help="a request whose model is NAME runs POLICY (repeatable; e.g. gpt-4o=EU for a client that "
                   "cannot change its model name); other unknown names get 404 model_not_found")
    s.add_argument("--any-model", action="store_true",
                   help="run the start-up policy for a model name the server does not know, instead of 404 "
                   "(the behaviour before model names were checked)")
    s.add_argument("--watch", type=float, metavar="SECONDS", default=0,
                   help="check the bundle's manifest and signature every SECONDS and reload when they change "
                   "(also: SIGHUP, or POST /admin/reload with --api-key)")
    s.add_argument("--lock-policy", action="store_true",
                   help="refuse requests that name another policy or other adapters than the start-up one")
    s.add_argument("--max-tokens", type=int, default=512,
                   help="reply length when a request sets none (cut to the context left)")
    s.add_argument("--ready-file", metavar="PATH",
                   help="once listening, write {\"url\", \"pid\"} as JSON to PATH (for an app that starts the server "
                   "with --port 0)")
    s.add_argument("--exit-on-stdin-eof", action="store_true",
                   help="stop when standard input closes: started by an app with a pipe, the server ends with the app")
    s.add_argument("--no-prompt-cache", action="store_true",
                   help="compute every prompt whole (default: a chat's next turn reuses the keys/values of the "
                   "turn before, under the same adapters; ONNX: greedy requests)")
    s.add_argument("-q", "--quiet", action="store_true", help="no line per request on standard error")
    s.set_defaults(handler="sgedge.runtime.cli:serve")


def _bundle_parser(sub: argparse._SubParsersAction) -> None:
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
    c.set_defaults(handler="sgedge.bundle_cli:create")
    a = verb.add_parser("add-adapter", help="add or patch a safety adapter (the base is not re-exported)")
    a.add_argument("bundle")
    a.add_argument("adapter", metavar="NAME=PEFT_DIR")
    a.add_argument("--description")
    a.add_argument("--version", help="adapter version (default: previous + 1)")
    a.set_defaults(handler="sgedge.bundle_cli:add_adapter")
    s = verb.add_parser("set-policy", help="set which adapters a region/context uses")
    s.add_argument("bundle")
    s.add_argument("policy", metavar="KEY=NAME[:SCALE][+NAME2[:SCALE]]")
    s.add_argument("--default", action="store_true", help="also make it the default policy")
    s.set_defaults(handler="sgedge.bundle_cli:set_policy")
    i = verb.add_parser("inspect", help="show a bundle's base, adapters, policies and signature")
    i.add_argument("bundle")
    i.add_argument("--json", action="store_true")
    i.add_argument("--trusted-key", help="publisher's public key: also check the signature against the manifest "
                   "(exit 1 when it does not match)")
    i.set_defaults(handler="sgedge.bundle_cli:inspect")
    v = verb.add_parser("verify", help="check every file's hash (and the signature with --trusted-key)")
    v.add_argument("bundle")
    v.add_argument("--trusted-key")
    v.set_defaults(handler="sgedge.bundle_cli:verify")
    g = verb.add_parser("sign", help="sign the bundle manifest with an Ed25519 private key")
    g.add_argument("bundle")
    g.add_argument("--key", required=True)
    g.set_defaults(handler="sgedge.bundle_cli:sign")
    f = verb.add_parser("fuse", help="build (or check) the fused base of a policy, kept in your private sgedge cache")
    f.add_argument("bundle")
    f.add_argument("--policy", required=True, help="policy key (region)")
    f.add_argument("--trusted-key")
    f.set_defaults(handler="sgedge.bundle_cli:fuse")
    k = sub.add_parser("keygen", help="create an Ed25519 key pair NAME.key / NAME.pub for signing bundles")
    k.add_argument("name")
    k.set_defaults(handler="sgedge.bundle_cli:keygen")


def _toolkit_parsers(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a LoRA safety adapter (PEFT) on a frozen Hugging Face base")
    t.add_argument("--base", required=True, help="Hugging Face base model directory")
    t.add_argument("--harmful", nargs="+", required=True, metavar="FILE[@LABEL]",
                   help="prompts to refuse: .csv/.jsonl/.json/.txt (AdvBench, HarmBench, JBB, StrongREJECT, "
                   "XSTest columns recognised); a row's `refusal` field overrides the refusal text")
    t.add_argument("--benign", nargs="+", required=True, metavar="FILE[@LABEL]",
                   help="prompts whose answers stay the base's own (or the row's `response`)")
    t.add_argument("-o", "--output", required=True, help="new PEFT adapter directory")
    t.add_argument("--rank", type=int, default=8, help="LoRA rank")
    t.add_argument("--alpha", type=float, help="LoRA alpha (default: 2 x rank)")
    t.add_argument("--targets", help="comma-separated modules (default: all the family's projections)")
    t.add_argument("--layers", metavar="LIST", help="decoder layers that get LoRA, e.g. 4,5 or 2-5 (counted from 0; "
                   "default: every layer)")
    t.add_argument("--epochs", type=float, default=3.0, help="passes over the data (fractions allowed)")
    t.add_argument("--lr", type=float, default=2e-3, help="learning rate")
    t.add_argument("--batch-size", type=int, default=16, help="examples per step")
    t.add_argument("--max-len", type=int, default=256, help="tokens per example (longer ones are cut)")
    t.add_argument("--answer-tokens", type=int, default=64, help="length of the base answers kept for benign prompts")
    t.add_argument("--refusal-style", choices=["short", "alternative"], default="alternative",
                   help="short refusals, or refusals that offer a safe alternative")
    t.add_argument("--refusal-text", help="the refusal to train (overrides --refusal-style)")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to train")
    t.add_argument("--seed", type=int, default=0, help="seed of the data order and the LoRA initialisation")
    t.add_argument("--save-every", type=int, default=50, help="checkpoint interval in steps")
    t.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of each side held out; the adapter kept is the step with the lowest validation loss "
                   "(0: off; used when both sides have 20 prompts or more)")
    t.add_argument("--eval-every", type=int, default=25, help="steps between validation checks")
    t.add_argument("--patience", type=int, default=4,
                   help="validation checks without improvement before training stops early")
    t.add_argument("--quant-aware", choices=["q8"], help="train under llama.cpp's 8-bit rounding of the "
                   "activations that meet quantized weights (for adapters that will run on a Q4/Q5/Q8 GGUF base)")
    t.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    t.set_defaults(handler="sgedge.toolkit.cli:train")

    x = sub.add_parser("transfer", help="move a safety adapter to a fine-tuned variant of its base "
                       "(checks the fit, optionally refits)")
    x.add_argument("adapter", help="PEFT safety adapter directory, trained on the base")
    x.add_argument("--to", required=True, dest="variant", metavar="VARIANT_DIR",
                   help="Hugging Face directory of the fine-tuned variant")
    x.add_argument("--from", dest="source", metavar="BASE_DIR",
                   help="the base the adapter was trained on (default: base_model_name_or_path, if local)")
    x.add_argument("-o", "--output", required=True, help="new PEFT adapter directory, bound to the variant")
    x.add_argument("--refit", action="store_true",
                   help="continue training the adapter on the variant (needs --harmful and --benign)")
    x.add_argument("--harmful", nargs="+", default=[], metavar="FILE[@LABEL]", help="with --refit: prompts to refuse")
    x.add_argument("--benign", nargs="+", default=[], metavar="FILE[@LABEL]",
                   help="with --refit: prompts whose answers stay the variant's own")
    x.add_argument("--epochs", type=float, default=0.5, help="with --refit (default 0.5)")
    x.add_argument("--lr", type=float, default=1e-3, help="with --refit (default 1e-3)")
    x.add_argument("--batch-size", type=int, default=16, help="with --refit: examples per step")
    x.add_argument("--refusal-style", choices=["short", "alternative"], default="alternative",
                   help="with --refit: short refusals, or refusals that offer a safe alternative")
    x.add_argument("--refusal-text", help="the refusal to train (overrides --refusal-style)")
    x.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to refit")
    x.add_argument("--seed", type=int, default=0, help="with --refit: seed of the data order")
    x.add_argument("--force", action="store_true",
                   help="transfer even if the variant does not look like a fine-tune of the base")
    x.add_argument("--allow-pickle", action="store_true", help="accept a pickled adapter_model.bin")
    x.add_argument("--json", action="store_true", help="print the check's figures as JSON")
    x.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    x.set_defaults(handler="sgedge.toolkit.cli:transfer")

    e = sub.add_parser("eval", help="measure refusal, over-refusal, jailbreaks, utility and speed of exported artifacts")
    src = e.add_mutually_exclusive_group()
    src.add_argument("--bundle", help="bundle folder (default: the embedded demo)")
    src.add_argument("--model", help="base model: .gguf file or ONNX folder")
    e.add_argument("--policy", action="append", default=[], metavar="KEY",
                   help="bundle policy to evaluate (repeatable; default: the bundle's default policy)")
    e.add_argument("--adapter", action="append", default=[], metavar="PATH[:SCALE]", help="with --model")
    e.add_argument("--no-adapter", action="store_true", help="also evaluate the bare base")
    e.add_argument("--harmful", nargs="+", default=[], metavar="FILE[@LABEL]", help="prompts that should be refused")
    e.add_argument("--benign", nargs="+", default=[], metavar="FILE[@LABEL]",
                   help="prompts that should be answered (over-refusal)")
    e.add_argument("--jailbreak-templates", metavar="FILE", help="templates with [INSERT PROMPT HERE]")
    e.add_argument("--qa", nargs="+", default=[], metavar="FILE", help="question/answer .jsonl/.csv: exact-match accuracy")
    e.add_argument("--ppl", metavar="FILE", help="benign text file: perplexity")
    e.add_argument("--judge", default="keywords", help="keywords (default) or guard:MODEL.gguf")
    e.add_argument("--keywords", metavar="FILE[:LIST]",
                   help="refusal keyword list (JSON like refusal_keywords.json, or one phrase per line)")
    e.add_argument("--limit", type=int, help="at most this many prompts per file (seeded sample)")
    e.add_argument("--max-tokens", type=int, default=48, help="reply length judged per prompt")
    e.add_argument("--backend", choices=["gguf", "onnx"])
    e.add_argument("--ctx", type=int, default=8192, help="context size (long jailbreak prompts need room)")
    e.add_argument("--threads", type=int)
    e.add_argument("--seed", type=int, default=0, help="seed of the --limit sample")
    e.add_argument("--json", action="store_true", help="print the results as one JSON object")
    e.add_argument("--report", metavar="OUT.html", help="write an HTML report with a chart per metric")
    e.add_argument("-o", "--output", metavar="OUT.json", help="also write the JSON results (with every answer)")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    e.set_defaults(handler="sgedge.toolkit.cli:evaluate")

    d = sub.add_parser("demo", help="the bundle that runs when no model is given (SmolLM2's, or the tiny demo)")
    dv = d.add_subparsers(dest="verb", required=True, metavar="{info,path,onnx}")
    di = dv.add_parser("info", help="which bundle runs with no model, why, and how it was made")
    di.add_argument("--json", action="store_true")
    di.set_defaults(handler="sgedge.demo:info_cli")
    dp = dv.add_parser("path", help="print that bundle's folder")
    dp.set_defaults(handler="sgedge.demo:path_cli")
    do = dv.add_parser("onnx", help="write the SmolLM2 safety bundle for the ONNX backend (needs sgedge[export])")
    do.add_argument("-o", "--output", required=True, help="new bundle folder")
    do.add_argument("--dtype", choices=["int4", "fp32", "fp16"], default="int4", help="ONNX base weights")
    do.add_argument("--from", dest="from_", metavar="HF_DIR", help="an `sgedge import` of the SmolLM2 GGUF already made "
                    "(default: import it now)")
    do.add_argument("--base-only", action="store_true", help="write the ONNX base model folder only")
    do.set_defaults(handler="sgedge.demo_onnx:onnx_cli")


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "default" in text or default is None or default is False or default == []
                or default is argparse.SUPPRESS or isinstance(action, argparse._VersionAction)):
            return text
        return f"{text} (default: {action.default})"


class _Parser(argparse.ArgumentParser):
    """Subcommand parsers (made by add_subparsers with this class) share the formatter."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sgedge", description="Swappable LoRA safety adapters for local LLMs.")
    parser.add_argument("--version", action="version", version=f"sgedge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    _export_parser(sub)
    _bundle_parser(sub)
    _toolkit_parsers(sub)
    # The usage line lists the commands in the order their help lines come.
    sub.metavar = "{" + ",".join(sub.choices) + "}"
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits on usage errors and --help
        return int(e.code or 0)
    module, func = args.handler.split(":")
    try:
        return int(getattr(importlib.import_module(module), func)(args) or 0)
    except SgedgeError as e:
        print(f"sgedge: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("sgedge: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`sgedge run ... | head -1`): stop quietly, as Unix tools do.
        # Point stdout at /dev/null so that the interpreter's final flush cannot fail again.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141  # 128 + SIGPIPE
    sys.exit(code)
