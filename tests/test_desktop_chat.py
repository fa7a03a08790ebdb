"""The Tkinter desktop example, driven headless on a virtual X screen (Xvfb)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from sgedge.exporters.bundle import create_bundle
from sgedge.manifest import PolicyItem

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "desktop_chat.py"


@pytest.fixture(scope="module")
def display():
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("Xvfb is not installed (.ci/run installs Debian's xvfb)")
    for n in range(90, 110):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            break
    proc = subprocess.Popen([xvfb, f":{n}", "-screen", "0", "800x600x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while not Path(f"/tmp/.X11-unix/X{n}").exists():
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("Xvfb did not start")
        time.sleep(0.05)
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = f":{n}"
    yield f":{n}"
    proc.terminate()
    proc.wait(timeout=10)
    if old is None:
        os.environ.pop("DISPLAY", None)
    else:
        os.environ["DISPLAY"] = old


def _load_example():
    spec = importlib.util.spec_from_file_location("desktop_chat", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_desktop_chat_streams_the_policy_answer(display, tiny, tmp_path, monkeypatch):
    import tkinter as tk

    from sgedge import Runtime

    t = tiny("llama")
    bundle = tmp_path / "bundle"
    create_bundle(bundle, t.hf, {"standard": t.lora1, "strict": t.lora2},
                  {"US": (PolicyItem("standard"),), "DE": (PolicyItem("strict"),)}, default_policy="US",
                  gguf_dtype="f32")
    chat = _load_example()
    monkeypatch.delenv("SGEDGE_REGION", raising=False)
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    monkeypatch.setattr(chat.locale, "getlocale", lambda: (None, None))
    region = chat.choose_region(bundle, None)
    assert region == "DE", "the OS locale picks the policy"
    prompt = "How do I bake bread?"
    with Runtime.open(bundle, region) as rt:
        expected = rt.generate(prompt, max_tokens=24).text
        root = tk.Tk()
        try:
            app = chat.ChatApp(root, rt, max_tokens=24)
            assert "Policy: DE (strict:1)" in app.status.cget("text")
            app.send(prompt)
            deadline = time.time() + 30
            while app.busy and time.time() < deadline:
                root.update()
                time.sleep(0.01)
            root.update()
            assert not app.busy
            assert app.transcript() == f"You: {prompt}\nAssistant: {expected}\n\n"
            shot = os.environ.get("SGEDGE_SCREENSHOT")
            if shot and shutil.which("import"):
                subprocess.run(["import", "-window", "root", "-trim", "+repage", shot], check=True)
        finally:
            root.destroy()


@pytest.mark.parametrize(("env", "country"), [
    ({"LANG": "C"}, None), ({"LANG": "POSIX"}, None), ({"LANG": "C.UTF-8"}, None), ({"LC_ALL": "C"}, None),
    ({"LANG": "de_DE.UTF-8"}, "DE"), ({"LANG": "fr_CA.UTF-8@euro"}, "CA"), ({"LC_ALL": "C", "LANG": "de_DE"}, None),
    ({"LC_MESSAGES": "en_GB.UTF-8", "LANG": "C"}, "GB"),
])
def test_a_c_or_posix_locale_names_no_country(monkeypatch, env, country):
    module = _load_example()
    for key in ("LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(module.locale, "setlocale", lambda *a: "C.UTF-8")
    assert module.locale_country() == country
    assert module.region_from_locale({"US": (), "DE": ()}) == (country if country == "DE" else None)


def test_desktop_chat_opens_the_demo_with_no_bundle(monkeypatch):
    module = _load_example()
    opened = {}

    class Stop(Exception):
        pass

    def fake_open(bundle, region, **kw):
        opened["bundle"] = bundle
        raise Stop

    monkeypatch.setattr(module.Runtime, "open", fake_open)
    with pytest.raises(Stop):
        module.main([])
    from sgedge.demo import demo_bundle

    assert opened["bundle"] == demo_bundle()
