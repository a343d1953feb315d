"""Edge probing (Tenney et al., 2019): label one span or a pair of spans of a sentence.

Record (jiant's edge-probing JSON, one sentence with all its targets):
{"idx", "words": [...], "targets": [{"span1": [s, e], "span2": [s, e]?, "labels": [...]}]}
with word indices [s, e) into the whitespace-split text. Each span is projected, pooled with
self-attention, and a one-hidden-layer MLP (256 units) scores every label with a sigmoid
(multi-label). The metric is micro-F1 over all (target, label) decisions.
"""

from __future__ import annotations

import torch
from torch import nn

from stilts.errors import StiltsError
from stilts.tasktypes.common import encode_words, pad_collator, word_span_to_tokens
from stilts.tasktypes.span_pair import SelfAttentivePool

LABELS_FROM = ("train", "validation")  # the label vocabulary (rare labels may occur in dev only)
MLP_HIDDEN = 256


def _span(value, n_words: int, where: str, key: str) -> list[int]:
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(x, int) for x in value)):
        raise StiltsError(f"{where}: {key} must be [start, end] word indices, got {value!r}")
    if not 0 <= value[0] < value[1] <= n_words:
        raise StiltsError(f"{where}: {key} {value} is outside the sentence ({n_words} words)")
    return value


def make_record(task, row: dict, where: str) -> dict:
    if not isinstance(row.get("text"), str):
        raise StiltsError(f"{where}: missing field 'text'")
    words = row["text"].split()
    targets = row.get("targets")
    if not isinstance(targets, list):
        raise StiltsError(f"{where}: missing field 'targets'")
    out = []
    for k, t in enumerate(targets):
        target = {"span1": _span(t.get("span1"), len(words), where, f"targets[{k}].span1")}
        if t.get("span2") is not None:
            target["span2"] = _span(t["span2"], len(words), where, f"targets[{k}].span2")
        labels = t.get("label")
        target["labels"] = [str(x) for x in (labels if isinstance(labels, list) else [labels])]
        if task.labels and any(x not in task.labels for x in target["labels"]):
            raise StiltsError(f"{where}: targets[{k}] label {target['labels']} is not one of {list(task.labels)}")
        out.append(target)
    return {"words": words, "targets": out}


def labels_of(record: dict) -> list[str]:
    return [x for t in record["targets"] for x in t["labels"]]


def featurize(batch: dict, tokenizer, max_length: int, task) -> dict:
    enc, all_word_ids = encode_words(tokenizer, batch["words"], max_length)
    index = {name: i for i, name in enumerate(task.labels)}
    out = {k: [] for k in (*enc.keys(), "spans", "labels", "length")}
    for i, targets in enumerate(batch["targets"]):
        word_ids = all_word_ids[i]
        spans, labels = [], []
        for t in targets:
            s1 = word_span_to_tokens(word_ids, *t["span1"])
            s2 = word_span_to_tokens(word_ids, *t["span2"]) if t.get("span2") else (-1, -1)
            if s1 is None or s2 is None:  # truncated away at max_seq_length
                continue
            spans.append([list(s1), list(s2)])
            hot = [0] * len(index)
            for name in t["labels"]:
                hot[index[name]] = 1
            labels.append(hot)
        if not spans:
            continue
        for k in enc.keys():
            out[k].append(enc[k][i])
        out["spans"].append(spans)
        out["labels"].append(labels)
        out["length"].append(len(enc["input_ids"][i]))
    return out


def collator(tokenizer, pad_to_multiple_of: int | None = 8):
    return pad_collator(tokenizer, pad_to_multiple_of, pad={"spans": (-1, False), "labels": (-1, False)})


class Head(nn.Module):
    def __init__(self, hidden_size: int, task, dropout: float):
        super().__init__()
        self.proj1, self.proj2 = nn.Linear(hidden_size, MLP_HIDDEN), nn.Linear(hidden_size, MLP_HIDDEN)
        self.pool1, self.pool2 = SelfAttentivePool(MLP_HIDDEN), SelfAttentivePool(MLP_HIDDEN)
        self.two_spans = bool(task.fields.get("two_spans"))
        self.mlp = nn.Sequential(nn.Linear(MLP_HIDDEN * (2 if self.two_spans else 1), MLP_HIDDEN), nn.Tanh(),
                                 nn.LayerNorm(MLP_HIDDEN), nn.Dropout(dropout), nn.Linear(MLP_HIDDEN, task.num_labels))

    def forward(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        spans = batch["spans"]  # [B, T, 2 spans, 2]
        pooled = [self.pool1(self.proj1(hidden), spans[:, :, 0])]
        if self.two_spans:
            pooled.append(self.pool2(self.proj2(hidden), spans[:, :, 1]))
        return self.mlp(torch.cat(pooled, -1))  # [B, T, labels]


def loss(logits, batch):
    labels = batch["labels"]
    valid = labels >= 0
    return nn.functional.binary_cross_entropy_with_logits(logits.float()[valid], labels[valid].float())


def predict(logits, batch=None):
    pred = (logits > 0).long()
    return pred.masked_fill(batch["labels"] < 0, -1)


def majority_score(task, ds) -> float:
    """Micro-F1 of predicting every label that is positive for most targets (nearly always none → 0)."""
    import numpy as np

    from stilts import metrics

    gold = np.concatenate([np.asarray(x) for x in ds["labels"]])
    pred = np.broadcast_to((gold.mean(0) > 0.5).astype(int), gold.shape)
    return metrics.compute(task.metric, pred, gold)[task.metric]
