"""Prepare (official files / hub / generator → normalised splits) and featurise (tokenise once, cached).

data/processed/<task>/{train,validation}.jsonl + meta.json   (DVC outputs)
data/features/<task>/<key>/<split>/                           (a cache; key = data hash, tokenizer,
                                                               max_seq_length, featuriser version)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import weakref
from pathlib import Path

from stilts import __version__
from stilts.errors import StiltsError
from stilts.io import atomic_dir, damaged, file_records, read_json, sha256_file, sha256_text, writing
from stilts.readers import read
from stilts.tasks import registry
from stilts.tasks.base import Task
from stilts.tasks.files import check_columns, shown

SPLITS = ("train", "validation")
FEATURIZER_VERSION = "3"  # 3: word ids skip the space that SentencePiece and byte-level BPE offsets include


def _expected_files(task: Task) -> str:
    return ", ".join(sorted(set(task.files.values())))


def task_files(params, task: Task) -> dict[str, Path]:
    """split → the official file under raw_dir/<task>/ (`data.files` can point a split elsewhere)."""
    names = {**task.files, **params.data.files.get(task.name, {})}
    root = params.path(params.data.raw_dir) / task.name
    return {s: root / names.get(s, names.get("all", "")) for s in SPLITS}


def _source_files(params, task: Task, workdir: Path) -> tuple[str, dict[str, Path]]:
    """Where this task's data comes from: the generator, local official files, or the hub."""
    if task.generator:
        from stilts.generate.suite import write_task

        d = params.data
        write_task(task.generator, workdir, d.generated_train, d.generated_validation, d.generated_seed)
        return "generated", {s: workdir / task.files.get(s, task.files.get("all", "")) for s in SPLITS}
    root = params.path(params.data.raw_dir) / task.name
    files = task_files(params, task)
    if all(p.is_file() for p in files.values()):
        return "local", files
    if task.hub and not os.environ.get("HF_HUB_OFFLINE") and not os.environ.get("HF_DATASETS_OFFLINE"):
        return "hub", {}
    missing = ", ".join(str(p) for p in files.values() if not p.is_file())
    if task.declared_in and not task.files:
        raise StiltsError(f"{shown(Path(task.declared_in))}: 'hub': '{task.hub}' cannot be loaded offline "
                          "(HF_HUB_OFFLINE / HF_DATASETS_OFFLINE are set) and the task declares no 'files'")
    if task.declared_in:
        raise StiltsError(f"{shown(Path(task.declared_in))}: 'files': not found: {missing} (the task's files are "
                          f"read from {root}/; `data.files.{task.name}` in params can point elsewhere)")
    raise StiltsError(f"task '{task.name}': data not found: put the official files ({_expected_files(task)}) "
                      f"in {root}/ (missing: {missing}){'; ' + task.licence_note if task.licence_note else ''}")


def _hub_rows(task: Task, split: str):
    import datasets

    path, _, rev = task.hub.partition("@")
    path, _, name = path.partition("#")  # "allenai/scitail#tsv_format": dataset path and config
    name = name or None
    if path.split("/")[0] in ("glue", "super_glue") and "/" in path:
        path, name = path.split("/", 1)
    try:
        ds = datasets.load_dataset(path, name, split=task.hub_splits.get(split, split), revision=rev or None)
    except Exception as e:  # network, missing dataset: say what to do instead
        raise StiltsError(f"task '{task.name}': could not load '{task.hub}' from the hub ({type(e).__name__}); "
                          f"put the official files ({_expected_files(task)}) in data/raw/{task.name}/") from None
    for i, row in enumerate(ds):
        yield f"hub:{task.hub}:{split}:{i}", dict(row)


def read_records(task: Task, source: str, files: dict[str, Path], split: str) -> list[dict]:
    from stilts import tasktypes

    tt = tasktypes.get(task.type)
    if source == "hub" and task.hub_fields:
        import dataclasses

        task = dataclasses.replace(task, fields={**task.fields, **task.hub_fields})
    rows = _hub_rows(task, split) if source == "hub" else read(task.format, files[split], split)
    records, seen, n = [], {}, 0
    for where, source_row in rows:
        if task.declared_in and n == 0:
            check_columns(task, source_row, where.rsplit(":", 1)[0])
        # a task's `convert` maps one source row to a record row, several (one per answer option or
        # question), or None (a row the official scripts skip, e.g. SNLI's '-' gold label)
        converted = task.convert(source_row) if task.convert is not None else source_row
        for row in [] if converted is None else converted if isinstance(converted, list) else [converted]:
            rec = tt.make_record(task, row, where)
            idx = str(row.get("idx", row.get("id", n)))
            n += 1
            if idx in seen:
                raise StiltsError(f"{where}: duplicate example id '{idx}' (first at {seen[idx]})")
            seen[idx] = where
            records.append({"idx": idx, **rec})
    if not records:
        where = files[split] if files else task.hub
        raise StiltsError(f"{where}: the {split} split of '{task.name}' is empty")
    return records


def prepare(params, task_name: str) -> Path:
    """Read one task's official data and write its normalised splits atomically."""
    from stilts import tasktypes

    task = registry.get(task_name)
    out = params.path(params.data.processed_dir) / task.name
    with tempfile.TemporaryDirectory(prefix=f"stilts-{task.name}-") as work:
        source, files = _source_files(params, task, Path(work))
        splits = {s: read_records(task, source, files, s) for s in SPLITS}
        labels = list(task.labels)
        tt = tasktypes.get(task.type)
        if not labels and hasattr(tt, "labels_of"):  # an open label set, defined by the data
            sources = getattr(tt, "LABELS_FROM", ("train",))
            labels = sorted({x for s in sources for r in splits[s] for x in tt.labels_of(r)})
            unseen = sorted({x for r in splits["validation"] for x in tt.labels_of(r)} - set(labels))
            if unseen and task.declared_in:
                raise StiltsError(f"{shown(Path(task.declared_in))}: 'labels' is not given, and validation labels "
                                  f"{unseen[:5]} never occur in train (declare 'labels', or fix the data)")
            if unseen:
                raise StiltsError(f"task '{task.name}': validation labels {unseen[:5]} never occur in train")
        hashes = {p.name: sha256_file(p) for p in dict.fromkeys(files.values())} if files else {}
        with atomic_dir(out) as tmp:
            for split, recs in splits.items():
                (tmp / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs),
                                                    encoding="utf-8")
            data_hash = sha256_text(*(sha256_file(tmp / f"{s}.jsonl") for s in SPLITS))
            meta = {"task": task.name, "type": task.type, "metric": task.metric, "labels": labels,
                    "source": source, "hub": task.hub if source == "hub" else None, "source_files": hashes,
                    "counts": {s: len(r) for s, r in splits.items()}, "data_hash": data_hash,
                    "stilts_version": __version__}
            if labels and not task.labels and task.type == "classification":
                meta["labels_from"] = "the train split, sorted"
            if source == "generated":
                d = params.data
                meta["generator"] = {"name": task.generator, "train": d.generated_train,
                                     "validation": d.generated_validation, "seed": d.generated_seed}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def is_current(params, task_name: str) -> bool:
    """Whether the prepared data exists and was made from the files (or generator settings) there are now."""
    task = registry.get(task_name)
    meta_path = params.path(params.data.processed_dir) / task.name / "meta.json"
    if not meta_path.is_file():
        return False
    meta = read_json(meta_path)
    if task.generator:
        d = params.data
        return meta.get("generator") == {"name": task.generator, "train": d.generated_train,
                                         "validation": d.generated_validation, "seed": d.generated_seed}
    files = dict.fromkeys(task_files(params, task).values())
    if meta.get("source") == "hub":
        return not all(p.is_file() for p in files)  # official files added since: prepare from them
    return all(p.is_file() for p in files) and meta.get("source_files") == {p.name: sha256_file(p) for p in files}


def task_with_labels(params, task: Task) -> Task:
    """The task with its label set filled in from the prepared data when it is declared open."""
    from stilts import tasktypes

    if task.labels or not hasattr(tasktypes.get(task.type), "labels_of"):
        return task
    import dataclasses

    meta = params.path(params.data.processed_dir) / task.name / "meta.json"
    if not meta.is_file():
        raise StiltsError(f"{meta}: not prepared yet; run `stilts prepare --task {task.name}`")
    return dataclasses.replace(task, labels=tuple(read_json(meta)["labels"]))


def load_records(params, task_name: str, split: str) -> list[dict]:
    path = params.path(params.data.processed_dir) / task_name / f"{split}.jsonl"
    if not path.is_file():
        raise StiltsError(f"{path}: not prepared yet; run `stilts prepare --task {task_name}` (or `dvc repro`)")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tokenizer_fingerprint(tokenizer) -> str:
    """What the tokenizer is (vocabulary, normaliser, model limit); ~0.1 s to compute, so once per object."""
    if tokenizer not in _FINGERPRINTS:
        _FINGERPRINTS[tokenizer] = _tokenizer_fingerprint(tokenizer)
    return _FINGERPRINTS[tokenizer]


def _tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # truncation/padding are call-time state, not part of what the tokenizer is
        state = json.loads(backend.to_str())
        state.pop("truncation", None), state.pop("padding", None)
        body = json.dumps(state, sort_keys=True)
    else:
        body = json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return sha256_text(type(tokenizer).__name__, body, str(tokenizer.model_max_length))[:16]


FEATURE_FILES = "stilts-files.json"  # the sizes and hashes of a feature cache's files


def _intact(cache: Path) -> bool:
    """Whether the feature cache is there and its files are as written; a damaged one (or one without its
    record) is said, removed and built again."""
    if not cache.is_dir():
        return False
    try:
        problem = damaged(cache, read_json(cache / FEATURE_FILES))
    except (OSError, ValueError, KeyError, TypeError):
        problem = f"{cache / FEATURE_FILES}: missing or not valid JSON"
    if problem:
        print(f"stilts: {problem}; the feature cache is built again", file=sys.stderr)
        shutil.rmtree(cache, ignore_errors=True)
    return problem is None


def features(params, task_name: str, split: str, tokenizer, max_length: int):
    """Token ids for one split, cached on disk and keyed by everything that changes them."""
    import datasets

    from stilts import tasktypes

    task = task_with_labels(params, registry.get(task_name))
    meta_path = params.path(params.data.processed_dir) / task_name / "meta.json"
    if not meta_path.is_file():
        raise StiltsError(f"{meta_path}: not prepared yet; run `stilts prepare --task {task_name}`")
    meta = read_json(meta_path)
    key = sha256_text(meta["data_hash"], tokenizer_fingerprint(tokenizer), str(max_length), FEATURIZER_VERSION,
                      task.type, ",".join(task.labels))[:20]
    cache = params.path(params.data.features_dir) / task_name / key / split
    if _intact(cache):
        return datasets.load_from_disk(str(cache))
    records = load_records(params, task_name, split)
    tt = tasktypes.get(task.type)
    ds = datasets.Dataset.from_list(records)
    ds = ds.map(tt.featurize, batched=True, batch_size=1000, remove_columns=ds.column_names,
                fn_kwargs={"tokenizer": tokenizer, "max_length": max_length, "task": task},
                load_from_cache_file=False, desc=f"tokenising {task_name}/{split}")
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache.parent, prefix=f".{split}."))
    try:
        with writing(cache):
            ds.save_to_disk(str(tmp))
            records = json.dumps(file_records(tmp), indent=2, sort_keys=True) + "\n"
            (tmp / FEATURE_FILES).write_text(records)  # inside the folder that moves in as a whole
            os.replace(tmp, cache)
    except (OSError, StiltsError):
        shutil.rmtree(tmp, ignore_errors=True)
        if not cache.is_dir():  # else another process wrote the same features first
            raise
    return datasets.load_from_disk(str(cache))
