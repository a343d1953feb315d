"""TaskWeb's per-run transfer results as a grid for `stilts import-results`.

    git clone https://github.com/danieljkim0118/TaskWeb        # docs/ranking.md used commit 4d5b1d3
    python benchmarks/taskweb_grid.py TaskWeb roberta taskweb_roberta.csv
    python benchmarks/taskweb_grid.py TaskWeb t5l taskweb_t5l.csv
    stilts import-results taskweb_roberta.csv --experiment taskweb-roberta

TaskWeb (Kim et al., 2023) fine-tunes each of its targets on a 1,000-example sample after each source task,
with 8 seeds. Its results are laid out as
data/taskweb/results/<target>/<source>/<model>[-<method>]-e<E>-lr<LR>-b<B>-s<seed>/eval_results.json;
the epochs, learning rate, batch size and seeds of each target come from configs/<model>_<method>.json, as
TaskWeb's own loader reads them. A run's score is the mean of the target's metrics below, on a 0–1 scale
(TaskWeb reports some in percent). TaskWeb publishes no target-only runs, so the grid has no `none` source.
Prints how many rows, targets and sources were written, and how many (target, source) pairs lack a seed.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from pathlib import Path

METRICS = {"anli_r3": ["accuracy"], "boolq": ["accuracy"], "cb": ["accuracy", "f1"], "copa": ["accuracy"],
           "cosmosqa": ["accuracy"], "hellaswag": ["accuracy"], "imdb": ["accuracy"], "mrpc": ["accuracy", "f1"],
           "piqa": ["accuracy"], "qnli": ["accuracy"], "qqp": ["accuracy", "f1"], "quartz": ["accuracy"],
           "rotten_tomatoes": ["accuracy"], "rte": ["accuracy"], "scitail": ["accuracy"], "snli": ["accuracy"],
           "socialiqa": ["accuracy"], "stsb": ["pearson", "spearmanr"], "wic": ["accuracy"],
           "winogrande": ["accuracy"], "wsc": ["accuracy"]}
DEFAULT_SEEDS = [10, 15, 20, 25, 30, 35, 40, 42]


def _fail(message: str) -> None:
    print(f"taskweb_grid: {message}", file=sys.stderr)
    sys.exit(2)


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


def convert(repo: Path, model: str, method: str) -> tuple[list[dict], Counter]:
    config_file = repo / "configs" / f"{model}_{method}.json"
    if not config_file.is_file():
        _fail(f"{config_file}: no such file (model and method as in TaskWeb's configs/)")
    config = json.loads(config_file.read_text())
    results = repo / "data" / "taskweb" / "results"
    rows, missing = [], Counter()
    for target, metrics in METRICS.items():
        if target not in config or not (results / target).is_dir():
            continue
        name = _run_name(model, method, config[target])
        for source in sorted(p.name for p in (results / target).iterdir() if p.is_dir()):
            for restart, seed in enumerate(_seeds(config[target], source)):
                path = results / target / source / f"{name}-s{seed}" / "eval_results.json"
                score = _score(json.loads(path.read_text()), metrics) if path.is_file() else None
                if score is None:
                    missing[(target, source)] += 1
                    continue
                rows.append({"restart": restart, "source": source, "task": target, "role": "target",
                             "score": score})
    return rows, missing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("repo", type=Path, help="a clone of github.com/danieljkim0118/TaskWeb")
    ap.add_argument("model", help="TaskWeb's model name: roberta, t5l, t5b, t5s, gpt2m")
    ap.add_argument("out", type=Path, help="the CSV to write")
    ap.add_argument("--method", default="finetune", help="TaskWeb's adaptation method (default: finetune)")
    args = ap.parse_args()
    rows, missing = convert(args.repo, args.model, args.method)
    if not rows:
        _fail(f"no results for {args.model}_{args.method} under {args.repo}/data/taskweb/results")
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["restart", "source", "task", "role", "score"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"{args.out}: {len(rows)} runs, {len({r['task'] for r in rows})} targets, "
          f"{len({r['source'] for r in rows})} sources; (target, source) pairs missing a seed: {len(missing)}")


if __name__ == "__main__":
    main()
