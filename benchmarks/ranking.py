"""`stilts rank --method semb` for 5 real targets × 8 real candidates: cold (no cached embeddings) and warm.

    python benchmarks/ranking.py [--data ../shared/data] [--sample-size 1000]

Writes a scratch project in a temporary folder (params.yaml pointing at the official files in --data),
prepares the 13 tasks first (timed apart: `stilts rank` prepares a missing task itself, as `stilts
prepare` would), then times `stilts rank` twice as a fresh process (imports included, no cell server):
cold embeds 13 × ≤ sample-size training examples with the embedded MiniLM, warm reads the cached task
embeddings. The goal is under 5 minutes cold on a 2-core CPU. Last line:
cold_s=… warm_s=… cold_vs_goal=<cold_s / 300>.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bounded
import yaml

TARGETS = ["rte", "cb", "copa", "wnli", "mrpc"]
CANDIDATES = ["sst2", "socialiqa", "cola", "stsb", "qnli", "cosmosqa", "qasrl", "boolq"]
# the small real copies hold only part of some tasks: a dev file stands in for the missing train file
FILES = {"qnli": {"train": "dev.tsv", "validation": "k-shot/16-42/dev.tsv"}, "cosmosqa": {"train": "valid.csv"},
         "qasrl": {"train": "qasrl-v2/orig/dev.jsonl.gz", "validation": "qasrl-v2/orig/test.jsonl.gz"},
         "boolq": {"train": "val.jsonl", "validation": "fewglue32/train.jsonl"}}
GOAL_S = 300.0


def cpu() -> str:
    try:
        names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
        extra = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
        return f"{names[0]} × {os.cpu_count()} ({', '.join(extra) or 'no bf16 units'})"
    except (OSError, StopIteration, IndexError):
        return platform.processor() or "unknown CPU"


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    bounded.run(cmd, limit=3600, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--sample-size", type=int, default=1000)
    args = ap.parse_args(argv)
    env = {**os.environ, "STILTS_WORKER": "0", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    stilts = [sys.executable, "-m", "stilts"]
    print(f"CPU: {cpu()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
          f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="stilts-rank-bench-") as tmp:
        root = Path(tmp)
        params = {"data": {"raw_dir": str(args.data.resolve()), "files": FILES}, "mlflow": {"experiment": "bench"},
                  "rank": {"targets": TARGETS, "candidates": CANDIDATES, "methods": ["semb"],
                           "sample_size": args.sample_size}}
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        prep = timed([*stilts, "prepare", *(a for t in TARGETS + CANDIDATES for a in ("--task", t))], root, env)
        cold = timed([*stilts, "rank"], root, env)
        warm = timed([*stilts, "rank"], root, env)
        print((root / "reports" / "ranking.csv").read_text().count("\n") - 1, "ranking rows")
    print(f"prepare (13 tasks, not part of the ranking) {prep:7.1f} s")
    print(f"stilts rank, cold                          {cold:7.1f} s")
    print(f"stilts rank, warm (cached embeddings)      {warm:7.1f} s")
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"cold_s={cold:.1f} warm_s={warm:.1f} cold_vs_goal={cold / GOAL_S:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
