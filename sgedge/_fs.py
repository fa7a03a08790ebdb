"""Atomic file output: write to a temporary name beside the target, then rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def normalize_modes(root: Path) -> None:
    """Give every file and folder under `root` the mode a plain open()/mkdir() would (some
    writers, such as onnx's external-data saver or mkstemp, make files private)."""
    mask = _umask()
    for p in [root, *root.rglob("*")]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


_TAG = "sgtmp"  # temp names: .TARGET.sgtmpPID.RANDOM[.partial]


def temp_prefix(target: Path) -> str:
    """The prefix of this process's temporary names beside `target`: the pid in it lets a
    later run tell a leftover of a killed process from a write in progress."""
    return f".{target.name}.{_TAG}{os.getpid()}."


def _alive(pid: int) -> bool:
    if pid == os.getpid() or os.name != "posix":
        return True  # where liveness cannot be asked, keep the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(target: Path) -> int:
    """Remove what writes of `target` left behind when their process was killed (temp
    files and folders whose process no longer runs); returns how many."""
    stem = f".{target.name}.{_TAG}"
    removed = 0
    try:
        siblings = list(target.parent.iterdir())
    except OSError:
        return 0
    for p in siblings:
        if not p.name.startswith(stem):
            continue
        pid = p.name[len(stem):].split(".", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed += 1
    return removed


def private_temp_dir(kind: str) -> Path:
    """A folder in the system's temp folder for this process's scratch files
    (`sgedge-KIND-PID-*`); those of processes no longer running are removed first."""
    sweep_temp(kind)
    return Path(tempfile.mkdtemp(prefix=f"sgedge-{kind}-{os.getpid()}-"))


def sweep_temp(kind: str) -> None:
    """Remove the `sgedge-KIND-PID-*` scratch folders of processes no longer running."""
    root = Path(tempfile.gettempdir())
    stem = f"sgedge-{kind}-"
    try:
        for p in root.iterdir():
            pid = p.name[len(stem):].split("-", 1)[0] if p.name.startswith(stem) else ""
            if pid.isdigit() and not _alive(int(pid)) and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
    except OSError:
        pass


def make_temp_dir(target: Path) -> Path:
    """A temporary folder beside `target` with the mode mkdir() would give (mkdtemp makes 0700)."""
    sweep_stale(target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=temp_prefix(target)))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto `target` on success.

    On any exception the temporary file is removed, so a failed or interrupted export
    never leaves a half-written file under the final name.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(target), suffix=".partial", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():  # mkstemp makes 0600; give the file the mode a plain open() would
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
