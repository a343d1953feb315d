"""Grids whose licence does not let stilts ship them: fetched on first use from a pinned commit of their public
repository, verified, converted and cached in the user's cache folder (never in a project).

The files a grid is read from (its reader's `wanted` paths) come from one of:
  - the repository's archive of the pinned commit, downloaded from GitHub (the default);
  - `--from PATH`: a git clone or mirror (its objects at the pinned commit are read, whatever is checked
    out), a folder holding the files (an unpacked archive), or the downloaded archive file (.tar.gz).
They are verified by one checksum: the sha256 of the sorted lines "path<TAB>sha256 of the file", pinned in
the catalogue, so every way of getting them is checked the same way. Only then is each grid converted and
written, atomically, to <cache>/grids/<grid>.csv with <source>.json beside it (commit, checksum, where from,
when). The cache is $STILTS_CACHE/grids, else the platform's user cache folder (~/.cache/stilts/grids).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from stilts.errors import StiltsError

CACHE_ENV = "STILTS_CACHE"
OFFLINE_ENV = ("STILTS_OFFLINE", "HF_HUB_OFFLINE")  # either set to 1: no download at first use
TIMEOUT_S = 30


def cache_dir() -> Path:
    base = os.environ.get(CACHE_ENV)
    if not base:
        import platformdirs

        base = platformdirs.user_cache_dir("stilts", appauthor=False)
    return Path(base).expanduser() / "grids"


def offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes") for k in OFFLINE_ENV)


def checksum(files: dict[str, bytes]) -> str:
    lines = "".join(f"{p}\t{hashlib.sha256(files[p]).hexdigest()}\n" for p in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def _readers():
    from stilts.selection import taskweb

    return {"taskweb": taskweb}


def reader(name: str):
    try:
        return _readers()[name]
    except KeyError:
        raise StiltsError(f"grids: unknown reader '{name}' in the catalogue (known: {', '.join(_readers())})") \
            from None


def _from_tar(stream, wanted) -> dict[str, bytes]:
    """The wanted files of a tar(.gz) stream; GitHub's archives put everything under one top folder."""
    files = {}
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                path = member.name.split("/", 1)[1] if "/" in member.name else member.name
                if wanted(path):
                    files[path] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise StiltsError(f"grids: the archive cannot be read ({e})") from None
    return files


def _from_git(git_dir: Path, commit: str, wanted) -> dict[str, bytes]:
    """The wanted files at `commit` of a git repository (a clone's .git or a bare mirror)."""
    run = lambda *a, **k: subprocess.run(["git", f"--git-dir={git_dir}", *a], capture_output=True, **k)  # noqa: E731
    listing = run("ls-tree", "-r", "-z", commit)
    if listing.returncode != 0:
        raise StiltsError(f"grids: {git_dir} does not hold commit {commit[:12]} (`git fetch` it, or give the "
                          "archive of that commit)")
    blobs = []
    for entry in listing.stdout.decode().split("\0"):
        if entry and "\t" in entry:
            meta, path = entry.split("\t", 1)
            if meta.split()[1] == "blob" and wanted(path):
                blobs.append((path, meta.split()[2]))
    batch = run("cat-file", "--batch", input="".join(f"{sha}\n" for _, sha in blobs).encode())
    out, pos, files = batch.stdout, 0, {}
    for path, _ in blobs:
        header_end = out.index(b"\n", pos)
        header = out[pos:header_end].split()
        if len(header) != 3:
            raise StiltsError(f"grids: {git_dir}: {path} is missing from the repository's objects")
        size = int(header[2])
        files[path] = out[header_end + 1:header_end + 1 + size]
        pos = header_end + 2 + size
    return files


def _from_folder(folder: Path, wanted) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and wanted(p.relative_to(folder).as_posix())}


def read_local(path: Path, commit: str, wanted) -> dict[str, bytes]:
    if not path.exists():
        raise StiltsError(f"grids: --from {path}: no such file or folder")
    if path.is_file():
        with open(path, "rb") as f:
            return _from_tar(f, wanted)
    git_dir = path / ".git" if (path / ".git").exists() else path if (path / "objects").is_dir() else None
    if git_dir is not None:
        return _from_git(git_dir, commit, wanted)
    return _from_folder(path, wanted)


def download(url: str, wanted) -> dict[str, bytes]:
    import urllib.error
    import urllib.request

    print(f"grids: downloading {url} (once; only the results files are kept)", file=sys.stderr, flush=True)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return _from_tar(response, wanted)
    except (urllib.error.URLError, OSError) as e:
        raise StiltsError(f"grids: cannot download {url} ({getattr(e, 'reason', e)}); without network, fetch "
                          "from a clone: `stilts grids fetch NAME --from PATH`") from None


def fetch(source, from_path: Path | None = None) -> list[str]:
    """Read, verify, convert and cache every grid of a fetchable catalogue source; the names written."""
    from stilts.io import atomic_write_text

    spec = source.fetch
    read = reader(spec.reader)
    files = read_local(Path(from_path), spec.commit, read.wanted) if from_path else download(spec.archive,
                                                                                             read.wanted)
    if not files:
        raise StiltsError(f"grids: {source.name}: {from_path or spec.archive} holds none of its results files "
                          "(give a clone, a bare mirror, an unpacked archive or the archive file); nothing was written")
    got = checksum(files)
    if got != spec.checksum:
        where = from_path or spec.archive
        raise StiltsError(f"grids: {source.name} from {where}: checksum {got[:16]}… is not the pinned "
                          f"{spec.checksum[:16]}… of commit {spec.commit[:12]} ({len(files)} files read); nothing "
                          "was written")
    tables = {}
    for grid in source.grids:
        rows, _ = read.convert(files, **grid.reader_args)
        if not rows:
            raise StiltsError(f"grids: {grid.name}: no results in {source.name} at {spec.commit[:12]}")
        tables[grid.name] = "restart,source,task,role,score\n" + "".join(
            f"{r['restart']},{r['source']},{r['task']},{r['role']},{r['score']}\n" for r in rows)
    folder = cache_dir()
    for name, text in tables.items():
        atomic_write_text(folder / f"{name}.csv", text)
    record = {"source": source.name, "commit": spec.commit, "checksum": got, "files": len(files),
              "from": str(Path(from_path).resolve()) if from_path else spec.archive,
              "fetched": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "grids": list(tables)}
    atomic_write_text(folder / f"{source.name}.json", json.dumps(record, indent=1) + "\n")
    return list(tables)


def fetched(source_name: str) -> dict | None:
    """The cache's record of a fetched source (None: not fetched here)."""
    path = cache_dir() / f"{source_name}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def grid_file(grid_name: str) -> Path:
    return cache_dir() / f"{grid_name}.csv"


