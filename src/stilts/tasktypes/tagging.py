"""Token tagging (CCG supertagging): one label per word, predicted on the word's first sub-token.

Record: {"idx", "words": [...], "tags": [...]} (equal lengths). Head: dropout + linear per token.
Other sub-tokens, special tokens and padding carry label -100 and are ignored by loss and metric.
"""

from __future__ import annotations

from torch import nn

from stilts.errors import StiltsError
from stilts.tasktypes.common import encode_words, field, pad_collator
from stilts.tasktypes.heads import LinearHead

LABELS_FROM = ("train", "validation")  # the tag vocabulary (CCGbank: ~1,300 supertags; rare ones only in dev)
IGNORE = -100


def make_record(task, row: dict, where: str) -> dict:
    words, tags = field(row, "words", where), field(row, "tags", where)
    if not words or len(words) != len(tags):
        raise StiltsError(f"{where}: {len(words)} words but {len(tags)} tags")
    return {"words": [str(w) for w in words], "tags": [str(t) for t in tags]}


def labels_of(record: dict) -> list[str]:
    return record["tags"]


def featurize(batch: dict, tokenizer, max_length: int, task) -> dict:
    enc, word_ids = encode_words(tokenizer, batch["words"], max_length)
    index = {name: i for i, name in enumerate(task.labels)}
    labels = []
    for i, tags in enumerate(batch["tags"]):
        row, previous = [], None
        for w in word_ids[i]:
            row.append(index[tags[w]] if w is not None and w != previous else IGNORE)
            previous = w
        labels.append(row)
    out = dict(enc)
    out["labels"] = labels
    out["length"] = [len(ids) for ids in out["input_ids"]]
    return out


def collator(tokenizer, pad_to_multiple_of: int | None = 8):
    return pad_collator(tokenizer, pad_to_multiple_of, pad={"labels": (IGNORE, True)})


class Head(LinearHead):
    per_token = True  # [B, S, tags]


def loss(logits, batch):
    return nn.functional.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE)


def predict(logits, batch=None):
    return logits.argmax(-1)


def majority_score(task, ds) -> float:
    """Token accuracy of always predicting the most frequent tag."""
    import numpy as np

    gold = np.concatenate([np.asarray(x) for x in ds["labels"]])
    gold = gold[gold >= 0]
    return float(np.mean(gold == np.bincount(gold).argmax())) if len(gold) else 0.0
