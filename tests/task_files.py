"""Task files and their data, written by the tests: one task of each kind a file can declare."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import yaml

WORDS = ("good nice fine great bad awful poor sad the a movie food day show was is very not").split()


def _sentence(rng: random.Random, n: int = 6) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _rows(kind: str, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = _sentence(rng), _sentence(rng)
        good = sum(w in ("good", "nice", "fine", "great") for w in a.split())
        if kind == "single":
            rows.append({"id": f"s{i}", "text": a, "sentiment": "pos" if good > 1 else "neg"})
        elif kind == "pair":
            rows.append({"id": f"p{i}", "premise": a, "hypothesis": b, "gold": ["yes", "no", "maybe"][i % 3]})
        elif kind == "regression":
            rows.append({"id": f"r{i}", "s1": a, "s2": b, "score": round(good / 6 * 5, 2)})
        else:
            rows.append({"id": f"m{i}", "ctx": a, "opt0": b, "opt1": _sentence(rng), "opt2": _sentence(rng),
                         "answer": i % 3})
    return rows


def _write(path: Path, fmt: str, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    else:
        import pyarrow
        import pyarrow.parquet as pq

        pq.write_table(pyarrow.Table.from_pylist(rows), path)


# task name → (kind of rows, format, declaration without files)
DECLARED = {
    "my_reviews": ("single", "csv", {"type": "classification", "metric": "accuracy",
                                     "fields": {"text_a": "text", "label": "sentiment"},
                                     "description": "review polarity (single sentence, labels from the data)"}),
    "my_pairs": ("pair", "jsonl", {"type": "classification", "metric": "macro_f1",
                                   "fields": {"text_a": "premise", "text_b": "hypothesis", "label": "gold"},
                                   "labels": ["yes", "no", "maybe"]}),
    "my_scores": ("regression", "parquet", {"type": "regression", "metric": "pearson_spearman",
                                            "fields": {"text_a": "s1", "text_b": "s2", "label": "score"}}),
    "my_choices": ("choice", "csv", {"type": "multiple_choice", "metric": "accuracy",
                                     "fields": {"context": "ctx", "choices": ["opt0", "opt1", "opt2"],
                                                "label": "answer"}}),
}


def declare(root: Path, name: str, train: int = 48, validation: int = 24, **over) -> Path:
    """Write tasks/<name>.yaml and its data under data/raw/<name>/; returns the task file."""
    kind, fmt, decl = DECLARED[name]
    ext = fmt
    files = {"train": f"train.{ext}", "validation": f"dev.{ext}"}
    _write(root / "data" / "raw" / name / files["train"], fmt, _rows(kind, train, 1))
    _write(root / "data" / "raw" / name / files["validation"], fmt, _rows(kind, validation, 2))
    path = root / "tasks" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({**decl, "format": fmt, "files": files, **over}, sort_keys=False))
    return path


GLUE_WORDS = ["good film", "bad film", "fine day", "sad day", "great show", "poor show"]


def glue(root: Path, task: str, header: list[str], rows: list[list[str]]) -> None:
    """A GLUE task's official files (train.tsv: the first 24 rows, dev.tsv: the rest) under data/raw."""
    folder = root / "data" / "raw" / task
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in (("train.tsv", rows[:24]), ("dev.tsv", rows[24:])):
        (folder / name).write_text("\n".join("\t".join(r) for r in [header, *part]) + "\n")


def own_task_project(root: Path, model, train: dict) -> Path:
    """A git + DVC project whose one target is a declared pair task, my_pairs, and whose intermediate tasks
    with data are two of the grids' candidates, SST-2 and QQP (36 examples each): what a user ranks and selects."""
    from tests.commands import git_dvc_init
    from tests.conftest import tiny_params_dict

    root.mkdir(parents=True, exist_ok=True)
    declare(root, "my_pairs", train=32, validation=16)
    glue(root, "sst2", ["sentence", "label"], [[GLUE_WORDS[i % 6], str(i % 2)] for i in range(36)])
    glue(root, "qqp", ["id", "question1", "question2", "is_duplicate"],
         [[str(i), f"is it {GLUE_WORDS[i % 6]}", f"was it {GLUE_WORDS[(i + 1) % 6]}", str(i % 2)] for i in range(36)])
    raw = tiny_params_dict(model, train=train)
    raw["tasks"] = {"target": ["my_pairs"]}
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    git_dvc_init(root)
    return root
