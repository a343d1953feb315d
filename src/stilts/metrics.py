"""Metric functions, one small function each, on predictions and gold labels.

A task names one metric; `compute` returns that metric's value under its own name (the major
score) together with every minor metric it is built from, e.g. acc_f1 → accuracy, f1, acc_f1.
Structured metrics (span QA, MultiRC, ReCoRD) also take `refs`: per-example columns the featuriser
kept for scoring (context, offsets, question id, answer texts), aligned with the predictions.
"""

from __future__ import annotations

import inspect
import string
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from stilts.errors import unknown

MetricFn = Callable[[np.ndarray, np.ndarray], dict]
_METRICS: dict[str, MetricFn] = {}
_PUNCT = set(string.punctuation)


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


@metric
def pearson_spearman(pred, gold) -> dict:
    """Mean of Pearson and Spearman correlation (STS-B); 0 when a side is constant."""
    from scipy import stats

    pred, gold = pred.astype(float), gold.astype(float)
    if len(gold) < 2 or np.ptp(pred) == 0 or np.ptp(gold) == 0:
        return {"pearson": 0.0, "spearman": 0.0, "pearson_spearman": 0.0}
    p, s = float(stats.pearsonr(pred, gold)[0]), float(stats.spearmanr(pred, gold)[0])
    return {"pearson": p, "spearman": s, "pearson_spearman": (p + s) / 2}


@metric
def token_accuracy(pred, gold) -> dict:
    """Accuracy over labelled positions (gold ≥ 0); padding and non-first sub-words are negative (CCG)."""
    keep = gold >= 0
    return {"token_accuracy": float(np.mean(pred[keep] == gold[keep])) if keep.any() else 0.0}


@metric
def micro_f1(pred, gold) -> dict:
    """Micro-F1 over all (target, label) binary decisions (edge probing); gold < 0 marks padding."""
    keep = gold >= 0
    p, g = pred[keep] == 1, gold[keep] == 1
    tp, fp, fn = float(np.sum(p & g)), float(np.sum(p & ~g)), float(np.sum(~p & g))
    return {"micro_f1": _f1(tp, fp, fn), "precision": tp / (tp + fp) if tp + fp else 0.0,
            "recall": tp / (tp + fn) if tp + fn else 0.0}


def normalize_answer(s: str) -> list[str]:
    """SQuAD answer normalisation: lower case, no punctuation, no articles, single spaces → tokens."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return [w for w in s.split() if w not in ("a", "an", "the")]


def _token_f1(pred: str, gold: str) -> float:
    p, g = normalize_answer(pred), normalize_answer(gold)
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    return 0.0 if common == 0 else 2 * common / (len(p) + len(g))


def f1_em_texts(pred_texts: Sequence[str], gold_texts: Sequence[Sequence[str]]) -> dict:
    """Token F1 and exact match of predicted answer strings, each the max over its gold answers."""
    f1s = [max(_token_f1(p, g) for g in golds) for p, golds in zip(pred_texts, gold_texts)]
    ems = [max(float(normalize_answer(p) == normalize_answer(g)) for g in golds)
           for p, golds in zip(pred_texts, gold_texts)]
    f1v, em = (float(np.mean(f1s)), float(np.mean(ems))) if f1s else (0.0, 0.0)
    return {"f1": f1v, "em": em, "f1_em": (f1v + em) / 2}


@metric
def span_f1_em(pred, gold, refs) -> dict:
    """Extractive QA (QA-SRL, QAMR): mean of token F1 and EM; pred holds (start, end) token indices,
    refs the context, its token offsets and the gold answers."""
    texts = []
    for (s, e), context, offsets in zip(pred, refs["ref_context"], refs["ref_offsets"]):
        ok = 0 <= s <= e < len(offsets) and offsets[s][0] >= 0 and offsets[e][0] >= 0
        texts.append(context[offsets[s][0]:offsets[e][1]] if ok else "")
    out = f1_em_texts(texts, refs["ref_answers"])
    return {"f1": out["f1"], "em": out["em"], "span_f1_em": out["f1_em"]}


@metric
def multirc_f1a_em(pred, gold, refs) -> dict:
    """MultiRC: mean of F1 over all answer options (F1a) and exact match per question; pred is a score
    per answer option (> 0 = true)."""
    decided = (pred > 0).astype(int)
    f1a = f1(decided, gold)["f1"]
    right: dict = {}
    for group, ok in zip(refs["ref_group"], decided == gold):
        right[group] = right.get(group, True) and bool(ok)
    em = float(np.mean(list(right.values()))) if right else 0.0
    return {"f1a": f1a, "em": em, "multirc_f1a_em": (f1a + em) / 2, **accuracy(decided, gold)}


@metric
def record_f1_em(pred, gold, refs) -> dict:
    """ReCoRD: per query, the highest-scoring entity candidate against the gold answers (max token F1
    and EM); the major score is their mean."""
    best: dict = {}
    for score, group, cand, answers in zip(pred, refs["ref_group"], refs["ref_candidate"], refs["ref_answers"]):
        if group not in best or score > best[group][0]:
            best[group] = (score, cand, answers)
    out = f1_em_texts([c for _, c, _ in best.values()], [a for _, _, a in best.values()])
    return {"f1": out["f1"], "em": out["em"], "record_f1_em": out["f1_em"]}


def names() -> list[str]:
    return list(_METRICS)


def needs_refs(name: str) -> bool:
    return "refs" in inspect.signature(_METRICS[name]).parameters


def compute(name: str, pred: Sequence, gold: Sequence, refs: dict | None = None) -> dict:
    if name not in _METRICS:
        raise unknown("metric", name, _METRICS)
    if needs_refs(name):
        if refs is None:
            raise ValueError(f"metric '{name}' needs the reference columns (refs)")
        return _METRICS[name](np.asarray(pred), np.asarray(gold), refs)
    return _METRICS[name](np.asarray(pred), np.asarray(gold))
