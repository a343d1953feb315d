"""From a ranking to the study that tests it: a params file training the top K candidates that can be trained
here (their data is present or declared) and the baseline on the target, with restarts, that `stilts study`
(or `dvc repro`) runs as it is. Its `rank` stage then scores the recommendation against what was measured."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import yaml

from stilts.errors import StiltsError
from stilts.io import atomic_write_text


def picks(ranking: pd.DataFrame, target: str, k: int) -> tuple[str, list[str], list[str]]:
    """(method, the top k trainable candidates, better-ranked candidates skipped for lack of data)."""
    rows = ranking[ranking["target"] == target]
    if rows.empty:
        raise StiltsError(f"rank: --write-study: '{target}' was not ranked")
    method = "prior" if "prior" in set(rows["method"]) else rows["method"].iloc[0]
    rows = rows[rows["method"] == method].sort_values("rank", kind="stable")
    present = rows["data"].eq("present") if "data" in rows else pd.Series(True, rows.index)
    chosen = list(rows.loc[present, "candidate"][:k])
    if not chosen:
        raise StiltsError(f"rank: --write-study: no candidate for '{target}' has its data here; put a candidate's "
                          f"official files in its data folder (the ranking's `data` column says where)")
    last = rows.index[rows["candidate"] == chosen[-1]][0]
    skipped = list(rows.loc[:last][~present.loc[:last]]["candidate"])
    return method, chosen, skipped


def study_params(params, target: str, chosen: list[str], restarts: int) -> dict:
    """The user's params as written, with the tasks, restarts and ranking of the study that tests the pick."""
    raw = copy.deepcopy(params.raw or {})
    raw["tasks"] = {"intermediate": chosen, "target": [target], "probe": []}
    raw["study"] = {**(raw.get("study") or {}), "restarts": restarts}
    raw["rank"] = {**(raw.get("rank") or {}), "targets": [target], "candidates": list(chosen),
                   "methods": (raw.get("rank") or {}).get("methods") or ["prior"]}
    return raw


def write(params, result: dict, target: str, k: int, restarts: int, path: Path) -> str:
    """Write the study; what `stilts rank` prints about it."""
    from stilts import config

    if k < 1 or restarts < 1:
        raise StiltsError("rank: --top and --restarts must be ≥ 1")
    method, chosen, skipped = picks(result["ranking"], target, k)
    raw = study_params(params, target, chosen, restarts)
    config.from_dict(copy.deepcopy(raw), str(path), params.root)  # the study is valid params before it is written
    header = (f"# The study that tests `stilts rank`'s recommendation for {target} ({method}): the top {len(chosen)} "
              f"trainable candidates and the baseline, {restarts} restart(s).\n# Run: stilts --params {path} study; "
              f"its rank stage then scores the recommendation (reports/ranking_eval.csv, report.md).\n")
    atomic_write_text(path, header + yaml.safe_dump(raw, sort_keys=False))
    cells = (len(chosen) + 1) * restarts + len(chosen) * restarts
    note = f" (skipped for lack of data: {', '.join(skipped)})" if skipped else ""
    return (f"wrote {path}: {', '.join(chosen)} and the baseline on {target}, {restarts} restart(s): {cells} "
            f"training runs{note}; run it with `stilts --params {path} study`")
