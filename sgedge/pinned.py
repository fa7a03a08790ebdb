"""Files opened once: what is hashed is what the engine loads.

Checking a file by its path and then handing the engine that path again leaves a window:
a file renamed over it in between runs unchecked bytes. A `Pinned` file is opened once;
its hash is read from the open descriptor, and the engine gets a path that names that
open file (Linux: /proc/self/fd/N), whatever the folder holds by then. A folder artifact
(an ONNX model) is pinned file by file and handed to the engine as a private folder of
links to the pinned files, so the engine sees exactly the files the manifest lists.

Where no such path exists (macOS, Windows), the engine gets the real path and the file's
identity (device, inode, size, times) is checked again after loading: a swap is caught
unless it is swapped back in between. docs/security.md says what stays outside.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

from sgedge._fs import private_temp_dir
from sgedge.errors import InputError, SgedgeError

_PROC_FD = Path("/proc/self/fd")
_CHUNK = 1 << 20


class IntegrityError(SgedgeError):
    """A bundle file is missing, or its bytes are not the ones the manifest names."""


def fd_paths() -> bool:
    """Whether open files can be named by path (/proc/self/fd on Linux)."""
    return _PROC_FD.is_dir() and os.name == "posix"


def identity(st: os.stat_result) -> tuple[int, ...]:
    """What changes when a file is replaced or rewritten: device, inode, size, mtime and
    ctime (ctime cannot be set back by the writer, as mtime can)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class PinnedFile:
    """One regular file, open for the pin's lifetime."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.fd = -1
        self.path = Path(path)
        flags = os.O_RDONLY | getattr(os, "O_BINARY", 0)
        try:
            self.fd = os.open(self.path, flags)
        except FileNotFoundError:
            raise IntegrityError(f"{self.path} is missing") from None
        except OSError as e:
            raise IntegrityError(f"cannot open {self.path} ({e.strerror or e})") from None
        self.stat = os.fstat(self.fd)
        if not stat.S_ISREG(self.stat.st_mode):
            os.close(self.fd)
            raise IntegrityError(f"{self.path} is not a regular file")

    @property
    def size(self) -> int:
        return self.stat.st_size

    def sha256(self) -> str:
        """The hash of the bytes this open file holds (read from the descriptor)."""
        h, pos = hashlib.sha256(), 0
        while True:
            chunk = os.pread(self.fd, _CHUNK, pos) if hasattr(os, "pread") else self._read_at(pos)
            if not chunk:
                return h.hexdigest()
            h.update(chunk)
            pos += len(chunk)

    def _read_at(self, pos: int) -> bytes:  # pragma: no cover (Windows has no pread)
        os.lseek(self.fd, pos, os.SEEK_SET)
        return os.read(self.fd, _CHUNK)

    def read_all(self, limit: int) -> bytes:
        if self.size > limit:
            raise InputError(f"{self.path} is {self.size} bytes, more than the {limit} expected")
        return os.pread(self.fd, self.size + 1, 0) if hasattr(os, "pread") else self._read_at(0)

    @property
    def engine_path(self) -> Path:
        """A path an engine opens to read exactly this open file."""
        return _PROC_FD / str(self.fd) if fd_paths() else self.path

    def unchanged(self) -> bool:
        """Whether the path still names the file that was opened (for systems without fd paths)."""
        try:
            return identity(os.stat(self.path)) == identity(os.fstat(self.fd))
        except OSError:
            return False

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> PinnedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


class Pins:
    """The pinned files of one runtime (or one check); closed together."""

    def __init__(self) -> None:
        self.files: dict[Path, PinnedFile] = {}
        self._dirs: list[Path] = []

    def pin(self, path: Path) -> PinnedFile:
        key = Path(os.path.abspath(path))
        if key not in self.files:
            self.files[key] = PinnedFile(path)
        return self.files[key]

    def engine_path(self, root: Path, members: Sequence[str] = ()) -> Path:
        """What to hand the engine for the artifact at `root`: a pinned file's path, or,
        for a folder, a private folder holding links to its pinned `members` (paths
        relative to `root`) and nothing else."""
        if not members:
            return self.pin(root).engine_path
        if not fd_paths():
            return root
        tmp = private_temp_dir("pinned")
        self._dirs.append(tmp)
        for rel in members:
            link = tmp / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(self.pin(root / rel).engine_path, link)
        return tmp

    def adopt(self, other: Pins) -> None:
        """Take over `other`'s pinned files and folders (a reload's new adapters)."""
        for key, p in other.files.items():
            if key in self.files:
                self.files[key].close()
            self.files[key] = p
        self._dirs += other._dirs
        other.files, other._dirs = {}, []

    def release(self, paths: Sequence[Path]) -> None:
        """Close the pins of `paths` (adapters no longer loaded)."""
        for path in paths:
            p = self.files.pop(Path(os.path.abspath(path)), None)
            if p is not None:
                p.close()

    def real_names(self, text: str) -> str:
        """`text` with the engine paths of pinned files put back as the files' own paths
        (for messages: /proc/self/fd/7 means nothing to a user)."""
        for p in self.files.values():
            if p.fd >= 0:
                text = text.replace(str(p.engine_path), str(p.path))
        for d in self._dirs:
            text = text.replace(str(d), "<pinned folder>")
        return text

    def real_path(self, path: Path) -> Path:
        for p in self.files.values():
            if p.fd >= 0 and p.engine_path == path:
                return p.path
        return path

    def check_unchanged(self, always: bool = False) -> None:
        """After loading from real paths (systems without fd paths, or `always` where a
        reader refuses fd paths): every pinned path still names the file hashed."""
        if fd_paths() and not always:
            return
        moved = [str(p.path) for p in self.files.values() if not p.unchanged()]
        if moved:
            raise IntegrityError(f"{', '.join(moved[:3])} changed while loading; nothing was run from it")

    def close(self) -> None:
        for d in self._dirs:
            shutil.rmtree(d, ignore_errors=True)
        self._dirs.clear()
        for p in self.files.values():
            p.close()
        self.files.clear()

    def __enter__(self) -> Pins:
        return self

    def __del__(self) -> None:
        self.close()

    def __exit__(self, *exc: object) -> None:
        self.close()
