"""Extractive span QA (QA-SRL, QAMR): start/end heads over the context's tokens.

Record: {"idx", "question", "context", "answer_start", "answer_text", "answers": [...]} with a
character offset into the context; `answers` holds every gold answer text (the metric takes the
max over them). Predictions are the best span with start ≤ end and at most MAX_ANSWER_TOKENS tokens.
The metric is mean(token F1, exact match), SQuAD-normalised.
"""

from __future__ import annotations

import torch
from torch import nn

from stilts.errors import StiltsError
from stilts.tasktypes.common import char_span_to_tokens, field, pad_collator, text
from stilts.tasktypes.heads import LinearHead

MAX_ANSWER_TOKENS = 30


def make_record(task, row: dict, where: str) -> dict:
    context, answer = text(row, "context", where), text(row, "answer_text", where)
    start = int(field(row, "answer_start", where))
    if not 0 <= start or context[start:start + len(answer)] != answer:
        raise StiltsError(f"{where}: answer {answer!r} is not at character {start} of the context")
    answers = [str(a) for a in field(row, "answers", where)] or [answer]
    return {"question": text(row, "question", where), "context": context, "answer_start": start,
            "answer_text": answer, "answers": answers}


def featurize(batch: dict, tokenizer, max_length: int, task) -> dict:
    enc = tokenizer(batch["question"], batch["context"], truncation="longest_first", max_length=max_length,
                    return_offsets_mapping=True)
    labels, context_mask, ref_offsets = [], [], []
    for i, offsets in enumerate(enc.pop("offset_mapping")):
        seq_ids = enc.sequence_ids(i)
        start = batch["answer_start"][i]
        tok = char_span_to_tokens(offsets, seq_ids, 1, start, start + len(batch["answer_text"][i]))
        labels.append([tok[0], tok[1] - 1] if tok else [0, 0])  # truncated away: point at the first token
        context_mask.append([int(s == 1) for s in seq_ids])
        ref_offsets.append([list(o) if s == 1 else [-1, -1] for o, s in zip(offsets, seq_ids)])
    out = dict(enc)
    out |= {"labels": labels, "context_mask": context_mask, "length": [len(x) for x in out["input_ids"]],
            "ref_context": list(batch["context"]), "ref_offsets": ref_offsets, "ref_answers": list(batch["answers"])}
    return out


def collator(tokenizer, pad_to_multiple_of: int | None = 8):
    return pad_collator(tokenizer, pad_to_multiple_of, pad={"context_mask": (0, True)})


class Head(LinearHead):
    per_token, outputs = True, 2  # [B, S, 2]: start and end scores


def loss(logits, batch):
    logits, labels = logits.float(), batch["labels"]
    ce = nn.functional.cross_entropy
    return (ce(logits[..., 0], labels[:, 0]) + ce(logits[..., 1], labels[:, 1])) / 2


def predict(logits, batch):
    """[B, 2]: the (start, end) maximising start + end score inside the context."""
    logits = logits.float().masked_fill(batch["context_mask"].unsqueeze(-1) == 0, -1e4)
    pair = logits[..., 0].unsqueeze(2) + logits[..., 1].unsqueeze(1)  # [B, start, end]
    n = pair.shape[1]
    allowed = torch.ones(n, n, dtype=torch.bool, device=pair.device).triu().tril(MAX_ANSWER_TOKENS - 1)
    best = pair.masked_fill(~allowed, float("-inf")).flatten(1).argmax(-1)
    return torch.stack([best // n, best % n], -1)


def majority_score(task, ds) -> float:
    return 0.0  # the trivial answer (nothing) scores 0 F1 and 0 EM
