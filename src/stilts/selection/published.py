"""The catalogue of published transfer grids (selection/published/*.yaml): every grid stilts knows, with its
provenance, encoder and adaptation method.

A grid is shipped (a CSV beside its YAML, in the format of `stilts import-results`) where its licence allows,
or fetched: a YAML naming a source repository, its pinned commit and checksum, a reader and the grids the
reader makes of it (fetch.py: on first use, or `stilts grids fetch NAME [--from PATH]`), then cached in
the user's cache folder. `stilts rank` learns from every grid that is here when no prior experiment is named;
a name in `--prior-experiment` is an MLflow experiment when one by that name holds transfer runs, else a grid
of the catalogue. `stilts analyze --experiment NAME` imports the shipped grid NAME into MLflow on first use
(import_shipped).

A YAML's keys: name, citation, source, licence, aggregation, and either file + encoder (+ method; one shipped
grid) or fetch {repository, commit, archive, reader, checksum} + grids [{name, encoder, method, reader_args}]
(a fetched source). Other keys (how and where a grid was measured) are kept as they are, in `extra`.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from stilts.errors import StiltsError

FOLDER = Path(__file__).parent / "published"
SCORES = FOLDER / "prior_scores.json"
FULL = "full fine-tuning"
COMMON = ("name", "citation", "source", "licence", "aggregation")
FETCH_KEYS = ("repository", "commit", "archive", "reader", "checksum")


@dataclass(frozen=True)
class Fetch:
    repository: str
    commit: str
    archive: str  # the archive of the pinned commit that is downloaded
    reader: str  # the module (fetch.reader) that converts its files
    checksum: str  # fetch.checksum of the files read


@dataclass(frozen=True)
class Published:
    name: str
    citation: str
    encoder: str
    source: str
    licence: str
    aggregation: str
    method: str = FULL
    file: Path | None = None  # shipped: the CSV; fetched: None (the cache holds it)
    origin: str = ""  # fetched: the catalogue source it comes from
    reader_args: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    """A fetchable repository and the grids its reader makes of it."""
    name: str
    fetch: Fetch
    grids: list[Published]
    task_types: dict = field(default_factory=dict)  # tasks outside stilts' registry → their type


def _text(d: dict, key: str, where: Path) -> str:
    if not isinstance(d.get(key), str) or not d[key].strip():
        raise StiltsError(f"{where}: key '{key}' is missing or not a text")
    return " ".join(d[key].split())


def _read(meta: Path) -> tuple[list[Published], Source | None]:
    try:
        d = yaml.safe_load(meta.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise StiltsError(f"{meta}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(d, dict):
        raise StiltsError(f"{meta}: not a mapping of keys")
    common = {k: _text(d, k, meta) for k in COMMON}
    if "fetch" not in d:
        for key in ("file", "encoder"):
            _text(d, key, meta)
        known = {*COMMON, "file", "encoder", "method"}
        return [Published(**common, encoder=d["encoder"], method=d.get("method", FULL), file=FOLDER / d["file"],
                          extra={k: v for k, v in d.items() if k not in known})], None
    spec = d["fetch"] if isinstance(d["fetch"], dict) else {}
    fetch = Fetch(**{k: _text(spec, k, meta) for k in FETCH_KEYS})
    grids = []
    for i, g in enumerate(d.get("grids") or []):
        where = f"{meta}: grids[{i}]"
        if not isinstance(g, dict) or not all(isinstance(g.get(k), str) for k in ("name", "encoder")):
            raise StiltsError(f"{where}: needs a name and an encoder")
        grids.append(Published(**common | {"name": g["name"]}, encoder=g["encoder"], method=g.get("method", FULL),
                               origin=common["name"], reader_args=dict(g.get("reader_args") or {}),
                               extra={k: v for k, v in g.items() if k not in ("name", "encoder", "method",
                                                                              "reader_args")}))
    if not grids:
        raise StiltsError(f"{meta}: key 'grids' lists no grid")
    return grids, Source(common["name"], fetch, grids, dict(d.get("task_types") or {}))


@functools.cache
def _load(folder: Path = FOLDER) -> tuple[dict[str, Published], dict[str, Source]]:
    grids, sources = {}, {}
    for meta in sorted(folder.glob("*.yaml")):
        entries, source = _read(meta)
        for g in entries:
            if g.name in grids:
                raise StiltsError(f"{meta}: grid '{g.name}' is in the catalogue twice")
            grids[g.name] = g
        if source is not None:
            sources[source.name] = source
    return grids, sources


def catalog() -> dict[str, Published]:
    return _load(FOLDER)[0]


def sources() -> dict[str, Source]:
    """The fetchable repositories, by name (`stilts grids fetch NAME`)."""
    return _load(FOLDER)[1]


@functools.cache
def prior_scores() -> dict:
    """How the default prior ranked each grid of the catalogue left out of the others (prior_scores.json, written
    by benchmarks/prior_scores.py): {"made": {command, stilts_commit, date, cpu}, "grids": {name: {encoder,
    method}}, "rows": [{setting, held_out_grid, metric, value, random}]}; settings `named` (other grids'
    measurements of the same task count) and `renamed` (no grid measured the target)."""
    return json.loads(SCORES.read_text(encoding="utf-8")) if SCORES.is_file() else {"grids": {}, "rows": []}


def _closest(model: str, grids: dict) -> str | None:
    """The left-out grid whose encoder is closest to `model`: the same encoder, else the same family and
    nearest size, else None."""
    from stilts.selection import encoders

    def key(name: str):
        f = encoders.closeness(grids[name]["encoder"], grids[name].get("method") or FULL, model, FULL)
        size = 99.0 if math.isnan(f["size_distance"]) else f["size_distance"]
        return (-f["same_encoder"], -f["same_method"], size, name)

    near = [n for n in grids if encoders.same(grids[n]["encoder"], model) or
            encoders.closeness(grids[n]["encoder"], FULL, model, FULL)["same_family"]]
    return min(near, key=key) if near else None


def held_out_scores(model: str) -> str:
    """What `stilts rank` quotes of prior_scores.json for a user of `model`: the left-out grid closest to it
    ("" when the file has no such rows), as a clause of a note."""
    scores = prior_scores()
    rows = {(r["setting"], r["held_out_grid"], r["metric"]): r for r in scores["rows"]}
    name = _closest(model, scores["grids"]) if scores["grids"] else None
    if name is None or ("renamed", name, "regret_at_1") not in rows:
        return ""

    def part(setting: str) -> str:
        r1, r3 = rows[(setting, name, "regret_at_1")], rows[(setting, name, "regret_at_3")]
        return (f"first pick {r1['value']:.1%} below the best on average (a random pick: {r1['random']:.1%}), "
                f"best of its top 3 {r3['value']:.1%} ({r3['random']:.1%})")

    made = scores.get("made", {})
    return (f"when {name} ({scores['grids'][name]['encoder']}) was left out of the other grids, the prior's "
            f"{part('named')} for targets other grids measured too, its {part('renamed')} for tasks no grid "
            f"measured (prior_scores.json, `{made.get('command', '')}`)")


def names() -> list[str]:
    """Every grid of the catalogue, shipped, fetched or absent."""
    return list(catalog())


def status(name: str) -> str:
    """shipped, fetched (in the cache, from the pinned commit) or absent."""
    from stilts.selection import fetch

    g = catalog()[name]
    if g.file is not None:
        return "shipped"
    record = fetch.fetched(g.origin) or {}
    pinned = sources()[g.origin].fetch
    ok = record.get("checksum") == pinned.checksum and name in record.get("grids", [])
    return "fetched" if ok and fetch.grid_file(name).is_file() else "absent"


def available() -> list[str]:
    """The grids whose results are here (shipped or fetched)."""
    return [n for n in catalog() if status(n) != "absent"]


def task_types() -> dict[str, str]:
    """Types of tasks outside stilts' registry that the catalogue's grids measured."""
    return {t: k for s in sources().values() for t, k in s.task_types.items()}


def grid_file(name: str) -> Path:
    from stilts.selection import fetch

    g = catalog()[name]
    if status(name) == "absent":
        raise StiltsError(f"grid '{name}' is not fetched here: `stilts grids fetch {g.origin}` downloads it "
                          f"(or `--from PATH`, a clone of {sources()[g.origin].fetch.repository})")
    return g.file if g.file is not None else fetch.grid_file(name)


def runs(name: str) -> pd.DataFrame:
    """The grid as analysis.collect's table (one row per run)."""
    path = grid_file(name)
    return _runs(name, path, path.stat().st_mtime_ns)


@functools.cache
def _runs(name: str, path: Path, _mtime: int) -> pd.DataFrame:
    from stilts.analysis.imports import read

    rows = read(path)
    return pd.DataFrame({"run_id": [f"{name}:{r['line']}" for r in rows], "source": [r["source"] for r in rows],
                         "task": [r["task"] for r in rows], "role": [r["role"] for r in rows],
                         "restart": [r["restart"] for r in rows], "score": [r["score"] for r in rows],
                         "imported": True})


def summary(name: str) -> dict:
    """Its size: targets, probes, intermediate tasks, restarts, runs, whether it has baseline runs."""
    r = runs(name)
    return {"runs": len(r), "targets": r.loc[r.role == "target", "task"].nunique(),
            "probes": r.loc[r.role == "probe", "task"].nunique(),
            "sources": r.loc[r.source != "none", "source"].nunique(), "restarts": r["restart"].nunique(),
            "baselines": bool((r.source == "none").any())}


def _size(name: str) -> str:
    s = summary(name)
    probes = f" + {s['probes']} probes" if s["probes"] else ""
    return (f"{s['sources']} intermediate tasks × {s['targets']} targets{probes} × {s['restarts']} restarts "
            f"({s['runs']:,} runs, {'with' if s['baselines'] else 'no'} baselines)")


def listing() -> str:
    """What `stilts grids` prints: each shipped grid, each fetchable source with its grids."""
    from stilts.selection import fetch

    lines, count = [], {"shipped": 0, "fetched": 0, "absent": 0}
    for name, p in catalog().items():
        if p.file is not None:
            count["shipped"] += 1
            lines += [f"{name}: {p.encoder}, {p.method}; {_size(name)}; shipped with stilts", f"  {p.citation}",
                      f"  from: {p.source} ({p.licence})", f"  file: {p.file}"]
    for source in sources().values():
        first = source.grids[0]
        lines += [f"{source.name}: {first.citation}", f"  from: {first.source} ({first.licence})",
                  f"  fetched by `stilts grids fetch {source.name}` (or on first use) into {fetch.cache_dir()}"]
        for g in source.grids:
            state = status(g.name)
            count[state] += 1
            size = _size(g.name) if state == "fetched" else "absent here"
            lines.append(f"  {g.name}: {g.encoder}, {g.method}; {size}")
    lines.append(f"{len(catalog())} grids: {count['shipped']} shipped, {count['fetched']} fetched, {count['absent']} "
                 "absent; `stilts rank --method prior` learns from every grid that is here when no "
                 "--prior-experiment is named")
    return "\n".join(lines)


def on_first_use(grid_names, required: bool = False) -> list[str]:
    """Fetch the sources of the named catalogue grids that are absent here; notes for those that could not be
    (`required`: a failure is an error instead)."""
    from stilts.selection import fetch

    notes = []
    absent = dict.fromkeys(catalog()[n].origin for n in grid_names if status(n) == "absent")
    for name in absent:
        source = sources()[name]
        how = f"`stilts grids fetch {name} --from PATH` (a clone of {source.fetch.repository}) adds them"
        if fetch.offline():
            why = f"downloads are off ({' or '.join(fetch.OFFLINE_ENV)} is set)"
            if required:
                raise StiltsError(f"grids of {name} are not fetched here and {why}: {how}")
            notes.append(f"{name}: {len(source.grids)} grids not fetched, {why}; {how}")
            continue
        try:
            fetch.fetch(source)
        except StiltsError as e:
            if required:
                raise
            notes.append(f"{name}: {len(source.grids)} grids not fetched ({e}); {how}")
    return notes


OWN_ROLES = ("analysis", "ranking")  # runs stilts logs about an experiment, not results in it


def import_shipped(params, experiment: str) -> int:
    """A shipped grid named as the experiment (`stilts grids`; a fetched one is not imported): the rows of its file
    that the MLflow experiment of that name lacks are imported, so its first analysis imports the whole grid,
    one cut short is completed, and later ones import nothing. An experiment of that name holding other results
    (a study, another import) is left as it is. Returns the number of runs imported (0 for any other
    experiment)."""
    import pandas as pd

    from stilts import tracking
    from stilts.analysis.imports import log_rows, read

    if experiment not in names() or catalog()[experiment].file is None:
        return 0
    file = catalog()[experiment].file
    runs = tracking.search_runs(params, experiment)
    present = set()
    if not runs.empty:
        origin = runs.get("tags.stilts.imported_from", pd.Series("", index=runs.index)).fillna("")
        role = runs.get("tags.stilts.role", pd.Series("", index=runs.index))
        ours = origin.str.startswith(f"{file.name}:")
        if (~ours & ~role.isin(OWN_ROLES)).any():
            return 0
        present = set(origin[ours & (runs["status"] == "FINISHED")])
    missing = [r for r in read(file) if f"{file.name}:{r['line']}" not in present]
    log_rows(params, missing, file.name, experiment)
    return len(missing)
