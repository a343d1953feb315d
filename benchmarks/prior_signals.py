"""The target signals benchmarks/prior_scores.py tries on top of the prior (type, semb), and the oracle order it
reports as a bound. See prior_scores.py's docstring for what each does."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

TASK_TYPES = {"anli_r3": "classification", "imdb": "classification", "piqa": "multiple_choice",
              "quartz": "multiple_choice", "rotten_tomatoes": "classification", "squad_v2": "span_qa",
              "winogrande": "multiple_choice"}
NEIGHBOURS = 3
TOP = 3  # the oracle's greedy order: Regret@1, then Regret@3


def task_type(task: str) -> str | None:
    from stilts.tasks import registry

    return TASK_TYPES.get(task) or (registry.get(task).type if task in registry.names() else None)


def _shrunk_mean(pool, effects, tasks: list[str], candidates: list[str]) -> dict[str, float]:
    """candidate → Σ w_g r_g,u,c / (Σ w_g + KAPPA · mean weight) over the grids' rows of `tasks`."""
    from stilts.selection import pooling

    mean_w = float(np.mean(list(pool.weights.values())))
    out = {}
    for c in candidates:
        rows = [(pool.weights[n], e.resid.at[u, c]) for n, e in effects.items() for u in tasks
                if u in e.resid.index and c in e.resid.columns and not math.isnan(e.resid.at[u, c])]
        if rows:
            w, r = (np.array(x, dtype=float) for x in zip(*rows))
            out[c] = float(w @ r / (w.sum() + pooling.KAPPA * mean_w))
    return out


def type_correction(pool, effects, target: str, candidates: list[str]) -> dict[str, float]:
    kind = task_type(target)
    if kind is None:
        return {}
    same = sorted({u for e in effects.values() for u in e.resid.index if u != target and task_type(u) == kind})
    return _shrunk_mean(pool, effects, same, candidates)


def semb_correction(pool, effects, target: str, candidates: list[str], embeddings: dict) -> dict[str, float]:
    if target not in embeddings:
        return {}
    known = {u for e in effects.values() for u in e.resid.index} - {target}
    sims = {u: _cosine(embeddings[target], embeddings[u]) for u in known if u in embeddings}
    near = sorted(sims, key=lambda u: (-sims[u], u))[:NEIGHBOURS]
    return _shrunk_mean(pool, effects, near, candidates)


def _cosine(u, v) -> float:
    return float(u @ v / max(np.linalg.norm(u) * np.linalg.norm(v), 1e-12))


def embeddings(data: str, tasks, project, sample_size: int) -> dict:
    """semb task embeddings of the tasks whose data is under `data`, `sample_size` examples each, in a scratch
    project (benchmarks/shared_copies.yaml's stand-in files; embeddings cached there between runs)."""
    from pathlib import Path

    import yaml

    from stilts import config
    from stilts.selection import signals

    root = Path(__file__).resolve().parents[1]
    project = Path(project)
    project.mkdir(parents=True, exist_ok=True)
    files = yaml.safe_load((root / "benchmarks" / "shared_copies.yaml").read_text())
    (project / "params.yaml").write_text(yaml.safe_dump({"data": {"raw_dir": str(Path(data).resolve()),
                                                                   "files": files},
                                                          "rank": {"sample_size": sample_size},
                                                          "mlflow": {"experiment": "scratch"}}))
    params = config.use_task_files(config.load(project / "params.yaml"))
    return signals.embeddings(params, [t for t in tasks if signals.has_data(params, t)])


def oracle(held) -> pd.DataFrame:
    """The best single order for the held-out grid's own results (greedy: Regret@1, then @3) as ranking rows."""
    from stilts.selection import evaluate

    targets = [t for t in held.targets if len([c for c in held.measured(t) if c != t]) >= 2]
    measured = {t: {c: v for c, v in held.measured(t).items() if c != t} for t in targets}
    sources = sorted({c for m in measured.values() for c in m})

    def mean_regret(order: list[str], k: int) -> float:
        rank = {c: -i for i, c in enumerate(order)}
        return float(np.mean([evaluate.regret_at_k({c: rank[c] for c in m}, m, k) for m in measured.values()]))

    order: list[str] = []
    while len(order) < min(TOP, len(sources)):
        rest = [s for s in sources if s not in order]
        k = 1 if not order else TOP
        order.append(min(rest, key=lambda s: (mean_regret(order + [s] + [x for x in rest if x != s], k), s)))
    order += [s for s in sources if s not in order]
    rank = {c: float(len(order) - i) for i, c in enumerate(order)}
    return pd.DataFrame([{"target": t, "candidate": c, "method": "prior", "score": rank[c]}
                         for t, m in measured.items() for c in m])
