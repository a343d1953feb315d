"""Helpers shared by the task types."""

from __future__ import annotations

import dataclasses

from stilts.errors import StiltsError


def field(row: dict, key: str, where: str):
    if key not in row or row[key] is None:
        raise StiltsError(f"{where}: missing field '{key}'")
    return row[key]


def text(row: dict, key: str, where: str) -> str:
    value = field(row, key, where)
    if not isinstance(value, str):
        raise StiltsError(f"{where}: field '{key}' must be text, got {type(value).__name__}")
    return value


def label_str(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()


def loss(logits, batch):
    """Cross-entropy over classes (or over choices, for multiple choice), in fp32."""
    import torch

    return torch.nn.functional.cross_entropy(logits.float(), batch["labels"])


def predict(logits, batch=None):
    return logits.argmax(-1)


def majority_score(task, ds) -> float:
    """The degenerate-run reference on the dev set (each task type knows what 'trivial' means)."""
    return majority_of_labels(task, list(ds["labels"]))


def majority_of_labels(task, labels) -> float:
    """Score of always predicting the most frequent gold label: the degenerate-run reference."""
    from collections import Counter

    from stilts import metrics

    top = Counter(labels).most_common(1)[0][0]
    return metrics.compute(task.metric, [top] * len(labels), list(labels))[task.metric]


def char_span_to_tokens(offsets, sequence_ids, seq: int, start: int, end: int) -> tuple[int, int] | None:
    """Token span [first, last + 1) covering characters [start, end) of sequence `seq`, from a fast
    tokenizer's offset mapping; None if the span was truncated away or covers no token.

    A token belongs to the span when their character ranges overlap. This holds for every tokenizer kind:
    WordPiece offsets cover the piece; byte-level BPE ('Ġword') and SentencePiece ('▁word') offsets may
    or may not include the space before the word, which lies outside the span either way."""
    first = last = None
    for i, ((a, b), s) in enumerate(zip(offsets, sequence_ids)):
        if s != seq or b <= a:  # special tokens and zero-width pieces
            continue
        if a < end and b > start:
            first = i if first is None else first
            last = i
    return None if first is None else (first, last + 1)


def encode_words(tokenizer, words_batch: list[list[str]], max_length: int):
    """Encode pre-split sentences as their words joined by single spaces, and return the encoding with,
    per sentence, the word index of every token (None for special tokens and for tokens that are only
    the space between words, such as a lone SentencePiece '▁').

    Joining and mapping back through offsets works the same for every fast tokenizer; the
    `is_split_into_words` route would need RoBERTa-style tokenizers built with add_prefix_space=True.
    Offsets that include the space before a word ('Ġword', '▁word') are read from the word's first character."""
    from bisect import bisect_right

    texts = [" ".join(w) for w in words_batch]
    enc = tokenizer(texts, truncation=True, max_length=max_length, return_offsets_mapping=True)
    word_ids = []
    for i, (words, offsets) in enumerate(zip(words_batch, enc.pop("offset_mapping"))):
        starts, pos = [], 0
        for w in words:
            starts.append(pos)
            pos += len(w) + 1
        ids = []
        for (a, b), s in zip(offsets, enc.sequence_ids(i)):
            while a < b and texts[i][a].isspace():
                a += 1
            w = bisect_right(starts, a) - 1 if s == 0 and b > a else -1
            ids.append(w if w >= 0 and a < starts[w] + len(words[w]) else None)
        word_ids.append(ids)
    return enc, word_ids


def word_span_to_tokens(word_ids, start: int, end: int) -> tuple[int, int] | None:
    """Token span [first, last + 1) covering words [start, end) (pre-split input), or None if truncated."""
    toks = [i for i, w in enumerate(word_ids) if w is not None and start <= w < end]
    return (toks[0], toks[-1] + 1) if toks else None


def padded_length(longest: int, pad_to_multiple_of: int | None, buckets: tuple[int, ...] = ()) -> int:
    """The length a batch whose longest sequence is `longest` is padded to: the smallest bucket that holds
    it, else the next multiple of `pad_to_multiple_of` (dynamic padding)."""
    fits = [b for b in buckets if b >= longest]
    if fits:
        return min(fits)
    m = pad_to_multiple_of or 1
    return -(-longest // m) * m


def pad_collator(tokenizer, pad_to_multiple_of: int | None = 8, pad: dict | None = None, choices: bool = False):
    return PadCollator(tokenizer, pad_to_multiple_of, pad or {}, choices)


@dataclasses.dataclass(frozen=True)
class PadCollator:
    """tokenizer.pad for the encoder inputs, plus the keys in `pad`: name → (pad value, per_token).
    Per-token keys (tag labels, answer masks) are padded to the padded sequence length; the others
    (span targets) to the most items in the batch. Sequences are padded to `padded_length` (a multiple
    of 8, or the smallest of `buckets`). With `choices`, each feature holds one sequence per choice
    (multiple choice): they are padded together and returned as [batch, choices, length]."""

    tokenizer: object
    pad_to_multiple_of: int | None = 8
    pad: dict = dataclasses.field(default_factory=dict)
    choices: bool = False
    buckets: tuple[int, ...] = ()

    def with_padding(self, buckets, pad_to_multiple_of: int | None = None) -> PadCollator:
        """Padded to the smallest of `buckets` that holds a batch, else (and with no buckets) to a multiple
        of `pad_to_multiple_of` (None: this collator's own)."""
        multiple = self.pad_to_multiple_of if pad_to_multiple_of is None else pad_to_multiple_of
        return dataclasses.replace(self, buckets=tuple(sorted(buckets)), pad_to_multiple_of=multiple)

    def __call__(self, features: list[dict]) -> dict:
        import torch

        if self.choices:
            return self._choices(features)
        extra = {k: [torch.as_tensor(f.pop(k)) for f in features] for k in self.pad if k in features[0]}
        longest = max(len(f["input_ids"]) for f in features)
        batch = self.tokenizer.pad(features, padding="max_length", return_tensors="pt",
                                   max_length=padded_length(longest, self.pad_to_multiple_of, self.buckets))
        for k, tensors in extra.items():
            value, per_token = self.pad[k]
            n = batch["input_ids"].shape[1] if per_token else max(len(t) for t in tensors)
            out = torch.full((len(tensors), n, *tensors[0].shape[1:]), value, dtype=tensors[0].dtype)
            for i, t in enumerate(tensors):
                out[i, :len(t)] = t
            batch[k] = out
        return batch

    def _choices(self, features: list[dict]) -> dict:
        import torch

        labels = torch.tensor([f.pop("labels") for f in features], dtype=torch.long)
        n = len(features[0]["input_ids"])
        flat = [{k: v[i] for k, v in f.items()} for f in features for i in range(n)]
        batch = dataclasses.replace(self, choices=False)(flat)
        batch = {k: v.view(len(features), n, -1) for k, v in batch.items()}
        batch["labels"] = labels
        return batch


def stack(chunks: list):
    """Concatenate per-batch prediction arrays whose second axis may differ, padding it with -1."""
    import numpy as np

    if chunks[0].ndim == 1:
        return np.concatenate(chunks)
    width = max(c.shape[1] for c in chunks)
    padded = [np.pad(c, [(0, 0), (0, width - c.shape[1])] + [(0, 0)] * (c.ndim - 2), constant_values=-1)
              for c in chunks]
    return np.concatenate(padded)
