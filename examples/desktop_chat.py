"""A small desktop chat window (Tkinter, standard library) on top of an sgedge bundle.

The region comes from the command line, else $SGEDGE_REGION, else the OS locale's
country (de_DE -> DE) when the bundle has such a policy, else the bundle's default
policy (a C or POSIX locale names no country). The window shows which policy is active
and streams answers. With no bundle, it opens the embedded demo (`sgedge demo path`).

    python examples/desktop_chat.py [BUNDLE] [--region EU]
"""

from __future__ import annotations

import argparse
import locale
import os
import queue
import threading
import tkinter as tk
from pathlib import Path
from tkinter import scrolledtext

from sgedge import Runtime, SgedgeError


def locale_country() -> str | None:
    """The country of the OS locale as the user set it (LC_ALL, LC_MESSAGES, LANG), or None.
    Read raw: Python's locale.getlocale() turns a C or POSIX locale into en_US, which
    would pick a US policy for a machine that names no country."""
    for value in (os.environ.get("LC_ALL"), os.environ.get("LC_MESSAGES"), os.environ.get("LANG"),
                  locale.setlocale(locale.LC_CTYPE)):
        if not value:
            continue
        name = value.split(".", 1)[0].split("@", 1)[0]
        if name in ("C", "POSIX") or "_" not in name:
            return None  # the first one set decides, as in setlocale
        return name.split("_", 1)[1].upper()
    return None


def region_from_locale(policies: dict) -> str | None:
    """Country of the OS locale, if the bundle has a policy for it."""
    country = locale_country()
    return country if country in policies else None


def choose_region(bundle: Path, cli_region: str | None) -> str | None:
    if cli_region:
        return cli_region
    if os.environ.get("SGEDGE_REGION"):
        return os.environ["SGEDGE_REGION"]
    from sgedge.manifest import read_manifest

    manifest, _ = read_manifest(bundle)
    return region_from_locale(manifest.policies)


class ChatApp:
    def __init__(self, root: tk.Tk, runtime: Runtime, max_tokens: int = 128) -> None:
        self.root, self.rt, self.max_tokens = root, runtime, max_tokens
        self.pieces: queue.Queue[str | None] = queue.Queue()
        self.busy = False
        policy = runtime.policy or "bare base"
        adapters = " + ".join(f"{a.name}:{a.scale:g}" for a in runtime.active) or "no safety adapter"
        root.title("sgedge chat")
        self.status = tk.Label(root, text=f"Policy: {policy} ({adapters}) - {runtime.backend}", anchor="w")
        self.status.pack(fill="x", padx=8, pady=(8, 0))
        self.log = scrolledtext.ScrolledText(root, width=72, height=18, wrap="word", state="disabled")
        self.log.pack(fill="both", expand=True, padx=8, pady=8)
        row = tk.Frame(root)
        row.pack(fill="x", padx=8, pady=(0, 8))
        self.entry = tk.Entry(row)
        self.entry.pack(side="left", fill="x", expand=True)
        self.entry.bind("<Return>", lambda _e: self.send())
        self.button = tk.Button(row, text="Send", command=self.send)
        self.button.pack(side="right", padx=(8, 0))

    def _append(self, text: str) -> None:
        self.log.configure(state="normal")
        self.log.insert("end", text)
        self.log.see("end")
        self.log.configure(state="disabled")

    def transcript(self) -> str:
        return self.log.get("1.0", "end-1c")

    def send(self, prompt: str | None = None) -> None:
        prompt = prompt if prompt is not None else self.entry.get().strip()
        if not prompt or self.busy:
            return
        self.entry.delete(0, "end")
        self.busy = True
        self.button.configure(state="disabled")
        self._append(f"You: {prompt}\nAssistant: ")
        threading.Thread(target=self._generate, args=(prompt,), daemon=True).start()
        self.root.after(20, self._drain)

    def _generate(self, prompt: str) -> None:
        try:
            for piece in self.rt.stream(prompt, max_tokens=self.max_tokens):
                self.pieces.put(piece)
        except SgedgeError as e:
            self.pieces.put(f"[error: {e}]")
        self.pieces.put(None)

    def _drain(self) -> None:
        while True:
            try:
                piece = self.pieces.get_nowait()
            except queue.Empty:
                self.root.after(20, self._drain)
                return
            if piece is None:
                self._append("\n\n")
                self.busy = False
                self.button.configure(state="normal")
                return
            self._append(piece)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", type=Path, nargs="?", help="bundle folder (default: the embedded demo)")
    p.add_argument("--region")
    p.add_argument("--trusted-key")
    p.add_argument("--max-tokens", type=int, default=128)
    args = p.parse_args(argv)
    try:
        if args.bundle is None:
            from sgedge.demo import default_bundle

            args.bundle = default_bundle().path
        rt = Runtime.open(args.bundle, choose_region(args.bundle, args.region), trusted_key=args.trusted_key)
    except SgedgeError as e:  # fail closed, visibly
        print(f"sgedge: error: {e}")
        return 1
    root = tk.Tk()
    ChatApp(root, rt, args.max_tokens)
    try:
        root.mainloop()
    finally:
        rt.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
