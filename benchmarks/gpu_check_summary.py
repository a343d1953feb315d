"""gpu_check.sh's last step: its CSVs → one markdown table with the GPU targets, and calibration rows.

    python benchmarks/gpu_check_summary.py OUT_DIR

Reads OUT_DIR/throughput.csv (train_throughput.py) and OUT_DIR/concurrency.csv (concurrent_cells.py);
writes OUT_DIR/gpu_check.md and OUT_DIR/calibration.csv, rows in the format of
src/stilts/gpu_calibration.csv (stilts' default arm per batch size) for `stilts plan` to use.
Also reports, from the steps' logs (OUT_DIR/*.log), every run whose compiled step fell back to the eager one
(the compiled numbers are then not of the compiled step): exit status 1 when one did.
"""

from __future__ import annotations

import csv
import datetime
import sys
from pathlib import Path

# the GPU targets: speed vs the tuned Trainer, MFU at batch 32, 4 cells at once vs 1
TARGETS = {"vs_tuned": 1.3, "mfu_32": 0.15, "cells_4": 2.5}


def read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def compile_fallbacks(out: Path) -> list[tuple[str, str]]:
    """(step, reason) for each run in the steps' logs whose compiled step fell back to the eager one."""
    from stilts.step import COMPILE_FALLBACK_WARNING

    found = []
    for log in sorted(out.glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if COMPILE_FALLBACK_WARNING in line:
                reason = line.split(COMPILE_FALLBACK_WARNING, 1)[1].strip()
                found.append((log.stem, reason.removeprefix("(").split("); this run continues")[0]))
    return found


def main(out: Path) -> int:
    rows, cells = read(out / "throughput.csv"), read(out / "concurrency.csv")
    fallbacks = compile_fallbacks(out)
    lines = [f"# gpu_check ({datetime.date.today()})", ""]
    if rows:
        r0 = rows[0]
        lines += [f"{r0['model']} on {r0['task']}, max length {r0['max_length']}, {r0['device']}; examples/s are "
                  f"steady-state medians of {r0['repeats']} runs; MFU = 6·N·tokens/s over the datasheet dense bf16 "
                  f"peak ({r0['datasheet_peak_tflops'] or '?'} TFLOP/s); % peak over the measured 8192³ bf16 "
                  f"matmul ({r0['measured_peak_tflops']} TFLOP/s).", "",
                  "| batch | arm | precision | attn | compiled | examples/s | TFLOP/s | MFU | % measured peak | "
                  "vs trainer_tuned | vs run_glue |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    checks = []
    for batch in dict.fromkeys(r["batch_size"] for r in rows):
        sel = {r["arm"]: r for r in rows if r["batch_size"] == batch}
        eps = {k: float(r["examples_per_s"]) for k, r in sel.items()}
        for arm, r in sel.items():
            vs = [f"{eps[arm] / eps[k]:.2f}×" if k in eps else "" for k in ("trainer_tuned", "run_glue")]
            mfu = f"{100 * float(r['mfu']):.1f}%" if r["mfu"] else ""
            lines.append(f"| {batch} | {arm} | {r['precision']} | {r['attn']} | {r['compiled']} | "
                         f"{eps[arm]:.1f} | {float(r['achieved_tflops']):.1f} | {mfu} | "
                         f"{100 * float(r['peak_fraction']):.1f}% | {vs[0]} | {vs[1]} |")
        if "stilts" in eps and "trainer_tuned" in eps:
            ratio = eps["stilts"] / eps["trainer_tuned"]
            checks.append((f"batch {batch}: stilts ≥ {TARGETS['vs_tuned']}× tuned Trainer", f"{ratio:.2f}×",
                           ratio >= TARGETS["vs_tuned"]))
        if batch == "32" and "stilts" in sel and sel["stilts"]["mfu"]:
            mfu = float(sel["stilts"]["mfu"])
            target = TARGETS["mfu_32"]
            checks.append((f"batch 32: one cell ≥ {target:.0%} MFU", f"{mfu:.1%}", mfu >= target))
    if cells:
        c0 = cells[0]
        lines += ["", f"Concurrent cells on one GPU ({c0['model']}, batch {c0['batch_size']}, "
                  f"{c0['steps']} steps each):",
                  "", "| cells | aggregate examples/s | per cell | vs 1 cell |", "|---|---|---|---|"]
        for c in cells:
            lines.append(f"| {c['cells']} | {float(c['aggregate_examples_per_s']):.1f} | "
                         f"{c['per_cell_examples_per_s']} | {float(c['speedup_vs_1']):.2f}× |")
        four = [c for c in cells if c["cells"] == "4"]
        if four:
            s = float(four[0]["speedup_vs_1"])
            checks.append((f"4 cells ≥ {TARGETS['cells_4']}× one cell", f"{s:.2f}×", s >= TARGETS["cells_4"]))
    lines += ["", "Compiled step: " + ("no fallback to the eager step in any run." if not fallbacks else
                                    f"FELL BACK to the eager step in {len(fallbacks)} run(s):")]
    lines += [f"- {step}: {reason}" for step, reason in fallbacks]
    checks.append(("the compiled step never falls back to the eager one", f"{len(fallbacks)} fallback(s)",
                   not fallbacks))
    if checks:
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {name} | {value} | {'yes' if ok else 'NO'} |" for name, value, ok in checks]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    today = datetime.date.today().isoformat()
    with (out / "calibration.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["gpu", "batch_size", "achieved_tflops", "examples_per_s", "model", "task", "max_length", "setup",
                    "date", "source"])
        for r in rows:
            if r["arm"] == "stilts" and r["gpu_class"]:
                w.writerow([r["gpu_class"], r["batch_size"], r["achieved_tflops"], r["examples_per_s"], r["model"],
                            r["task"], r["max_length"], f"stilts defaults: {r['precision']}, {r['attn']}, "
                            f"compiled {r['compiled']}", today, "benchmarks/gpu_check.sh"])
    print((out / "gpu_check.md").read_text())
    return 1 if fallbacks else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
