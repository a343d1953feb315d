"""LogME (You et al., 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning").

For features F (n × d) and one target column y, LogME models y = F w + ε with w ~ N(0, α⁻¹ I) and
ε ~ N(0, β⁻¹ I), maximises the evidence p(y | F, α, β) over α and β by the paper's fixed-point
updates (γ = Σ βσᵢ / (α + βσᵢ), α ← γ / mᵀm, β ← (n − γ) / ‖F m − y‖², with σᵢ the squared singular
values of F and m the posterior mean), and reports the maximum log evidence per example.
Classification: one column per class (one-hot labels), evidence averaged over classes; regression:
the target as is. Higher means the features explain the labels better.

Features for ranking: the target's training sample (the same sample semb reads), encoded as the
target's task type encodes it for training (pairs, choices, `train.max_seq_length` of the target),
through each candidate's intermediate checkpoint `models/intermediate/<candidate>/r<k>/`; the
feature is the top layer's first token, which is what the target's head reads. Multiple choice:
each (context, choice) sequence is one example, labelled right (1) or wrong (0).
"""

from __future__ import annotations

import math

import numpy as np

from stilts.errors import StiltsError

# task types whose head reads the first token, and how their labels become LogME targets
SUPPORTED = ("classification", "grouped_binary", "multiple_choice", "regression")


def _svd(features: np.ndarray):
    u, s, _ = np.linalg.svd(np.asarray(features, dtype=np.float64), full_matrices=False)
    return u, s ** 2


def _terms(u, sigma, n: int, d: int, y: np.ndarray, alpha: float, beta: float):
    """(γ, mᵀm, ‖F m − y‖², log|A|) in the SVD basis, with m = β A⁻¹ Fᵀ y and A = αI + β FᵀF."""
    x = u.T @ y
    outside = max(float(y @ y - x @ x), 0.0)  # the part of y outside the span of F
    denom = alpha + beta * sigma
    gamma = float(np.sum(beta * sigma / denom))
    m2 = float(np.sum((beta * np.sqrt(sigma) * x / denom) ** 2))
    res2 = float(np.sum((alpha * x / denom) ** 2)) + outside
    logdet = float(np.sum(np.log(denom))) + (d - len(sigma)) * math.log(alpha)
    return gamma, m2, res2, logdet


def _evidence(n: int, d: int, alpha: float, beta: float, m2: float, res2: float, logdet: float) -> float:
    return (n * math.log(beta) + d * math.log(alpha) - n * math.log(2 * math.pi) - beta * res2 - alpha * m2
            - logdet) / (2 * n)


def log_evidence(features: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """log p(y | F, α, β) / n at fixed α, β (closed form, through the SVD of F)."""
    n, d = features.shape
    u, sigma = _svd(features)
    _, m2, res2, logdet = _terms(u, sigma, n, d, np.asarray(y, dtype=np.float64), alpha, beta)
    return _evidence(n, d, alpha, beta, m2, res2, logdet)


def maximise(u, sigma, n: int, d: int, y: np.ndarray, tol: float = 1e-8, max_iter: int = 1000):
    """The fixed-point iteration of the paper's Algorithm 1 → (evidence per example, α, β)."""
    alpha, beta = 1.0, 1.0
    tiny = 1e-12
    for _ in range(max_iter):
        gamma, m2, res2, _ = _terms(u, sigma, n, d, y, alpha, beta)
        new_alpha = gamma / max(m2, tiny)
        new_beta = max(n - gamma, tiny) / max(res2, tiny)
        done = abs(new_alpha - alpha) <= tol * alpha and abs(new_beta - beta) <= tol * beta
        alpha, beta = new_alpha, new_beta
        if done:
            break
    _, m2, res2, logdet = _terms(u, sigma, n, d, y, alpha, beta)
    return _evidence(n, d, alpha, beta, m2, res2, logdet), alpha, beta


def logme(features: np.ndarray, labels, regression: bool = False, num_classes: int | None = None) -> float:
    """LogME of labels given features: maximised evidence per example, averaged over target columns
    (one per class for classification; the labels themselves for regression)."""
    f = np.asarray(features, dtype=np.float64)
    n, d = f.shape
    labels = np.asarray(labels)
    if regression:
        columns = [labels.astype(np.float64)]
    else:
        k = num_classes or int(labels.max()) + 1
        columns = [(labels == c).astype(np.float64) for c in range(k)]
    u, sigma = _svd(f)
    return float(np.mean([maximise(u, sigma, n, d, y)[0] for y in columns]))


def check_target(target: str) -> None:
    from stilts.tasks import registry

    kind = registry.get(target).type
    if kind not in SUPPORTED:
        raise StiltsError(f"rank: logme cannot score target '{target}' ({kind}); it ranks targets of type "
                          f"{', '.join(SUPPORTED)}")


def target_inputs(params, target: str, tokenizer):
    """The target's training sample encoded for its task type → (encodings, labels, regression, classes)."""
    from stilts import data, tasktypes
    from stilts.selection.sample import training_sample
    from stilts.tasks import registry

    task = data.task_with_labels(params, registry.get(target))
    r = params.rank
    records = training_sample(params, target, r.sample_size, r.seed)
    columns = {k: [rec.get(k) for rec in records] for k in records[0] if k != "idx"}
    enc = tasktypes.get(task.type).featurize(columns, tokenizer, params.train_for(target).max_seq_length, task)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    if task.type == "multiple_choice":
        encodings, labels = [], []
        for i, gold in enumerate(enc["labels"]):
            for j in range(len(enc["input_ids"][i])):
                encodings.append({k: enc[k][i][j] for k in keys})
                labels.append(int(j == gold))
        return encodings, np.asarray(labels), False, 2
    encodings = [{k: enc[k][i] for k in keys} for i in range(len(enc["input_ids"]))]
    regression = task.type == "regression"
    classes = None if regression else (task.num_labels or 2)
    return encodings, np.asarray(enc["labels"]), regression, classes


def scores(params, targets: list[str], candidates: dict[str, list[str]]) -> dict[tuple[str, str], float]:
    """(target, candidate) → LogME of the target's labels on the candidate checkpoint's features."""
    from stilts.cells import checkpoint_dir
    from stilts.selection.semb import Encoder

    out = {}
    for c in dict.fromkeys(c for t in targets for c in candidates[t]):
        encoder_ = Encoder(str(checkpoint_dir(params, c, params.rank.restart)), params.train.mixed_precision)
        for t in targets:
            if c in candidates[t]:
                encodings, labels, regression, classes = target_inputs(params, t, encoder_.tokenizer)
                feats = encoder_.embed(encodings, params.rank.batch_size, pooling="cls")
                out[(t, c)] = logme(feats, labels, regression, classes)
    return out
