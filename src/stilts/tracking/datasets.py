"""A cell's train and dev data as MLflow dataset inputs (the runs table's Dataset column).

One dataset per task and split, named `<task>/<split>` (e.g. `syn_rte/train`), whose digest is the
prepared data's hash (`data/processed/<task>/meta.json` data_hash; its first 36 characters, the most
MLflow stores) and whose profile holds the full hash, the example counts and the source files with
their sha256. The input's context is the split. In the UI or `mlflow.search_runs`, filter with e.g.
`dataset.name = 'syn_rte/train'` or `dataset.digest = '<digest>'`.
"""

from __future__ import annotations

import json

from stilts.io import read_json

DIGEST_CHARS = 36  # mlflow.utils.validation.MAX_DATASET_DIGEST_SIZE


SPLITS = ("train", "validation")


def digest(data_hash: str) -> str:
    return data_hash[:DIGEST_CHARS]


def dataset_ids(params, task: str) -> dict[str, tuple[str, str]]:
    """split → (dataset name, digest) of a task's prepared data, as its runs' inputs name them."""
    meta = read_json(params.path(params.data.processed_dir) / task / "meta.json")
    return {split: (f"{task}/{split}", digest(meta["data_hash"])) for split in SPLITS}


def log_datasets(run, params, task: str, used: dict[str, int]) -> None:
    """Log the prepared splits of `task` as inputs of `run` (`used`: split → examples the cell used)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    from stilts.tracking.store import retry

    folder = params.path(params.data.processed_dir) / task
    meta = read_json(folder / "meta.json")
    inputs = []
    for split, n in used.items():
        name = f"{task}/{split}"
        profile = {"task": task, "split": split, "examples": meta["counts"][split], "used_examples": n,
                   "data_hash": meta["data_hash"], "source": meta["source"], "source_files": meta["source_files"]}
        if meta.get("hub"):
            profile["hub"] = meta["hub"]
        if meta.get("generator"):
            profile["generator"] = meta["generator"]
        source = json.dumps({"uri": str((folder / f"{split}.jsonl").resolve())})
        dataset = Dataset(name, digest(meta["data_hash"]), "local", source, profile=json.dumps(profile, sort_keys=True))
        inputs.append(DatasetInput(dataset, [InputTag("mlflow.data.context", split), InputTag("stilts.task", task)]))
    retry(run.client.log_inputs, run.id, datasets=inputs)
