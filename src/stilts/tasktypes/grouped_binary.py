"""Binary decisions scored per group (MultiRC: answer options of one question; ReCoRD: the entity
candidates of one cloze query).

Record: {"idx", "text_a", "text_b", "label": 0|1, "group", "candidate"?, "answers"?}; the task's
`convert` turns one official row into one record per option. Head: linear over the first token,
2-way cross-entropy; the prediction is the option's score (positive minus negative logit), which
the task's metric reads per group (MultiRC: > 0 is true; ReCoRD: the best candidate per query).
"""

from __future__ import annotations

from stilts.errors import StiltsError
from stilts.tasktypes.classification import Head, collator  # noqa: F401  (same encoder input and head)
from stilts.tasktypes.common import field, loss, text  # noqa: F401


def make_record(task, row: dict, where: str) -> dict:
    label = field(row, "label", where)
    if label not in (0, 1, True, False):
        raise StiltsError(f"{where}: label '{label}' is not 0/1")
    rec = {"text_a": text(row, "text_a", where), "text_b": text(row, "text_b", where), "label": int(label),
           "group": str(field(row, "group", where))}
    if "candidate" in row:
        rec["candidate"] = text(row, "candidate", where)
        rec["answers"] = [str(a) for a in field(row, "answers", where)]
    return rec


def featurize(batch: dict, tokenizer, max_length: int, task) -> dict:
    enc = tokenizer(batch["text_a"], batch["text_b"], truncation="longest_first", max_length=max_length)
    out = dict(enc)
    out |= {"labels": list(batch["label"]), "length": [len(x) for x in out["input_ids"]],
            "ref_group": list(batch["group"])}
    if "candidate" in batch:
        out |= {"ref_candidate": list(batch["candidate"]), "ref_answers": list(batch["answers"])}
    return out


def predict(logits, batch=None):
    logits = logits.float()
    return logits[:, 1] - logits[:, 0]


def majority_score(task, ds) -> float:
    """The better of two constant predictions: every option false / every option true (MultiRC); the
    first candidate of each query (ReCoRD)."""
    import numpy as np

    from stilts import metrics

    refs = {c: ds[c] for c in ds.column_names if c.startswith("ref_")}
    gold = np.asarray(ds["labels"])
    return max(metrics.compute(task.metric, np.full(len(gold), s), gold, refs)[task.metric] for s in (-1.0, 1.0))
