"""Helpers shared by the task types."""

from __future__ import annotations

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


def loss(logits, labels):
    """Cross-entropy over classes (or over choices, for multiple choice), in fp32."""
    import torch

    return torch.nn.functional.cross_entropy(logits.float(), labels)


def predict(logits):
    return logits.argmax(-1)


def majority_score(task, labels) -> float:
    """Score of always predicting the most frequent gold label: the degenerate-run reference."""
    from collections import Counter

    from stilts import metrics

    top = Counter(labels).most_common(1)[0][0]
    return metrics.compute(task.metric, [top] * len(labels), list(labels))[task.metric]
