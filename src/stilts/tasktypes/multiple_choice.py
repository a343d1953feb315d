"""Multiple choice with the choices folded into the batch (COPA, CommonsenseQA, Cosmos QA, SocialIQA, HellaSwag).

Record: {"idx", "context", "question"?, "choices": [...], "label": index of the right choice}.
Each (context [+ question], choice) pair is encoded; a linear layer scores it; softmax over choices.
"""

from __future__ import annotations

import torch

from stilts.errors import StiltsError
from stilts.tasktypes.common import field, loss, majority_score, pad_collator, predict, text  # noqa: F401
from stilts.tasktypes.heads import LinearHead


def make_record(task, row: dict, where: str) -> dict:
    f = task.fields
    rec = {"context": text(row, f["context"], where) if "context" in f else ""}
    if "question" in f:
        rec["question"] = text(row, f["question"], where)
    choices = [text(row, k, where) for k in f["choices"]] if isinstance(f["choices"], list) \
        else list(field(row, f["choices"], where))
    offset = int(f.get("label_offset", 0))
    raw = field(row, f.get("label", "label"), where)
    try:
        label = int(raw) - offset
    except (TypeError, ValueError):
        raise StiltsError(f"{where}: label '{raw}' is not a choice number") from None
    if not 0 <= label < len(choices):
        raise StiltsError(f"{where}: label '{raw}' is outside the {len(choices)} choices")
    rec["choices"], rec["label"] = choices, label
    return rec


def featurize(batch: dict, tokenizer, max_length: int, task) -> dict:
    firsts, seconds, sizes = [], [], []
    for i, choices in enumerate(batch["choices"]):
        first = batch["context"][i]
        if "question" in batch:
            first = f"{first} {batch['question'][i]}"
        firsts += [first] * len(choices)
        seconds += list(choices)
        sizes.append(len(choices))
    if any(firsts):
        enc = tokenizer(firsts, seconds, truncation=True, max_length=max_length)
    else:  # choices without a shared context (BLiMP minimal pairs): each choice alone
        enc = tokenizer(seconds, truncation=True, max_length=max_length)
    out, start = {k: [] for k in enc}, 0
    for n in sizes:
        for k in enc:
            out[k].append(enc[k][start:start + n])
        start += n
    out["labels"] = list(batch["label"])
    out["length"] = [max(len(x) for x in ids) * len(ids) for ids in out["input_ids"]]
    return out


def collator(tokenizer, pad_to_multiple_of: int | None = 8):
    return pad_collator(tokenizer, pad_to_multiple_of, choices=True)


class Head(LinearHead):
    outputs = 1  # a score per (context, choice) sequence

    def forward(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        return super().forward(hidden, batch).view(-1, batch["input_ids"].shape[1])
