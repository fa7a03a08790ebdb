"""`sgedge transfer`: move a safety adapter to a fine-tuned variant of its base.

A LoRA adapter is a weight delta, so it applies to any model whose target layers have
the same shapes, but it only means the same thing on a model derived from the base it
was trained on. `transfer` checks that: same family and layer shapes, and a measure of
how far the fine-tune moved each weight the adapter touches (relative Frobenius
distance; an unrelated model of the same shape sits near 1.4, a fine-tune far below).
It then writes the adapter bound to the variant, with the check's figures in
`sgedge_transfer.json`, so that `sgedge export adapter` binds it to the variant without
a note. `refit` continues training the adapter on the variant (its own answers kept for
benign prompts), for variants whose fine-tune moved the weights the adapter relies on.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sgedge._fs import atomic_path, make_temp_dir, normalize_modes
from sgedge.errors import InputError

# Median relative distance above which the variant is not taken for a fine-tune of the
# source: independent random inits of one shape sit near sqrt(2); full fine-tunes of
# real models move weights by well under 10%.
UNRELATED_DRIFT = 0.5
# Drift, as a fraction of the adapter's own size, from which transfer says the refusals may
# not survive (docs/transfer.md: the demo kept them at 0.42, lost a few points at 0.63 and
# half of them at 1.34).
WEAR_RATIO = 0.5
# Config keys that must agree for a LoRA delta to act on the same computation.
_SHAPE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
               "intermediate_size")
REPORT_FILE = "sgedge_transfer.json"


@dataclass
class ModuleDrift:
    module: str
    drift: float  # ||W_variant - W_source|| / ||W_source||
    adapter: float  # ||scaling * B @ A|| / ||W_source||


@dataclass
class TransferReport:
    adapter: str
    source: str
    variant: str
    source_fingerprint: str
    variant_fingerprint: str
    family: str
    modules: list[ModuleDrift] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    refit: dict[str, Any] | None = None
    # Earlier transfers of this adapter (base -> variant -> ...), oldest first, as written then.
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def median_drift(self) -> float:
        return float(np.median([m.drift for m in self.modules]))

    @property
    def max_drift(self) -> ModuleDrift:
        return max(self.modules, key=lambda m: m.drift)

    @property
    def median_adapter(self) -> float:
        return float(np.median([m.adapter for m in self.modules]))

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["modules"] = [{"module": m.module, "drift": round(m.drift, 6), "adapter": round(m.adapter, 6)}
                        for m in self.modules]
        d["median_drift"] = round(self.median_drift, 6)
        d["max_drift"] = {"module": self.max_drift.module, "drift": round(self.max_drift.drift, 6)}
        d["median_adapter"] = round(self.median_adapter, 6)
        return d


def _source_dir(adapter: Any, source: str | Path | None) -> Path:
    if source is not None:
        return Path(source)
    named = adapter.base_model
    if named and Path(named).is_dir():
        return Path(named)
    raise InputError(f"{adapter.path}'s adapter_config.json names base {named!r}, which is not a local folder; "
                     "pass --from DIR, the Hugging Face base the adapter was trained on")


def check_transfer(adapter_dir: str | Path, variant: str | Path, *, source: str | Path | None = None,
                   force: bool = False, allow_pickle: bool = False, progress: bool = False,
                   refitting: bool = False) -> TransferReport:
    """Check that the PEFT adapter in `adapter_dir`, trained on `source` (default: the base its
    config names), fits the model in `variant`; measure how far the variant moved from the
    source in the adapter's target layers. Raises InputError naming the first misfit."""
    from sgedge.exporters.hf_model import HFModel
    from sgedge.exporters.peft_adapter import load_peft_adapter

    adapter = load_peft_adapter(adapter_dir, allow_pickle=allow_pickle)
    src = HFModel.open(_source_dir(adapter, source))
    var = HFModel.open(variant)
    if src.family.name != var.family.name:
        raise InputError(f"{var.path} is a {var.family.name} model but the adapter's base {src.path} is "
                         f"{src.family.name}; an adapter only transfers to a fine-tune of its own base")
    for key in _SHAPE_KEYS:
        if src.config.get(key) != var.config.get(key):
            raise InputError(f"{var.path} has {key} = {var.config.get(key)} but the adapter's base {src.path} has "
                             f"{src.config.get(key)}; an adapter only transfers to a fine-tune of its own base")
    report = TransferReport(str(Path(adapter_dir).resolve()), str(src.path.resolve()), str(var.path.resolve()),
                            src.fingerprint, var.fingerprint, src.family.name)
    earlier = Path(adapter_dir) / REPORT_FILE
    if earlier.is_file():
        try:
            prev = json.loads(earlier.read_text("utf-8"))
        except ValueError as e:
            raise InputError(f"{earlier} is not valid JSON ({e}); it records the adapter's earlier transfer, "
                             "restore it or remove it") from e
        report.history = [*prev.pop("history", []), {k: v for k, v in prev.items() if k != "modules"}]
    if report.source_fingerprint == report.variant_fingerprint:
        raise InputError(f"{var.path} has the same weights as the adapter's base {src.path} "
                         f"({src.fingerprint[:19]}…); there is nothing to transfer: export the adapter as it is")
    if src.config.get("vocab_size") != var.config.get("vocab_size"):
        report.notes.append(f"the variant's vocabulary has {var.config.get('vocab_size')} entries, the base's "
                            f"{src.config.get('vocab_size')}; the adapter does not touch the embeddings, but check "
                            "refusals with sgedge eval on the variant")

    def load(model: HFModel, name: str) -> np.ndarray:
        if name not in model.shapes:
            raise InputError(f"{model.path} has no tensor {name}, which the adapter targets; "
                             "an adapter only transfers to a fine-tune of its own base")
        return model.tensor(name)

    from tqdm.auto import tqdm

    for mod in tqdm(adapter.modules, desc="checking fit", unit="layer",
                    disable=None if progress else True):
        name = f"{mod.module}.weight"
        w_src, w_var = load(src, name), load(var, name)
        if w_var.shape != w_src.shape or w_src.shape != (mod.b.shape[0], mod.a.shape[1]):
            raise InputError(f"{name} is {tuple(w_var.shape)} in {var.path}, {tuple(w_src.shape)} in the adapter's "
                             f"base and the adapter's LoRA is {(mod.b.shape[0], mod.a.shape[1])}; "
                             "an adapter only transfers to a fine-tune of its own base")
        norm = float(np.linalg.norm(w_src)) or 1.0
        delta = mod.scaling * (mod.b.astype(np.float32) @ mod.a.astype(np.float32))
        report.modules.append(ModuleDrift(mod.module, float(np.linalg.norm(w_var - w_src)) / norm,
                                          float(np.linalg.norm(delta)) / norm))
    if report.median_drift > UNRELATED_DRIFT:
        msg = (f"{var.path} does not look like a fine-tune of the adapter's base {src.path}: the layers the adapter "
               f"changes differ by a median {report.median_drift:.0%} (a fine-tune moves them by a few percent; "
               "unrelated models of one shape differ by about 140%)")
        if not force:
            raise InputError(msg + ". Pass --force only if you know the variant descends from that base")
        report.notes.append(msg + "; transferred anyway (--force)")
    elif report.median_adapter == 0.0:
        report.notes.append("the adapter changes nothing (its LoRA B matrices are zero, as PEFT initialises them): "
                            "was it trained?")
    elif report.median_drift >= WEAR_RATIO * report.median_adapter:
        report.notes.append(
            f"the fine-tune moved these layers by {report.median_drift / report.median_adapter:.2f} times as much as "
            "the adapter changes them; its refusals may not survive (on the demo they fell by half at 1.34 times, "
            "docs/transfer.md). " + ("Measure the refitted adapter on the variant with sgedge eval" if refitting else
                                     "Measure them on the variant with sgedge eval, or run again with --refit"))
    return report


def _write_peft(adapter_dir: Path, out: Path, report: TransferReport) -> None:
    """Copy the adapter to `out` (atomically), bound to the variant."""
    tmp = make_temp_dir(out)
    try:
        for f in adapter_dir.iterdir():
            if f.is_file() and f.name not in (REPORT_FILE, "adapter_config.json"):
                shutil.copy2(f, tmp / f.name)
        cfg = json.loads((adapter_dir / "adapter_config.json").read_text("utf-8"))
        cfg["base_model_name_or_path"] = report.variant
        (tmp / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
        (tmp / REPORT_FILE).write_text(json.dumps(report.to_json(), indent=2))
        normalize_modes(tmp)
        if out.exists():
            out.rmdir()  # empty, checked by the caller
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def transfer_adapter(adapter_dir: str | Path, variant: str | Path, out_dir: str | Path, *,
                     source: str | Path | None = None, force: bool = False, allow_pickle: bool = False,
                     refit: tuple[Sequence[Any], Sequence[Any], Any] | None = None,
                     progress: bool = True) -> TransferReport:
    """Check the fit (see check_transfer) and write the adapter, bound to `variant`, to `out_dir`.

    `refit` = (harmful, benign, TrainConfig) continues training the adapter on the variant
    first (benign prompts keep the variant's own answers)."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} already exists and is not empty; choose another -o or remove it")
    report = check_transfer(adapter_dir, variant, source=source, force=force, allow_pickle=allow_pickle,
                            progress=progress, refitting=refit is not None)
    if refit is None:
        _write_peft(Path(adapter_dir), out, report)
        return report
    from sgedge.toolkit.train import train_adapter

    harmful, benign, cfg = refit
    report.refit = {"epochs": cfg.epochs, "lr": cfg.lr, "harmful": len(harmful), "benign": len(benign)}
    summary = train_adapter(variant, harmful, benign, out, cfg, progress=progress, init_adapter=adapter_dir,
                            extra_files={REPORT_FILE: json.dumps(report.to_json(), indent=2)})
    report.refit.update(steps=summary["steps"], final_loss=summary["final_loss"], seconds=summary["seconds"])
    with atomic_path(out / REPORT_FILE) as tmp:
        tmp.write_text(json.dumps(report.to_json(), indent=2))
    return report
