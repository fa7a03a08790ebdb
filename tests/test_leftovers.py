"""What a killed process leaves is cleaned by the next run, and state files are written
whole or not at all (issue 25)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

from sgedge._fs import atomic_path, make_temp_dir, sweep_stale, temp_prefix


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # exited and reaped: no such process now (reuse within the test is not a worry)


def test_temp_files_of_a_dead_process_are_swept_and_a_live_ones_kept(tmp_path):
    target = tmp_path / "base.gguf"
    dead = tmp_path / f".base.gguf.sgtmp{_dead_pid()}.abc123.partial"
    dead_dir = tmp_path / f".base.gguf.sgtmp{_dead_pid()}.xyz"
    mine = tmp_path / f"{temp_prefix(target)}mine.partial"
    other = tmp_path / ".base.gguf.something-else"
    for p in (dead, mine, other):
        p.write_bytes(b"x")
    dead_dir.mkdir()
    (dead_dir / "model.onnx").write_bytes(b"x")
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert not dead.exists() and not dead_dir.exists()
    assert mine.exists() and other.exists()  # in progress here / not sgedge's


def test_a_write_killed_midway_leaves_nothing_the_next_run_keeps(tmp_path):
    target = tmp_path / "out.gguf"
    code = ("import time, sys\nfrom sgedge._fs import atomic_path, make_temp_dir\nfrom pathlib import Path\n"
            f"t = Path({str(target)!r})\nd = make_temp_dir(t)\n(d / 'weights').write_bytes(b'x' * 1000)\n"
            "with atomic_path(t) as tmp:\n    tmp.write_bytes(b'half')\n    print('ready', flush=True)\n"
            "    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 2 and not target.exists()  # a temp file and a temp folder, no half target
    assert sweep_stale(target) == 2
    assert list(tmp_path.iterdir()) == []
    d = make_temp_dir(target)  # and a new write works as usual
    assert d.is_dir()


def test_an_interrupted_add_adapter_leaves_no_orphan_after_the_next(tiny, tmp_path):
    from sgedge.exporters.bundle import add_adapter, create_bundle, sweep_orphans
    from sgedge.manifest import PolicyItem, read_manifest

    t = tiny("qwen2")
    bundle = tmp_path / "b"
    create_bundle(bundle, t.hf, {"standard": t.lora1}, {"US": (PolicyItem("standard", 1.0),)}, formats=["gguf"],
                  gguf_dtype="f32")
    orphan = bundle / "adapters" / "strict.0123abcd.gguf"
    shutil.copy(bundle / "adapters" / "standard.gguf", orphan)  # what a kill before the manifest write leaves
    keep = bundle / "adapters" / "notes.txt"
    keep.write_text("the publisher's own file")
    add_adapter(bundle, "strict", t.lora2)
    assert not orphan.exists() and keep.exists()
    m, _ = read_manifest(bundle)
    assert sweep_orphans(bundle, m) == []


def test_train_resumes_over_a_state_file_cut_short(tiny, tmp_path):
    from sgedge.toolkit.prompts import Prompt
    from sgedge.toolkit.train import TrainConfig, train_adapter

    t = tiny("llama")
    out = tmp_path / "a"
    work = tmp_path / "a.sgedge-train"
    work.mkdir()
    (work / "state.json").write_text('{"key": "abc')  # cut short by a kill
    (work / "benign_answers.json").write_text("[1, 2")
    harmful = [Prompt(f"harm {i}", "x") for i in range(2)]
    benign = [Prompt(f"fine {i}", "x", response="ok") for i in range(2)]
    summary = train_adapter(t.hf, harmful, benign, out, TrainConfig(rank=2, epochs=1, batch_size=2), progress=False)
    assert summary["steps"] >= 1 and (out / "adapter_model.safetensors").is_file()
    assert json.loads((out / "sgedge_train.json").read_text())["steps"] == summary["steps"]


def test_scratch_folders_of_dead_processes_are_swept_from_the_temp_folder(tmp_path, monkeypatch):
    import tempfile

    from sgedge._fs import private_temp_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / f"sgedge-onnx-{_dead_pid()}-abc"
    dead.mkdir()
    live = tmp_path / f"sgedge-onnx-{os.getpid()}-def"
    live.mkdir()
    mine = private_temp_dir("onnx")
    assert not dead.exists() and live.exists() and mine.parent == tmp_path
