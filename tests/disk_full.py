"""A disk that fills up part-way through a write: the first half of the bytes reach the file, then the write
fails with ENOSPC, as on a real full disk. For the files Python writes (`open`, `Path.write_*`, `os.fdopen`)
and for the libraries that write their files themselves (safetensors, datasets through Arrow)."""

from __future__ import annotations

import builtins
import errno
import io
import os
from pathlib import Path


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _FillingFile:
    """A file open for writing whose next write puts the first half of its data on disk, then fails."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        self._f.write(data[:len(data) // 2])
        self._f.flush()
        enospc()

    def writelines(self, lines):
        self.write("".join(lines) if lines and isinstance(lines[0], str) else b"".join(lines))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()
        return False

    def __getattr__(self, name):
        return getattr(self._f, name)


def python_writes(mp, matches) -> None:
    """From now on (until `mp` is undone), a file Python opens for writing at a path `matches(path)` accepts
    takes half of what is written to it, then fails."""
    real = io.open

    def opening(file, mode="r", *args, **kwargs):
        f = real(file, mode, *args, **kwargs)
        if any(c in mode for c in "wax+") and matches(os.readlink(f"/proc/self/fd/{f.fileno()}")):
            return _FillingFile(f)
        return f

    mp.setattr(io, "open", opening)
    mp.setattr(builtins, "open", opening)


def library_writes(mp, owner, name: str, target, matches) -> None:
    """`owner.name`, a function that writes the file or folder at `target(args, kwargs)`: where `matches`
    accepts that path, it writes, then its file (a folder's largest file) is cut to half its bytes and it
    fails, as when the disk filled while the library wrote."""
    real = getattr(owner, name)

    def writing(*args, **kwargs):
        path = Path(target(args, kwargs))
        if not matches(str(path)):
            return real(*args, **kwargs)
        real(*args, **kwargs)
        cut = path if path.is_file() else max((p for p in path.rglob("*") if p.is_file()),
                                              key=lambda p: p.stat().st_size)
        os.truncate(cut, cut.stat().st_size // 2)
        enospc()

    mp.setattr(owner, name, writing)


def snapshot(path: Path) -> dict[str, bytes | None]:
    """Every file under `path` (or `path`, a file) with its bytes, and every folder (None): equal snapshots
    mean the same bytes and nothing added, not even an empty temporary folder."""
    path = Path(path)
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() if p.is_file() else None for p in sorted(path.rglob("*"))}
