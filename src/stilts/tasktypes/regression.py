"""Sentence-pair regression (STS-B): one linear output over the first token, mean-squared error.

Record: {"idx", "text_a", "text_b"?, "label": float}.
"""

from __future__ import annotations

import torch
from torch import nn

from stilts.errors import StiltsError
from stilts.tasktypes.classification import collator  # noqa: F401  (same padding as classification)
from stilts.tasktypes.common import field, text
from stilts.tasktypes.heads import LinearHead


def make_record(task, row: dict, where: str) -> dict:
    f = task.fields
    rec = {"text_a": text(row, f.get("text_a", "sentence"), where)}
    if "text_b" in f:
        rec["text_b"] = text(row, f["text_b"], where)
    raw = field(row, f.get("label", "label"), where)
    try:
        rec["label"] = float(raw)
    except (TypeError, ValueError):
        raise StiltsError(f"{where}: label '{raw}' is not a number") from None
    return rec


def featurize(batch: dict, tokenizer, max_length: int, task) -> dict:
    pair = (batch["text_a"], batch["text_b"]) if "text_b" in batch else (batch["text_a"],)
    enc = tokenizer(*pair, truncation=True, max_length=max_length)
    enc["labels"] = [float(x) for x in batch["label"]]
    enc["length"] = [len(ids) for ids in enc["input_ids"]]
    return dict(enc)


class Head(LinearHead):
    outputs = 1

    def forward(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        return super().forward(hidden, batch).squeeze(-1)


def loss(logits, batch):
    return nn.functional.mse_loss(logits.float(), batch["labels"].float())


def predict(logits, batch=None):
    return logits.float()


def majority_score(task, ds) -> float:
    return 0.0  # a constant prediction has no correlation with the gold scores
