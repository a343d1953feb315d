"""benchmarks/gpu_check.sh --dry-run: the GPU check's steps, on CPU with a tiny shape, end to end."""

import csv
import sys

import pytest

from tests.checkout_guard import CHECKOUT
from tests.commands import command_env, run


@pytest.mark.slow
@pytest.mark.timeout(1260)
def test_gpu_check_dry_run(tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = command_env(OUT=str(tmp_path), PYTHON=sys.executable, TMPDIR=str(scratch))
    out = run(CHECKOUT, "bash", "benchmarks/gpu_check.sh", "--dry-run", check=False, env=env, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "parity=ok" in (tmp_path / "parity.log").read_text()
    rows = list(csv.DictReader((tmp_path / "throughput.csv").open()))
    assert {(r["batch_size"], r["arm"]) for r in rows} == {
        (b, a) for b in ("8", "4") for a in ("stilts", "stilts_eager_step", "trainer_tuned", "run_glue")}
    assert all(float(r["examples_per_s"]) > 0 and float(r["peak_fraction"]) > 0 for r in rows)
    cells = list(csv.DictReader((tmp_path / "concurrency.csv").open()))
    assert [c["cells"] for c in cells] == ["1", "2"] and all(float(c["aggregate_examples_per_s"]) > 0 for c in cells)
    summary = (tmp_path / "gpu_check.md").read_text()
    assert "| 8 | stilts |" in summary and "| 2 |" in summary and "batch 4: stilts ≥ 1.3× tuned Trainer" in summary
    assert (tmp_path / "calibration.csv").read_text().startswith("gpu,batch_size,achieved_tflops")  # no GPU: no rows
    left = sorted(p.name for p in scratch.iterdir() if p.name.startswith("stilts-"))
    assert not left, left  # every benchmark's scratch folder removed, its worker processes' too (torch's caches stay)
