"""The small benchmarks run and print what their last line promises: benchmarks/bf16_matmul.py and
benchmarks/file_hashing.py (tiny sizes; the figures themselves are machine-dependent)."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, env_tmp: Path) -> list[str]:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "TMPDIR": str(env_tmp)})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()


def test_bf16_matmul_prints_the_machine_and_the_ratio(tmp_path):
    lines = _run("bf16_matmul.py", "--shape", "32", "64", "32", "--repeats", "3", env_tmp=tmp_path)
    assert lines[0].startswith("CPU ") and any(ln.startswith("bf16: 32×64×32 product") for ln in lines)
    assert float(re.fullmatch(r"bf16_over_fp32=([\d.]+)", lines[-1]).group(1)) > 0


def test_file_hashing_prints_rates_and_leaves_no_file(tmp_path):
    lines = _run("file_hashing.py", "--mib", "2", "--repeats", "1", env_tmp=tmp_path)
    assert lines[0].startswith("CPU ")
    rates = re.fullmatch(r"hash_gb_s=([\d.]+) write_gb_s=([\d.]+) hash_over_write=([\d.]+)", lines[-1])
    assert rates and all(float(x) > 0 for x in rates.groups())
    assert not list(tmp_path.iterdir())  # its temporary folder is gone
