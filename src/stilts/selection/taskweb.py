"""TaskWeb's per-run transfer results (Kim et al., 2023) as grids in the format of `stilts import-results`.

TaskWeb fine-tunes each of its targets on a 1,000-example sample after each source task, with 8 seeds, in
several settings (a model and an adaptation method). Its results are laid out as
data/taskweb/results/<target>/<source>/<model>[-<method>]-e<E>-lr<LR>-b<B>-s<seed>/eval_results.json; the
epochs, learning rate, batch size and seeds of each target come from configs/<model>_<method>.json, as
TaskWeb's own loader reads them. A run's score is the mean of the target's metrics below, on a 0–1 scale
(TaskWeb reports some in percent); one row per seed, so restarts are kept. TaskWeb publishes no
target-only runs, so its grids have no `none` source.

`files` maps a path inside TaskWeb's repository to the file's bytes (fetch.py reads them from an
archive of the pinned commit, a clone or a mirror).
"""

from __future__ import annotations

import json
from collections import Counter

from stilts.errors import StiltsError

RESULTS = "data/taskweb/results/"
METRICS = {"anli_r3": ["accuracy"], "boolq": ["accuracy"], "cb": ["accuracy", "f1"], "copa": ["accuracy"],
           "cosmosqa": ["accuracy"], "hellaswag": ["accuracy"], "imdb": ["accuracy"], "mrpc": ["accuracy", "f1"],
           "piqa": ["accuracy"], "qnli": ["accuracy"], "qqp": ["accuracy", "f1"], "quartz": ["accuracy"],
           "rotten_tomatoes": ["accuracy"], "rte": ["accuracy"], "scitail": ["accuracy"], "snli": ["accuracy"],
           "socialiqa": ["accuracy"], "stsb": ["pearson", "spearmanr"], "wic": ["accuracy"],
           "winogrande": ["accuracy"], "wsc": ["accuracy"]}
DEFAULT_SEEDS = [10, 15, 20, 25, 30, 35, 40, 42]


def wanted(path: str) -> bool:
    """The files the grids are read from: the settings' configs and every run's eval_results.json."""
    return (path.startswith("configs/") and path.endswith(".json")) or \
        (path.startswith(RESULTS) and path.endswith("/eval_results.json"))


def _lr(lr: float) -> str:
    mantissa, exponent = f"{lr:.0e}".split("e")
    return f"{int(mantissa)}e{abs(int(exponent))}"


def _run_name(model: str, method: str, setting: dict) -> str:
    prefix = model if method == "finetune" else f"{model}-{method}"
    return f"{prefix}-e{setting['epochs']}-lr{_lr(setting['learning_rate'])}-b{setting['batch_size']}"


def _seeds(setting: dict, source: str) -> list[int]:
    seeds = setting.get("seed_list")
    return seeds.get(source, seeds.get("default", DEFAULT_SEEDS)) if isinstance(seeds, dict) else DEFAULT_SEEDS


def _score(result: dict, metrics: list[str]) -> float | None:
    values = []
    for metric in metrics:
        if f"eval_{metric}" not in result:  # e.g. RoBERTa's CB runs report accuracy only
            continue
        value = result[f"eval_{metric}"]
        value = value[0] if isinstance(value, list) else value
        values.append(value / 100 if value > 1 else value)
    return round(max(0.0, sum(values) / len(values)), 6) if values else None


def _json(files: dict[str, bytes], path: str) -> dict:
    try:
        return json.loads(files[path])
    except ValueError as e:
        raise StiltsError(f"{path}: not valid JSON ({e})") from None


def convert(files: dict[str, bytes], model: str, method: str) -> tuple[list[dict], Counter]:
    """(rows of restart, source, task, role, score; (target, source) → how many of its seeds are missing)."""
    config_path = f"configs/{model}_{method}.json"
    if config_path not in files:
        raise StiltsError(f"TaskWeb: {config_path}: no such file (model and method as in TaskWeb's configs/)")
    config = _json(files, config_path)
    sources: dict[str, set[str]] = {}
    for path in files:
        if path.startswith(RESULTS):
            parts = path[len(RESULTS):].split("/")
            if len(parts) == 4:
                sources.setdefault(parts[0], set()).add(parts[1])
    rows, missing = [], Counter()
    for target, metrics in METRICS.items():
        if target not in config or target not in sources:
            continue
        name = _run_name(model, method, config[target])
        for source in sorted(sources[target]):
            for restart, seed in enumerate(_seeds(config[target], source)):
                path = f"{RESULTS}{target}/{source}/{name}-s{seed}/eval_results.json"
                score = _score(_json(files, path), metrics) if path in files else None
                if score is None:
                    missing[(target, source)] += 1
                    continue
                rows.append({"restart": restart, "source": source, "task": target, "role": "target", "score": score})
    return rows, missing
