"""Import published results (a CSV) as MLflow runs, so the same analysis runs on them.

Columns: restart (int ≥ 0), source (intermediate task or `none`), task, role (target|probe),
score (the task's major metric, 0–1); any further numeric column is logged as a metric (final_dev_<column>;
majority_score under its own name, as a study logs it). `stilts export-results` writes this format.
Every bad row is reported with its line number and nothing is logged.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from stilts.errors import StiltsError

REQUIRED = ("restart", "source", "task", "role", "score")
OWN_NAME = ("majority_score",)  # logged under its own name, as a study's runs log it (not final_dev_*)


def _number(value: str) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def read(path: Path) -> list[dict]:
    if not path.is_file():
        raise StiltsError(f"{path}: file not found")
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise StiltsError(f"{path}:1: missing column(s) {', '.join(missing)} (need {', '.join(REQUIRED)})")
        extra = [c for c in header if c not in REQUIRED]
        rows, problems, seen = [], [], {}
        for row in reader:
            line = reader.line_num
            why = []
            restart = row["restart"].strip() if row["restart"] else ""
            if not restart.isdigit():
                why.append(f"restart '{row['restart']}' is not an integer ≥ 0")
            for key in ("source", "task"):
                if not (row[key] or "").strip():
                    why.append(f"{key} is empty")
            if row["role"] not in ("target", "probe"):
                why.append(f"role '{row['role']}' is not target or probe")
            score = _number(row["score"])
            if score is None or not 0 <= score <= 1:
                why.append(f"score '{row['score']}' is not a number in [0, 1]")
            metrics = {}
            for c in extra:
                if row.get(c) not in (None, ""):
                    v = _number(row[c])
                    if v is None:
                        why.append(f"{c} '{row[c]}' is not a number")
                    metrics[c] = v
            key = (row["source"], row["task"], restart)
            if not why and key in seen:
                why.append(f"duplicate of line {seen[key]} (same source, task, restart)")
            if why:
                problems.append(f"{path}:{line}: {'; '.join(why)}")
                continue
            seen[key] = line
            rows.append({"restart": int(restart), "source": row["source"].strip(), "task": row["task"].strip(),
                         "role": row["role"], "score": score, "metrics": metrics, "line": line})
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise StiltsError(f"{len(problems)} bad row(s), nothing imported: " + " | ".join(problems[:5]) + more)
    if not rows:
        raise StiltsError(f"{path}: no rows")
    return rows


def import_results(params, path: Path, experiment: str) -> int:
    rows = read(Path(path))
    log_rows(params, rows, Path(path).name, experiment)
    return len(rows)


def log_rows(params, rows: list[dict], file_name: str, experiment: str) -> None:
    from stilts import tracking

    for r in rows:
        tags = {"role": r["role"], "source": r["source"], "task": r["task"], "restart": r["restart"],
                "cell": f"{r['source']}/{r['task']}/r{r['restart']}", "imported": "true",
                "imported_from": f"{file_name}:{r['line']}"}
        with tracking.tracked(params, f"imported:{r['source']}->{r['task']}:r{r['restart']}", tags, experiment) as run:
            run.log_metrics({"final_dev_score": r["score"], **{k if k in OWN_NAME else f"final_dev_{k}": v
                                                               for k, v in r["metrics"].items()}})
