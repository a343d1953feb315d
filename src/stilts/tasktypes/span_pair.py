"""Span-pair classification (WiC: the same word in two sentences; WSC: pronoun ↔ noun phrase).

Record: {"idx", "text_a", "text_b"?, "span1": [seq, start, end], "span2": [seq, start, end], "label"}
with character offsets [start, end) into text_a (seq 0) or text_b (seq 1). The featuriser maps
them onto sub-word tokens through the fast tokenizer's offset mapping. Head: [CLS; pool(span1);
pool(span2)] → dropout → linear, with self-attentive span pooling.
"""

from __future__ import annotations

import torch
from torch import nn

from stilts.errors import StiltsError
from stilts.tasktypes.common import (  # noqa: F401
    char_span_to_tokens,
    field,
    label_str,
    loss,
    majority_score,
    pad_collator,
    predict,
    text,
)


def make_record(task, row: dict, where: str) -> dict:
    rec = {"text_a": text(row, "text_a", where)}
    if row.get("text_b") is not None:
        rec["text_b"] = text(row, "text_b", where)
    for key in ("span1", "span2"):
        seq, start, end = (int(x) for x in field(row, key, where))
        target = rec["text_a"] if seq == 0 else rec.get("text_b", "")
        if not 0 <= start < end <= len(target):
            raise StiltsError(f"{where}: {key} [{start}, {end}) is outside the text ({len(target)} characters)")
        rec[key] = [seq, start, end]
    label = label_str(field(row, "label", where))
    if label not in task.labels:
        raise StiltsError(f"{where}: label '{label}' is not one of {list(task.labels)}")
    rec["label"] = label
    return rec


def featurize(batch: dict, tokenizer, max_length: int, task) -> dict:
    pair = (batch["text_a"], batch["text_b"]) if "text_b" in batch else (batch["text_a"],)
    enc = tokenizer(*pair, truncation=True, max_length=max_length, return_offsets_mapping=True)
    spans = []
    for i, offsets in enumerate(enc.pop("offset_mapping")):
        seq_ids = enc.sequence_ids(i)
        row = []
        for key in ("span1", "span2"):
            seq, start, end = batch[key][i]
            tok = char_span_to_tokens(offsets, seq_ids, seq, start, end)
            row.append(list(tok) if tok else [0, 1])  # truncated away: fall back to the first token
        spans.append(row)
    out = dict(enc)
    out["spans"] = spans
    index = {name: i for i, name in enumerate(task.labels)}
    out["labels"] = [index[lab] for lab in batch["label"]]
    out["length"] = [len(ids) for ids in out["input_ids"]]
    return out


def collator(tokenizer, pad_to_multiple_of: int | None = 8):
    return pad_collator(tokenizer, pad_to_multiple_of, pad={"spans": (0, False)})


def span_mask(spans: torch.Tensor, seq_len: int) -> torch.Tensor:
    """[..., 2] token spans [start, end) → [..., seq_len] boolean masks (empty spans: the first token)."""
    pos = torch.arange(seq_len, device=spans.device)
    mask = (pos >= spans[..., :1]) & (pos < spans[..., 1:])
    mask[..., 0] |= ~mask.any(-1)  # keeps the softmax finite for padding targets
    return mask


class SelfAttentivePool(nn.Module):
    """Attention-weighted average of a span's token vectors; weights from one learned scorer."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.score = nn.Linear(hidden_size, 1)

    def forward(self, hidden: torch.Tensor, spans: torch.Tensor) -> torch.Tensor:
        # hidden [B, S, H], spans [B, T, 2] → [B, T, H]
        mask = span_mask(spans, hidden.shape[1])
        scores = self.score(hidden).squeeze(-1).unsqueeze(1).float()  # [B, 1, S]
        weights = scores.masked_fill(~mask, float("-inf")).softmax(-1).to(hidden.dtype)
        return weights @ hidden


class Head(nn.Module):
    def __init__(self, hidden_size: int, task, dropout: float):
        super().__init__()
        self.pool1, self.pool2 = SelfAttentivePool(hidden_size), SelfAttentivePool(hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(3 * hidden_size, task.num_labels)

    def forward(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        spans = batch["spans"]  # [B, 2, 2]
        s1 = self.pool1(hidden, spans[:, :1]).squeeze(1)
        s2 = self.pool2(hidden, spans[:, 1:]).squeeze(1)
        return self.out(self.dropout(torch.cat([hidden[:, 0], s1, s2], -1)))
