"""Single-sentence and sentence-pair classification (SST-2, CoLA, RTE, CB, MNLI, QQP, SentEval ...).

Record: {"idx", "text_a", "text_b"?, "label"} with label one of the task's label names.
Head: dropout + one linear layer over the first token, as in the paper.
"""

from __future__ import annotations

from stilts.errors import StiltsError
from stilts.tasktypes.common import field, label_str, loss, majority_score, pad_collator, predict, text  # noqa: F401
from stilts.tasktypes.heads import LinearHead


def make_record(task, row: dict, where: str) -> dict:
    f = task.fields
    rec = {"text_a": text(row, f.get("text_a", "sentence"), where)}
    if "text_b" in f:
        rec["text_b"] = text(row, f["text_b"], where)
    label = label_str(field(row, f.get("label", "label"), where))
    if label not in task.labels and label.lstrip("-").isdigit() and 0 <= int(label) < len(task.labels):
        label = task.labels[int(label)]  # hub datasets store class indices
    if not task.labels:  # an open label set (e.g. SentEval word content): taken from the train split
        if not label:
            raise StiltsError(f"{where}: empty label")
    elif label not in task.labels:
        raise StiltsError(f"{where}: label '{label}' is not one of {list(task.labels)}")
    rec["label"] = label
    return rec


def labels_of(record: dict) -> list[str]:
    return [record["label"]]


def featurize(batch: dict, tokenizer, max_length: int, task) -> dict:
    pair = (batch["text_a"], batch["text_b"]) if "text_b" in batch else (batch["text_a"],)
    enc = tokenizer(*pair, truncation=True, max_length=max_length)
    index = {name: i for i, name in enumerate(task.labels)}
    enc["labels"] = [index[lab] for lab in batch["label"]]
    enc["length"] = [len(ids) for ids in enc["input_ids"]]
    return dict(enc)


def collator(tokenizer, pad_to_multiple_of: int | None = 8):
    return pad_collator(tokenizer, pad_to_multiple_of)


Head = LinearHead  # over the first token, one score per label
