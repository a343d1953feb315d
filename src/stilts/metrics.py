"""Metric functions, one small function each, on integer predictions and gold labels.

A task names one metric; `compute` returns that metric's value under its own name (the major
score) together with every minor metric it is built from, e.g. acc_f1 → accuracy, f1, acc_f1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from stilts.errors import unknown

MetricFn = Callable[[np.ndarray, np.ndarray], dict]
_METRICS: dict[str, MetricFn] = {}


def metric(fn: MetricFn) -> MetricFn:
    _METRICS[fn.__name__] = fn
    return fn


def _f1(tp: float, fp: float, fn: float) -> float:
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


@metric
def accuracy(pred, gold) -> dict:
    return {"accuracy": float(np.mean(pred == gold)) if len(gold) else 0.0}


@metric
def f1(pred, gold) -> dict:
    """Binary F1 of the positive class (label index 1)."""
    tp = float(np.sum((pred == 1) & (gold == 1)))
    return {"f1": _f1(tp, float(np.sum((pred == 1) & (gold != 1))), float(np.sum((pred != 1) & (gold == 1))))}


@metric
def macro_f1(pred, gold) -> dict:
    """Unweighted mean of per-class F1 over the classes present in gold or predictions (CB)."""
    classes = np.union1d(np.unique(gold), np.unique(pred))
    scores = [_f1(float(np.sum((pred == c) & (gold == c))), float(np.sum((pred == c) & (gold != c))),
                  float(np.sum((pred != c) & (gold == c)))) for c in classes]
    return {"macro_f1": float(np.mean(scores)) if scores else 0.0, **accuracy(pred, gold)}


@metric
def acc_f1(pred, gold) -> dict:
    """Mean of accuracy and binary F1 (QQP, BoolQ, MRPC, acceptability probes)."""
    out = {**accuracy(pred, gold), **f1(pred, gold)}
    out["acc_f1"] = (out["accuracy"] + out["f1"]) / 2
    return out


@metric
def mcc(pred, gold) -> dict:
    """Matthews correlation for binary labels (CoLA); 0 when undefined (a constant prediction)."""
    tp = float(np.sum((pred == 1) & (gold == 1)))
    tn = float(np.sum((pred != 1) & (gold != 1)))
    fp = float(np.sum((pred == 1) & (gold != 1)))
    fn = float(np.sum((pred != 1) & (gold == 1)))
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return {"mcc": float((tp * tn - fp * fn) / denom) if denom else 0.0, **accuracy(pred, gold)}


def names() -> list[str]:
    return list(_METRICS)


def compute(name: str, pred: Sequence[int], gold: Sequence[int]) -> dict:
    if name not in _METRICS:
        raise unknown("metric", name, _METRICS)
    return _METRICS[name](np.asarray(pred), np.asarray(gold))
