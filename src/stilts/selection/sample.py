"""A fixed random sample of a task's training split: the examples both ranking methods read."""

from __future__ import annotations

import random

from stilts.io import read_json


def ensure_prepared(params, task: str) -> dict:
    """The task's prepared meta.json; prepares the task first (as `stilts prepare` does) if needed."""
    from stilts import data

    meta = params.path(params.data.processed_dir) / task / "meta.json"
    if not meta.is_file():
        out = data.prepare(params, task)
        print(f"prepared {task} → {out}")
    return read_json(meta)


def training_sample(params, task: str, size: int, seed: int) -> list[dict]:
    """Up to `size` records of the train split (the file `data.files` names, if any), drawn without
    replacement with `seed` and kept in file order; every record when there are fewer."""
    from stilts import data

    records = data.load_records(params, task, "train")
    if len(records) <= size:
        return records
    keep = sorted(random.Random(seed).sample(range(len(records)), size))
    return [records[i] for i in keep]
