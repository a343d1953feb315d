"""A trained intermediate checkpoint → its outputs on records; predictions as the task's labels.

`load(path)` rebuilds the model exactly as trained (encoder, tokenizer and the task's head from the
checkpoint folder); `Predictor.predict(records)` takes records in the task's prepared format (the rows
of data/processed/<task>/*.jsonl) and returns one row per record: `logits` (the head's raw outputs)
and `prediction` (the task type's decision; a label name where the task has label names).
The MLflow pyfunc model of a checkpoint (stilts.tracking.pyfunc) is this, behind MLflow's interface.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from stilts.errors import StiltsError

SIDE = ("length",)  # featuriser outputs the model never sees (besides ref_* references)


def decode(task, values) -> list:
    """Predictions or gold values as written in a predictions file: class indices → label names."""
    try:
        values = np.asarray(values)
    except ValueError:  # ragged (per-token values of sentences of different lengths)
        return [np.asarray(v).tolist() for v in values]
    if values.ndim == 1 and task.labels and np.issubdtype(values.dtype, np.integer):
        return [task.labels[int(v)] for v in values]
    return values.tolist()


def _placeholder_labels(task, rows: list[dict]) -> list[dict]:
    """The featurisers read a gold label; for prediction any valid one will do (it never reaches the model)."""
    filler = task.labels[0] if task.labels else 0
    return [row if "label" in row else {**row, "label": filler} for row in rows]


class Predictor:
    def __init__(self, model, tokenizer, task, max_length: int):
        from stilts import tasktypes

        self.model, self.tokenizer, self.task, self.max_length = model.eval(), tokenizer, task, max_length
        self.tasktype = tasktypes.get(task.type)
        self.collate = self.tasktype.collator(tokenizer)

    def predict(self, records: list[dict], batch_size: int = 64, max_length: int | None = None):
        import pandas as pd
        import torch

        if not records:
            return pd.DataFrame({"logits": [], "prediction": []})
        rows = _placeholder_labels(self.task, [dict(r) for r in records])
        columns = {k: [r.get(k) for r in rows] for k in rows[0]}
        try:
            feats = self.tasktype.featurize(columns, self.tokenizer, max_length or self.max_length, self.task)
        except (KeyError, TypeError) as e:
            raise StiltsError(f"records for '{self.task.name}' ({self.task.type}) need the fields of its prepared "
                              f"data (data/processed/{self.task.name}/*.jsonl); missing or wrong: {e}") from None
        keys = [k for k in feats if k not in SIDE and not k.startswith("ref_")]
        examples = [{k: feats[k][i] for k in keys} for i in range(len(rows))]
        logits, preds = [], []
        with torch.no_grad():
            for start in range(0, len(examples), batch_size):
                batch = self.collate([dict(e) for e in examples[start:start + batch_size]])
                out = self.model(batch)
                pred = self.tasktype.predict(out, batch)
                per_token = out.dim() > 2 and out.shape[1] == batch["input_ids"].shape[-1]
                lengths = batch["attention_mask"].sum(-1).tolist() if per_token else None
                for i, row in enumerate(out.float().numpy()):
                    logits.append((row[:lengths[i]] if per_token else row).tolist())
                preds.append((pred.float() if pred.is_floating_point() else pred).numpy())
        from stilts.tasktypes.common import stack

        return pd.DataFrame({"logits": logits, "prediction": decode(self.task, stack(preds))})


def load(path: str | Path, attn_implementation: str = "eager") -> Predictor:
    """The checkpoint at `path` (an intermediate task's encoder + head + tokenizer), ready to predict."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from stilts import modeling
    from stilts.tasks import registry

    path = Path(path)
    meta_path = path / modeling.CHECKPOINT_META
    if not meta_path.is_file():
        raise StiltsError(f"{path}: not a stilts checkpoint (no {modeling.CHECKPOINT_META})")
    meta = json.loads(meta_path.read_text())
    task = registry.get(meta["task"])
    if meta.get("labels"):  # an open label set, fixed by the data it was trained on
        task = dataclasses.replace(task, labels=tuple(meta["labels"]))
    encoder = modeling.load_encoder(str(path), None, attn_implementation)
    model = modeling.StiltsModel(encoder, task, head_dropout=0.0)
    model.head.load_state_dict(load_file(str(path / "head.safetensors")))
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return Predictor(model, tokenizer, task, int(meta.get("max_seq_length") or tokenizer.model_max_length))
