"""A study's per-run results as a grid others can use: the CSV `stilts import-results` reads, and a YAML file
beside it stating where every number came from (encoder, settings, data files, machine, commit, command).

The CSV holds numbers only, never data: one row per current run of a target or probe (restart, source, task,
role, score) and, as extra columns, the facts the analysis of degenerate runs needs (majority_score,
pred_classes). The provenance is what `stilts grids` shows and what a shipped grid needs
(selection/published/).
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import os
import platform
from pathlib import Path

import yaml

from stilts.errors import StiltsError
from stilts.io import atomic_write_text, read_json

COLUMNS = ("restart", "source", "task", "role", "score", "majority_score", "pred_classes")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def rows(runs) -> list[dict]:
    """analysis.collect's table → import-results rows, in a stable order (role, task, source, restart)."""
    out = []
    for r in runs.sort_values(["role", "task", "source", "restart"]).itertuples():
        row = {"restart": int(r.restart), "source": r.source, "task": r.task, "role": r.role,
               "score": f"{float(r.score):.6f}"}
        for extra in ("majority_score", "pred_classes"):
            v = getattr(r, extra, None)
            row[extra] = "" if v is None or v != v else (f"{float(v):.6f}" if extra == "majority_score" else
                                                             str(int(v)))
        out.append(row)
    return out


def machine() -> dict:
    """The CPU (model name, cores, the instruction sets that change training speed and precision) and versions."""
    import torch

    info = {"cpu": platform.processor() or "unknown", "cores": os.cpu_count(), "cpu_flags": []}
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            info["cpu"] = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            info["cpu_flags"] = [f for f in CPU_FLAGS if f in flags]
            break
    info.update(python=platform.python_version(), torch=str(torch.__version__))
    return info


def _file_facts(params, task: str) -> dict:
    from stilts import data
    from stilts.tasks import registry

    meta_path = params.path(params.data.processed_dir) / task / "meta.json"
    meta = read_json(meta_path) if meta_path.is_file() else {}
    facts = {}
    for split, path in data.task_files(params, registry.get(task)).items():
        if path.is_file():
            facts[split] = {"file": path.name, "sha256": meta.get("source_files", {}).get(path.name) or
                            hashlib.sha256(path.read_bytes()).hexdigest(), "bytes": path.stat().st_size}
    if meta.get("counts"):
        facts["examples"] = meta["counts"]
    return facts


def _settings(params, task: str) -> dict:
    path = params.path("data/settings/train") / f"{task}.json"
    if not path.is_file():
        return {}
    train = read_json(path).get("train", {})
    keep = ("lr", "head_dropout", "batch_size", "epochs", "max_steps", "max_seq_length", "max_train_examples",
            "max_eval_examples", "warmup_ratio", "weight_decay", "max_grad_norm", "mixed_precision", "seed")
    return {k: train[k] for k in keep if k in train}


def provenance(params, experiment: str, runs, csv_path: Path, csv_text: str, name: str, command: str) -> dict:
    from stilts import tracking

    tasks = sorted(set(runs["task"]) | {s for s in runs["source"] if s != "none" and "__n" not in s})
    commit = tracking.git_commit(params.root)
    span = runs["start_time"].dropna() if "start_time" in runs else []
    return {
        "name": name, "file": csv_path.name,
        "sha256": hashlib.sha256(csv_text.encode()).hexdigest(), "bytes": len(csv_text.encode()),
        "citation": f"stilts study '{experiment}' ({params.model.name}), measured with stilts",
        "encoder": params.model.name, "method": "full fine-tuning",
        "source": f"the MLflow experiment '{experiment}' of a stilts study (commit {commit or 'unknown'})",
        "licence": "the numbers: Apache-2.0, as stilts; the data they were measured on keeps its own licence",
        "aggregation": "One row per run (the current run of each cell): score = the task's major metric on its "
                       "full dev set (0-1); majority_score = the majority-class score; pred_classes = how many "
                       "classes its predictions used. Source `none` = no intermediate task (the baseline).",
        "columns": ", ".join(COLUMNS),
        "stilts_commit": commit, "command": command,
        "exported": datetime.date.today().isoformat(),
        "first_run_started": str(min(span)) if len(span) else None,
        "machine": machine(),
        "data_files": {t: _file_facts(params, t) for t in tasks},
        "settings": {t: _settings(params, t) for t in tasks},
    }


def export(params, out: Path, experiment: str | None = None, name: str | None = None,
           command: str = "stilts study") -> tuple[int, Path]:
    """Write OUT (.csv) and its provenance OUT with .yaml; returns (rows, provenance path)."""
    from stilts.analysis.collect import collect

    experiment = experiment or params.mlflow.experiment
    runs = collect(params, experiment)
    if runs.empty:
        raise StiltsError(f"export-results: experiment '{experiment}' has no finished target or probe runs")
    out = Path(out)
    if out.suffix != ".csv":
        raise StiltsError(f"{out}: the results file must end in .csv (its provenance goes beside it, .yaml)")
    table, buf = rows(runs), io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(table)
    meta = provenance(params, experiment, runs, out, buf.getvalue(), name or experiment, command)
    meta_path = out.with_suffix(".yaml")
    atomic_write_text(out, buf.getvalue())
    try:
        atomic_write_text(meta_path, yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=110))
    except BaseException:
        out.unlink(missing_ok=True)  # no results file without its provenance
        raise
    return len(table), meta_path
