"""Atomic writes and content hashes. Every output stilts writes goes through here."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from stilts.errors import StiltsError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(e: BaseException) -> bool:
    """Whether `e` is a write that failed for lack of space (also as Rust's or sqlite's message)."""
    text = str(e)
    return getattr(e, "errno", None) in DISK_FULL or "No space left on device" in text or "os error 28" in text \
        or "database or disk is full" in text or "Disk quota exceeded" in text


def disk_full_error(path) -> StiltsError:
    return StiltsError(f"{path}: no space left on device; what was there before is intact: free some space and "
                       f"run the same command again")


@contextlib.contextmanager
def writing(path):
    """A full disk while writing `path` (ENOSPC, EDQUOT) becomes a one-line error naming it."""
    try:
        yield
    except Exception as e:
        if disk_full(e):
            raise disk_full_error(path) from None
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, Exception) and disk_full(e):
            raise disk_full_error(path) from None
        raise


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary sibling directory; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        _swap_in(tmp, path)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, Exception) and disk_full(e):
            raise disk_full_error(path) from None
        raise


def _swap_in(tmp: Path, path: Path) -> None:
    """Put the folder `tmp` in the place of `path`; if that fails, `path` is as it was."""
    if not path.exists():
        os.replace(tmp, path)
        return
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def remove_partial(path: str | os.PathLike) -> None:
    """Remove what a kill left half-written of `path` (the temporaries of `atomic_dir`); `path` itself, the
    previous complete version, stays, and is put back if a kill came between moving it aside and moving
    the new one in."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    for old in sorted(path.parent.glob(f".{path.name}.old-*")):
        if not path.exists():
            os.replace(old, path)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def read_json(path: str | os.PathLike):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def file_records(folder: str | os.PathLike, skip: tuple[str, ...] = ()) -> dict[str, dict]:
    """Size and sha256 of every file under `folder` (by relative name), to check it by before it is used."""
    folder = Path(folder)
    return {str(f.relative_to(folder)): {"size": f.stat().st_size, "sha256": sha256_file(f)}
            for f in sorted(folder.rglob("*")) if f.is_file() and f.name not in skip}


def damaged(folder: str | os.PathLike, records: dict[str, dict]) -> str | None:
    """What differs from `records` (`file_records`): '<file>: <how>' for the first such file, else None. Sizes
    first (a copy cut short, a crash mid-write), then contents (an altered file)."""
    folder = Path(folder)
    for name, rec in records.items():
        f = folder / name
        if not f.is_file():
            return f"{f}: missing"
        if f.stat().st_size != rec["size"]:
            return f"{f}: {f.stat().st_size} bytes, {rec['size']} when written (truncated or altered)"
    for name, rec in records.items():
        if sha256_file(folder / name) != rec["sha256"]:
            return f"{folder / name}: its sha256 differs from the one recorded when it was written (altered)"
    return None
